"""Rounding of a Jacobian-vector product, and the slack every reported value keeps.

At an interior point of a piecewise-linear network (:mod:`~tightlip.bounds.lower.kinks`) the
Jacobian is ``J = W_L M_{L−1} W_{L−1} ⋯ M_1 W_1`` with ``M_j`` the linear maps of the pieces
(entries 0 and ±1 for the activations of tightlip, so products with them are exact), and
``Ĵ v`` is computed as ``W_L (M (⋯ (M (W_1 v))))`` in float64. Its forward error is at most
``γ_N ∏_i ‖|W_i|‖_p ∏_j Lip_p(σ_j) ‖v‖_p`` to first order (Higham, *Accuracy and Stability of
Numerical Algorithms*, Thm 3.5 and §3.5; ``γ_N = N u / (1 − N u)``, ``N`` the total length of the
inner products, ``‖|M_j|‖_p ≤ Lip_p(σ_j)`` for those maps). We double it for the second-order
terms. ``‖|W|‖_p`` is certified without an SVD (:func:`~tightlip.norms.certified_nonnegative_norm`:
Schur's test for ℓ2, nearly tight for an entrywise non-negative matrix). When the chain's dense
matrices are rounded products of merged layers, the chain's Jacobian error bound is added.

Every reported value is, in addition, the certified value times ``1 − 2⁻³⁰``: a re-check of the
witness (:func:`tightlip.bounds.check_lower`) in another process, whose BLAS may sum in another
order, then still certifies at least the reported value.

A matrix-free step (a large convolution) gets ``‖|W|‖_p`` from its ``abs_operator()`` (the
convolution with ``|K|``, whose matrix is ``|W|`` exactly) by that operator's certified norm;
a merged one is applied through its exact factors, so it adds no merged-layer error (and its
dense product, 12 544² entries for a Sandwich chain, is never formed).
"""

from __future__ import annotations

import math

from tightlip.bounds.lower.network import inner_length, is_matrix_free
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import NormName, certified_nonnegative_norm, gamma, product_rounded_up

#: relative slack of every reported value (module docstring)
RELATIVE_SLACK = 2.0**-30


def rounding_margin(chain: LayerChain, norm: NormName) -> float:
    """``2 γ_N ∏‖|W_i|‖_p ∏ Lip_p(σ_j)`` (+ merged-layer error): the forward error of ``‖Ĵ v‖``
    for ``‖v‖_p = 1`` (module docstring)."""
    length = sum(_length(step) for step in chain.affine_steps) + 4 * chain.depth
    product = product_rounded_up(
        [abs_norm(step, norm) for step in chain.affine_steps]
        + [step.activation.lipschitz(norm) for step in chain.activation_steps]
    )
    return math.nextafter(
        2.0 * gamma(length) * product + chain.jacobian_error_bound(norm, is_matrix_free),
        math.inf,
    )


def _length(step: AffineStep) -> int:
    """The rounded operations along one output of ``step`` as the search evaluates it."""
    return inner_length(step) if is_matrix_free(step) else step.in_features


def abs_norm(step: AffineStep, norm: NormName) -> float:
    """A float ``≥ ‖|W|‖_{p→p}`` for one step, dense or matrix-free (module docstring)."""
    if is_matrix_free(step):
        return step.operator.abs_operator().certified_norm(norm)  # type: ignore[attr-defined]
    return certified_nonnegative_norm(step.weight.abs(), norm)


def reported(value: float) -> float:
    """``value (1 − 2⁻³⁰)``, at least 0: what a certificate reports for a certified value."""
    return max(0.0, math.nextafter(value * (1.0 - RELATIVE_SLACK), 0.0))
