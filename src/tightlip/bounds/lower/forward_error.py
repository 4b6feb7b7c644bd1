"""The chain evaluated in float64 with a rigorous entrywise bound on its rounding error.

Every witness value is certified from this evaluation, never from autograd's answer at a point.
The error model is the standard one (Higham, *Accuracy and Stability of Numerical Algorithms*,
2nd ed., §2.2 and Lemma 3.1, §3.1 and §3.5): float64 with unit roundoff ``u = 2⁻⁵³`` and
``γ_n = n u / (1 − n u)``.

Affine step. With ``ĥ`` the computed input, ``|ĥ − h| ≤ e`` entrywise, ``Ŵ`` the stored matrix
with ``|Ŵ − W| ≤ E`` (``E = 0`` unless the step merges layers) and ``ẑ = fl(fl(Ŵ ĥ) + b)``::

    |ẑ − (W h + b)| ≤ γ_{n+1} (|Ŵ| |ĥ| + |b|) + |Ŵ| e + E (|ĥ| + e)

(an inner product of length ``n`` plus one addition, in any summation order, with or without
fused multiply-adds; the error carried in; the rounding of a merged weight).

Activation step. ``‖σ(ẑ) − σ(z)‖_∞ ≤ Lip_∞(σ) ‖ẑ − z‖_∞`` (the activation's own constant), plus
the error of evaluating ``σ`` at ``ẑ``, which we bound by ``κ (|σ̂(ẑ)|_k + ‖ẑ‖_∞)`` per output
``k`` with ``κ = ACTIVATION_ERROR = 16 u``. The piecewise-linear activations (max, min with a
constant, ``|·|``, negation, sorting) are exact in IEEE arithmetic; ``sin``, ``cos``, ``tanh`` and
``exp`` are accurate to 1 ulp in glibc's libm and in the SLEEF ``u10`` routines used by
PyTorch's CPU kernels; ``(z ± sin z) / 2`` adds two roundings of at most ``u (|z| + |sin z|)``.
``κ`` covers these eightfold.

Each bound is computed in float64 from non-negative terms (a sum of at most ``n + 4`` of them),
so it is inflated by ``1 + 2γ_{n+4}`` and by an absolute ``(n + 4) · 2⁻¹⁰²²`` that covers
gradual underflow (at most ``2⁻¹⁰⁷⁵`` per operation; Higham §2.1).

A matrix-free step (:func:`~tightlip.bounds.lower.network.is_matrix_free`, a large
convolution) computes ``Ŵ ĥ`` by ``operator.apply`` (on the CPU in float64: im2col and
inner products, so the same model holds with ``n`` = the operator's input width, at least
the length of every inner product) and ``γ|Ŵ||ĥ|`` by ``abs_operator().apply``, the
operator whose matrix is ``|A|``; such a step is exact (``E = 0``).

Normwise companion. Alongside the entrywise bound ``e`` each row carries a scalar ``ε ≥ ‖ĥ − h‖₂``
(Higham §3.5, the normwise form). Split an affine step's entrywise bound into its *fresh* part
``r = γ(|Ŵ||ĥ| + |b|) + E(|ĥ| + e)`` and its *carried* part ``|Ŵ| e``: then
``‖ẑ − z‖₂ ≤ ‖r‖₂ + ‖Ŵ‖₂ ε``, with ``‖Ŵ‖₂`` a certified norm (``‖W‖₂ + ‖E‖_F`` for a merged
step); an activation maps ``ε`` to ``Lip₂(σ) ε`` plus the ℓ2 norm of its evaluation error. Each
entry of the error is at most ``ε`` (``|d_k| ≤ ‖d‖₂``), so every step's entrywise bound is
clamped to ``ε`` and stays sound. This matters when ``|W|`` is far larger than ``W``: a
Sandwich chain's full-map circular convolutions cancel, and carrying ``|W| e`` through seven of
them inflated a 10⁻¹⁵ error to 10⁻² on the MNIST net, while ``∏ ‖W‖₂`` keeps it near 10⁻⁸. A
matrix-free step carries the error normwise only (:meth:`_OperatorAffine.__call__`).

With a ``tangent`` ``v`` the evaluation also returns ``Ĵ(x) v``, pushed forward through the same
computed pre-activations (activation slopes by forward-mode differentiation of the activation
alone, at ``ẑ``): where every pre-activation is certified to lie inside one linear piece
(:mod:`~tightlip.bounds.lower.kinks`) those slopes are the piece's, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.func import jvp

from tightlip.bounds.lower.network import is_matrix_free, linear_factors
from tightlip.layers import Activation
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import UNIT_ROUNDOFF, gamma, round_up
from tightlip.operators import quick_certified_norm

#: ``κ``: the evaluation error of an activation relative to ``|σ̂(ẑ)| + ‖ẑ‖_∞`` (docstring)
ACTIVATION_ERROR = 16.0 * UNIT_ROUNDOFF
#: the smallest normal float64: an absolute allowance per term for underflow
SMALLEST_NORMAL = 2.0**-1022


@dataclass(frozen=True)
class BoundedEvaluation:
    """``f̂(x)`` with ``|f̂(x) − f(x)| ≤ output_error`` entrywise, row-wise for a batch.

    ``pre_activations[k]`` / ``pre_errors[k]``: the computed input ``ẑ`` of the ``k``-th
    activation step and a bound on ``|ẑ − z|``. ``tangent``: ``Ĵ(x) v`` when asked for.
    """

    output: torch.Tensor
    output_error: torch.Tensor
    pre_activations: tuple[torch.Tensor, ...]
    pre_errors: tuple[torch.Tensor, ...]
    tangent: torch.Tensor | None = None


@dataclass(frozen=True)
class Error:
    """Bounds on the error ``d = ĥ − h`` of a computed row batch: ``|d| ≤ entries`` entrywise
    and ``‖d‖₂ ≤ l2`` per row (shape ``(B, 1)``; the normwise companion, module docstring)."""

    entries: torch.Tensor
    l2: torch.Tensor

    @classmethod
    def zero(cls, h: torch.Tensor) -> Error:
        return cls(torch.zeros_like(h), h.new_zeros(h.shape[0], 1))

    def clamped(self) -> Error:
        """Each bound tightened by the other: ``|d_k| ≤ ‖d‖₂`` and ``‖d‖₂ ≤ ‖entries‖₂``."""
        entries = torch.minimum(self.entries, self.l2)
        return Error(entries, torch.minimum(self.l2, _l2_up(entries)))


_StepResult = tuple[torch.Tensor, Error, torch.Tensor | None]


def _l2_up(values: torch.Tensor) -> torch.Tensor:
    """Row-wise upper bounds ``(B, 1)`` on ``‖values‖₂`` for non-negative ``values``: relative
    rounding ``γ_{n+4}`` twice over, and ``√n · 2⁻⁵³⁰`` for squares lost to underflow."""
    n = values.shape[-1]
    norm = torch.linalg.vector_norm(values, dim=-1, keepdim=True)
    return norm * (1.0 + 2.0 * gamma(n + 4)) + math.sqrt(n) * 2.0**-530


def _scaled(l2: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor · l2`` rounded up, with ``inf · 0 = inf`` (an unknown constant bounds nothing)."""
    if not math.isfinite(factor):
        return torch.full_like(l2, math.inf)
    return l2 * factor * (1.0 + 4.0 * UNIT_ROUNDOFF)


@dataclass(frozen=True, eq=False)
class _Affine:
    """One affine step's float64 pieces, prepared once: ``Ŵᵀ``, ``|Ŵ|ᵀ``, ``Eᵀ``, ``b``."""

    weight_t: torch.Tensor
    abs_weight_t: torch.Tensor
    error_t: torch.Tensor | None
    bias: torch.Tensor | None
    #: a certified ``‖Ŵ‖₂`` (normwise companion, module docstring)
    norm: float

    @classmethod
    def of(cls, step: AffineStep) -> _Affine:
        weight = step.weight.to(torch.float64)
        norm = quick_certified_norm(step.operator, "2")
        error = None
        if not step.exact:
            error_matrix = step.weight_error().to(torch.float64)
            norm = round_up(norm + float(_l2_up(error_matrix.reshape(1, -1))))
            error = error_matrix.T.contiguous()
        return cls(weight.T.contiguous(), weight.abs().T.contiguous(), error, step.bias, norm)

    @property
    def in_features(self) -> int:
        return self.weight_t.shape[0]

    def __call__(self, h: torch.Tensor, e: Error, u: torch.Tensor | None) -> _StepResult:
        """``(ẑ, bounds on ẑ − z, Ŵ u)`` for input ``ĥ`` with error ``e`` (docstring)."""
        n = self.in_features
        z = h @ self.weight_t
        if self.bias is not None:
            z = z + self.bias
        g = gamma(n + 2)
        habs = h.abs()
        fresh = (g * habs) @ self.abs_weight_t
        if self.bias is not None:
            fresh = fresh + g * self.bias.abs()
        if self.error_t is not None:
            fresh = fresh + (habs + e.entries) @ self.error_t
        inflation, underflow = 1.0 + 2.0 * gamma(n + 4), (n + 4) * SMALLEST_NORMAL
        fresh = fresh * inflation + underflow
        carried = (e.entries @ self.abs_weight_t) * inflation + underflow
        l2 = _l2_up(fresh) + _scaled(e.l2, self.norm)
        return z, Error(fresh + carried, l2).clamped(), None if u is None else u @ self.weight_t


@dataclass(frozen=True, eq=False)
class _OperatorAffine:
    """One matrix-free affine step: ``A`` and ``|A|`` as operators, ``b`` (module docstring)."""

    step: AffineStep

    def __call__(self, h: torch.Tensor, e: Error, u: torch.Tensor | None) -> _StepResult:
        """``(ẑ, bounds on ẑ − z, A u)``, factor by factor for a merged step (each factor an
        exact step of its own, the bias on the last; module docstring).

        Only the fresh rounding ``γ|A_f||ẑ|`` is applied through ``|A_f|``; the carried error is
        bounded normwise, ``|(A_f d)_k| ≤ ‖A_f d‖₂ ≤ ‖A_f‖₂ ε``, so each factor costs one ``|A|``
        product and a cancelling full-map ``|A_f|`` never multiplies an error."""
        z, l2 = h, e.l2
        factors = linear_factors(self.step)
        for k, factor in enumerate(factors):
            bias = self.step.bias if k == len(factors) - 1 else None
            n = factor.in_features
            g = gamma(n + 2)
            fresh = factor.abs_operator().apply(g * z.abs())  # type: ignore[attr-defined]
            z = factor.apply(z)
            if bias is not None:
                z = z + bias
                fresh = fresh + g * bias.abs()
            fresh = fresh * (1.0 + 2.0 * gamma(n + 4)) + (n + 4) * SMALLEST_NORMAL
            carried = _scaled(l2, quick_certified_norm(factor, "2"))
            entries = fresh + carried
            l2 = carried + _l2_up(fresh)
        return z, Error(entries, l2).clamped(), None if u is None else self.step.operator.apply(u)


def _affine(step: AffineStep) -> _Affine | _OperatorAffine:
    return _OperatorAffine(step) if is_matrix_free(step) else _Affine.of(step)


def _activation(act: Activation, z: torch.Tensor, e: Error, u: torch.Tensor | None) -> _StepResult:
    """``(σ̂(ẑ), bounds on σ̂(ẑ) − σ(z), J_σ(ẑ) u)`` (docstring)."""
    if u is None:
        h = act(z)
        tangent = None
    else:
        h, tangent = jvp(act, (z,), (u,))
    carried = act.lipschitz("inf") * e.entries.amax(dim=-1, keepdim=True)
    evaluation = ACTIVATION_ERROR * (h.abs() + z.abs().amax(dim=-1, keepdim=True))
    evaluation = evaluation * (1.0 + 8.0 * UNIT_ROUNDOFF) + SMALLEST_NORMAL
    bound = (carried * (1.0 + 8.0 * UNIT_ROUNDOFF) + evaluation).expand_as(h)
    l2 = _scaled(e.l2, _lipschitz_2(act)) + _l2_up(evaluation)
    return h, Error(bound, l2).clamped(), tangent


def _lipschitz_2(act: Activation) -> float:
    """``Lip₂(σ)``, or ``inf`` where the activation does not state it."""
    try:
        return act.lipschitz("2")
    except NotImplementedError:
        return math.inf


class ErrorBoundedNetwork:
    """A :class:`LayerChain` evaluated in float64 with its rounding error bounded (docstring)."""

    def __init__(self, chain: LayerChain) -> None:
        self.chain = chain
        self._steps: tuple[_Affine | _OperatorAffine | Activation, ...] = tuple(
            _affine(step) if isinstance(step, AffineStep) else step.activation
            for step in chain.steps
        )

    def __call__(self, x: torch.Tensor, tangent: torch.Tensor | None = None) -> BoundedEvaluation:
        """Evaluate the rows of ``x`` (``(B, n)``); with ``tangent`` (``(B, n)``) also ``Ĵ v``."""
        with torch.no_grad():
            h = self.chain.check_input(x.detach().to(torch.float64))
            e = Error.zero(h)
            u = None if tangent is None else tangent.detach().to(torch.float64)
            pre: list[torch.Tensor] = []
            errors: list[torch.Tensor] = []
            for step in self._steps:
                if isinstance(step, _Affine | _OperatorAffine):
                    h, e, u = step(h, e, u)
                else:
                    pre.append(h)
                    errors.append(e.entries)
                    h, e, u = _activation(step, h, e, u)
        return BoundedEvaluation(h, e.entries, tuple(pre), tuple(errors), u)
