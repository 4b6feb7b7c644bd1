"""Soundness of the bounds against each other, and strength of the lower-bound search.

For every network ``lower ≤ Lip ≤ upper``. The tests check the chain of inequalities that can be
computed:

* ``gradient`` / ``sampled`` lower bounds and secant ratios ``‖f(x) − f(y)‖/‖x − y‖`` never exceed
  the trivial upper bound (random networks of every activation, norm, depth, with/without bias);
* on tiny piecewise-linear networks, ``lower ≤ exact_regions ≤ trivial`` where ``exact_regions``
  enumerates the linear regions;
* ground truths: ReLU networks with non-negative bias-free weights have ``Lip_p = ‖W_L⋯W_1‖_p``
  (every unit is active on the positive orthant, and ``‖·‖_p`` is monotone on non-negative
  matrices, so no other pattern does better), and "planted" networks whose trivial bound is
  attained at a hidden point;
* strength: the gradient search reaches the exact value on one-hidden-layer bias-free networks
  and the trivial bound on the planted networks.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tightlip import lower_bound, upper_bound
from tightlip.bounds import MethodNotApplicableError
from tightlip.bounds.exact import enumerate_regions, exact_lipschitz_by_regions
from tightlip.bounds.lower import jacobian_operator_norm
from tightlip.layers import make_activation
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NORMS, NormName, operator_norm, vector_norm

ALL_ACTIVATIONS = ["abs", "crelu", "relu", "maxmin", "sincos", "sinpair", "tanh"]
PL_ACTIVATIONS = ["abs", "crelu", "relu", "maxmin"]

# a small search: the properties below must hold for any search effort
QUICK = {"steps": 30, "num_random": 8, "screen": 512, "refine_steps": 10, "search_rounds": 3}
# the search effort the strength tests rely on (still well under a second per call)
STRONG = {"steps": 40, "num_random": 16, "screen": 4096, "refine_steps": 15, "search_rounds": 4}

SETTINGS = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def random_chain(
    dims: list[int], activation: str, bias: bool, seed: int, nonnegative: bool = False
) -> LayerChain:
    """``dims[0] → … → dims[-1]`` with Gaussian weights (std 1/√fan-in) and biases."""
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    fan_in = dims[0]
    for index, width in enumerate(dims[1:]):
        linear = nn.Linear(fan_in, width, bias=bias).double()
        with torch.no_grad():
            weight = torch.randn(width, fan_in, generator=generator, dtype=torch.float64)
            linear.weight.copy_((weight.abs() if nonnegative else weight) / math.sqrt(fan_in))
            if bias:
                linear.bias.copy_(torch.randn(width, generator=generator, dtype=torch.float64))
        layers.append(linear)
        if index < len(dims) - 2:
            act = make_activation(activation)
            layers.append(act)
            fan_in = act.out_features(width)
    return to_chain(nn.Sequential(*layers))


@st.composite
def networks(
    draw: st.DrawFn,
    activations: list[str],
    depths: tuple[int, int] = (2, 4),
    widths: tuple[int, ...] = (2, 4, 6, 8),
    input_dims: tuple[int, int] = (1, 6),
    bias: bool | None = None,
) -> LayerChain:
    depth = draw(st.integers(*depths))  # number of linear layers
    dims = [draw(st.integers(*input_dims))]
    dims += [draw(st.sampled_from(widths)) for _ in range(depth - 1)]
    dims.append(draw(st.integers(1, 4)))
    return random_chain(
        dims,
        draw(st.sampled_from(activations)),
        draw(st.booleans()) if bias is None else bias,
        draw(st.integers(0, 2**31 - 1)),
    )


norms = st.sampled_from(NORMS)


# --------------------------------------------------------------------------------------------
# Lower bounds never exceed the trivial upper bound
# --------------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=30)
@given(chain=networks(ALL_ACTIVATIONS), norm=norms, seed=st.integers(0, 1000))
def test_lower_bounds_below_trivial_upper_bound(
    chain: LayerChain, norm: NormName, seed: int
) -> None:
    upper = upper_bound(chain, norm, "trivial")
    lower = lower_bound(chain, norm, "gradient", seed=seed, **QUICK)
    sampled = lower_bound(chain, norm, "sampled", num_random=16, seed=seed)
    assert lower.side == "lower" and lower.sound and lower.seconds > 0
    assert 0.0 <= sampled.value <= upper.value
    assert lower.value <= upper.value, (lower.value, upper.value)
    # the search starts from random points, so it is at least as good as their best
    assert lower.value >= lower.details["sampled_value"] * (1 - 1e-5)
    # secant ratios of random pairs, evaluated in float64
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, chain.input_dim, generator=generator, dtype=torch.float64)
    y = x + torch.randn(x.shape, generator=generator, dtype=torch.float64) * torch.logspace(
        -4, 1, 256, dtype=torch.float64
    ).unsqueeze(-1)
    with torch.no_grad():
        ratios = vector_norm(chain(x) - chain(y), norm) / vector_norm(x - y, norm)
    assert float(ratios.max()) <= upper.value * (1 + 1e-9)


# --------------------------------------------------------------------------------------------
# Exact constants of tiny PL networks
# --------------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=20)
@given(
    chain=networks(PL_ACTIVATIONS, depths=(2, 3), widths=(2, 4), input_dims=(1, 3)),
    norm=norms,
)
def test_exact_regions_between_lower_and_upper(chain: LayerChain, norm: NormName) -> None:
    exact = lower_bound(chain, norm, "exact_regions")
    upper = upper_bound(chain, norm, "trivial")
    lower = lower_bound(chain, norm, "gradient", **QUICK)
    assert exact.side == "exact" and exact.details["regions"] >= 1
    assert exact.details["verified_value"] <= exact.value
    assert lower.value <= exact.value * (1 + 1e-9)
    assert exact.value <= upper.value
    # every region's Jacobian really is the Jacobian at its interior point
    for region in enumerate_regions(chain).regions[:20]:
        if region.verified:
            at_witness = jacobian_operator_norm(chain, region.witness.unsqueeze(0), norm)
            assert float(at_witness) == pytest.approx(
                operator_norm(region.jacobian, norm), rel=1e-9
            )


@settings(SETTINGS, max_examples=20)
@given(
    chain=networks(PL_ACTIVATIONS, depths=(2, 2), widths=(2, 4, 6), input_dims=(1, 3), bias=False),
    norm=norms,
)
def test_gradient_search_reaches_exact_value(chain: LayerChain, norm: NormName) -> None:
    """One hidden layer, no bias: the search finds the best region (measured: always)."""
    exact = exact_lipschitz_by_regions(chain, norm)
    lower = lower_bound(chain, norm, "gradient", **STRONG)
    assert lower.value == pytest.approx(exact, rel=1e-2)


@pytest.mark.parametrize("norm", ["1", "inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_layer_sign_search_is_sound_and_helps(norm: NormName, seed: int) -> None:
    """Abs, bias-free, W₁ onto: re-chosen first-layer signs stay ≤ the exact constant (regions)
    and never lose against the search without them."""
    chain = random_chain([6, 3, 3, 3], "abs", bias=False, seed=seed)
    exact = exact_lipschitz_by_regions(chain, norm)
    weak = {"steps": 5, "num_random": 2, "screen": 4, "refine_steps": 0, "search_rounds": 0}
    without = lower_bound(chain, norm, "gradient", sign_search=False, **weak).value
    with_signs = lower_bound(chain, norm, "gradient", sign_points=256, **weak)
    assert with_signs.details["sign_search_value"] is not None
    assert without <= with_signs.value <= exact * (1 + 1e-9)
    assert with_signs.value == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dims", [[3, 4, 4, 2], [2, 6, 3], [4, 3, 3, 3, 2]])
def test_nonnegative_relu_ground_truth(dims: list[int], norm: NormName) -> None:
    chain = random_chain(dims, "relu", bias=False, seed=sum(dims), nonnegative=True)
    product = chain.weights[0]
    for weight in chain.weights[1:]:
        product = weight @ product
    truth = operator_norm(product, norm)
    assert exact_lipschitz_by_regions(chain, norm) == pytest.approx(truth, rel=1e-12)
    assert lower_bound(chain, norm, "gradient", **QUICK).value == pytest.approx(truth, rel=1e-8)
    assert upper_bound(chain, norm).value >= truth


def test_exact_regions_brute_force_sampling_agrees() -> None:
    """Dense sampling of ‖J(x)‖ on a 2-D input never beats the enumeration, and nearly meets it."""
    chain = random_chain([2, 4, 4, 2], "crelu", bias=True, seed=7)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 2, generator=generator, dtype=torch.float64)
    x = x * torch.logspace(-1, 2, 20000, dtype=torch.float64).unsqueeze(-1)
    for norm in NORMS:
        exact = exact_lipschitz_by_regions(chain, norm)
        sampled = float(jacobian_operator_norm(chain, x, norm).max())
        assert sampled <= exact * (1 + 1e-12)
        assert sampled >= 0.95 * exact


def test_exact_regions_not_applicable() -> None:
    with pytest.raises(MethodNotApplicableError, match="piecewise-linear"):
        lower_bound(random_chain([2, 4, 2], "sincos", False, 0), "2", "exact_regions")
    with pytest.raises(MethodNotApplicableError, match="input dimension"):
        lower_bound(random_chain([20, 4, 2], "relu", False, 0), "2", "exact_regions")
    with pytest.raises(MethodNotApplicableError, match="hidden units"):
        lower_bound(random_chain([2, 16, 16, 2], "relu", False, 0), "2", "exact_regions")


# --------------------------------------------------------------------------------------------
# Planted networks: the trivial bound is attained at a hidden point
# --------------------------------------------------------------------------------------------


def planted_chain(activation: str, dims: list[int], seed: int = 0, rest: float = 0.5) -> LayerChain:
    """Layers with ``σ_max = 1`` (other singular values ``rest``), aligned through σ at x*.

    With ``z_k*`` the pre-activations at a random ``x*`` and ``u_k`` the top left singular
    vector of ``W_k``, the top right singular vector of ``W_{k+1}`` is set to ``D_k u_k`` with
    ``D_k = J_σ(z_k*)`` (unit when σ saturates ℓ2). Then ``J(x*) v₁ = u_L`` for the top right
    singular vector ``v₁`` of ``W₁``: ``‖J(x*)‖₂ = 1 =`` the trivial bound, so ``Lip₂ = 1``.
    """
    generator = torch.Generator().manual_seed(seed)

    def orthogonal(n: int, first: torch.Tensor | None) -> torch.Tensor:
        m = torch.randn(n, n, generator=generator, dtype=torch.float64)
        if first is not None:
            m[:, 0] = first
        q, r = torch.linalg.qr(m)
        q = q * torch.sign(torch.diagonal(r))
        return q

    h = torch.randn(dims[0], generator=generator, dtype=torch.float64)
    layers: list[nn.Module] = []
    fan_in, first = dims[0], None
    for index, width in enumerate(dims[1:]):
        v, u = orthogonal(fan_in, first), orthogonal(width, None)
        rank = min(width, fan_in)
        spectrum = torch.full((rank,), rest, dtype=torch.float64)
        spectrum[0] = 1.0
        weight = u[:, :rank] @ torch.diag(spectrum) @ v[:, :rank].T
        linear = nn.Linear(fan_in, width, bias=False).double()
        with torch.no_grad():
            linear.weight.copy_(weight)
        layers.append(linear)
        if index < len(dims) - 2:
            act = make_activation(activation)
            layers.append(act)
            z = weight @ h
            first = torch.autograd.functional.jacobian(act, z) @ u[:, 0]
            h, fan_in = act(z), act.out_features(width)
    return to_chain(nn.Sequential(*layers))


@pytest.mark.parametrize("activation", ["abs", "crelu", "sincos", "maxmin"])
def test_gradient_search_finds_planted_tight_point(activation: str) -> None:
    chain = planted_chain(activation, [16, 12, 12, 4])
    upper = upper_bound(chain, "2").value
    assert upper == pytest.approx(1.0, rel=1e-9)
    lower = lower_bound(chain, "2", "gradient", **STRONG)
    if activation != "maxmin":  # (random points already find MaxMin's)
        assert lower.details["sampled_value"] < 0.95  # random points are not enough ...
    assert lower.value >= 0.99  # ... the search is (measured 0.9985-1.0 over 5 seeds)


# --------------------------------------------------------------------------------------------
# The Jacobian norm itself
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sincos", "crelu", "tanh"])
def test_jacobian_operator_norm_matches_autograd(activation: str) -> None:
    chain = random_chain([5, 6, 6, 3], activation, bias=True, seed=3)
    x = torch.randn(4, 5, dtype=torch.float64)
    for norm in NORMS:
        values = jacobian_operator_norm(chain, x, norm)
        for b in range(4):
            jac = torch.autograd.functional.jacobian(lambda t: chain(t.unsqueeze(0))[0], x[b])
            assert float(values[b]) == pytest.approx(operator_norm(jac, norm), rel=1e-10)


def test_power_iteration_path_is_a_lower_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    import tightlip.bounds.lower.jacobians as lower_module

    chain = random_chain([7, 9, 8], "sincos", bias=False, seed=5)
    x = torch.randn(3, 7, dtype=torch.float64)
    exact = jacobian_operator_norm(chain, x, "2")
    monkeypatch.setattr(lower_module, "FULL_JACOBIAN_LIMIT", 2)
    power = jacobian_operator_norm(chain, x, "2", iterations=500)
    assert torch.all(power <= exact * (1 + 1e-12))
    assert torch.allclose(power, exact, rtol=1e-6)


def test_gradient_accepts_image_starts_and_time_limit() -> None:
    chain = random_chain([16, 12, 12, 4], "sincos", bias=False, seed=1)
    images = torch.rand(50, 1, 4, 4)
    certificate = lower_bound(chain, "2", "gradient", starts=images, time_limit=1.0, steps=10_000)
    assert certificate.seconds < 3.0
    assert certificate.details["data_starts"] == 32
    assert 0 < certificate.value <= upper_bound(chain, "2").value
    assert len(certificate.details["witness"]) == 16
