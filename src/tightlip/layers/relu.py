"""The rectifier ``max(0, z)``."""

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
from tightlip.layers.slope_form import SlopeForm, relu
from tightlip.layers.smoothing import smooth_relu
from tightlip.norms import NormName


@ACTIVATIONS.register("relu")
class ReLU(Activation):
    """``max(0, z)``: Jacobian ``diag(1[z>0])``, Lip = 1 in every p, saturating none.

    Elementwise with slopes in ``[0, 1]``. Kept for comparison and ablation: dead units (zero
    Jacobian rows) are one of the three obstructions to a tight trivial bound.
    """

    piecewise_linear = True
    positively_homogeneous = True
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (a comparison with 0): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(z)

    def slopes(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm.elementwise("relu", width, relu, self.slopes(), piecewise_linear=True)

    def pieces(self, width: int) -> Pieces:
        return sign_pieces(width, (0.0, 1.0))

    def surrogate(self, temperature: Temperature) -> Surrogate:
        return homogeneous_surrogate(lambda z: smooth_relu(z, 1.0), temperature)
