"""Layers and norms: the Lipschitz constants the activations claim, and the certified norms.

For an activation σ the claims are checked against its Jacobian computed by autograd:

* saturation: for every norm in ``act.saturating_norms``, ``‖J_σ(z)‖_{p→p} = Lip_p(σ)`` at
  every sampled z (that is what makes σ "transparent" to a tight trivial bound);
* soundness: ``‖J_σ(z)‖_{p→p} ≤ Lip_p(σ)`` at every sampled z, in every norm;
* tightness: the sup over samples reaches ``Lip_p(σ)`` (the constant is not loose), e.g. SinCos
  in ℓ1 reaches ``|cos z| + |sin z| = √2`` at ``z = π/4``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tightlip.layers import ACTIVATIONS, Activation, Linear, make_activation
from tightlip.model import AffineStep, ModelShapeError, UnsupportedLayerError, to_chain
from tightlip.norms import (
    NORMS,
    NormName,
    certified_operator_norm,
    gram_iteration_upper_bound,
    operator_norm,
)

WIDTH = 4  # even, so that MaxMin applies


def _jacobian(act: Activation, z: torch.Tensor) -> torch.Tensor:
    """The ``(K·d) × d`` Jacobian of ``act`` at the vector ``z`` (float64)."""
    return torch.autograd.functional.jacobian(act, z)


def _sample_points(generator: torch.Generator) -> list[torch.Tensor]:
    """Random points at several scales plus the special points where the sups are attained."""
    points = [
        scale * torch.randn(WIDTH, generator=generator, dtype=torch.float64)
        for scale in (0.1, 1.0, 3.0, 30.0)
        for _ in range(10)
    ]
    for value in (0.0, math.pi / 4, math.pi / 2, math.pi, 1.0, -1.0):
        points.append(torch.full((WIDTH,), value, dtype=torch.float64))
    # distinct entries (no ties for MaxMin), some exactly at the special values
    points.append(torch.tensor([math.pi / 4, 0.5, -2.0, math.pi], dtype=torch.float64))
    return points


def _operator_norms(jac: torch.Tensor) -> dict[NormName, float]:
    return {norm: operator_norm(jac, norm) for norm in NORMS}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_jacobian_norms_match_claims(name: str) -> None:
    act = make_activation(name)
    generator = torch.Generator().manual_seed(1)
    sup: dict[NormName, float] = dict.fromkeys(NORMS, 0.0)
    for z in _sample_points(generator):
        if name == "maxmin" and torch.any(z[0::2] == z[1::2]):
            continue  # a tie: the Jacobian is not defined there
        jac = _jacobian(act, z)
        assert jac.shape == (act.out_features(WIDTH), WIDTH)
        for norm, value in _operator_norms(jac).items():
            lip = act.lipschitz(norm)
            assert value <= lip * (1 + 1e-12), f"{name}: ‖J‖_{norm} = {value} > Lip = {lip} at {z}"
            on_kink = act.piecewise_linear and bool(torch.any(z == 0))  # measure zero
            if norm in act.saturating_norms and not on_kink:
                assert value == pytest.approx(lip, abs=1e-6), f"{name} does not saturate ℓ{norm}"
            sup[norm] = max(sup[norm], value)
    for norm in NORMS:
        assert sup[norm] == pytest.approx(act.lipschitz(norm), rel=1e-6), (
            f"{name}: sup of ‖J‖_{norm} over samples is {sup[norm]}, "
            f"claimed Lipschitz constant {act.lipschitz(norm)}"
        )


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_saturating_norms_give_norm_one(name: str) -> None:
    """Every saturating polyactivation in tightlip is an isometry-like map with ‖J‖ = 1."""
    act = make_activation(name)
    generator = torch.Generator().manual_seed(2)
    for z in _sample_points(generator)[:40]:  # random points: no kinks, no ties
        jac = _jacobian(act, z)
        for norm in act.saturating_norms:
            assert operator_norm(jac, norm) == pytest.approx(1.0, abs=1e-6)
    for norm in NORMS:
        assert act.saturates(norm) == (norm in act.saturating_norms)


def test_sincos_l1_supremum_is_attained_at_pi_over_4() -> None:
    act = make_activation("sincos")
    z = torch.full((WIDTH,), math.pi / 4, dtype=torch.float64)
    assert operator_norm(_jacobian(act, z), "1") == pytest.approx(math.sqrt(2.0), abs=1e-12)
    assert act.lipschitz("l1") == pytest.approx(math.sqrt(2.0))
    assert act.saturates(2) and not act.saturates(1)


def test_sinpair_l2_supremum_is_attained_at_multiples_of_pi() -> None:
    act = make_activation("sinpair")
    z = torch.tensor([0.0, math.pi, -math.pi, 2 * math.pi], dtype=torch.float64)
    assert operator_norm(_jacobian(act, z), "2") == pytest.approx(1.0, abs=1e-12)
    z = torch.full((WIDTH,), math.pi / 2, dtype=torch.float64)
    assert operator_norm(_jacobian(act, z), "2") == pytest.approx(math.sqrt(0.5), abs=1e-12)


@pytest.mark.parametrize("name", ["abs", "crelu", "relu", "maxmin"])
def test_smoothed_surrogates_converge(name: str) -> None:
    act = make_activation(name)
    z = torch.tensor([1.5, -0.7, 0.3, -2.0], dtype=torch.float64)
    assert act.piecewise_linear
    for temperature, tolerance in ((1e-2, 2e-2), (1e-4, 2e-4)):
        gap = (act.smoothed(temperature)(z) - act(z)).abs().max()
        assert gap <= tolerance


# --------------------------------------------------------------------------------------------
# Certified operator norms
# --------------------------------------------------------------------------------------------


def _test_matrices() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    mats = [
        torch.randn(r, c, generator=generator, dtype=torch.float64)
        for r, c in [(5, 3), (3, 7), (40, 40), (64, 17)]
    ]
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=generator, dtype=torch.float64))
    mats.append(q)  # all singular values 1: the tightest case for a margin
    mats.append(torch.randn(20, 30, generator=generator).float())  # float32 input
    mats.append(torch.full((8, 8), 1.0 / 3.0, dtype=torch.float64))  # rank one, rounding-prone
    return mats


def _power_iteration(w: torch.Tensor, steps: int = 500) -> float:
    v = torch.ones(w.shape[1], dtype=torch.float64)
    for _ in range(steps):
        v = w.T @ (w @ v)
        v = v / v.norm()
    return float((w @ v).norm())


@pytest.mark.parametrize("index", range(7))
def test_certified_norm_dominates_exact_and_estimates(index: int) -> None:
    w = _test_matrices()[index]
    w64 = w.double()
    for norm in NORMS:
        certified = certified_operator_norm(w, norm)
        assert certified >= operator_norm(w, norm)
        if norm == "1":
            exact = max(math.fsum(abs(float(x)) for x in col) for col in w64.T)
        elif norm == "inf":
            exact = max(math.fsum(abs(float(x)) for x in row) for row in w64)
        else:
            exact = float(np.linalg.svd(w64.numpy(), compute_uv=False)[0])
        assert certified >= exact
        assert certified <= exact * (1 + 1e-10)  # and the margin is small
    sigma = float(np.linalg.svd(w64.numpy(), compute_uv=False)[0])
    power = _power_iteration(w64)
    gram = gram_iteration_upper_bound(w64, steps=10)
    # power iteration is a lower estimate, Gram iteration an upper bound (both up to rounding)
    assert power <= certified_operator_norm(w, "2")
    assert power <= sigma * (1 + 1e-12)
    assert gram >= sigma * (1 - 1e-12)
    assert gram <= sigma * 1.01  # 10 squarings: within rank^(1/1024) of σ_max


def test_certified_norm_rejects_nan_and_non_matrices() -> None:
    w = torch.randn(3, 3)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError):
        certified_operator_norm(w, "2")
    with pytest.raises(ValueError):
        certified_operator_norm(torch.randn(3), "1")


# --------------------------------------------------------------------------------------------
# Model conversion errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [nn.Conv2d(1, 2, 3), nn.BatchNorm1d(4), nn.GELU(), nn.LayerNorm(4)],
    ids=["conv2d", "batchnorm1d", "gelu", "layernorm"],
)
def test_to_chain_rejects_unsupported_layers(layer: nn.Module) -> None:
    model = nn.Sequential(nn.Linear(4, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match=type(layer).__name__):
        to_chain(model)


def test_nan_weights_raise_value_error() -> None:
    model = nn.Sequential(Linear(4, 3), make_activation("abs"), Linear(3, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        to_chain(model)
    with pytest.raises(ValueError):
        AffineStep(torch.tensor([[1.0, float("inf")]]))


def test_wrong_input_shape_raises_model_shape_error() -> None:
    chain = to_chain(nn.Sequential(Linear(6, 4), make_activation("sincos"), Linear(8, 3)))
    assert chain(torch.zeros(2, 6)).shape == (2, 3)
    assert chain(torch.zeros(2, 1, 2, 3)).shape == (2, 3)  # flattened like an image
    with pytest.raises(ModelShapeError):
        chain(torch.zeros(2, 5))
    with pytest.raises(ModelShapeError):
        chain(torch.zeros(2, 7))


def test_mismatched_layer_sizes_raise_model_shape_error() -> None:
    with pytest.raises(ModelShapeError):
        to_chain(nn.Sequential(nn.Linear(4, 3), make_activation("crelu"), nn.Linear(3, 2)))
