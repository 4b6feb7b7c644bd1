"""Concatenated ReLU ``z ↦ (max(0, z), max(0, −z))`` (Shang et al., ICML 2016)."""

from __future__ import annotations

import torch

from tightlip.layers.activation import (
    ACTIVATIONS,
    ONE_LIPSCHITZ,
    Activation,
    Surrogate,
    Temperature,
    homogeneous_surrogate,
)
from tightlip.layers.pieces import Pieces, sign_pieces
from tightlip.layers.rounding import RoundingModel, exact_rounding
from tightlip.layers.slope_form import ScalarPiece, SlopeForm, relu
from tightlip.layers.smoothing import smooth_relu
from tightlip.norms import NormName


def _unit_surrogate(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([smooth_relu(z, 1.0), smooth_relu(-z, 1.0)], dim=-1)


@ACTIVATIONS.register("crelu")
class CReLU(Activation):
    """Concatenated ReLU ``z ↦ (max(0, z), max(0, −z))`` (Shang et al. 2016).

    Jacobian: the ``2d × d`` matrix ``[diag(1[z>0]); −diag(1[z<0])]``. Each column has exactly
    one entry ±1 (for z ≠ 0), so the max column abs-sum is 1 (p = 1); ``JᵀJ = I`` (p = 2);
    each row has at most one ±1 (p = ∞). Hence Lip = 1 in every p. The output
    ``(relu z, relu −z)`` has ``‖·‖_p^p = Σ |z_i|^p``, so ``‖J v‖_p = ‖v‖_p`` for p ∈ [1, ∞):
    the map saturates those norms (it also preserves ℓ∞, but we only claim what the paper does).
    As a slope-restricted network: ``CReLU(z) = relu([I; −I] z)``.
    """

    expansion = 2
    piecewise_linear = True
    positively_homogeneous = True
    saturating_norms = frozenset({"1", "2"})
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (two comparisons with 0): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(z), torch.relu(-z)], dim=-1)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm(
            rows=(1.0, -1.0),
            pieces=(ScalarPiece("relu", 2 * width, relu, piecewise_linear=True),),
            alpha=0.0,
            beta=1.0,
            note="CReLU(z) = relu([I; −I] z) on rows [W; −W]",
        )

    def pieces(self, width: int) -> Pieces:
        # (relu z, relu −z) = ([z > 0] z, −[z < 0] z)
        return sign_pieces(width, (0.0, 1.0), (-1.0, 0.0))

    def surrogate(self, temperature: Temperature) -> Surrogate:
        return homogeneous_surrogate(_unit_surrogate, temperature)
