"""GroupSort (Anil, Lucas & Grosse, ICML 2019) and its special case MaxMin."""

from __future__ import annotations

import torch

from tightlip.errors import BadArgumentError, MethodNotApplicableError, ModelShapeError
from tightlip.layers.activation import (
    ACTIVATIONS,
    ONE_LIPSCHITZ,
    Activation,
    Surrogate,
    Temperature,
    homogeneous_surrogate,
)
from tightlip.layers.pieces import Pieces, SortedGroupPieces
from tightlip.layers.rounding import RoundingModel, exact_rounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.layers.smoothing import smooth_abs
from tightlip.norms import NormName


def _smooth_maxmin(z: torch.Tensor) -> torch.Tensor:
    """``(max, min) = mid ± |a − b|/2`` with ``|·|`` smoothed at temperature 1."""
    a, b = z.unflatten(-1, (-1, 2)).unbind(-1)
    mid, half_gap = (a + b) / 2, smooth_abs(a - b, 1.0) / 2
    return torch.stack([mid + half_gap, mid - half_gap], dim=-1).flatten(-2)


class GroupSort(Activation):
    """Sort each consecutive group of ``group_size`` units (Anil et al. 2019); MaxMin is size 2.

    On each linear piece the Jacobian is a permutation matrix, an isometry of every p-norm,
    so Lip = 1 and the map saturates every p-norm. Not elementwise, so it has no
    slope-restricted form.
    """

    piecewise_linear = True
    positively_homogeneous = True
    saturating_norms = frozenset({"1", "2", "inf"})
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (a sort of each group): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if group_size < 2:
            raise BadArgumentError(f"group_size must be at least 2, got {group_size}")
        self.group_size = group_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] % self.group_size:
            raise ModelShapeError(
                f"GroupSort({self.group_size}) needs a width divisible by {self.group_size}, "
                f"got {z.shape[-1]}"
            )
        groups = z.unflatten(-1, (-1, self.group_size))
        return groups.sort(dim=-1, descending=True).values.flatten(-2)

    def as_slope_network(self, width: int) -> SlopeForm:
        raise MethodNotApplicableError(
            f"{type(self).__name__}, which sorts groups of units and has no elementwise "
            "slope-restricted equivalent"
        )

    def pieces(self, width: int) -> Pieces:
        if width % self.group_size:
            raise MethodNotApplicableError(
                f"GroupSort({self.group_size}) after a layer of width {width}: not divisible"
            )
        return SortedGroupPieces(self.group_size, width)

    def surrogate(self, temperature: Temperature) -> Surrogate:
        if self.group_size != 2:
            return self.forward
        return homogeneous_surrogate(_smooth_maxmin, temperature)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


@ACTIVATIONS.register("maxmin")
class MaxMin(GroupSort):
    """``(a, b) ↦ (max(a, b), min(a, b))`` on consecutive pairs: GroupSort with groups of 2."""

    def __init__(self) -> None:
        super().__init__(group_size=2)

    def extra_repr(self) -> str:
        return ""
