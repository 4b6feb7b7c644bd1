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
the length of every inner product) and ``|Ŵ| (γ|ĥ| + e)`` by ``abs_operator().apply``, the
operator whose matrix is ``|A|``; such a step is exact (``E = 0``).

With a ``tangent`` ``v`` the evaluation also returns ``Ĵ(x) v``, pushed forward through the same
computed pre-activations (activation slopes by forward-mode differentiation of the activation
alone, at ``ẑ``): where every pre-activation is certified to lie inside one linear piece
(:mod:`~tightlip.bounds.lower.kinks`) those slopes are the piece's, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import jvp

from tightlip.bounds.lower.network import is_matrix_free, linear_factors
from tightlip.layers import Activation
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import UNIT_ROUNDOFF, gamma

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


@dataclass(frozen=True, eq=False)
class _Affine:
    """One affine step's float64 pieces, prepared once: ``Ŵᵀ``, ``|Ŵ|ᵀ``, ``Eᵀ``, ``b``."""

    weight_t: torch.Tensor
    abs_weight_t: torch.Tensor
    error_t: torch.Tensor | None
    bias: torch.Tensor | None

    @classmethod
    def of(cls, step: AffineStep) -> _Affine:
        weight = step.weight.to(torch.float64)
        error = None if step.exact else step.weight_error().to(torch.float64).T.contiguous()
        return cls(weight.T.contiguous(), weight.abs().T.contiguous(), error, step.bias)

    @property
    def in_features(self) -> int:
        return self.weight_t.shape[0]

    def __call__(
        self, h: torch.Tensor, e: torch.Tensor, u: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(ẑ, bound on |ẑ − z|, Ŵ u)`` for input ``ĥ`` with error ``e`` (docstring)."""
        n = self.in_features
        z = h @ self.weight_t
        if self.bias is not None:
            z = z + self.bias
        g = gamma(n + 2)
        habs = h.abs()
        bound = (g * habs + e) @ self.abs_weight_t
        if self.bias is not None:
            bound = bound + g * self.bias.abs()
        if self.error_t is not None:
            bound = bound + (habs + e) @ self.error_t
        bound = bound * (1.0 + 2.0 * gamma(n + 4)) + (n + 4) * SMALLEST_NORMAL
        return z, bound, None if u is None else u @ self.weight_t


@dataclass(frozen=True, eq=False)
class _OperatorAffine:
    """One matrix-free affine step: ``A`` and ``|A|`` as operators, ``b`` (module docstring)."""

    step: AffineStep

    def __call__(
        self, h: torch.Tensor, e: torch.Tensor, u: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(ẑ, bound on |ẑ − z|, A u)``, as :meth:`_Affine.__call__` with ``E = 0``, factor by
        factor for a merged step (each factor an exact step of its own, the bias on the last)."""
        factors = linear_factors(self.step)
        z, bound = h, e
        for k, factor in enumerate(factors):
            bias = self.step.bias if k == len(factors) - 1 else None
            n = factor.in_features
            g = gamma(n + 2)
            bound = factor.abs_operator().apply(g * z.abs() + bound)  # type: ignore[attr-defined]
            z = factor.apply(z)
            if bias is not None:
                z = z + bias
                bound = bound + g * bias.abs()
            bound = bound * (1.0 + 2.0 * gamma(n + 4)) + (n + 4) * SMALLEST_NORMAL
        return z, bound, None if u is None else self.step.operator.apply(u)


def _affine(step: AffineStep) -> _Affine | _OperatorAffine:
    return _OperatorAffine(step) if is_matrix_free(step) else _Affine.of(step)


def _activation(
    act: Activation, z: torch.Tensor, e: torch.Tensor, u: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(σ̂(ẑ), a bound on |σ̂(ẑ) − σ(z)|, J_σ(ẑ) u)`` (docstring)."""
    if u is None:
        h = act(z)
        tangent = None
    else:
        h, tangent = jvp(act, (z,), (u,))
    carried = act.lipschitz("inf") * e.amax(dim=-1, keepdim=True)
    evaluation = ACTIVATION_ERROR * (h.abs() + z.abs().amax(dim=-1, keepdim=True))
    bound = (carried + evaluation) * (1.0 + 8.0 * UNIT_ROUNDOFF) + SMALLEST_NORMAL
    return h, bound, tangent


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
            e = torch.zeros_like(h)
            u = None if tangent is None else tangent.detach().to(torch.float64)
            pre: list[torch.Tensor] = []
            errors: list[torch.Tensor] = []
            for step in self._steps:
                if isinstance(step, _Affine | _OperatorAffine):
                    h, e, u = step(h, e, u)
                else:
                    pre.append(h)
                    errors.append(e)
                    h, e, u = _activation(step, h, e, u)
                    e = e.expand_as(h)
        return BoundedEvaluation(h, e, tuple(pre), tuple(errors), u)
