"""The linear-operator protocol: adjointness, certified norms, dense matrices and their errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
import rational
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tightlip.errors import MethodNotApplicableError, ModelShapeError
from tightlip.norms import NORMS, certified_nonnegative_norm, class_pair_distances
from tightlip.operators import Dense, LinearOperator, Product


def _random(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(
        rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _operators() -> list[LinearOperator]:
    a, b, c = _random(5, 3, 1), _random(4, 5, 2), _random(2, 4, 3)
    return [
        Dense(a),
        Product((Dense(a), Dense(b))),
        Product((Product((Dense(a), Dense(b))), Dense(c))),
    ]


@pytest.mark.parametrize("op", _operators(), ids=["dense", "product", "nested-product"])
def test_adjointness_and_protocol(op: LinearOperator) -> None:
    """⟨A x, g⟩ = ⟨x, Aᵀ g⟩, and apply agrees with the dense matrix."""
    assert isinstance(op, LinearOperator)
    x = torch.randn(7, op.in_features, dtype=torch.float64)
    g = torch.randn(7, op.out_features, dtype=torch.float64)
    ax, atg = op.apply(x), op.apply_transpose(g)
    assert ax.shape == (7, op.out_features) and atg.shape == (7, op.in_features)
    torch.testing.assert_close((ax * g).sum(-1), (x * atg).sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ax, x @ op.dense().T, rtol=1e-12, atol=1e-12)
    assert op.apply(x.float()).dtype == torch.float32


@pytest.mark.parametrize("op", _operators(), ids=["dense", "product", "nested-product"])
@pytest.mark.parametrize("norm", NORMS)
def test_certified_norm_is_above_the_exact_norm(op: LinearOperator, norm: str) -> None:
    factors = [f.dense() for f in op.factors] if isinstance(op, Product) else [op.dense()]
    exact = rational.product(factors)
    bound = op.certified_norm(norm)  # type: ignore[arg-type]
    assert rational.norm_at_most(exact, bound, norm)
    # and not absurdly loose: within 1e-9 relative of the float norm of the dense matrix
    float_norm = float(
        torch.linalg.matrix_norm(op.dense(), {"1": 1, "2": 2, "inf": float("inf")}[norm])
    )
    assert bound <= float_norm * (1 + 1e-9) + 1e-300


def test_dense_error_bounds_the_rounding_of_a_product_entrywise() -> None:
    a, b = _random(6, 40, 4), _random(3, 6, 5)
    op = Product((Dense(a), Dense(b)))
    assert not op.exact_dense and Dense(a).exact_dense
    exact = rational.product([a, b])
    dense, error = op.dense().tolist(), op.dense_error().tolist()
    for i, row in enumerate(exact):
        for j, value in enumerate(row):
            assert abs(Fraction(dense[i][j]) - value) <= Fraction(error[i][j])
    assert float(op.dense_error().max()) < 1e-13  # a real bound, not a huge one


def test_dense_refuses_large_matrices_naming_the_size() -> None:
    op = Dense(torch.zeros(30, 40))
    with pytest.raises(MethodNotApplicableError, match="30 × 40 = 1200 entries"):
        op.dense(max_entries=1000)
    assert op.dense(max_entries=1200).shape == (30, 40)
    with pytest.raises(MethodNotApplicableError, match="2 × 40 = 80 entries"):
        Product((op, Dense(torch.zeros(2, 30)))).dense(max_entries=10)


def test_shapes_are_checked() -> None:
    with pytest.raises(ModelShapeError):
        Dense(torch.zeros(3))
    with pytest.raises(ModelShapeError):
        Dense(torch.zeros(3, 4), input_shape=(2, 3))
    assert Dense(torch.zeros(3, 4), input_shape=(1, 2, 2)).input_shape == (1, 2, 2)
    with pytest.raises(ModelShapeError):
        Product((Dense(torch.zeros(3, 4)), Dense(torch.zeros(2, 4))))
    with pytest.raises(ValueError, match="NaN"):
        Dense(torch.tensor([[float("nan")]]))


def test_nonnegative_norm_bound() -> None:
    e = _random(5, 7, 6).abs()
    for norm in NORMS:
        assert rational.norm_at_most(
            rational.to_fractions(e), certified_nonnegative_norm(e, norm), norm
        )
    with pytest.raises(ValueError):
        certified_nonnegative_norm(-e, "2")


def test_class_pair_distances_with_a_weight_error_bound_the_true_distances() -> None:
    a, b = _random(8, 5, 7), _random(4, 8, 8)
    op = Product((Dense(a), Dense(b)))
    exact = rational.product([a, b])
    labels = torch.tensor([0, 2])
    for norm, dual in (("1", "inf"), ("2", "2"), ("inf", "1")):
        bounds = class_pair_distances(op.dense(), labels, norm, weight_error=op.dense_error())
        for row, y in enumerate(labels.tolist()):
            for j in range(4):
                diff = [[u - v] for u, v in zip(exact[y], exact[j], strict=True)]  # column
                # ‖d‖_q of a vector = the q→q norm of the column matrix for q = 1, 2, inf(rows)
                value = float(bounds[row, j]) * (1 + 2**-40)
                if dual == "inf":
                    assert max(abs(d[0]) for d in diff) <= Fraction(value)
                else:
                    assert rational.norm_at_most(diff, value, dual)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**16),
    exponent=st.integers(-80, 0),
    widths=st.lists(st.integers(1, 4), min_size=3, max_size=3),
)
def test_random_products_with_cancellation_are_bounded(
    seed: int, exponent: int, widths: list[int]
) -> None:
    """``B A + ε B' C − B A`` computed in float64 can lose everything; the bound must not."""
    n, k, m = widths
    g = torch.Generator().manual_seed(seed)
    a, c = (
        torch.randn(k, n, generator=g, dtype=torch.float64),
        torch.randn(k, n, generator=g, dtype=torch.float64),
    )
    b, b2 = (
        torch.randn(m, k, generator=g, dtype=torch.float64),
        torch.randn(m, k, generator=g, dtype=torch.float64),
    )
    first = torch.cat([a * 2.0**30, c * 2.0**exponent, a * 2.0**30])  # (3k, n)
    second = torch.cat([b, b2, -b], dim=1)  # (m, 3k)
    op = Product((Dense(first), Dense(second)))
    exact = rational.product([first, second])
    for norm in NORMS:
        assert rational.norm_at_most(exact, op.certified_norm(norm), norm)


def test_norm_tables_and_gamma() -> None:
    from tightlip.errors import NormError
    from tightlip.norms import UNIT_ROUNDOFF, abs_sum_axis, dual_norm, gamma, operator_norm

    for n in (0, 1, 7, 10**6):
        exact = Fraction(n) * Fraction(UNIT_ROUNDOFF) / (1 - Fraction(n) * Fraction(UNIT_ROUNDOFF))
        assert Fraction(gamma(n)) >= exact
    with pytest.raises(ValueError):
        gamma(2**52)
    w = torch.tensor([[1.0, -2.0], [3.0, 4.0], [0.0, 5.0]])
    assert abs_sum_axis("1") == 0 and abs_sum_axis("inf") == 1
    assert operator_norm(w, "1") == 11.0 and operator_norm(w, "inf") == 7.0
    assert [dual_norm(p) for p in NORMS] == ["inf", "2", "1"]
    with pytest.raises(NormError):
        abs_sum_axis("2")
