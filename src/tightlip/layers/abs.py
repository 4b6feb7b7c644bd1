"""The absolute value ``σ(z) = |z|``."""

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
from tightlip.layers.smoothing import smooth_abs
from tightlip.norms import NormName


@ACTIVATIONS.register("abs")
class Abs(Activation):
    """``σ(z) = |z|``. Jacobian ``diag(sign z)``: a diagonal of ±1.

    For every p, ``‖diag(±1)‖_{p→p} = 1``, so Lip = 1 and the activation *saturates* every
    p-norm: ``‖J v‖_p = ‖v‖_p`` for all v. Elementwise with slopes in ``[−1, 1]``; as a
    slope-restricted network with slopes in ``[0, 1]``, ``|z| = relu(z) + relu(−z)``:
    ``[I, I] relu([I; −I] z)``.
    """

    piecewise_linear = True
    positively_homogeneous = True
    sign_jacobian = True
    saturating_norms = frozenset({"1", "2", "inf"})
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (a sign change): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs()

    def slopes(self) -> tuple[float, float]:
        return (-1.0, 1.0)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm(
            rows=(1.0, -1.0),
            columns=(1.0, 1.0),
            pieces=(ScalarPiece("relu", 2 * width, relu, piecewise_linear=True),),
            alpha=0.0,
            beta=1.0,
            note="|z| = relu(z) + relu(−z) on rows [W; −W]",
        )

    def pieces(self, width: int) -> Pieces:
        return sign_pieces(width, (-1.0, 1.0))

    def surrogate(self, temperature: Temperature) -> Surrogate:
        return homogeneous_surrogate(lambda z: smooth_abs(z, 1.0), temperature)
