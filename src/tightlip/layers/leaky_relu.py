"""The leaky rectifier ``z ↦ z`` for ``z ≥ 0`` and ``a z`` for ``z < 0``."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from tightlip.errors import BadArgumentError
from tightlip.layers.activation import (
    ACTIVATIONS,
    Activation,
    Surrogate,
    Temperature,
    homogeneous_surrogate,
)
from tightlip.layers.pieces import Pieces, sign_pieces
from tightlip.layers.slope_form import SlopeForm
from tightlip.layers.smoothing import smooth_relu
from tightlip.norms import NormName, parse_norm

#: the float32 number nearest 0.01 (torch's default slope): it is the slope float32 torch
#: computes with and the one ONNX stores (``LeakyRelu``'s ``alpha`` is a float32 attribute), so
#: a tightlip model with the default slope exports to ONNX and back exactly
DEFAULT_NEGATIVE_SLOPE = float(np.float32(0.01))


@ACTIVATIONS.register("leaky-relu")
class LeakyReLU(Activation):
    """``σ_a(z) = max(z, 0) + a · min(z, 0)`` elementwise (Maas, Hannun & Ng, ICML 2013 WDLASM).

    Piecewise linear with one kink at 0: the Jacobian is ``diag(d)`` with ``d_i ∈ {a, 1}``
    (both occur), so ``‖J‖_{p→p} = max_i |d_i|`` and ``Lip_p = max(1, |a|)`` in every p; it
    saturates a norm only when ``|a| = 1``, which we do not claim. Every difference quotient
    ``(σ(x) − σ(y)) / (x − y)`` is a convex combination of the slopes of the two pieces, so σ is
    slope-restricted on ``[min(a, 1), max(a, 1)]`` (``[a, 1]`` for ``0 ≤ a ≤ 1``). Positively
    homogeneous for every a. The slope is kept exactly as given (see
    :data:`DEFAULT_NEGATIVE_SLOPE` for the default).
    """

    piecewise_linear = True
    positively_homogeneous = True

    def __init__(self, negative_slope: float = DEFAULT_NEGATIVE_SLOPE) -> None:
        super().__init__()
        slope = float(negative_slope)
        if not math.isfinite(slope):
            raise BadArgumentError(f"LeakyReLU needs a finite slope, got {negative_slope!r}")
        self.negative_slope = slope

    def lipschitz(self, norm: NormName | str) -> float:
        """``max(1, |a|)`` in every p (class docstring); the constant depends on the slope, so
        it is computed here rather than stated per class."""
        parse_norm(norm)  # validates the name
        return max(1.0, abs(self.negative_slope))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(z, self.negative_slope)

    def slopes(self) -> tuple[float, float]:
        a = self.negative_slope
        return (min(a, 1.0), max(a, 1.0))

    def as_slope_network(self, width: int) -> SlopeForm:
        a = self.negative_slope
        return SlopeForm.elementwise(
            "leaky_relu",
            width,
            lambda z: np.where(z >= 0, z, a * z),
            self.slopes(),
            piecewise_linear=True,
        )

    def pieces(self, width: int) -> Pieces:
        return sign_pieces(width, (self.negative_slope, 1.0))

    def surrogate(self, temperature: Temperature) -> Surrogate:
        """``a z + (1 − a) τ softplus(z / τ)``: exact for the linear part, the kink smoothed
        (error at most ``|1 − a| τ log 2``)."""
        a = self.negative_slope
        return homogeneous_surrogate(lambda z: a * z + (1.0 - a) * smooth_relu(z, 1.0), temperature)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope!r}"
