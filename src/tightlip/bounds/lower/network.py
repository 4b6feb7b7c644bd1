"""The network as the search evaluates it: one dtype, row-wise, optionally smoothed.

:class:`SearchNetwork` is a :class:`~tightlip.model.LayerChain` prepared once for the ~10⁵
evaluations of a search: every affine step is cast to the search's dtype and stored as a
contiguous ``Wᵀ`` (``LayerChain.forward`` casts its float64 master copy on every call), and
each piecewise-linear activation can be replaced by its smooth surrogate at a per-row
temperature (see :func:`smoothed_activation`). The chain itself stays the one description of
the network: this object only holds the casts.

Matrix-free steps. A step whose operator is not an explicit matrix and has more than
:data:`SEARCH_DENSE_ENTRIES` entries (a convolution of an MNIST-size conv net: 4C3F's second
layer is 6272 × 25088) is never lowered to a dense matrix: it is evaluated through
``operator.apply`` in the search's dtype, which autograd, ``jvp`` and ``vjp`` differentiate like
the matrix product (see :func:`is_matrix_free`), or through its faster ``fast_apply`` where it
has one (a Sandwich chain's full-map circular convolutions, by FFT): the search only finds
witnesses, which :mod:`~tightlip.bounds.lower.witness` certifies through ``apply``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tightlip.errors import MethodNotApplicableError
from tightlip.layers import Activation
from tightlip.model import AffineStep, LayerChain
from tightlip.operators import Dense, LinearOperator, fast_apply

RowFunction = Callable[[torch.Tensor], torch.Tensor]
#: a relative temperature: one for all rows, or one per row (shape ``(B, 1)``)
Temperature = float | torch.Tensor

#: above this many entries a step that is not an explicit matrix is evaluated matrix-free
SEARCH_DENSE_ENTRIES = 2**22


def is_matrix_free(step: AffineStep) -> bool:
    """Whether the lower-bound search reads ``step`` through its operator (module docstring).

    Explicit matrices (every MLP layer) are always read densely, so their results do not
    change. A matrix-free step is evaluated factor by factor (:func:`linear_factors`: a merge
    of consecutive linear layers, such as a Sandwich layer's output map followed by the next
    layer's input map, keeps its factors), and every factor must be exact, with its rounding
    error bounded through ``abs_operator`` (``|A|`` as an operator).
    """
    operator = step.operator
    if isinstance(operator, Dense):
        return False
    if step.in_features * step.out_features <= SEARCH_DENSE_ENTRIES:
        return False
    factors = linear_factors(step)
    if not all(f.exact_dense and callable(getattr(f, "abs_operator", None)) for f in factors):
        raise MethodNotApplicableError(
            f"{step.name}: a {step.out_features}×{step.in_features} operator without an exact "
            "|A| (abs_operator) is too large for the lower-bound search to read densely"
        )
    return True


def linear_factors(step: AffineStep) -> tuple[LinearOperator, ...]:
    """The operators a step applies, first to last: a product's factors, else the operator."""
    return tuple(getattr(step.operator, "factors", (step.operator,)))


def inner_length(step: AffineStep) -> int:
    """The rounded operations along one output of a matrix-free step: the sum of its factors'
    input widths (each ``≥`` the length of every inner product that factor forms)."""
    return sum(factor.in_features for factor in linear_factors(step))


@dataclass(frozen=True, eq=False)
class _CastAffine:
    """``h ↦ h Wᵀ + b`` with ``Wᵀ`` cast once (contiguous) to the search's dtype."""

    weight_t: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, step: AffineStep, dtype: torch.dtype) -> _CastAffine:
        bias = None if step.bias is None else step.bias.to(dtype)
        return cls(step.weight.to(dtype).T.contiguous(), bias)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        h = h @ self.weight_t
        return h if self.bias is None else h + self.bias


@dataclass(frozen=True, eq=False)
class _OperatorAffine:
    """``h ↦ A h + b`` through ``operator.apply`` (matrix-free; module docstring)."""

    step: AffineStep
    bias: torch.Tensor | None

    @classmethod
    def of(cls, step: AffineStep, dtype: torch.dtype) -> _OperatorAffine:
        return cls(step, None if step.bias is None else step.bias.to(dtype))

    @property
    def entries(self) -> int:
        """The cost of one evaluation, counted as a dense product's (a conservative budget)."""
        return self.step.in_features * self.step.out_features

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        h = fast_apply(self.step.operator, h)
        return h if self.bias is None else h + self.bias


Step = _CastAffine | _OperatorAffine | Activation


class SearchNetwork:
    """A :class:`LayerChain` evaluated row-wise in one dtype (module docstring)."""

    def __init__(self, chain: LayerChain, dtype: torch.dtype) -> None:
        self.chain = chain
        self.dtype = dtype
        steps: list[Step] = []
        widest = width = chain.input_dim
        for step in chain.steps:
            if isinstance(step, AffineStep):
                cast = _OperatorAffine if is_matrix_free(step) else _CastAffine
                steps.append(cast.of(step, dtype))
                width = step.out_features
            else:
                steps.append(step.activation)
                width = step.activation.out_features(width)
            widest = max(widest, width)
        self.steps: tuple[Step, ...] = tuple(steps)
        self.widest = widest
        self.input_dim = chain.input_dim
        self.output_dim = chain.output_dim
        activations = [s.activation for s in chain.activation_steps]
        #: some activation is PL, so the ascent runs on the smoothed network
        self.piecewise_linear = any(a.piecewise_linear for a in activations)
        #: bias-free and positively homogeneous PL: ``J(c x) = J(x)`` for ``c > 0``
        self.homogeneous = (
            chain.piecewise_linear
            and not chain.has_bias
            and all(a.positively_homogeneous for a in activations)
        )

    @property
    def parameter_count(self) -> int:
        """Number of weight entries (the cost of one evaluation)."""
        return sum(
            s.weight_t.numel() if isinstance(s, _CastAffine) else s.entries
            for s in self.steps
            if not isinstance(s, Activation)
        )

    def __call__(self, x: torch.Tensor, temperature: Temperature | None = None) -> torch.Tensor:
        """The network on a batch; with ``temperature`` every PL activation is replaced by its
        surrogate at that temperature relative to each row's scale."""
        h = x
        for step in self.steps:
            if temperature is not None and isinstance(step, Activation) and step.piecewise_linear:
                h = smoothed_activation(step, h, temperature)
            else:
                h = step(h)
        return h

    def function(self, temperature: Temperature | None = None) -> RowFunction:
        return lambda x: self(x, temperature)

    def tail(self, start: int) -> RowFunction:
        """The true network from step ``start`` on (``steps[start:]``), row-wise."""

        def apply(h: torch.Tensor) -> torch.Tensor:
            for step in self.steps[start:]:
                h = step(h)
            return h

        return apply


def smoothed_activation(act: Activation, z: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    """σ's surrogate at the absolute temperature ``c = τ · rms(z)``, per row (``rms`` detached).

    Relative to the scale of the signal, so that one schedule of ``τ`` suits every layer.
    """
    rms = z.detach().pow(2).mean(dim=-1, keepdim=True).sqrt()
    scale = (rms * temperature).clamp_min(1e-30)
    return act.surrogate(scale)(z)


def row_rms(x: torch.Tensor) -> torch.Tensor:
    """``√(mean_j x_j²)`` per row, shape ``(B, 1)``."""
    return x.pow(2).mean(dim=-1, keepdim=True).sqrt()


def to_sphere(x: torch.Tensor) -> torch.Tensor:
    """Rescale each row to RMS 1 (for positively homogeneous networks, ``J(c x) = J(x)``)."""
    return x / row_rms(x).clamp_min(1e-30)
