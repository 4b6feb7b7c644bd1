"""Shared test settings and fixtures: few threads (CI has 2 cores), deterministic seeds, and
small random :class:`~tightlip.model.LayerChain` networks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pytest
import torch

from tightlip.layers import make_activation
from tightlip.model import ActivationStep, AffineStep, LayerChain

torch.set_num_threads(1)  # two threads are 10-100x slower when the cores are shared

ChainFactory = Callable[..., LayerChain]


def mnist_dir_or_skip():
    """MNIST's directory, or skip the test when it is not installed: only the "not found"
    error skips; any other error (a broken data locator) fails the test."""
    from tightlip.data import resolve_data_dir
    from tightlip.errors import DatasetNotFoundError

    try:
        return resolve_data_dir(None)
    except DatasetNotFoundError as error:
        pytest.skip(f"MNIST not available: {error}")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def build_random_chain(
    sizes: Sequence[int],
    activation: str = "relu",
    bias: bool = True,
    seed: int = 0,
) -> LayerChain:
    """``sizes[0] → … → sizes[-1]`` with Gaussian weights ``/√fan_in`` (float64), one activation.

    ``sizes`` are the widths *between* affine maps; activations that change the width (CReLU,
    SinCos) make the next weight wider.
    """
    generator = torch.Generator().manual_seed(seed)
    steps: list[AffineStep | ActivationStep] = []
    fan_in = sizes[0]
    for i, width in enumerate(sizes[1:]):
        w = torch.randn(width, fan_in, generator=generator, dtype=torch.float64)
        b = torch.randn(width, generator=generator, dtype=torch.float64) if bias else None
        steps.append(AffineStep(w / math.sqrt(fan_in), b, name=f"fc{i}"))
        if i < len(sizes) - 2:
            act = make_activation(activation)
            steps.append(ActivationStep(act, name=f"{activation}{i}"))
            fan_in = act.out_features(width)
    return LayerChain(tuple(steps))


@pytest.fixture
def random_chain() -> ChainFactory:
    """A factory: ``random_chain(sizes, activation="relu", bias=True, seed=0)``."""
    return build_random_chain


@pytest.fixture
def small_chain() -> LayerChain:
    """``2 → 4 → 3 → 2`` ReLU network with biases: small enough for exact region enumeration."""
    return build_random_chain((2, 4, 3, 2), "relu", bias=True, seed=0)


def _merged_relu_chain() -> LayerChain:
    """``Linear → Linear → ReLU → Linear`` whose first two layers merge with cancellation."""
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(3, 2, generator=generator, dtype=torch.float64) * 2.0**20
    c = torch.randn(3, 2, generator=generator, dtype=torch.float64) * 2.0**-30
    b, b2 = (torch.randn(4, 3, generator=generator, dtype=torch.float64) for _ in range(2))
    first = AffineStep(torch.cat([a, c, a]), name="fc0")
    second = AffineStep(torch.cat([b, b2, -b], dim=1), torch.ones(4), name="fc1")
    last = AffineStep(torch.randn(2, 4, generator=generator, dtype=torch.float64), name="fc2")
    return LayerChain((first.then(second), ActivationStep(make_activation("relu")), last))


#: small networks every bound method is checked on: (id, builder)
PROTOCOL_CHAINS: dict[str, Callable[[], LayerChain]] = {
    "relu-bias": lambda: build_random_chain((2, 4, 3, 2), "relu", bias=True, seed=1),
    "abs": lambda: build_random_chain((3, 4, 2), "abs", bias=False, seed=2),
    "crelu-bias": lambda: build_random_chain((2, 3, 2), "crelu", bias=True, seed=3),
    "maxmin": lambda: build_random_chain((2, 4, 2), "maxmin", bias=True, seed=4),
    "sincos": lambda: build_random_chain((2, 3, 2), "sincos", bias=True, seed=5),
    "tanh-bias": lambda: build_random_chain((2, 4, 3), "tanh", bias=True, seed=6),
    "sinpair": lambda: build_random_chain((2, 3, 2), "sinpair", bias=False, seed=7),
    "single-layer": lambda: build_random_chain((3, 2), bias=True, seed=8),
    "merged-relu": _merged_relu_chain,
}


@pytest.fixture(params=sorted(PROTOCOL_CHAINS), scope="module")
def protocol_chain(request: pytest.FixtureRequest) -> LayerChain:
    """Each of :data:`PROTOCOL_CHAINS` in turn (2–3 inputs, at most 8 hidden units)."""
    return PROTOCOL_CHAINS[request.param]()


def train_blob_model(norm: str, activation: str, width: int):
    """A small tightlip model trained on three Gaussian blobs in [0, 1]^16, and 200 test points.

    Six epochs of the normalised margin loss at ε = 0.1, λ = 0.05: enough for non-trivial
    certified and float32-certified accuracy in a second.
    """
    from tightlip.methods import fit
    from tightlip.model import ModelSpec
    from tightlip.train.config import TrainConfig

    generator = torch.Generator().manual_seed(1)
    centers = torch.rand(3, 16, generator=generator)
    y = torch.randint(0, 3, (600,), generator=generator)
    x = (centers[y] + 0.05 * torch.randn(600, 16, generator=generator)).clamp(0, 1)
    spec = ModelSpec(
        input_dim=16, widths=(width,), num_classes=3, activation=activation, norm=norm
    )
    config = TrainConfig(
        epochs=6,
        batch_size=50,
        norm=norm,
        loss="normalized_margin",
        margin_epsilon=0.1,
        penalty_weight=0.05,
    )
    model = fit("tightlip", spec, config, x, y, progress=False).model
    return model, x[:200], y[:200]


def tiny_image_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded random 8×8 images (flat, in [0, 1]) with labels in {0, 1, 2}: enough for
    one training step of a tiny conv net (``c4k3,c4k4s2,f16`` on ``(1, 8, 8)``)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 64, generator=generator), torch.randint(0, 3, (n,), generator=generator)
