"""The bias-free, delta-orthogonally initialised 2-D convolution."""

from __future__ import annotations

import torch
from torch import nn

from tightlip.errors import UnsupportedLayerError


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that is bias-free unless asked (groups 1), delta-orthogonally initialised.

    Biases are an obstruction to a tight trivial bound (Kuang, Xu, Sivaranjani & Lin, 2026), as
    for :class:`~tightlip.layers.Linear`. The initial kernel is zero except at its centre tap,
    which is an orthogonal ``c_out × c_in`` matrix (the delta-orthogonal initialisation of
    Xiao, Bahri, Sohl-Dickstein, Schoenholz & Pennington, ICML 2018): the convolution then
    maps each pixel's channel vector by that matrix, so its ℓ2 norm is at most 1, and with
    stride 1, ``c_out ≥ c_in`` and a centred tap it is an isometry — the convolutional analogue
    of the orthogonal ``Linear``. Padding may be ``"zeros"`` or ``"circular"``; the sound norms
    of :mod:`tightlip.convolution` cover both.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
    ) -> None:
        if padding_mode not in ("zeros", "circular"):
            raise UnsupportedLayerError(
                f"Conv2d: padding_mode {padding_mode!r} is not supported (zeros or circular)"
            )
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=1,
            bias=bias,
            padding_mode=padding_mode,
        )

    def reset_parameters(self) -> None:
        delta_orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


@torch.no_grad()
def delta_orthogonal_(weight: torch.Tensor) -> torch.Tensor:
    """Zero the kernel ``(c_out, c_in, k_h, k_w)`` except an orthogonal centre tap (in place)."""
    weight.zero_()
    centre = torch.empty(
        weight.shape[0], weight.shape[1], dtype=weight.dtype, device=weight.device
    )
    nn.init.orthogonal_(centre)
    weight[:, :, weight.shape[2] // 2, weight.shape[3] // 2] = centre
    return weight
