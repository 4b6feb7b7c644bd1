"""The trivial bound: the product of layerwise Lipschitz constants.

For ``f = A_L ∘ σ_{L−1} ∘ … ∘ σ_1 ∘ A_1`` with ``A_i(h) = W_i h + b_i``,

    Lip_p(f) ≤ ‖W_L‖_{p→p} · ∏_{i<L} Lip_p(σ_i) · ‖W_i‖_{p→p},

because Lipschitz constants multiply under composition and biases do not change them. Each
factor is a *certified* upper bound (the step operator's ``certified_norm``, see
:mod:`tightlip.norms` and, for merged layers, :mod:`tightlip.operators`), and the product is
rounded up, so the result is sound in floating point.
"""

from __future__ import annotations

from tightlip.bounds.registry import register_upper
from tightlip.certificate import Certificate, LayerBound
from tightlip.model import ActivationStep, AffineStep, LayerChain
from tightlip.norms import NormName, product_rounded_up

__all__ = ["layer_factors", "product_rounded_up", "trivial_bound"]


def layer_factors(chain: LayerChain, norm: NormName) -> tuple[LayerBound, ...]:
    """The per-layer factors of the trivial bound, in order."""
    factors = []
    for step in chain.steps:
        if isinstance(step, AffineStep):
            factors.append(LayerBound(step.name, "linear", step.certified_norm(norm)))
        elif isinstance(step, ActivationStep):
            factors.append(
                LayerBound(
                    step.name, type(step.activation).__name__, step.activation.lipschitz(norm)
                )
            )
    return tuple(factors)


@register_upper("trivial", dense_error="included")
def trivial_bound(chain: LayerChain, norm: NormName) -> Certificate:
    """``∏`` of the certified layer factors, rounded up (module docstring)."""
    factors = layer_factors(chain, norm)
    return Certificate(
        value=product_rounded_up([f.value for f in factors]),
        method="trivial",
        norm=norm,
        side="upper",
        sound=True,
        layers=factors,
    )
