"""The hyperbolic tangent."""

from __future__ import annotations

import numpy as np
import torch

from tightlip.layers.activation import ACTIVATIONS, ONE_LIPSCHITZ, Activation
from tightlip.layers.rounding import RoundingModel, bounded_function_rounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName


@ACTIVATIONS.register("tanh")
class Tanh(Activation):
    """``tanh z``: Jacobian ``diag(1 − tanh² z)`` with entries in (0, 1], Lip = 1 in every p.

    Elementwise with slopes in ``[0, 1]`` (the derivative ``1 − tanh²`` lies there).
    """

    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Each output a ``tanh`` value, off by at most the format's accuracy ``A`` of it."""
        return bounded_function_rounding(self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)

    def slopes(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm.elementwise("tanh", width, np.tanh, self.slopes())
