"""The float32 certificate on conv nets (issue 12, item 5).

* the bound on ``|f32(x') − f64(x')|`` holds at the centres, at random points of the ball and at
  PGD points, on random conv nets (zero, strided and circular padding, average and max pooling,
  biases, every activation family) and on the ``nn`` module itself run in float32;
* on a small trained conv net, float32-certified points are never broken by PGD run on the
  float32 model, and the float32 certified accuracy is at most the float64 one;
* ``tightlip.eval.experiment.evaluate`` reports a non-empty float32 certified accuracy for a conv
  net.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tightlip as t
from tightlip.data import MnistData
from tightlip.eval.attacks import margin_loss, pgd_attack
from tightlip.eval.certify import certified_radii, float32_certificates
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.eval.float32 import FLOAT64, RoundingErrorBound, float32_logits
from tightlip.methods import fit
from tightlip.model import LayerChain, ModelSpec, build_model
from tightlip.norms import NormName, vector_norm
from tightlip.train.config import TrainConfig

SHAPE = (2, 8, 8)
ARCHS = ("c4k3,avg2,c6k3s2,f12", "c4k3circ,max2,c4k4s2p1,f12", "c4k3p0,c6k3s2,f8")


def _random_net(arch: str, activation: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    spec = ModelSpec(
        input_dim=128, input_shape=SHAPE, arch=arch, num_classes=5, activation=activation,
        bias=True,
    )
    model = build_model(spec)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and module.bias is not None:
            nn.init.uniform_(module.bias, -0.5, 0.5)
    return model.eval()


def _ball_points(x: torch.Tensor, norm: NormName, eps: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    if norm == "inf":
        direction = direction.sign()
    direction = direction / vector_norm(direction, norm)[:, None]
    scale = torch.rand(x.shape[0], 1, generator=generator, dtype=torch.float64)
    scale[::2] = 1.0 - 1e-12
    return x.double() + eps * scale * direction


def _check(
    chain: LayerChain,
    x: torch.Tensor,
    norm: NormName,
    eps: float,
    points: torch.Tensor,
    model: nn.Module | None = None,
) -> float:
    """Assert the logit and logit-gap bounds at the centres and at ``points`` (one per centre,
    within ``eps``); return the largest fraction of the bound used."""
    bound = RoundingErrorBound(chain, x, norm)
    worst = 0.0
    eps = eps * (1 + 1e-9)  # PGD's float64 projection may land an ulp outside the ball
    for radius, where in ((0.0, x.double()), (eps, points.double())):
        assert float(vector_norm(where - x.double(), norm).max()) <= eps
        allowed = bound.logit_error(radius) + bound.logit_error(radius, FLOAT64)
        assert torch.isfinite(allowed).all()
        high = chain.forward(where)
        lows = [float32_logits(chain, where)]
        if model is not None:
            with torch.no_grad():
                lows.append(model(where.to(torch.float32)).to(torch.float64))
        labels = torch.randint(0, high.shape[1], (x.shape[0],))
        pair = bound.pair_error(labels, radius) + bound.pair_error(labels, radius, FLOAT64)
        for low in lows:
            observed = (low - high).abs()
            assert (observed <= allowed).all(), float((observed / allowed).max())
            gap = (low.gather(1, labels[:, None]) - low) - (high.gather(1, labels[:, None]) - high)
            assert (gap.abs() <= pair).all()
            worst = max(worst, float((observed / allowed).max()))
    return worst


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("activation", "norm"), [("abs", "2"), ("sincos", "2"), ("maxmin", "inf"), ("relu", "1")]
)
def test_bound_covers_random_and_pgd_points_on_conv_nets(
    arch: str, activation: str, norm: NormName
) -> None:
    model = _random_net(arch, activation, seed=len(arch))
    chain = t.to_chain(model)
    x = torch.rand(16, 128, generator=torch.Generator().manual_seed(2))
    eps = {"1": 1.0, "2": 0.5, "inf": 0.05}[norm]
    worst = _check(chain, x, norm, eps, _ball_points(x, norm, eps, 3), model=model)
    y = chain.forward(x.double()).argmax(dim=1)
    _, adversarial = pgd_attack(chain, x.double(), y, norm, eps, steps=10, restarts=1)
    _check(chain, x, norm, eps, adversarial)
    assert worst > 0  # the bound is exercised (conv outputs do round)


def _trained_conv() -> tuple[nn.Module, torch.Tensor, torch.Tensor, MnistData]:
    """Three blobs of 8×8 two-channel images, a small conv net trained for a few epochs."""
    generator = torch.Generator().manual_seed(1)
    centres = torch.rand(3, 128, generator=generator)
    y = torch.randint(0, 3, (360,), generator=generator)
    x = (centres[y] + 0.05 * torch.randn(360, 128, generator=generator)).clamp(0, 1)
    spec = ModelSpec(
        input_dim=128, input_shape=SHAPE, arch="c4k3,avg2,c4k3s2,f16", num_classes=3,
        activation="sincos",
    )
    config = TrainConfig(
        epochs=15, batch_size=40, norm="2", loss="normalized_margin", margin_epsilon=0.1,
        penalty_weight=0.05,
    )
    model = fit("tightlip", spec, config, x[:300], y[:300], progress=False).model.eval()
    data = MnistData(x[:300], y[:300], x[300:], y[300:])
    return model, x[300:], y[300:], data


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    return _trained_conv()


def test_float32_certified_points_survive_float32_pgd(trained) -> None:
    model, x, y, _ = trained
    chain = t.to_chain(model)
    norm, eps = "2", 0.1
    margins = certified_radii(chain, x, y, norm, t.upper_bound(model, norm).value)
    masks = float32_certificates(chain, x, y, norm, margins, (eps,))
    assert masks, "a conv net must get a float32 certificate"
    certified = masks["global"]["0.1"] | masks["last_layer"]["0.1"]
    assert int(certified.sum()) >= 20
    for name in ("global", "last_layer"):
        assert (masks[name]["0.1"] <= margins.certified(eps, name)).all()
    # attack the float32 model itself, and judge the adversarial points in float32
    float32_model = lambda v: chain.forward(v.to(torch.float32))  # noqa: E731
    _, adversarial = pgd_attack(float32_model, x.float(), y, norm, eps, steps=30, restarts=2)
    broken32 = margin_loss(float32_logits(chain, adversarial), y) > 0
    assert not (certified & broken32).any()
    # and the bound holds at those points
    _check(chain, x, norm, eps, adversarial.double())


def test_evaluate_reports_float32_certified_accuracy_for_a_conv_net(trained) -> None:
    model, _, _, data = trained
    evaluation = EvalConfig(
        radii=(0.05, 0.1), pgd_steps=5, attack_limit=60, lower_starts=2, lower_seconds=1
    )
    metrics = evaluate(model, "2", data, evaluation)
    float32 = metrics["float32_certified_accuracy"]
    assert set(float32) == {"global", "last_layer"}
    for name in ("global", "last_layer"):
        for key, value in float32[name].items():
            assert value <= metrics["certified_accuracy"][name][key]
    assert max(float32["last_layer"].values()) > 0
