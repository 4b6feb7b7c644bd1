"""The clipped ReLU ``min(max(z, 0), θ⁺)`` with a learnable threshold per unit.

From local-Lipschitz training (Huang, Zhang, Shi, Kolter & Anandkumar, NeurIPS 2021).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tightlip.errors import ModelShapeError
from tightlip.layers.activation import ONE_LIPSCHITZ, Activation, Surrogate, Temperature
from tightlip.layers.pieces import ElementwisePieces, Pieces
from tightlip.layers.rounding import RoundingModel, ThresholdRounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName


class ClippedReLU(Activation):
    """``σ_θ(z) = min(max(z, 0), θ⁺)`` with a learnable threshold per unit, ``θ⁺ = max(θ, 0)``.

    Equals ``ReLU(z) − ReLU(z − θ⁺)``. Its Jacobian is ``diag(1[0 < z < θ⁺])`` with entries in
    {0, 1}, so Lip = 1 in every p-norm; it is piecewise linear (breakpoints 0 and θ⁺) and
    saturates no norm. Elementwise with slopes in ``[0, 1]``: every difference quotient of a
    clip lies there. Not positively homogeneous (the threshold does not scale).

    Not in :data:`~tightlip.layers.ACTIVATIONS`: it needs its width (``features``).
    """

    piecewise_linear = True
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """``min(relu z, fl(θ))``: only the rounding of the thresholds ``θ`` (and underflow)."""
        theta = self.positive_threshold(torch.float64).detach().cpu().expand(centre.shape[1])
        return ThresholdRounding.of(theta, self.out_features(centre.shape[1]), norm)

    def __init__(self, features: int, init: float = 1.0) -> None:
        super().__init__()
        self.features = features
        self.threshold = nn.Parameter(torch.full((features,), float(init)))

    def positive_threshold(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        theta = self.threshold.clamp_min(0.0)
        return theta if dtype is None else theta.to(dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(z), self.positive_threshold(z.dtype))

    def slopes(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def as_slope_network(self, width: int) -> SlopeForm:
        theta = self._theta_numpy(width)
        return SlopeForm.elementwise(
            "clipped_relu",
            width,
            lambda z: np.minimum(np.maximum(z, 0.0), theta),
            self.slopes(),
            piecewise_linear=True,
        )

    def pieces(self, width: int) -> Pieces:
        theta = self._theta_numpy(width)
        zero = np.zeros_like(theta)
        return ElementwisePieces(
            breakpoints=np.stack([zero, theta], axis=1),
            slopes=((0.0, 1.0, 0.0),),
            intercepts=np.stack([zero, zero, theta])[None],
        )

    def surrogate(self, temperature: Temperature) -> Surrogate:
        """``τ softplus(z/τ) − τ softplus((z − θ⁺)/τ)``: the ReLU difference, each smoothed."""

        def smooth(z: torch.Tensor) -> torch.Tensor:
            theta = self.positive_threshold(z.dtype)
            return temperature * (
                F.softplus(z / temperature) - F.softplus((z - theta) / temperature)
            )

        return smooth

    def extra_repr(self) -> str:
        return f"features={self.features}"

    def _theta_numpy(self, width: int) -> np.ndarray:
        if width != self.features:
            raise ModelShapeError(f"ClippedReLU({self.features}) after a layer of width {width}")
        return self.positive_threshold().detach().to(torch.float64).numpy().copy()
