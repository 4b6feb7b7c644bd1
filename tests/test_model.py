"""LayerChain over operators, and merged linear layers that stay sound (issue 10).

``to_chain`` merges consecutive linear layers. Under cancellation the float64 product ``W₂W₁``
can be far below the true product, even exactly 0: the bounds must still be above the true
constant, which is computed here exactly with ``fractions.Fraction``.
"""

from __future__ import annotations

import math

import pytest
import rational
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tightlip.bounds import lower_bound, lower_methods, upper_bound, upper_methods
from tightlip.errors import MethodNotApplicableError, ModelShapeError
from tightlip.layers import ReLU
from tightlip.model import ActivationStep, AffineStep, LayerChain, to_chain
from tightlip.norms import NORMS
from tightlip.operators import Dense, Product


def _linear_net(weights: list[torch.Tensor]) -> nn.Sequential:
    layers = []
    for w in weights:
        layer = nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
        with torch.no_grad():
            layer.weight.copy_(w)
        layers.append(layer)
    return nn.Sequential(*layers)


def _cancelling_pair(dtype: torch.dtype) -> list[torch.Tensor]:
    """``W₂W₁ = a + δ − a`` with ``fl(a + δ) = a``: exact products 2⁻⁶⁰ and 2⁻²³ (issue 10)."""
    if dtype == torch.float64:
        first = torch.tensor([[1.0], [2.0**-60], [1.0]], dtype=dtype)  # exact product 8.7e-19
    else:
        first = torch.tensor([[2.0**40], [2.0**-23], [2.0**40]], dtype=dtype)  # 1.2e-7
    second = torch.tensor([[1.0, 1.0, -1.0]], dtype=dtype)
    return [first, second]


def _check_every_method(
    model: nn.Module, weights: list[torch.Tensor], lowers: tuple[str, ...] | None = None
) -> None:
    """Every registered upper bound ≥ the exact ‖W_k⋯W_1‖ ≥ every lower bound, in all norms."""
    exact = rational.product(weights)
    for norm in NORMS:
        for method in upper_methods():
            try:
                cert = upper_bound(model, norm, method)
            except MethodNotApplicableError:
                continue
            assert rational.norm_at_most(exact, cert.value, norm), (method, norm, cert.value)
        for method in lower_methods() if lowers is None else lowers:
            try:
                cert = lower_bound(model, norm, method)
            except MethodNotApplicableError as exc:
                assert "merge" in str(exc) or "ℓ" in str(exc) or "needs" in str(exc), exc
                continue
            assert rational.norm_at_least(exact, cert.value, norm), (method, norm, cert.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cancelling_merge_keeps_every_bound_sound(dtype: torch.dtype) -> None:
    weights = _cancelling_pair(dtype)
    exact = rational.product(weights)[0][0]
    assert 0 < exact < 2e-7
    model = _linear_net(weights)
    chain = to_chain(model)
    assert chain.depth == 1 and not chain.exact
    assert float(chain.weights[0].abs().max()) < exact  # the float64 product lost it
    _check_every_method(model, weights)
    factors = (float(torch.linalg.matrix_norm(w.double(), 2)) for w in weights)
    trivial = upper_bound(model, "2", "trivial").value
    assert trivial < 1e-9 * math.prod(factors)  # the error term won, not ‖W₂‖‖W₁‖


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    exponent=st.integers(-70, 0),
    float32=st.booleans(),
    sizes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
)
def test_random_merged_products_are_bounded(
    seed: int, exponent: int, float32: bool, sizes: list[int]
) -> None:
    n, k, m = sizes
    dtype = torch.float32 if float32 else torch.float64
    g = torch.Generator().manual_seed(seed)
    a, c = (torch.randn(k, n, generator=g, dtype=torch.float64) for _ in range(2))
    b, b2 = (torch.randn(m, k, generator=g, dtype=torch.float64) for _ in range(2))
    first = torch.cat([a * 2.0**20, c * 2.0**exponent, a * 2.0**20]).to(dtype)
    second = torch.cat([b, b2, -b], dim=1).to(dtype)
    third = torch.randn(2, m, generator=g, dtype=torch.float64).to(dtype)
    weights = [first, second, third]
    _check_every_method(_linear_net(weights), weights, lowers=("sampled",))


def test_merged_chain_is_evaluated_through_its_factors() -> None:
    weights = _cancelling_pair(torch.float64)
    chain = to_chain(_linear_net(weights))
    step = chain.steps[0]
    assert isinstance(step.operator, Product) and len(step.operator.factors) == 2
    x = torch.tensor([[3.0]], dtype=torch.float64)
    # (1·3 + 2⁻⁶⁰·3) − 3 evaluated layer by layer is also cancelled, but the forward pass never
    # uses the rounded product: it agrees with the original model
    assert torch.equal(chain(x), _linear_net(weights).double()(x))
    assert step.error_bound("2") > 0 and chain.jacobian_error_bound("2") >= step.error_bound("2")


def test_exact_methods_refuse_merged_layers_and_sdp_methods_add_the_error() -> None:
    generator = torch.Generator().manual_seed(3)
    w = [torch.randn(4, 2, generator=generator, dtype=torch.float64) for _ in range(1)]
    w += [torch.randn(3, 4, generator=generator, dtype=torch.float64)]
    w += [torch.randn(2, 3, generator=generator, dtype=torch.float64)]
    model = nn.Sequential(*_linear_net(w[:2]), nn.ReLU(), *_linear_net(w[2:]))
    with pytest.raises(MethodNotApplicableError, match="0\\+1 is a merge"):
        lower_bound(model, "2", "exact-regions")
    cert = upper_bound(model, "2", "eclipse-fast")
    assert cert.details["merged_layer_error"] > 0 and "merged" in cert.notes[-1]
    assert cert.value >= lower_bound(model, "2", "gradient").value


def test_affine_step_accepts_a_tensor_or_an_operator() -> None:
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    step = AffineStep(w, torch.ones(2), name="fc")
    assert isinstance(step.operator, Dense) and step.exact and step.weight.dtype == torch.float64
    assert step.error_bound("inf") == 0.0 and torch.equal(step.weight_error(), torch.zeros(2, 2))
    same = AffineStep(Dense(w), torch.ones(2))
    x = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(step(x), same(x))
    merged = step.then(same)
    assert not merged.exact and merged.name == "fc+linear"
    torch.testing.assert_close(merged(x), same(step(x)), rtol=1e-14, atol=1e-14)
    chain = LayerChain((step, ActivationStep(ReLU()), same))
    assert chain.exact and chain.jacobian_error_bound("2") == 0.0
    with pytest.raises(ModelShapeError):  # the structure check still applies
        LayerChain((step, same))
    with pytest.raises(TypeError):
        AffineStep("not a matrix")  # type: ignore[arg-type]
