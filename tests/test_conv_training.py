"""Training conv nets: the penalty's estimate for convolutions, and the CLI end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import mnist_dir_or_skip
from torch import nn

import tightlip as t
from tightlip.convolution.operators import Conv2dOperator
from tightlip.layers import make_activation
from tightlip.layers.channels import OnChannels
from tightlip.methods import fit
from tightlip.train.config import TrainConfig
from tightlip.train.penalty import TrivialBoundEstimator, conv_abs_sums

SHAPE = (2, 9, 9)


def _conv_net(padding_mode: str = "zeros", stride: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, SHAPE),
        nn.Conv2d(2, 4, 3, stride=stride, padding=1, bias=False, padding_mode=padding_mode),
        OnChannels(make_activation("abs")),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, stride=2, bias=False),
        OnChannels(make_activation("maxmin")),
        nn.Flatten(),
        nn.Linear(4, 5, bias=False),
    ).double()


def _conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("norm", ["1", "inf"])
def test_conv_abs_sums_equal_the_dense_matrix(padding_mode: str, stride: int, norm: str) -> None:
    layer = _conv_net(padding_mode, stride)[1]
    dense = Conv2dOperator(
        layer.weight,
        SHAPE,
        stride=(stride, stride),
        padding=((1, 1), (1, 1)),
        circular=padding_mode == "circular",
    ).dense()
    sums = conv_abs_sums(layer, SHAPE, norm)
    expected = dense.abs().sum(dim=0 if norm == "1" else 1)
    torch.testing.assert_close(sums, expected, rtol=1e-12, atol=1e-12)
    sums.max().backward()  # differentiable in the kernel
    assert layer.weight.grad is not None and float(layer.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("norm", ["1", "inf"])
def test_l1_linf_estimate_equals_the_certified_trivial_bound(norm: str) -> None:
    model = _conv_net()
    estimate = float(TrivialBoundEstimator(model, norm)().detach().exp())
    sound = t.upper_bound(model, norm, "trivial").value
    # exact sums; the certified bound only adds its rounding margin
    assert estimate <= sound
    assert estimate == pytest.approx(sound, rel=1e-9)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_l2_power_iteration_converges_to_the_certified_norm_from_below(padding_mode: str) -> None:
    model = _conv_net(padding_mode)
    sound = t.upper_bound(model, "2", "trivial").value
    estimator = TrivialBoundEstimator(model, "2", iterations=1)
    first = float(estimator().detach().exp())
    for _ in range(300):
        estimate = float(estimator().detach().exp())
    assert first <= sound * (1 + 1e-9)
    assert estimate <= sound * (1 + 1e-9)  # power iteration converges from below
    assert estimate >= 0.97 * sound
    # the vectors are buffers shaped like the maps: checkpoints keep them
    state = estimator.state_dict()
    convs = _conv_layers(model)
    assert state["v0"].shape == SHAPE and state["u0"].shape == (4, 9, 9)
    assert len(convs) == 2 and state["u2"].shape == (5,)
    again = TrivialBoundEstimator(model, "2", seed=7)
    again.load_state_dict(state)
    assert float(again(update=False).detach()) == float(estimator(update=False).detach())


def test_l2_gradient_is_the_gradient_of_the_norm() -> None:
    model = _conv_net()
    estimator = TrivialBoundEstimator(model, "2", iterations=200)
    estimator.eval()
    layer = _conv_layers(model)[0]
    norm = estimator.layer_norms(update=False)[0]
    (grad,) = torch.autograd.grad(norm, layer.weight)
    # σ(K) is positively homogeneous of degree 1: ⟨∇σ, K⟩ = σ
    assert float((grad * layer.weight).sum().detach()) == pytest.approx(norm.detach().item(), rel=1e-9)


def test_channel_wrapper_and_pooling_are_counted_once() -> None:
    """OnChannels(σ) is one step: Lip(σ) counted once; MaxPool2d with overlapping windows adds
    its √m in ℓ2 (read at the shape it receives)."""

    class StatedWrapper(OnChannels):
        def lipschitz(self, norm: str) -> float:
            return self.activation.lipschitz(norm)

    def net(wrapper: type, pool: nn.Module, pixels: int = 16) -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Unflatten(1, SHAPE),
            nn.Conv2d(2, 4, 3, padding=1, bias=False),
            wrapper(make_activation("abs")),
            pool,
            nn.Flatten(),
            nn.Linear(4 * pixels, 3, bias=False),
        ).double()

    class Halving(nn.Module):  # an activation with Lip 1/2 makes a double count visible
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z / 2

        def lipschitz(self, norm: str) -> float:
            return 0.5

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = Halving()

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.inner(z)

        def lipschitz(self, norm: str) -> float:
            return self.inner.lipschitz(norm)

    plain = TrivialBoundEstimator(net(OnChannels, nn.AvgPool2d(2, ceil_mode=False, padding=0)), "2")
    stated = TrivialBoundEstimator(net(StatedWrapper, nn.AvgPool2d(2)), "2")
    assert stated().item() == pytest.approx(plain().item(), rel=1e-12)
    halved = TrivialBoundEstimator(net(Wrapper, nn.AvgPool2d(2)), "2")
    assert halved._activation_log_lip == pytest.approx(
        math.log(0.5) + math.log(0.5), rel=1e-12
    )  # the wrapper once (0.5) and the 2×2 average pool's ℓ2 norm (1/2), not the inner again
    overlapping = TrivialBoundEstimator(net(OnChannels, nn.MaxPool2d(3, 2, padding=1), 25), "2")
    assert overlapping._activation_log_lip == pytest.approx(math.log(2.0), rel=1e-9)


def test_penalty_lowers_the_bound_of_a_small_conv_net() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 64, generator=generator) * 3
    y = torch.randint(0, 3, (256,), generator=generator)
    x = centers[y] + torch.randn(256, 64, generator=generator)
    bounds = {}
    for norm in ("2", "inf"):
        spec = t.ModelSpec(
            input_dim=64, input_shape=(1, 8, 8), arch="c4k3,c4k3s2,f16", num_classes=3,
            activation="abs", norm=norm,
        )
        for penalty in ("log", "none"):
            config = TrainConfig(
                epochs=8, batch_size=64, lr=1e-2, norm=norm, loss="ce", penalty=penalty,
                penalty_weight=0.5,
            )
            model = fit("tightlip", spec, config, x, y, progress=False).model
            bounds[norm, penalty] = t.upper_bound(model, norm, "trivial").value
        assert bounds[norm, "log"] < 0.7 * bounds[norm, "none"], bounds


@pytest.mark.slow
def test_cli_trains_and_certifies_a_conv_net(tmp_path) -> None:
    from typer.testing import CliRunner

    from tightlip.cli import app

    mnist_dir_or_skip()
    out = tmp_path / "conv"
    result = CliRunner().invoke(
        app, ["train", "--arch", "c8k3,c8k4s2,f32", "--quick", "--epochs", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"]["arch"] == "c8k3,c8k4s2,f32"
    assert 0 < metrics["lipschitz_lower"] <= metrics["lipschitz_upper"]
    assert metrics["clean_accuracy"] > 0.11  # one quick epoch: above chance (10 classes)
    assert "global" in metrics["certified_accuracy"]


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "stride", "padding", "dilation", "size"),
    [(1, 4, 3, 1, 1, 1, 28), (4, 4, 4, 2, 1, 1, 28), (3, 5, 3, 2, 1, 1, 7), (2, 3, 3, 1, 2, 2, 9),
     (2, 2, 5, 3, 2, 1, 10)],
)
def test_penalty_transpose_is_the_adjoint_of_the_convolution(
    c_in: int, c_out: int, k: int, stride: int, padding: int, dilation: int, size: int
) -> None:
    """The power iteration's ``Aᵀ u`` (a transposed convolution with the output padding that
    restores the input size) is autograd's vector-Jacobian product, bit for bit."""
    from torch import nn

    from tightlip.train import penalty

    torch.manual_seed(0)
    layer = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, bias=False)
    v = torch.randn(c_in, size, size)
    u = torch.randn(penalty._conv(layer, v[None], layer.weight).shape[1:])
    x = torch.zeros_like(v)[None].requires_grad_(True)
    (adjoint,) = torch.autograd.grad(penalty._conv(layer, x, layer.weight), x, u[None])
    direct = penalty._conv_transpose(layer, u[None], layer.weight.detach(), tuple(v.shape))
    assert direct is not None and torch.equal(direct, adjoint)
    circular = nn.Conv2d(c_in, c_out, k, padding=padding, padding_mode="circular")
    assert penalty._conv_transpose(circular, u[None], circular.weight, tuple(v.shape)) is None
