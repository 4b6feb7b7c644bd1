"""Verifiers: slope-restricted conversion, ECLipsE(-Fast), Syed–Hu family, LipSDP, MILP.

Small networks only (the whole file runs in well under a minute on 2 cores).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tightlip
from tightlip.bounds import MethodNotApplicableError, lower_bound, upper_bound
from tightlip.bounds.eclipse import compositional_bound, fast_chooser
from tightlip.bounds.portfolio import portfolio, upper_bound_or_trivial
from tightlip.bounds.slope import to_slope_network
from tightlip.model import ActivationStep, AffineStep, LayerChain

L2_METHODS = ("eclipse_fast", "eclipse", "syed_hu", "lipsdp")
SETTINGS = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def make_chain(
    dims: tuple[int, ...],
    seed: int,
    activation: type[nn.Module] = tightlip.ReLU,
    bias: bool = False,
    nonnegative: bool = False,
) -> LayerChain:
    rng = np.random.default_rng(seed)
    steps: list[AffineStep | ActivationStep] = []
    fan_in = dims[0]
    for i, width in enumerate(dims[1:]):
        w = rng.standard_normal((width, fan_in)) / math.sqrt(fan_in)
        if nonnegative:
            w = np.abs(w)
        b = torch.from_numpy(rng.standard_normal(width) * 0.5) if bias else None
        steps.append(AffineStep(torch.from_numpy(w), b, name=f"fc{i}"))
        if i < len(dims) - 2:
            act = activation()
            steps.append(ActivationStep(act, name=f"act{i}"))
            fan_in = act.out_features(width)
    return LayerChain(tuple(steps))


def sampled_lower(chain: LayerChain, norm: str, samples: int = 400, seed: int = 0) -> float:
    """max ‖J(x)‖ over random points (a valid lower bound on the Lipschitz constant)."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(samples, chain.input_dim, generator=gen, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(lambda x: chain(x[None])[0]))(xs)
    if norm == "2":
        values = torch.linalg.matrix_norm(jac, ord=2)
    elif norm == "inf":
        values = jac.abs().sum(dim=2).amax(dim=1)
    else:
        values = jac.abs().sum(dim=1).amax(dim=1)
    return float(values.max())


def product_norm(chain: LayerChain) -> float:
    prod = chain.weights[0]
    for w in chain.weights[1:]:
        prod = w @ prod
    return float(torch.linalg.matrix_norm(prod, ord=2))


# --------------------------------------------------------------------------------------------
# slope-restricted conversion
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "activation", [tightlip.ReLU, tightlip.Tanh, tightlip.Abs, tightlip.CReLU, tightlip.SinPair]
)
def test_slope_network_is_equivalent(activation: type[nn.Module]) -> None:
    chain = make_chain((4, 5, 3, 2), seed=1, activation=activation, bias=True)
    net = to_slope_network(chain)
    x = torch.randn(50, 4, dtype=torch.float64)
    expected = chain(x).numpy()
    np.testing.assert_allclose(net.forward(x.numpy()), expected, rtol=1e-12, atol=1e-12)
    for layer in net.activations:
        assert (layer.alpha, layer.beta) == (0.0, 1.0)


@pytest.mark.parametrize("activation", [tightlip.MaxMin, tightlip.SinCos])
@pytest.mark.parametrize("method", L2_METHODS)
def test_unsupported_activation_errors(activation: type[nn.Module], method: str) -> None:
    chain = make_chain((4, 6, 2), seed=0, activation=activation)
    with pytest.raises(MethodNotApplicableError, match="slope-restricted elementwise"):
        upper_bound(chain, "2", method)
    fallback = upper_bound_or_trivial(chain, "2", method)
    assert fallback.method == "trivial"
    assert any(note.startswith("fell back to trivial: ") for note in fallback.notes)
    assert fallback.value == upper_bound(chain, "2", "trivial").value


@pytest.mark.parametrize("method", L2_METHODS)
@pytest.mark.parametrize("norm", ["1", "inf"])
def test_l2_methods_refuse_other_norms(method: str, norm: str) -> None:
    with pytest.raises(MethodNotApplicableError, match="ℓ2"):
        upper_bound(make_chain((3, 4, 2), seed=0), norm, method)


def test_milp_refusals() -> None:
    with pytest.raises(MethodNotApplicableError, match="ℓ1 and ℓ∞"):
        lower_bound(make_chain((3, 4, 2), seed=0), "2", "milp")
    with pytest.raises(MethodNotApplicableError, match="piecewise-linear"):
        lower_bound(make_chain((3, 4, 2), seed=0, activation=tightlip.Tanh), "inf", "milp")
    with pytest.raises(MethodNotApplicableError, match="max_neurons"):
        lower_bound(make_chain((3, 40, 2), seed=0), "inf", "milp", max_neurons=10)


def test_lipsdp_size_cap() -> None:
    with pytest.raises(MethodNotApplicableError, match="max_size"):
        upper_bound(make_chain((10, 30, 30, 2), seed=0), "2", "lipsdp", max_size=20)


# --------------------------------------------------------------------------------------------
# ℓ2: soundness, ordering
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 10_000), depth=st.integers(2, 4))
def test_l2_exact_on_nonnegative_family(seed: int, depth: int) -> None:
    """Nonnegative bias-free ReLU nets: every unit is active for x > 0, Lip₂ = ‖W_L⋯W_1‖₂."""
    chain = make_chain((3,) + (5,) * (depth - 1) + (2,), seed=seed, nonnegative=True)
    exact = product_norm(chain)
    values = {m: upper_bound(chain, "2", m).value for m in (*L2_METHODS, "trivial")}
    for method, value in values.items():
        assert value >= exact * (1 - 1e-12), method
    # LipSDP-Neuron is exact on this family (BRIEF §2)
    assert values["lipsdp"] <= exact * (1 + 1e-4)


@SETTINGS
@given(seed=st.integers(0, 10_000), bias=st.booleans())
def test_l2_soundness_and_ordering(seed: int, bias: bool) -> None:
    chain = make_chain((4, 8, 8, 3), seed=seed, bias=bias)
    lower = sampled_lower(chain, "2")
    values = {m: upper_bound(chain, "2", m).value for m in (*L2_METHODS, "trivial")}
    for method, value in values.items():
        assert value >= lower, method
    tol = 1e-4
    assert values["lipsdp"] <= values["eclipse"] * (1 + tol)
    assert values["eclipse"] <= values["eclipse_fast"] * (1 + tol)
    assert values["eclipse_fast"] <= values["trivial"] * (1 + tol)
    assert values["syed_hu"] <= values["eclipse_fast"]


@pytest.mark.parametrize(
    "activation", [tightlip.Abs, tightlip.CReLU, tightlip.SinPair, tightlip.Tanh]
)
def test_l2_soundness_other_activations(activation: type[nn.Module]) -> None:
    """Sound on converted networks. (On CReLU/Abs/SinPair the duplicated rows hide the
    pairs' complementarity from the quadratic constraints, so these bounds may exceed the
    trivial one: only soundness is asserted.)"""
    chain = make_chain((3, 5, 4, 2), seed=3, activation=activation)
    lower = sampled_lower(chain, "2")
    for method in L2_METHODS:
        cert = upper_bound(chain, "2", method)
        assert cert.sound and cert.side == "upper"
        assert lower <= cert.value, method


def test_certificates_carry_layer_info() -> None:
    chain = make_chain((4, 6, 6, 2), seed=5)
    cert = upper_bound(chain, "2", "eclipse_fast")
    assert len(cert.layers) == 4  # two per hidden layer
    assert all(layer.value > 0 for layer in cert.layers)
    sh = upper_bound(chain, "2", "syed_hu")
    assert sh.details["members"]["fast"] == pytest.approx(cert.value, rel=1e-12)
    lip = upper_bound(chain, "2", "lipsdp")
    assert lip.details["solver_value"] == pytest.approx(lip.value, rel=1e-3)


def test_single_layer_is_the_spectral_norm() -> None:
    chain = make_chain((4, 3), seed=2)
    norm = float(torch.linalg.matrix_norm(chain.weights[0], ord=2))
    for method in L2_METHODS:
        assert upper_bound(chain, "2", method).value == pytest.approx(norm, rel=1e-12)


# --------------------------------------------------------------------------------------------
# reference implementation (eclipse-nn)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [(5, 8, 8, 3), (20, 30, 30, 30, 5), (30, 64, 10)])
def test_fast_matches_eclipse_nn(dims: tuple[int, ...]) -> None:
    eclipse_nn = pytest.importorskip("eclipse_nn")
    chain = make_chain(dims, seed=sum(dims), bias=True)
    weights = list(chain.weights)
    ref = float(
        eclipse_nn.ECLipsE_Fast(weights, [0.0] * (len(weights) - 1), [1.0] * (len(weights) - 1))
    )
    ours = upper_bound(chain, "2", "eclipse_fast").value
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours >= ref * (1 - 1e-12)  # margins only ever increase the value


def test_eclipse_matches_eclipse_nn_when_it_solves() -> None:
    eclipse_nn = pytest.importorskip("eclipse_nn")
    chain = make_chain((5, 8, 8, 3), seed=0)
    weights = list(chain.weights)
    ref, code = eclipse_nn.ECLipsE(weights, [0.0] * 2, [1.0] * 2)
    ours = upper_bound(chain, "2", "eclipse").value
    if code != 0:  # the package silently fell back to Fast: compare with LipSDP instead
        assert ours >= upper_bound(chain, "2", "lipsdp").value * (1 - 1e-4)
    else:
        assert ours == pytest.approx(float(ref), rel=1e-3)


# --------------------------------------------------------------------------------------------
# exact ℓ1 / ℓ∞ values by MILP
# --------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["1", "inf"]))
def test_milp_sandwich_bias_free(seed: int, norm: str) -> None:
    chain = make_chain((2, 5, 4, 2), seed=seed)
    exact = lower_bound(chain, norm, "milp", time_limit=20)
    assert exact.sound
    assert exact.side == "exact", exact.details
    assert exact.details["upper"] == pytest.approx(exact.value, rel=1e-5)
    assert sampled_lower(chain, norm, samples=2000) <= exact.value * (1 + 1e-9)
    assert exact.value <= upper_bound(chain, norm, "trivial").value


@pytest.mark.parametrize("activation", [tightlip.Abs, tightlip.CReLU])
def test_milp_through_conversion(activation: type[nn.Module]) -> None:
    chain = make_chain((2, 3, 2), seed=4, activation=activation)
    for norm in ("1", "inf"):
        exact = lower_bound(chain, norm, "milp", time_limit=20)
        assert exact.side == "exact"
        sampled = sampled_lower(chain, norm, samples=2000)
        assert sampled <= exact.value * (1 + 1e-9)
        assert exact.value <= sampled * (1 + 1e-3)  # few regions: sampling finds the max


def test_milp_biased_network_is_a_lower_bound_on_the_box() -> None:
    chain = make_chain((2, 4, 3, 2), seed=7, bias=True)
    cert = lower_bound(chain, "inf", "milp", time_limit=20)
    assert cert.side == "lower"
    assert cert.details["exact_on_domain"]
    assert any("box" in note for note in cert.notes)
    # the witness is a real point of the box whose Jacobian has the reported norm
    x = torch.tensor(cert.details["witness"], dtype=torch.float64)
    jac = torch.func.jacrev(lambda v: chain(v[None])[0])(x)
    assert float(jac.abs().sum(dim=1).max()) == pytest.approx(cert.value, rel=1e-9)
    assert cert.value <= upper_bound(chain, "inf", "trivial").value


def test_l2_upper_bounds_above_milp_via_norm_equivalence() -> None:
    """‖J‖₂ ≥ ‖J‖_∞ / √m for m outputs: every ℓ2 upper bound × √m must exceed the ℓ∞ value."""
    chain = make_chain((2, 5, 4, 2), seed=11)
    exact_inf = lower_bound(chain, "inf", "milp", time_limit=20).value
    for method in L2_METHODS:
        # ‖J‖_∞ ≤ √n ‖J‖₂ with n = 2 inputs
        assert upper_bound(chain, "2", method).value * math.sqrt(2) >= exact_inf


# --------------------------------------------------------------------------------------------
# portfolio
# --------------------------------------------------------------------------------------------


def test_portfolio_runs_everything_and_records_skips() -> None:
    chain = make_chain((3, 5, 2), seed=0)
    certs = portfolio(chain, "inf")
    by_method = {(c.side == "upper", c.method): c for c in certs}
    assert by_method[(True, "eclipse-fast")].details["skipped"]
    assert "ℓ2" in by_method[(True, "eclipse-fast")].details["reason"]
    trivial = by_method[(True, "trivial")]
    assert trivial.details["ratio_to_best_lower"] >= 1.0
    assert by_method[(False, "milp")].side == "exact"
    certs2 = portfolio(chain, "2", methods=["trivial", "eclipse_fast"], lower_methods=["milp"])
    assert [c.method for c in certs2] == ["trivial", "eclipse-fast", "milp"]
    assert certs2[-1].details["skipped"]


def test_fast_recursion_certifies_tiny_and_dead_units() -> None:
    """A dead hidden unit (zero row) must not break the certified recursion."""
    w1 = torch.tensor([[1.0, 0.5], [0.0, 0.0], [-0.3, 0.8]], dtype=torch.float64)
    w2 = torch.tensor([[0.7, 0.2, -1.0]], dtype=torch.float64)
    chain = LayerChain((AffineStep(w1), ActivationStep(tightlip.ReLU()), AffineStep(w2)))
    net = to_slope_network(chain)
    result = compositional_bound(net, fast_chooser)
    assert math.isfinite(result.value)
    for method in L2_METHODS:
        assert upper_bound(chain, "2", method).value >= sampled_lower(chain, "2")


def test_a_network_with_an_all_zero_layer_is_bounded_by_every_method() -> None:
    """Audit (issue 21): a pruned layer crashed ECLipsE (divide by zero) and cvxpy; the network
    is constant, so every upper bound is 0 and says why."""
    import tightlip as t
    from tightlip.bounds import upper_methods

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    )
    with torch.no_grad():
        model[2].weight.zero_()
    for method in upper_methods():
        certificate = t.upper_bound(model, "2", method)
        assert certificate.value == 0.0 and certificate.sound, method
        assert "exactly zero" in certificate.notes[0]


def test_check_lower_accepts_a_zero_certificate_whose_witness_is_none() -> None:
    """Audit (issue 21): a zero-valued MILP lower certificate with ``witness: None`` was refused."""
    from tightlip.bounds.check import check_lower
    from tightlip.certificate import Certificate

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    zero = Certificate(value=0.0, method="milp", norm="2", side="lower", sound=True,
                       details={"witness": None})
    assert check_lower(model, zero) == 0.0
