"""Activations on feature maps ``(C, H, W)``: on channels, as a network's chain reads them.

A :class:`~tightlip.model.LayerChain` holds flat rows: a map ``(C, H, W)`` is the vector of its
entries in C order, ``index(c, h, w) = c·HW + h·W + w``. In that order the channels are
consecutive blocks of ``HW`` entries, so

* an elementwise activation (ReLU, Abs, Tanh, ...) is the same map on the flat vector;
* a polyactivation that concatenates blocks, ``z ↦ (σ₁(z), σ₂(z))`` (CReLU, SinCos, SinPair),
  applied to the flat vector yields exactly the map with ``2C`` channels
  ``(σ₁(z_c))_c, (σ₂(z_c))_c``: concatenating along channels *is* concatenating the flat
  vectors;
* GroupSort / MaxMin on channels sorts, at every pixel, the ``g`` channels of a group
  (GloRo's MinMax on conv maps: Leino, Wang & Fredrikson, ICML 2021, which pairs consecutive
  channels): the entries ``(g·j + t)·HW + s``, ``t < g``, of each group ``j`` and pixel ``s``,
  which are ``HW`` apart and *not* consecutive. :class:`ChannelGroupSort` is that map on flat
  rows; it differs from the flat GroupSort, which pairs neighbouring pixels.

:class:`OnChannels` wraps an activation for use in a convolutional ``nn.Sequential``: it acts
on ``(B, C, H, W)`` tensors as described above, and :func:`~tightlip.model.to_chain` replaces it
by :meth:`OnChannels.chain_activation`, the flat-row activation that computes the same map.
"""

from __future__ import annotations

import torch
from torch import nn

from tightlip.errors import MethodNotApplicableError, ModelShapeError
from tightlip.layers.activation import (
    ONE_LIPSCHITZ,
    Activation,
    Surrogate,
    Temperature,
    homogeneous_surrogate,
)
from tightlip.layers.groupsort import GroupSort
from tightlip.layers.pieces import Pieces, SortedGroupPieces
from tightlip.layers.rounding import RoundingModel, exact_rounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.layers.smoothing import smooth_abs
from tightlip.norms import NormName


class ChannelGroupSort(Activation):
    """GroupSort over groups of ``group_size`` consecutive *channels*, at every pixel.

    Flat rows ``(..., C·S)`` with ``S = H·W`` pixels per channel: the group of channels
    ``g·j, …, g·j + g − 1`` at pixel ``s`` is sorted in decreasing order. On each linear piece
    the Jacobian is a permutation matrix, an isometry of every p-norm, so Lip = 1 in every p
    and the map saturates every p-norm (as the flat GroupSort, Anil, Lucas & Grosse, ICML 2019).
    With ``S = 1`` it *is* the flat GroupSort.
    """

    piecewise_linear = True
    positively_homogeneous = True
    saturating_norms = frozenset({"1", "2", "inf"})
    lipschitz_constants = ONE_LIPSCHITZ

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (a sort of each channel group): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def __init__(self, group_size: int = 2, spatial: int = 1) -> None:
        super().__init__()
        if group_size < 2 or spatial < 1:
            raise ModelShapeError(
                f"ChannelGroupSort needs groups of ≥ 2 and ≥ 1 pixel, got {group_size}, {spatial}"
            )
        self.group_size = group_size
        self.spatial = spatial

    def _groups(self, z: torch.Tensor) -> torch.Tensor:
        """``(..., C·S) → (..., C/g, g, S)``."""
        block = self.group_size * self.spatial
        if z.shape[-1] % block:
            raise ModelShapeError(
                f"sorting groups of {self.group_size} channels of {self.spatial} pixels needs a "
                f"width divisible by {block}, got {z.shape[-1]}"
            )
        return z.unflatten(-1, (-1, self.group_size, self.spatial))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._groups(z).sort(dim=-2, descending=True).values.flatten(-3)

    def as_slope_network(self, width: int) -> SlopeForm:
        raise MethodNotApplicableError(
            "GroupSort on channels, which sorts groups of units and has no elementwise "
            "slope-restricted equivalent"
        )

    def pieces(self, width: int) -> Pieces | None:
        """The flat GroupSort's pieces when ``S = 1``; else ``None``: the :class:`Pieces`
        protocol takes decision units of adjacent coordinates, and these groups are ``S``
        apart (so exact region enumeration refuses the network)."""
        if self.spatial == 1 and width % self.group_size == 0:
            return SortedGroupPieces(self.group_size, width)
        return None

    def surrogate(self, temperature: Temperature) -> Surrogate:
        if self.group_size != 2:
            return self.forward

        def unit(z: torch.Tensor) -> torch.Tensor:
            a, b = self._groups(z).unbind(-2)
            mid, half_gap = (a + b) / 2, smooth_abs(a - b, 1.0) / 2
            return torch.stack([mid + half_gap, mid - half_gap], dim=-2).flatten(-3)

        return homogeneous_surrogate(unit, temperature)

    def describe(self) -> str:
        name = "MaxMin" if self.group_size == 2 else f"GroupSort({self.group_size})"
        return f"{name} on channels"

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, spatial={self.spatial}"


class OnChannels(nn.Module):
    """An activation applied to feature maps ``(B, C, H, W)`` on channels (module docstring).

    Elementwise and block-concatenating activations act on the flattened map (CReLU and
    SinCos double the channels); GroupSort / MaxMin sort groups of consecutive channels at
    every pixel. ``to_chain`` reads :meth:`chain_activation`.
    """

    def __init__(self, activation: Activation) -> None:
        super().__init__()
        if not isinstance(activation, Activation):
            raise TypeError(f"OnChannels needs a tightlip Activation, got {type(activation)}")
        self.activation = activation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4:
            raise ModelShapeError(
                f"OnChannels expects (B, C, H, W) feature maps, got shape {tuple(z.shape)}"
            )
        flat = self.chain_activation(tuple(z.shape[1:]))(z.flatten(1))
        return flat.unflatten(1, (-1, z.shape[2], z.shape[3]))

    def chain_activation(self, shape: tuple[int, ...]) -> Activation:
        """The flat-row activation that computes this map on inputs of ``shape`` ``(C, H, W)``."""
        channels, height, width = shape
        if isinstance(self.activation, GroupSort):
            size = self.activation.group_size
            if channels % size:
                raise ModelShapeError(
                    f"{type(self.activation).__name__} on channels needs a channel count "
                    f"divisible by {size}, got {channels}"
                )
            return ChannelGroupSort(size, height * width)
        return self.activation

    def out_channels(self, channels: int) -> int:
        return self.activation.expansion * channels
