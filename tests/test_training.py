"""Training: the penalty lowers the bound, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import torch

import tightlip as t
from tightlip.methods import fit
from tightlip.train.config import TrainConfig
from tightlip.train.penalty import TrivialBoundEstimator, bound_penalty, smooth_maximum


def _toy_problem(n: int = 512, d: int = 20, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=generator) * 3
    y = torch.randint(0, classes, (n,), generator=generator)
    x = centers[y] + torch.randn(n, d, generator=generator)
    return x, y


def _trained_bound(penalty: str, norm: str = "2") -> float:
    x, y = _toy_problem()
    spec = t.ModelSpec(input_dim=20, widths=(32, 32), num_classes=3, activation="abs", norm=norm)
    config = TrainConfig(
        epochs=8,
        batch_size=64,
        lr=1e-2,
        norm=norm,
        loss="ce",
        penalty=penalty,
        penalty_weight=0.5,
    )
    result = fit("tightlip", spec, config, x, y, progress=False)
    return t.upper_bound(result.model, norm, "trivial").value


def test_penalty_decreases_the_bound() -> None:
    for norm in ("2", "inf"):
        assert _trained_bound("log", norm) < 0.5 * _trained_bound("none", norm)


def test_estimator_matches_sound_bound_after_warm_up() -> None:
    model = t.build_model(t.ModelSpec(input_dim=30, widths=(40, 20), num_classes=5))
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(torch.rand(()) + 0.5).add_(0.1 * torch.randn_like(layer.weight))
    estimator = TrivialBoundEstimator(model, "2", iterations=50)
    estimate = float(estimator().detach().exp())
    sound = t.upper_bound(model, "2").value
    assert estimate <= sound * (1 + 1e-6)  # power iteration converges from below
    assert estimate >= 0.99 * sound


def test_smooth_maximum_brackets_the_maximum() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        values = torch.rand(50, generator=generator, dtype=torch.float64) * 10
        exact = float(values.max())
        assert float(smooth_maximum(values, 0.0)) == exact
        for tau in (0.01, 0.05, 0.3):
            smooth = float(smooth_maximum(values, tau))
            assert exact <= smooth <= exact * (1 + tau * torch.log(torch.tensor(50.0)).item())


def test_smooth_max_estimator_spreads_the_gradient_and_stays_above() -> None:
    """ℓ1 / ℓ∞: the smooth estimate is ≥ the exact bound, and every near-maximal row gets a
    gradient (the exact max reaches one row per layer)."""
    torch.manual_seed(0)
    model = t.build_model(t.ModelSpec(input_dim=30, widths=(40, 20), num_classes=5))
    for norm in ("1", "inf"):
        exact = t.upper_bound(model, norm).value
        for tau, rows_reached in ((0.0, 1), (0.05, 5)):
            estimator = TrivialBoundEstimator(model, norm, smooth_max=tau)
            model.zero_grad()
            log_bound = estimator()
            assert float(log_bound.exp()) >= exact * (1 - 1e-6)
            log_bound.backward()
            first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            grad = first.weight.grad.abs().sum(dim=0 if norm == "1" else 1)
            if tau == 0:
                assert int((grad > 0).sum()) == rows_reached
            else:
                assert int((grad > 1e-6 * grad.max()).sum()) >= rows_reached


def test_hinge_penalty_is_zero_below_target() -> None:
    assert float(bound_penalty(torch.tensor(0.0), "hinge", target=2.0)) == 0.0
    assert float(bound_penalty(torch.tensor(2.0), "hinge", target=1.0)) == 2.0


def test_resume_reproduces_uninterrupted_run(tmp_path) -> None:
    x, y = _toy_problem(n=300)
    spec = t.ModelSpec(input_dim=20, widths=(16,), num_classes=3, activation="sincos")
    config = TrainConfig(epochs=3, batch_size=50, loss="normalized_margin", penalty_weight=0.05)
    full = fit("tightlip", spec, config, x, y, out_dir=tmp_path / "full", progress=False)
    fit(
        "tightlip", spec, config, x, y, out_dir=tmp_path / "cut", progress=False, stop_after_epochs=1
    )
    resumed = fit(
        "tightlip", spec, config, x, y, out_dir=tmp_path / "cut", progress=False, resume=True
    )
    assert resumed.epochs_run == 3
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
