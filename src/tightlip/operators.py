"""Linear operators: what a verifier may ask of the linear part ``A`` of an affine step.

Every affine step ``h ↦ A h + b`` of a :class:`~tightlip.model.LayerChain` holds its linear
part as a :class:`LinearOperator`, a small protocol in the spirit of auto_LiRPA's operator
classes (Xu et al., NeurIPS 2020) and ``scipy.sparse.linalg.LinearOperator``: verifiers ask the
operator, never its type.

* ``apply(h)`` and ``apply_transpose(g)``: ``A h`` and ``Aᵀ g`` on row batches ``(..., n)``,
  in the dtype of the argument (enough for gradient-type lower bounds and for evaluation);
* optionally ``fast_apply(h)``: ``A h`` by a faster route whose rounding is not bounded (a
  full-map circular convolution by FFT, :mod:`tightlip.convolution.fourier`), for searches
  whose results are re-evaluated through ``apply`` before they are reported; the function
  :func:`fast_apply` falls back to ``apply``;
* ``certified_norm(p)``: a float64 number ``≥ ‖A‖_{p→p}``, rounding included, with the error
  model of :mod:`tightlip.norms` (what the trivial bound multiplies); optionally
  ``quick_certified_norm(p)``, a cheaper and possibly looser one (:func:`quick_certified_norm`);
* ``dense(max_entries)``: the matrix, when it is asked for and has at most ``max_entries``
  entries (else :class:`~tightlip.errors.MethodNotApplicableError` naming the size). When
  ``exact_dense`` is ``False`` the matrix is a *rounded* one, and ``dense_error()`` bounds
  ``|dense() − A|`` entrywise: a verifier that reads the matrix must account for that error or
  refuse.

:class:`Dense` is an explicit matrix (``exact_dense``). :class:`Product` is ``A_k ⋯ A_1`` kept as
its factors: ``apply`` runs through the factors, so evaluation is as exact as evaluating the
layers one by one, while ``dense()`` is the float64 product with a certified entrywise error
(below). Other operators (e.g. a convolution, whose input has a spatial ``input_shape``) only
need to implement the same methods (:mod:`tightlip.convolution` holds the convolution and
average-pooling operators). :class:`Identity` is the identity map, exact and of norm 1.

Rounding of a merged product (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd
ed., §3.5 and Lemma 3.3). For float matrices ``X`` (r×m) and ``Y`` (m×n), barring underflow,
``|fl(XY) − XY| ≤ γ_m |X||Y|`` entrywise with ``γ_m = m u / (1 − m u)``, ``u = 2⁻⁵³``; with
gradual underflow each of the ``m`` products may add ``η/2`` (``η = 2⁻¹⁰⁷⁴``), so we add
``m η``. If ``|P̂ − P| ≤ E`` and ``|Â − A| ≤ F``, then ``Q̂ = fl(Â P̂)`` satisfies

    |Q̂ − AP| ≤ |Â| (γ_m |P̂| + E) + F (|P̂| + E) + m η,

which we evaluate with every floating-point operation rounded upwards (non-negative products
are inflated by ``1 + 2γ_m ≥ 1/(1 − γ_m)`` plus ``m η``). The certified norm of a product is
``min(∏ ‖A_i‖, ‖P̂‖ + ‖E‖)`` (each term certified): the first is sound by sub-multiplicativity,
the second because ``‖A − P̂‖_p ≤ ‖E‖_p`` for ``|A − P̂| ≤ E`` in the ℓ1, ℓ2 and ℓ∞ operator
norms. With cancellation (``‖A_k ⋯ A_1‖`` far below ``∏ ‖A_i‖``) ``P̂`` may even be 0 while the
true product is not; the error term keeps the bound above it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from tightlip.errors import MethodNotApplicableError, ModelShapeError
from tightlip.norms import (
    SMALLEST_SUBNORMAL,
    NormName,
    certified_nonnegative_norm,
    certified_operator_norm,
    gamma,
    product_rounded_up,
    round_up,
)

_ORDERS: dict[str, float] = {"1": 1.0, "2": 2.0, "inf": math.inf}

#: ``dense()`` refuses matrices with more entries than this unless asked for more (512 MiB)
DENSE_ENTRY_LIMIT = 2**26

#: a product's certified norm uses its dense matrix only if it and every factor have at most this
#: many entries (32 MiB); above it (e.g. a convolution followed by pooling), the product of the
#: factors' certified norms, which never densifies a structured operator
NORM_DENSE_LIMIT = 2**22

#: a product's factor norms are computed only when its dense error is at least this fraction of
#: its dense norm (they can only help then; both routes are sound)
_FACTOR_NORM_THRESHOLD = 2.0**-20


@runtime_checkable
class LinearOperator(Protocol):
    """The linear part ``A: R^in_features → R^out_features`` of an affine step (module docs)."""

    @property
    def in_features(self) -> int: ...

    @property
    def out_features(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape an input row is reshaped to (e.g. ``(C, H, W)``), or ``None`` if flat."""
        ...

    @property
    def exact_dense(self) -> bool:
        """Whether :meth:`dense` is exactly ``A`` (otherwise see :meth:`dense_error`)."""
        ...

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        """``A h`` for rows ``h`` of shape ``(..., in_features)``, in ``h``'s dtype."""
        ...

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        """``Aᵀ g`` for rows ``g`` of shape ``(..., out_features)``, in ``g``'s dtype."""
        ...

    def certified_norm(self, norm: NormName) -> float:
        """A float64 number ``≥ ‖A‖_{p→p}``, rounding included."""
        ...

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        """The matrix ``(out, in)`` in float64 (rounded unless ``exact_dense``)."""
        ...

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        """A non-negative ``(out, in)`` matrix ``E`` with ``|dense() − A| ≤ E`` entrywise."""
        ...


def fast_apply(operator: LinearOperator, h: torch.Tensor) -> torch.Tensor:
    """``A h`` by the operator's ``fast_apply`` when it has one, else by ``apply``.

    For searches only (lower-bound ascent, attacks): a fast route's rounding is not bounded,
    so a reported number is always re-evaluated through ``apply`` (module docstring).
    """
    fast = getattr(operator, "fast_apply", None)
    return fast(h) if callable(fast) else operator.apply(h)


def quick_certified_norm(operator: LinearOperator, norm: NormName) -> float:
    """A certified ``‖A‖_{p→p}`` by the operator's ``quick_certified_norm`` when it has one (a
    convolution's Fourier and Schur bounds, without the costlier exact refinements), else by
    ``certified_norm``; the norm already computed is used when there is one. Sound either way,
    possibly looser: for error propagation, where a few per cent do not matter."""
    quick = getattr(operator, "quick_certified_norm", None)
    return quick(norm) if callable(quick) else operator.certified_norm(norm)


@dataclass(frozen=True)
class FloatRounding:
    """How an operator's ``apply`` rounds when run in a binary format of unit roundoff ``u``.

    Barring underflow, for every input ``h`` (entrywise; Higham, *Accuracy and Stability*,
    §3.1, Lemma 3.3, ``γ_k = k u / (1 − k u)``)

        |fl(A h) − A h| ≤ γ_terms · (M |h|),

    where ``M ≥ |A|`` entrywise is the *magnitude* operator: the sum of the moduli of the
    products the evaluation forms (``|W|`` for a matrix, the convolution with ``|K|``).
    ``terms`` counts the rounded operations along each output: the ``products`` summed, one
    for rounding the weights to the format, one more for a final division (average pooling);
    ``terms = 0`` says ``apply`` is exact (the identity). :mod:`tightlip.eval.float32` turns
    this into its float32 certificate.
    """

    terms: int
    #: products summed per output (what the underflow terms count)
    products: int
    #: ``h ↦ M h`` for ``h ≥ 0`` ``(..., in_features)``, in float64
    magnitude: Callable[[torch.Tensor], torch.Tensor]
    #: ``q ↦`` ``(out_features,)`` float64 upper bounds on the rows' ``‖M_i‖_q``
    row_norms: Callable[[NormName], torch.Tensor]


def check_dense_size(
    out_features: int, in_features: int, max_entries: int | None, what: str = "operator"
) -> None:
    """Raise ``MethodNotApplicableError`` if an ``out × in`` matrix exceeds ``max_entries``."""
    entries = out_features * in_features
    if max_entries is not None and entries > max_entries:
        raise MethodNotApplicableError(
            f"{what}: its dense matrix would have {out_features} × {in_features} = {entries} "
            f"entries, more than max_entries={max_entries}"
        )


class Dense:
    """An explicit float64 matrix ``W`` of shape ``(out, in)`` on the CPU (``exact_dense``)."""

    def __init__(
        self,
        matrix: torch.Tensor,
        *,
        input_shape: tuple[int, ...] | None = None,
        name: str = "linear",
    ) -> None:
        w = torch.as_tensor(matrix).detach().to(device="cpu", dtype=torch.float64)
        if w.ndim != 2:
            raise ModelShapeError(f"{name}: weight must be 2-D, got shape {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError(f"{name}: weight contains NaN or infinite entries")
        if input_shape is not None and math.prod(input_shape) != w.shape[1]:
            raise ModelShapeError(
                f"{name}: input_shape {input_shape} does not have {w.shape[1]} entries"
            )
        self.matrix = w
        self.name = name
        self._input_shape = None if input_shape is None else tuple(input_shape)
        self._norms: dict[str, float] = {}

    @property
    def in_features(self) -> int:
        return self.matrix.shape[1]

    @property
    def out_features(self) -> int:
        return self.matrix.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self._input_shape

    @property
    def exact_dense(self) -> bool:
        return True

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.matrix.to(dtype=h.dtype, device=h.device).T

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return g @ self.matrix.to(dtype=g.dtype, device=g.device)

    def certified_norm(self, norm: NormName) -> float:
        if norm not in self._norms:
            self._norms[norm] = certified_operator_norm(self.matrix, norm)
        return self._norms[norm]

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return self.matrix

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return torch.zeros_like(self.matrix)

    def abs_operator(self) -> Dense:
        """``|W|`` (entrywise), for forward-error bounds of a product it is a factor of."""
        return Dense(self.matrix.abs(), input_shape=self._input_shape, name=f"|{self.name}|")

    def float_rounding(self) -> FloatRounding:
        """A matrix product: ``n`` products per row, plus the weights' rounding."""
        magnitude = self.matrix.abs()
        return FloatRounding(
            terms=self.in_features + 1,
            products=self.in_features,
            magnitude=lambda h: h @ magnitude.T,
            row_norms=lambda q: torch.linalg.vector_norm(magnitude, ord=_ORDERS[q], dim=1),
        )

    def describe(self) -> str:
        return "linear"

    def __repr__(self) -> str:
        return f"Dense({self.out_features}×{self.in_features}, name={self.name!r})"


class Identity:
    """The identity on ``R^n`` (``exact_dense``, norm exactly 1 in every p).

    :func:`~tightlip.model.to_chain` places it between two consecutive nonlinear steps (an
    activation followed by max pooling), so that a chain still alternates affine steps and
    activations without a dense ``n × n`` matrix.
    """

    def __init__(
        self,
        features: int,
        *,
        input_shape: tuple[int, ...] | None = None,
        name: str = "identity",
    ) -> None:
        if features < 1:
            raise ModelShapeError(f"{name}: needs a positive size, got {features}")
        if input_shape is not None and math.prod(input_shape) != features:
            raise ModelShapeError(
                f"{name}: input_shape {input_shape} does not have {features} entries"
            )
        self.features = features
        self.name = name
        self._input_shape = None if input_shape is None else tuple(input_shape)

    @property
    def in_features(self) -> int:
        return self.features

    @property
    def out_features(self) -> int:
        return self.features

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self._input_shape

    @property
    def exact_dense(self) -> bool:
        return True

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def certified_norm(self, norm: NormName) -> float:
        return 1.0

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.features, self.features, max_entries, self.name)
        return torch.eye(self.features, dtype=torch.float64)

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.features, self.features, max_entries, self.name)
        return torch.zeros(self.features, self.features, dtype=torch.float64)

    def abs_operator(self) -> Identity:
        """``|I| = I``: the matrix-free lower-bound search evaluates ``|A| h`` through it."""
        return self

    def float_rounding(self) -> FloatRounding:
        """Exact: ``apply`` returns its argument."""
        ones = torch.ones(self.features, dtype=torch.float64)
        return FloatRounding(0, 0, lambda h: h, lambda q: ones)

    def describe(self) -> str:
        return "identity"

    def __repr__(self) -> str:
        return f"Identity({self.features}, name={self.name!r})"


class Product:
    """``A_k ⋯ A_1`` kept as its factors (``factors[0]`` is applied first); module docstring."""

    def __init__(self, factors: Sequence[LinearOperator], *, name: str = "product") -> None:
        flat: list[LinearOperator] = []
        for factor in factors:
            flat.extend(factor.factors if isinstance(factor, Product) else (factor,))
        if not flat:
            raise ValueError("a product needs at least one factor")
        for inner, outer in zip(flat, flat[1:], strict=False):
            if outer.in_features != inner.out_features:
                raise ModelShapeError(
                    f"{name}: a factor with {outer.in_features} inputs follows one with "
                    f"{inner.out_features} outputs"
                )
        self.factors: tuple[LinearOperator, ...] = tuple(flat)
        self.name = name
        self._dense: tuple[torch.Tensor, torch.Tensor] | None = None
        self._norms: dict[str, float] = {}

    @property
    def in_features(self) -> int:
        return self.factors[0].in_features

    @property
    def out_features(self) -> int:
        return self.factors[-1].out_features

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.factors[0].input_shape

    @property
    def exact_dense(self) -> bool:
        return len(self.factors) == 1 and self.factors[0].exact_dense

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        for factor in self.factors:
            h = factor.apply(h)
        return h

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        for factor in reversed(self.factors):
            g = factor.apply_transpose(g)
        return g

    def fast_apply(self, h: torch.Tensor) -> torch.Tensor:
        """The factors' :func:`fast_apply`, first to last (for searches only)."""
        for factor in self.factors:
            h = fast_apply(factor, h)
        return h

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        return self._dense_and_error(max_entries)[0]

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        return self._dense_and_error(max_entries)[1]

    def certified_norm(self, norm: NormName) -> float:
        """``min(∏ ‖A_i‖, ‖P̂‖ + ‖E‖)``, each term certified (module docstring); only
        ``∏ ‖A_i‖`` when a matrix involved has more than :data:`NORM_DENSE_LIMIT` entries."""
        if norm not in self._norms and not self._dense_affordable():
            self._norms[norm] = product_rounded_up(f.certified_norm(norm) for f in self.factors)
        if norm not in self._norms:
            dense, error = self._dense_and_error(None)
            dense_norm = certified_operator_norm(dense, norm)
            error_norm = certified_nonnegative_norm(error, norm)
            value = round_up(dense_norm + error_norm)
            if error_norm >= _FACTOR_NORM_THRESHOLD * dense_norm:
                value = min(value, product_rounded_up(f.certified_norm(norm) for f in self.factors))
            self._norms[norm] = value
        return self._norms[norm]

    def _dense_affordable(self) -> bool:
        """Whether the product and every factor have at most ``NORM_DENSE_LIMIT`` entries."""
        sizes = [self.out_features * self.in_features]
        sizes += [f.out_features * f.in_features for f in self.factors]
        return max(sizes) <= NORM_DENSE_LIMIT

    def _dense_and_error(self, max_entries: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        if self._dense is None:
            first = self.factors[0]
            product, error = first.dense(None), first.dense_error(None)
            for factor in self.factors[1:]:
                product, error = multiply_with_error(
                    factor.dense(None), factor.dense_error(None), product, error
                )
            self._dense = (product, error)
        return self._dense

    def abs_operator(self) -> Product:
        """``|A_k| ⋯ |A_1|``, entrywise ``≥ |A_k ⋯ A_1|``: the magnitude operator of the
        factor-by-factor evaluation (what its forward-error bounds need, Higham §3.5)."""
        return Product(
            [f.abs_operator() for f in self.factors],  # type: ignore[attr-defined]
            name=f"|{self.name}|",
        )

    def describe(self) -> str | None:
        """The factors' own descriptions in the order they act (``avg-pool 2 then conv …``),
        or ``None`` when a factor has none (e.g. a folded normalisation)."""
        parts = []
        for factor in self.factors:
            own = getattr(factor, "describe", None)
            text = own() if callable(own) else None
            if text is None:
                return None
            parts.append(text)
        return " then ".join(parts)

    def __repr__(self) -> str:
        return f"Product({' · '.join(repr(f) for f in reversed(self.factors))})"


def multiply_with_error(
    a: torch.Tensor, a_error: torch.Tensor, p: torch.Tensor, p_error: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fl(Â P̂), E_Q)`` with ``|fl(Â P̂) − A P| ≤ E_Q`` given ``|Â − A| ≤ F``, ``|P̂ − P| ≤ E``.

    ``E_Q = |Â| (γ_m |P̂| + E) + F (|P̂| + E) + m η``, every operation rounded upwards (module
    docstring); ``m`` is the inner dimension.
    """
    inner = a.shape[1]
    g = gamma(inner)
    inflate = round_up(1.0 + 2.0 * g)
    tiny = inner * SMALLEST_SUBNORMAL  # m η, exact
    product = a @ p
    abs_p = p.abs()
    scaled = _up(_up(g * abs_p) + p_error)
    error = _up(_up(_nonnegative_matmul(a.abs(), scaled, inflate, tiny)) + tiny)
    if bool((a_error > 0).any()):
        spread = _up(abs_p + p_error)
        error = _up(error + _nonnegative_matmul(a_error, spread, inflate, tiny))
    return product, error


def _nonnegative_matmul(
    x: torch.Tensor, y: torch.Tensor, inflate: float, tiny: float
) -> torch.Tensor:
    """An entrywise upper bound on ``X Y`` for ``X, Y ≥ 0``: ``(fl(XY) + m η)(1 + 2γ_m)``."""
    return _up(_up(x @ y + tiny) * inflate)


def _up(t: torch.Tensor) -> torch.Tensor:
    """The next float64 above each entry (an upper bound on the exact value of the last op)."""
    return torch.nextafter(t, torch.full_like(t, math.inf))
