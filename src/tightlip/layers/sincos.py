"""The bias-free sinusoidal pair ``z ↦ (sin z, cos z)``."""

from __future__ import annotations

import math
from types import MappingProxyType

import torch

from tightlip.errors import MethodNotApplicableError
from tightlip.layers.activation import ACTIVATIONS, Activation
from tightlip.layers.rounding import RoundingModel, bounded_function_rounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName


@ACTIVATIONS.register("sincos")
class SinCos(Activation):
    """The bias-free sinusoidal pair ``z ↦ (sin z, cos z)``.

    Jacobian ``J = [diag(cos z); −diag(sin z)]``; column i is ``(cos zᵢ, −sin zᵢ)`` placed in two
    distinct rows, so the columns are orthonormal: ``JᵀJ = I`` and ‖J‖₂ = 1 at every z. It
    saturates ℓ2 and needs no biases for universal approximation, because
    ``sin(wᵀx + b) = cos b · sin(wᵀx) + sin b · cos(wᵀx)`` is a linear read-out of the pair.

    Other norms (derived, not saturated): column abs-sum ``|cos| + |sin| ≤ √2`` with equality at
    z = π/4, so Lip₁ = √2; every row holds a single entry of modulus ≤ 1, so Lip_∞ = 1.

    No useful slope-restricted form: sin and cos are slope-restricted only on ``[−1, 1]``
    (``αβ < 0``), and the quadratic constraints cannot see ``sin² + cos² = 1``, so the best
    such certificate is the trivial bound inflated by √2 per layer.
    """

    expansion = 2
    saturating_norms = frozenset({"2"})
    lipschitz_constants = MappingProxyType({"1": math.sqrt(2.0), "2": 1.0, "inf": 1.0})

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Each output a ``sin`` or ``cos`` value, off by at most the format's accuracy ``A`` of it."""
        return bounded_function_rounding(self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(z), torch.cos(z)], dim=-1)

    def as_slope_network(self, width: int) -> SlopeForm:
        raise MethodNotApplicableError(
            "SinCos (sin z, cos z), whose parts are slope-restricted only on [−1, 1] (not "
            "sign-definite): the quadratic constraints cannot use sin² + cos² = 1, so no "
            "equivalent slope-restricted network gives a bound better than the trivial one"
        )
