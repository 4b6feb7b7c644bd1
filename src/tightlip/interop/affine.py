"""The affine map since the last activation, as a file is read: factors, bias, folding.

An imported network is read node by node. Between two activations every node is affine
(a ``Gemm``, a ``MatMul`` and ``Add``, an input normalisation ``(x − μ)/σ``, an inference
batch normalisation, a sign flip), so the reader keeps a :class:`PendingAffine`: the linear
factors ``A_k, …, A_1`` in the order they are applied and the bias of the composition
``h ↦ A_k ⋯ A_1 h + b``. At the next activation (or the output) it becomes one
:class:`~tightlip.model.AffineStep`, and every bound and radius is in the units of the raw
input, the normalisation included.

Folding is exact or certified, never silently rounded:

* a scaling ``diag(d)`` next to a matrix ``W`` is multiplied into it when every product
  ``W_ij d_j`` is exact in float64, which holds when their significands have at most 53
  significant bits together (two float32 numbers: 24 + 24) and the product is a normal number;
* a scale constant per channel next to a convolution is folded into its kernel, exactly or
  with a certified error kernel (:mod:`tightlip.interop.scaled_conv`);
* otherwise the factors stay separate and the step's operator is their
  :class:`~tightlip.operators.Product`, whose dense matrix comes with a certified error bound
  (its verifiers then add it, or refuse, as for any merged layer);
* a scale that is not a float64 number (``1/σ``, ``γ/√(v + ε)``) is a
  :class:`~tightlip.interop.diagonal.Diagonal` with its rounding error: ``fl(1/c)`` is within
  ``u |1/c| ≤ 2u |fl(1/c)|`` of ``1/c`` (``u = 2⁻⁵³``, Higham, *Accuracy and Stability of
  Numerical Algorithms*, §2.2); ``γ/√(v + ε)`` takes three roundings (the sum, the square root,
  the quotient; the sum's error is halved by the root), at most ``(5/2) u`` relative, which we
  bound by ``4u |ŝ|``; the smallest subnormal is added for underflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from tightlip.convolution.operators import Conv2dOperator
from tightlip.errors import ModelShapeError, UnsupportedLayerError
from tightlip.interop.diagonal import Diagonal
from tightlip.interop.exact import SMALLEST_NORMAL as _SMALLEST_NORMAL
from tightlip.interop.exact import exact_product, significant_bits
from tightlip.interop.scaled_conv import fold_channel_scale
from tightlip.model import AffineStep
from tightlip.norms import SMALLEST_SUBNORMAL, UNIT_ROUNDOFF
from tightlip.operators import Dense, Identity, LinearOperator, Product


def reciprocal(c: torch.Tensor, name: str) -> Diagonal:
    """``diag(1/c)`` with its rounding error (exact where ``c`` is a power of two)."""
    c = c.to(torch.float64).reshape(-1)
    if bool((c == 0).any()):
        raise UnsupportedLayerError(f"{name} divides by zero")
    q = 1.0 / c
    power_of_two = (significant_bits(c) == 1) & (q.abs() >= _SMALLEST_NORMAL) & torch.isfinite(q)
    error = torch.where(
        power_of_two, torch.zeros_like(q), 2.0 * UNIT_ROUNDOFF * q.abs() + SMALLEST_SUBNORMAL
    )
    return Diagonal(q, error, name=name)


def batchnorm_scale(
    gamma: torch.Tensor, variance: torch.Tensor, epsilon: float, name: str
) -> Diagonal:
    """``diag(γ / √(v + ε))`` with its rounding error ``4u |ŝ| + η`` (module docstring)."""
    denominator = variance.to(torch.float64) + float(epsilon)
    if not bool((denominator > 0).all()):
        raise UnsupportedLayerError(f"{name}: variance + epsilon must be positive")
    s = gamma.to(torch.float64) / torch.sqrt(denominator)
    error = 4.0 * UNIT_ROUNDOFF * s.abs() + SMALLEST_SUBNORMAL
    return Diagonal(s, error, name=name)


def _merge(first: LinearOperator, second: LinearOperator) -> LinearOperator | None:
    """``second ∘ first`` as one exact operator, when the product is exact; else ``None``."""
    if isinstance(first, Diagonal) and isinstance(second, Diagonal):
        if first.exact_dense and second.exact_dense:
            product = exact_product(first.values, second.values)
            if product is not None:
                return Diagonal(product, name=f"{first.name}+{second.name}")
        return None
    if isinstance(second, Diagonal) and isinstance(first, Dense) and second.exact_dense:
        rows = exact_product(first.matrix, second.values[:, None])  # diag(d) W
        return None if rows is None else Dense(rows, name=f"{first.name}+{second.name}")
    if isinstance(first, Conv2dOperator) and isinstance(second, Diagonal):
        return fold_channel_scale(first, second, after=True)  # batch norm after a conv
    if isinstance(first, Diagonal) and isinstance(second, Conv2dOperator):
        return fold_channel_scale(second, first, after=False)  # input normalisation
    if isinstance(first, Diagonal) and isinstance(second, Dense) and first.exact_dense:
        columns = exact_product(second.matrix, first.values[None, :])  # W diag(d)
        return None if columns is None else Dense(columns, name=f"{first.name}+{second.name}")
    return None


def fold(factors: Sequence[LinearOperator]) -> list[LinearOperator]:
    """Merge neighbouring factors whose product is exact (module docstring); order kept."""
    out: list[LinearOperator] = []
    for factor in factors:
        merged = _merge(out[-1], factor) if out else None
        if merged is None:
            out.append(factor)
        else:
            out[-1] = merged
    # a merge may make its result mergeable with the factor before it
    if len(out) < len(factors) and len(out) > 1:
        return fold(out)
    return out


class StepIdentity(Identity):
    """The identity step between two nonlinear steps (an activation, then max pooling); its
    ``|I| = I`` (:meth:`Identity.abs_operator`) lets the lower-bound search read a map of
    thousands of entries without a dense matrix."""


@dataclass(frozen=True, eq=False)
class PendingAffine:
    """``h ↦ A_k ⋯ A_1 h + b`` on ``width`` inputs (module docstring); immutable."""

    width: int
    factors: tuple[LinearOperator, ...] = ()
    bias: torch.Tensor | None = None
    names: tuple[str, ...] = ()

    @property
    def out_features(self) -> int:
        return self.factors[-1].out_features if self.factors else self.width

    @property
    def is_identity(self) -> bool:
        return not self.factors and self.bias is None

    def then(self, operator: LinearOperator, name: str) -> PendingAffine:
        """This map followed by the linear map ``operator``."""
        if operator.in_features != self.out_features:
            raise ModelShapeError(
                f"{name} expects {operator.in_features} inputs but receives {self.out_features}"
            )
        bias = None if self.bias is None else operator.apply(self.bias)
        return replace(
            self, factors=(*self.factors, operator), bias=bias, names=(*self.names, name)
        )

    def shifted(self, shift: torch.Tensor, name: str, *, label: bool = True) -> PendingAffine:
        """This map followed by ``h ↦ h + shift`` (``label``: ``name`` joins the step's name)."""
        shift = shift.to(torch.float64).reshape(-1)
        if shift.numel() != self.out_features:
            raise ModelShapeError(
                f"{name} adds {shift.numel()} values to {self.out_features} features"
            )
        bias = shift.clone() if self.bias is None else self.bias + shift
        return replace(self, bias=bias, names=(*self.names, name) if label else self.names)

    def step(self) -> AffineStep:
        """The affine step; an :class:`~tightlip.operators.Identity` (exact, norm 1, no dense
        matrix: a map after a convolution has thousands of entries) when nothing was read
        since the last activation."""
        name = "+".join(dict.fromkeys(self.names)) or "identity"
        factors = fold(self.factors)
        if not factors:
            operator: LinearOperator = StepIdentity(self.width, name=name)
        elif len(factors) == 1:
            operator = factors[0]
        else:
            operator = Product(factors, name=name)
        return AffineStep(operator, self.bias, name=name)
