"""Rounding: every reported witness value is deflated to stay a lower bound in float64.

The reported value is ``‖Ĵ v‖_p`` computed in float64. The computed product of matrices and
activation Jacobians differs from the exact one by at most ``γ_N · ∏_i ‖|W_i|‖_p ∏_j Lip_p(σ_j)``
to first order (Higham, *Accuracy and Stability of Numerical Algorithms*, Thm 3.5 and §3.5,
``γ_N = N u / (1 − N u)``, ``N`` the total length of the inner products, ``‖|W|‖₂ ≤ ‖W‖_F``); we
subtract that, and in addition deflate by the relative factor ``1 − 2⁻³⁰``, which covers the
evaluation of activation derivatives at pre-activations that are themselves rounded (errors of
order ``N u`` relative for networks of moderate weight norms). When the chain's dense matrices
are rounded products of merged layers, the chain's Jacobian error bound is subtracted too.
"""

from __future__ import annotations

from tightlip.model import LayerChain
from tightlip.norms import NormName, abs_operator_norm, gamma

#: relative deflation of every reported value
RELATIVE_SLACK = 2.0**-30


def rounding_margin(chain: LayerChain, norm: NormName) -> float:
    """``γ_N · ∏‖|W_i|‖_p · ∏ Lip_p(σ_j)``: first-order forward error of ``‖Ĵ v‖`` (``‖v‖ = 1``)."""
    length = sum(step.in_features for step in chain.affine_steps) + 4 * chain.depth
    product = 1.0
    for step in chain.affine_steps:
        product *= abs_operator_norm(step.weight, norm)  # ‖|W|‖₂ ≤ ‖W‖_F, still valid
    for step in chain.activation_steps:
        product *= step.activation.lipschitz(norm)
    return 2.0 * gamma(length) * product + chain.jacobian_error_bound(norm)  # merged layers


def deflate(value: float, margin: float) -> float:
    """``value (1 − 2⁻³⁰) − margin``, at least 0: a float64 witness value made a lower bound."""
    return max(0.0, value * (1.0 - RELATIVE_SLACK) - margin)
