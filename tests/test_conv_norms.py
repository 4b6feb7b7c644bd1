"""Convolution and average pooling as linear operators: evaluation against PyTorch, exact dense
matrices, and certified norms against exact references.

References: the dense matrix is built by applying the operator to the identity (and compared
with the entry-by-entry construction); ℓ1 / ℓ∞ norms of it are summed in exact rationals; ℓ2
soundness is decided exactly in rationals on small shapes (``σ_max(A) ≤ c`` iff
``c² I − AᵀA ⪰ 0``) and, on larger ones, checked against the float64 SVD of the dense matrix
with the SVD margin of :mod:`tightlip.norms`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import rational
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from tightlip.convolution.gram import certified_gram_norm
from tightlip.convolution.operators import AvgPool2dOperator, Conv2dOperator
from tightlip.convolution.spectral import circulant_spectral_bound
from tightlip.errors import ModelShapeError, UnsupportedLayerError
from tightlip.norms import NORMS, svd_inflation
from tightlip.operators import Identity, LinearOperator, Product


@st.composite
def geometries(draw: st.DrawFn, max_size: int = 7, max_channels: int = 3) -> dict:
    """A random convolution: channels, kernel, image, stride 1–2, padding 0–2, dilation 1–2."""
    circular = draw(st.booleans())
    geometry = {
        "c_out": draw(st.integers(1, max_channels)),
        "c_in": draw(st.integers(1, max_channels)),
        "kernel": (draw(st.integers(1, 4)), draw(st.integers(1, 4))),
        "image": (draw(st.integers(2, max_size)), draw(st.integers(2, max_size))),
        "stride": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "padding": (draw(st.integers(0, 2)), draw(st.integers(0, 2))),
        "dilation": (draw(st.integers(1, 2)), draw(st.integers(1, 2))),
        "circular": circular,
        "seed": draw(st.integers(0, 2**16)),
    }
    return geometry


def _build(g: dict) -> tuple[Conv2dOperator, nn.Conv2d]:
    """The operator and the PyTorch layer it must agree with (skips geometries both refuse)."""
    kernel = torch.randn(
        g["c_out"], g["c_in"], *g["kernel"],
        generator=torch.Generator().manual_seed(g["seed"]), dtype=torch.float64,
    )
    pad = tuple((p, p) for p in g["padding"])
    try:
        op = Conv2dOperator(
            kernel, (g["c_in"], *g["image"]), stride=g["stride"], dilation=g["dilation"],
            padding=pad, circular=g["circular"],  # type: ignore[arg-type]
        )
    except (ModelShapeError, UnsupportedLayerError):
        assume(False)
        raise
    layer = nn.Conv2d(
        g["c_in"], g["c_out"], g["kernel"], stride=g["stride"], padding=g["padding"],
        dilation=g["dilation"], bias=False,
        padding_mode="circular" if g["circular"] else "zeros",
    ).double()
    with torch.no_grad():
        layer.weight.copy_(kernel)
    return op, layer


def _identity_dense(op: LinearOperator) -> torch.Tensor:
    return op.apply(torch.eye(op.in_features, dtype=torch.float64)).T


_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(geometries())
def test_conv_operator_agrees_with_torch_and_is_adjoint(g: dict) -> None:
    op, layer = _build(g)
    x = torch.randn(3, g["c_in"], *g["image"], dtype=torch.float64)
    try:
        expected = layer(x)
    except RuntimeError:  # e.g. circular padding wider than the image: PyTorch refuses too
        assume(False)
    torch.testing.assert_close(op.apply(x.reshape(3, -1)), expected.reshape(3, -1))
    assert op.output_shape == tuple(expected.shape[1:])
    dense = op.dense(None)
    assert torch.equal(dense, _identity_dense(op))  # entry by entry = applied to the identity
    y = torch.randn(3, op.out_features, dtype=torch.float64)
    torch.testing.assert_close(op.apply_transpose(y), y @ dense, rtol=1e-12, atol=1e-12)
    ax = op.apply(x.reshape(3, -1))
    torch.testing.assert_close(
        (ax * y).sum(-1), (x.reshape(3, -1) * op.apply_transpose(y)).sum(-1)
    )
    assert op.apply(x.reshape(3, -1).float()).dtype == torch.float32


@_SETTINGS
@given(geometries())
def test_l1_and_linf_are_exact_and_sound(g: dict) -> None:
    op, _ = _build(g)
    exact = rational.to_fractions(op.dense(None))
    for norm in ("1", "inf"):
        bound = op.certified_norm(norm)  # type: ignore[arg-type]
        assert rational.norm_at_most(exact, bound, norm)
        assert bound <= float(rational.abs_sum_norm(exact, norm)) * (1 + 1e-12)


def _gram_bound(op: Conv2dOperator) -> float:
    """The Gram route alone, as ``Conv2dOperator`` calls it."""
    return certified_gram_norm(*op.coordinates(), (op.out_features, op.in_features))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometries(max_size=5, max_channels=2))
def test_l2_bounds_are_sound_in_exact_arithmetic(g: dict) -> None:
    """σ_max(A) ≤ bound decided exactly, for the certified norm, the Fourier bound alone and the
    Gram route alone (which is also within 10⁻⁹ of σ̂)."""
    op, _ = _build(g)
    dense = op.dense(None)
    assume(min(dense.shape) <= 24)
    exact = rational.to_fractions(dense)
    assert rational.spectral_norm_at_most(exact, op.certified_norm("2"))
    assert rational.spectral_norm_at_most(exact, circulant_spectral_bound(op.kernel, op.axes))
    gram = _gram_bound(op)
    assert rational.spectral_norm_at_most(exact, gram)
    assert gram <= float(torch.linalg.svdvals(dense)[0]) * (1 + 1e-9) + 1e-300


@_SETTINGS
@given(geometries(max_size=9, max_channels=4))
def test_l2_bounds_are_above_the_dense_svd_and_tight(g: dict) -> None:
    """Against σ̂, the float64 SVD of the exact dense matrix, with its margin: the bound is at
    least σ̂ (1 + margin) unless it claims the exact value (within the margin, e.g. a circular
    stride-1 convolution, where the float SVD cannot decide); the certified norm is within 5 %."""
    op, _ = _build(g)
    dense = op.dense(None)
    sigma = float(torch.linalg.svdvals(dense)[0])
    margin = svd_inflation(*dense.shape) - 1.0
    for bound in (op.certified_norm("2"), circulant_spectral_bound(op.kernel, op.axes)):
        assert bound >= sigma * (1 + margin) or abs(bound - sigma) <= 4 * margin * sigma
    assert op.certified_norm("2") <= sigma * 1.05 + 1e-300


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3]), st.integers(12, 16),
    st.booleans(), st.integers(0, 2**16),
)
def test_fourier_bound_is_close_on_stride_one_shapes(
    c_out: int, c_in: int, k: int, size: int, circular: bool, seed: int
) -> None:
    """The Fourier bound by itself (no dense SVD): within 5 % of σ̂ on stride-1 'same'-padded
    convolutions of 12–16 pixels; exact (up to the margins) for circular padding."""
    kernel = torch.randn(
        c_out, c_in, k, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    p = (k - 1) // 2
    op = Conv2dOperator(kernel, (c_in, size, size), padding=((p, p), (p, p)), circular=circular)
    sigma = float(torch.linalg.svdvals(op.dense(None))[0])
    bound = circulant_spectral_bound(kernel, op.axes)
    assert bound >= sigma * (1 - 1e-9)
    assert bound <= sigma * (1 + (1e-9 if circular else 0.05))


def test_gram_bound_replaces_the_fourier_excess_of_strided_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A strided layer on a 12×12 grid, with the dense SVD route switched off: the certified
    norm comes from the Gram route, within 10⁻⁹ of σ̂, while the Fourier bound alone is more
    than 1 % above. (Soundness itself is decided in rationals by the test above; σ̂ is within
    ~10⁻¹⁵ of σ here, far inside the Gram route's margin.)"""
    monkeypatch.setattr("tightlip.convolution.operators.DENSE_SVD_LIMIT", 0)
    generator = torch.Generator().manual_seed(7)
    kernel = torch.randn(6, 5, 4, 4, generator=generator, dtype=torch.float64)
    op = Conv2dOperator(kernel, (5, 12, 12), stride=(2, 2), padding=((1, 1), (1, 1)))
    sigma = float(torch.linalg.svdvals(op.dense(None))[0])
    bound = op.certified_norm("2")
    assert sigma * (1 + 1e-13) <= bound <= sigma * (1 + 1e-9)
    assert circulant_spectral_bound(kernel, op.axes) > 1.01 * bound


@pytest.mark.parametrize("factor", [0.5, 1 - 1e-7, 1.0, 2.0])
def test_gram_bound_is_sound_whatever_the_candidate(
    factor: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eigenvalue estimate is only a candidate: a low one makes the Cholesky certificate
    fail (no bound, ``inf``, and the operator keeps its Fourier bound), a high one gives a
    looser bound; every claimed bound is decided exactly in rationals."""
    import tightlip.convolution.gram as gram

    generator = torch.Generator().manual_seed(11)
    kernel = torch.randn(2, 2, 3, 3, generator=generator, dtype=torch.float64)
    op = Conv2dOperator(kernel, (2, 4, 4), stride=(2, 2), padding=((1, 1), (1, 1)))
    exact = rational.to_fractions(op.dense(None))
    top = float(torch.linalg.svdvals(op.dense(None))[0]) ** 2
    monkeypatch.setattr(gram, "_top_eigenvalue_estimate", lambda dense, sparse: factor * top)
    bound = _gram_bound(op)
    assert math.isinf(bound) if factor == 0.5 else math.isfinite(bound)
    if math.isfinite(bound):
        assert rational.spectral_norm_at_most(exact, bound)
    monkeypatch.setattr("tightlip.convolution.operators.DENSE_SVD_LIMIT", 0)
    assert rational.spectral_norm_at_most(exact, op.certified_norm("2"))


def test_gram_route_skips_dense_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full-map kernel (a Sandwich layer's) has a dense matrix: the Gram route is not tried
    above the entry limit (it took minutes at 28×28), and the Fourier bound, exact for a
    circular stride-1 convolution, stands."""
    import tightlip.convolution.gram as gram

    def refuse(*args: object) -> float:
        raise AssertionError("the Gram route ran on a dense operator")

    monkeypatch.setattr("tightlip.convolution.operators.DENSE_SVD_LIMIT", 0)
    monkeypatch.setattr("tightlip.convolution.operators.certified_gram_norm", refuse)
    monkeypatch.setattr(gram, "GRAM_ENTRY_LIMIT", 10_000)
    generator = torch.Generator().manual_seed(5)
    kernel = torch.randn(3, 3, 12, 12, generator=generator, dtype=torch.float64)
    op = Conv2dOperator(kernel, (3, 12, 12), padding=((6, 5), (6, 5)), circular=True)
    assert op.out_features * 3 * 144 > gram.GRAM_ENTRY_LIMIT
    sigma = float(torch.linalg.svdvals(op.dense(None))[0])
    assert sigma * (1 - 1e-12) <= op.certified_norm("2") <= sigma * (1 + 1e-9)


def test_gram_bound_refuses_a_repeated_position() -> None:
    """A position given twice would be summed (rounded) by the sparse matrix: refused."""
    rows, cols = np.array([0, 0]), np.array([1, 1])
    with pytest.raises(ValueError, match="at most once"):
        certified_gram_norm(rows, cols, np.array([0.1, 0.2]), (2, 2))


def test_gram_bound_covers_underflow() -> None:
    """Taps of 2⁻⁵⁴⁰: every product underflows, so the computed Gram matrix is 0 and only the
    underflow term keeps the bound above the exact norm (decided in rationals)."""
    generator = torch.Generator().manual_seed(3)
    kernel = torch.randn(2, 2, 3, 3, generator=generator, dtype=torch.float64)
    op = Conv2dOperator(kernel * 2.0**-540, (2, 3, 3), padding=((1, 1), (1, 1)))
    bound = _gram_bound(op)
    assert bound > 0
    assert rational.spectral_norm_at_most(rational.to_fractions(op.dense(None)), bound)


def test_polyphase_beats_the_unstrided_bound_on_strided_convolutions() -> None:
    """A stride-2 convolution's bound does not pay for the subsampling: with the polyphase
    plan it is well below the stride-1 convolution's norm when the kernel has alternating taps."""
    kernel = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    kernel[0, 0] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    strided = Conv2dOperator(kernel, (1, 8, 8), stride=(2, 2))
    unstrided = Conv2dOperator(kernel, (1, 8, 8))
    # stride 2 with a 2×2 kernel reads disjoint windows: ‖A‖₂ = ‖K‖_F = 2; stride 1: ≈ 4
    assert circulant_spectral_bound(kernel, strided.axes) == pytest.approx(2.0, rel=1e-9)
    assert circulant_spectral_bound(kernel, unstrided.axes) > 3.5


def test_border_rows_are_counted_exactly() -> None:
    """ℓ∞ with zero padding: the maximum row sum is over all rows. A kernel whose mass sits on
    the taps that fall off the border at every row but the interior ones, and ℓ1 with stride 2
    where columns are read unequally."""
    kernel = torch.tensor([[[[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])
    op = Conv2dOperator(kernel.double(), (1, 3, 3), padding=((1, 1), (1, 1)))
    dense = op.dense(None)
    assert op.certified_norm("inf") == pytest.approx(float(dense.abs().sum(1).max()), rel=1e-14)
    assert op.certified_norm("inf") == pytest.approx(6.0, rel=1e-14)
    strided = Conv2dOperator(torch.ones(2, 1, 3, 3, dtype=torch.float64), (1, 7, 7), stride=(2, 2))
    d = strided.dense(None)
    assert strided.certified_norm("1") == pytest.approx(float(d.abs().sum(0).max()), rel=1e-14)
    assert strided.certified_norm("1") == pytest.approx(8.0, rel=1e-14)  # 2 channels × 2 × 2


def test_refusals_name_the_problem() -> None:
    with pytest.raises(UnsupportedLayerError, match="wraps the kernel"):
        Conv2dOperator(torch.ones(1, 1, 3, 3), (1, 2, 2), padding=((1, 1), (1, 1)), circular=True)
    with pytest.raises(ModelShapeError, match="does not fit"):
        Conv2dOperator(torch.ones(1, 1, 5, 5), (1, 3, 3))
    with pytest.raises(ModelShapeError, match="input channels"):
        Conv2dOperator(torch.ones(1, 2, 3, 3), (1, 5, 5))
    big = Conv2dOperator(torch.ones(4, 1, 3, 3), (1, 28, 28), padding=((1, 1), (1, 1)))
    from tightlip.errors import MethodNotApplicableError

    with pytest.raises(MethodNotApplicableError, match="3136 × 784"):
        big.dense(max_entries=10**6)


# --------------------------------------------------------------------------------------------
# Average pooling
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "divisor"),
    [((2, 2), (2, 2), 0, None), ((3, 3), (1, 1), 1, None), ((3, 3), (2, 2), 1, None),
     ((2, 3), (1, 2), 0, 5)],
)
def test_avg_pool_operator(kernel, stride, padding, divisor) -> None:
    """Agrees with nn.AvgPool2d; norms sound against the exact matrix with entries 1/D."""
    shape = (1, 5, 6)
    op = AvgPool2dOperator(
        shape, kernel, stride=stride, padding=((padding, padding),) * 2, divisor=divisor
    )
    layer = nn.AvgPool2d(kernel, stride, padding, divisor_override=divisor)
    x = torch.randn(4, *shape, dtype=torch.float64)
    torch.testing.assert_close(op.apply(x.reshape(4, -1)), layer(x).reshape(4, -1))
    dense = op.dense(None)
    torch.testing.assert_close(dense, _identity_dense(op))
    g = torch.randn(4, op.out_features, dtype=torch.float64)
    torch.testing.assert_close(op.apply_transpose(g), g @ dense)
    true = [[Fraction(1, op.divisor) if v else Fraction(0) for v in row] for row in dense.tolist()]
    error = op.dense_error(None).tolist()
    assert all(
        abs(Fraction(d) - t) <= Fraction(e)
        for drow, trow, erow in zip(dense.tolist(), true, error, strict=True)
        for d, t, e in zip(drow, trow, erow, strict=True)
    )
    for norm in NORMS:
        bound = op.certified_norm(norm)
        assert rational.norm_at_most(true, bound, norm)
        if norm != "2":
            assert bound <= float(rational.abs_sum_norm(true, norm)) * (1 + 1e-12)


def test_non_overlapping_pooling_norms_are_exact() -> None:
    op = AvgPool2dOperator((3, 8, 8), (2, 2), stride=(2, 2))
    assert op.certified_norm("inf") == pytest.approx(1.0, rel=1e-14)
    assert op.certified_norm("1") == pytest.approx(0.25, rel=1e-14)
    assert math.isclose(op.certified_norm("2"), 0.5, rel_tol=1e-12)


# --------------------------------------------------------------------------------------------
# Products of structured operators, and the identity
# --------------------------------------------------------------------------------------------


def test_product_of_large_convolutions_never_densifies(monkeypatch: pytest.MonkeyPatch) -> None:
    """conv → avgpool at MNIST size: the product's norm is the product of the factors' norms."""
    conv = Conv2dOperator(torch.randn(8, 1, 3, 3), (1, 28, 28), padding=((1, 1), (1, 1)))
    pool = AvgPool2dOperator((8, 28, 28), (2, 2), stride=(2, 2))
    product = Product((conv, pool))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("densified")

    monkeypatch.setattr(conv, "dense", refuse)
    monkeypatch.setattr(product, "dense", refuse)
    for norm in NORMS:
        expected = conv.certified_norm(norm) * pool.certified_norm(norm)
        assert product.certified_norm(norm) == pytest.approx(expected, rel=1e-15)
        assert product.certified_norm(norm) >= expected


def test_identity_operator() -> None:
    identity = Identity(6, input_shape=(1, 2, 3))
    x = torch.randn(2, 6)
    assert torch.equal(identity.apply(x), x) and torch.equal(identity.apply_transpose(x), x)
    assert all(identity.certified_norm(n) == 1.0 for n in NORMS)
    assert torch.equal(identity.dense(), torch.eye(6, dtype=torch.float64))
    assert isinstance(identity, LinearOperator) and identity.exact_dense
    with pytest.raises(ModelShapeError):
        Identity(5, input_shape=(1, 2, 3))


def test_abs_operator_is_the_entrywise_absolute_value() -> None:
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    for circular in (False, True):
        op = Conv2dOperator(kernel, (2, 5, 6), stride=(2, 1), padding=((1, 1), (1, 1)),
                            circular=circular)
        assert torch.equal(op.abs_operator().dense(None), op.dense(None).abs())
    pool = AvgPool2dOperator((2, 4, 4), (2, 2), stride=(2, 2))
    assert torch.equal(pool.abs_operator().dense(None), pool.dense(None).abs())
