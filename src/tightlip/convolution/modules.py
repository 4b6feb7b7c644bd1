"""PyTorch convolution and pooling layers read as operators, given the shape they receive.

A ``torch.nn`` layer does not know the size of its input; :func:`tightlip.model.to_chain`
tracks the shape ``(C, H, W)`` of the feature maps and asks these functions for the operator
of each layer. Settings that the operators do not model are refused with a one-line
:class:`~tightlip.errors.UnsupportedLayerError` naming the layer.
"""

from __future__ import annotations

import torch
from torch import nn

from tightlip.convolution.geometry import pair_of, resolve_padding
from tightlip.convolution.operators import (
    AvgPool2dOperator,
    Conv2dOperator,
    PaddingExcludedAvgPool2dOperator,
    ungrouped_kernel,
)
from tightlip.errors import ModelShapeError, UnsupportedLayerError
from tightlip.layers.pooling import check_floor_mode, pool_axes


def conv_operator(
    module: nn.Conv2d, shape: tuple[int, ...], name: str
) -> tuple[Conv2dOperator, torch.Tensor | None]:
    """The convolution of ``module`` on inputs of ``shape`` and its bias, one per output entry."""
    if module.padding_mode not in ("zeros", "circular"):
        raise UnsupportedLayerError(
            f"{name}: Conv2d with padding_mode={module.padding_mode!r} is not supported "
            "(zeros or circular)"
        )
    _check_channels(shape, module.in_channels, name)
    kernel = (module.kernel_size[0], module.kernel_size[1])
    stride, dilation = pair_of(module.stride, "stride"), pair_of(module.dilation, "dilation")
    padding = resolve_padding(module.padding, kernel, dilation, stride)  # type: ignore[arg-type]
    weight = module.weight  # grouped: the group-1 convolution of the block-diagonal kernel
    weight = ungrouped_kernel(weight.detach(), module.groups) if module.groups != 1 else weight
    operator = Conv2dOperator(
        weight,
        (shape[0], shape[1], shape[2]),
        stride=stride,
        dilation=dilation,
        padding=padding,
        circular=module.padding_mode == "circular",
        name=name,
    )
    bias = None
    if module.bias is not None:
        pixels = operator.output_shape[1] * operator.output_shape[2]
        bias = module.bias.detach().to(torch.float64).repeat_interleave(pixels)
    return operator, bias


def avg_pool_operator(
    module: nn.AvgPool2d | nn.AdaptiveAvgPool2d, shape: tuple[int, ...], name: str
) -> AvgPool2dOperator:
    """Average pooling (or adaptive average pooling into equal windows) on ``shape``."""
    _check_channels(shape, None, name)
    hw = (shape[1], shape[2])
    if isinstance(module, nn.AdaptiveAvgPool2d):
        kernel = _adaptive_kernel(module.output_size, hw, name)
        return AvgPool2dOperator(shape, kernel, stride=kernel, name=name)  # type: ignore[arg-type]
    axes = pool_axes(hw, module.kernel_size, module.stride, module.padding)
    check_floor_mode(module, axes, name)
    padded = any(a.pad_before for a in axes)
    if padded and not module.count_include_pad and module.divisor_override is None:
        return PaddingExcludedAvgPool2dOperator(
            shape,  # type: ignore[arg-type]
            (axes[0].kernel, axes[1].kernel),
            stride=(axes[0].stride, axes[1].stride),
            padding=((axes[0].pad_before,) * 2, (axes[1].pad_before,) * 2),
            name=name,
        )
    return AvgPool2dOperator(
        shape,  # type: ignore[arg-type]
        (axes[0].kernel, axes[1].kernel),
        stride=(axes[0].stride, axes[1].stride),
        padding=((axes[0].pad_before,) * 2, (axes[1].pad_before,) * 2),
        divisor=module.divisor_override,
        name=name,
    )


def _adaptive_kernel(
    output_size: int | tuple[int | None, int | None], hw: tuple[int, int], name: str
) -> tuple[int, int]:
    sizes = (output_size, output_size) if isinstance(output_size, int) else output_size
    kernel = []
    for size, length in zip(sizes, hw, strict=True):
        size = length if size is None else size
        if length % size:
            raise UnsupportedLayerError(
                f"{name}: AdaptiveAvgPool2d from {length} to {size} pixels has unequal windows; "
                "tightlip supports output sizes that divide the input size"
            )
        kernel.append(length // size)
    return (kernel[0], kernel[1])


def _check_channels(shape: tuple[int, ...], channels: int | None, name: str) -> None:
    if len(shape) != 3:
        raise ModelShapeError(f"{name}: expects (C, H, W) feature maps, receives shape {shape}")
    if channels is not None and shape[0] != channels:
        raise ModelShapeError(
            f"{name}: expects {channels} input channels, receives maps of shape {shape}"
        )
