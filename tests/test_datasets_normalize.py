"""Per-channel normalisation folded into the model: bounds and radii stay in raw-input units."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tightlip as t
from tightlip.data import DatasetSplits, Normalization, parse_normalization
from tightlip.errors import BadArgumentError, MethodNotApplicableError
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.methods import fit
from tightlip.models.normalized import Normalized
from tightlip.train.checkpoint import load_checkpoint
from tightlip.train.config import TrainConfig
from tightlip.train.penalty import TrivialBoundEstimator

SHAPE = (3, 2, 2)
VALUES = Normalization((0.5, 0.4, 0.3), (0.25, 0.5, 0.125))


def test_parse_normalization() -> None:
    assert parse_normalization(None) is None and parse_normalization("none") is None
    assert parse_normalization("0.5,0.4,0.3/0.25,0.5,0.125") == VALUES
    single = parse_normalization("0.1307/0.3081", input_shape=SHAPE)
    assert single == Normalization((0.1307,) * 3, (0.3081,) * 3)
    x = torch.rand(50, 12)
    assert parse_normalization("auto", x, SHAPE) == Normalization.of_data(x, SHAPE)
    for bad, message in (
        ("0.5", "MEANS/STDS"),
        ("a/b", "MEANS/STDS"),
        ("0.5/0", "stds must be positive"),
        ("0.5,0.5/0.2", "one mean and one std per channel"),
        ("auto", "needs the training data"),
    ):
        with pytest.raises(BadArgumentError, match=message):
            parse_normalization(bad)
    with pytest.raises(BadArgumentError, match="2 channels but the inputs"):
        parse_normalization("0,0/1,1", input_shape=SHAPE)


def test_statistics_per_channel() -> None:
    x = torch.zeros(4, 3, 2, 2)
    x[:, 0] = 0.5
    x[:, 1] = torch.tensor([0.0, 1.0, 0.0, 1.0])[:, None, None]
    found = Normalization.of_data(x.reshape(4, -1), SHAPE)
    assert found.mean == pytest.approx((0.5, 0.5, 0.0))
    assert found.std == pytest.approx((1.0, 0.5, 1.0))  # constant channels get std 1
    scale, shift = VALUES.scale_and_shift(SHAPE)
    assert scale.tolist() == [4.0] * 4 + [2.0] * 4 + [8.0] * 4
    assert shift.tolist() == [-2.0] * 4 + [-0.8] * 4 + [-2.4] * 4


def small_model(seed: int = 0, bias: bool = True) -> tuple[Normalized, torch.nn.Module]:
    torch.manual_seed(seed)
    inner = t.build_model(t.ModelSpec(input_dim=12, widths=(6,), num_classes=3, bias=bias,
                                      activation="abs"))
    return Normalized(inner, VALUES, SHAPE, {"kind": "mlp"}), inner


def test_forward_and_chain_are_the_normalised_network() -> None:
    model, inner = small_model()
    x = torch.rand(7, *SHAPE)
    mean = torch.tensor(VALUES.mean).view(1, 3, 1, 1)
    std = torch.tensor(VALUES.std).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), inner((x - mean) / std))
    chain = t.to_chain(model)
    assert chain.input_dim == 12
    double = chain(x.reshape(7, -1).double())
    torch.testing.assert_close(double, model.double()(x.double()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", ["1", "2", "inf"])
def test_trivial_bound_includes_one_over_std(norm: str) -> None:
    """Sound for f ∘ N (above every sampled Jacobian norm, taken w.r.t. the raw input) and
    never below Lip(f)·max 1/σ's tight cases: a linear read-out gives exactly ‖W D‖."""
    model, inner = small_model(seed=1, bias=False)
    bound = t.upper_bound(model, norm, "trivial").value
    inner_bound = t.upper_bound(inner, norm, "trivial").value
    assert bound <= inner_bound * 8.0 * (1 + 1e-9)
    p = {"1": 1, "2": 2, "inf": float("inf")}[norm]
    for _ in range(20):
        x = torch.rand(12, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: model.double()(v[None])[0], x)
        assert float(torch.linalg.matrix_norm(jac, ord=p)) <= bound
    linear = Normalized(torch.nn.Sequential(torch.nn.Linear(12, 3, bias=False)), VALUES, SHAPE)
    weight = linear.model[0].weight.detach().double()
    exact = float(torch.linalg.matrix_norm(weight * linear.scale.double(), ord=p))
    value = t.upper_bound(linear, norm, "trivial").value
    assert exact <= value <= exact * (1 + 1e-9)


def test_penalty_estimate_includes_the_normalisation() -> None:
    model, inner = small_model(bias=False)
    inner_log = float(TrivialBoundEstimator(inner, "inf")().detach())
    assert float(TrivialBoundEstimator(model, "inf")().detach()) == pytest.approx(
        inner_log + torch.log(torch.tensor(8.0)).item()
    )
    assert model.lipschitz("2") == 8.0


def splits(n: int = 60) -> DatasetSplits:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 12, generator=generator)
    y = (x[:, :4].sum(1) > x[:, 4:8].sum(1)).long() + (x[:, 8:].sum(1) > 2.5).long()
    return DatasetSplits(x, y, x[:20], y[:20], num_classes=3, input_shape=SHAPE)


def test_fit_checkpoint_and_certify_in_raw_units(tmp_path: Path) -> None:
    data = splits()
    spec = t.ModelSpec(input_dim=12, widths=(8,), num_classes=3, activation="abs", bias=True)
    config = TrainConfig(epochs=2, batch_size=16)
    result = fit("tightlip", spec, config, data.train_x, data.train_y, out_dir=tmp_path,
                 normalization=VALUES, input_shape=SHAPE, progress=False)
    assert isinstance(result.model, Normalized)
    saved = load_checkpoint(tmp_path)
    assert saved.config["model"]["kind"] == "normalized"
    assert isinstance(saved.model, Normalized)
    torch.testing.assert_close(saved.model(data.test_x), result.model(data.test_x))
    metrics = evaluate(saved.model, "2", data, EvalConfig(radii=(0.05,), pgd_steps=5,
                       attack_limit=20, lower_seconds=0.5, lower_starts=8))
    assert metrics["lipschitz_lower"] <= metrics["lipschitz_upper"]
    # the bound is of the raw-input network: with 2 ≤ 1/σ_c ≤ 8, ‖W₁D‖ lies in [2, 8]·‖W₁‖
    inner = t.upper_bound(saved.model.model, "2", "trivial").value
    assert metrics["lipschitz_upper"] <= inner * 8.0 * (1 + 1e-9)
    assert metrics["lipschitz_upper"] > inner


def test_methods_that_read_their_own_class_refuse_normalisation() -> None:
    data = splits(20)
    spec = t.ModelSpec(input_dim=12, widths=(8,), num_classes=3)
    for method in ("sandwich", "local-lip"):
        with pytest.raises(MethodNotApplicableError, match="does not accept an input normal"):
            fit(method, spec, TrainConfig(epochs=1), data.train_x, data.train_y,
                normalization=VALUES, input_shape=SHAPE, progress=False)
