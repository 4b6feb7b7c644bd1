"""The ℓ1 polyactivation ``z ↦ ((z + sin z)/2, (z − sin z)/2)``."""

from __future__ import annotations

import numpy as np
import torch

from tightlip.layers.activation import ACTIVATIONS, ONE_LIPSCHITZ, Activation
from tightlip.layers.rounding import RoundingModel, SinPairRounding
from tightlip.layers.slope_form import ScalarPiece, SlopeForm
from tightlip.norms import NormName


def _plus(z: np.ndarray) -> np.ndarray:
    return (z + np.sin(z)) / 2


def _minus(z: np.ndarray) -> np.ndarray:
    return (z - np.sin(z)) / 2


@ACTIVATIONS.register("sinpair")
class SinPair(Activation):
    """The ℓ1 polyactivation ``z ↦ ((z + sin z)/2, (z − sin z)/2)``.

    Jacobian column i is ``((1 + cos zᵢ)/2, (1 − cos zᵢ)/2)`` in two distinct rows: both
    entries are ≥ 0 and they sum to 1, so every column has abs-sum exactly 1: ‖J‖₁ = 1 at
    every z (saturates ℓ1). Each row has one entry in [0, 1], so Lip_∞ = 1. Column ℓ2 norms are
    ``√((1 + cos² z)/2) ≤ 1`` with orthogonal columns, so Lip₂ = 1 (reached at z = kπ).
    As a slope-restricted network: the scalar functions ``(z ± sin z)/2``, whose slopes
    ``(1 ± cos z)/2`` lie in ``[0, 1]``, on duplicated rows ``[W; W]``.
    """

    expansion = 2
    saturating_norms = frozenset({"1"})
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """``(z ± fl(sin z))/2``: grows with ``‖z‖_p`` (:class:`SinPairRounding`)."""
        return SinPairRounding.around(centre, self.out_features(centre.shape[1]), norm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = torch.sin(z)
        return torch.cat([(z + s) / 2, (z - s) / 2], dim=-1)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm(
            rows=(1.0, 1.0),
            pieces=(
                ScalarPiece("sinpair_plus", width, _plus),
                ScalarPiece("sinpair_minus", width, _minus),
            ),
            alpha=0.0,
            beta=1.0,
            note="SinPair as (z ± sin z)/2 on rows [W; W], slopes in [0, 1]",
        )
