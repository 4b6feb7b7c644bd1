"""Pooling: average pooling (a linear map) and max pooling (a nonlinearity with derived constants).

:class:`AvgPool2d` and :class:`MaxPool2d` are the PyTorch layers restricted to the settings
tightlip can reason about (floor mode; every window divided by the same count). In a
:class:`~tightlip.model.LayerChain`, average pooling is a linear operator
(:class:`tightlip.convolution.operators.AvgPool2dOperator`, exact ℓ1/ℓ∞ norms) and max pooling
is :class:`MaxPool2dActivation`, a nonlinear step that states its Lipschitz constants.
"""

from __future__ import annotations

import math
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from tightlip.convolution.geometry import Axis, pair_of
from tightlip.errors import MethodNotApplicableError, ModelShapeError, UnsupportedLayerError
from tightlip.layers.activation import Activation, Surrogate, Temperature
from tightlip.layers.rounding import RoundingModel, exact_rounding
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName, parse_norm, round_up


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` in floor mode, padding counted in the divisor (a convolution)."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, divisor_override=divisor_override)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` in floor mode, without indices."""

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__(kernel_size, stride, padding, dilation)


def pool_axes(
    input_hw: tuple[int, int],
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] | None,
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
) -> tuple[Axis, Axis]:
    """The two window axes of a pooling layer (stride defaults to the kernel, as in PyTorch)."""
    k = pair_of(kernel, "kernel_size")
    s = pair_of(stride if stride is not None else k, "stride")
    p = pair_of(padding, "padding")
    d = pair_of(dilation, "dilation")
    return tuple(  # type: ignore[return-value]
        Axis(input_hw[i], k[i], s[i], d[i], p[i], p[i]) for i in range(2)
    )


def check_floor_mode(module: nn.Module, axes: tuple[Axis, Axis], name: str) -> None:
    """``ceil_mode`` is accepted only where it gives the floor mode's output size."""
    if not getattr(module, "ceil_mode", False):
        return
    for axis in axes:
        padded = axis.size + axis.pad_before + axis.pad_after
        ceil = -(-(padded - axis.span) // axis.stride) + 1
        if (ceil - 1) * axis.stride >= axis.size + axis.pad_before:
            ceil -= 1  # PyTorch drops a last window that starts in the right padding
        if ceil != axis.output:
            raise UnsupportedLayerError(
                f"{name}: ceil_mode=True adds a partial window here; tightlip supports pooling "
                "whose windows all lie in the padded input (ceil_mode=False)"
            )


class MaxPool2dActivation(Activation):
    """Max pooling on flat rows ``(..., C·H·W)``: ``y_o = max_{i ∈ W_o} x_i`` per channel.

    Lipschitz constants, from ``|max_i a_i − max_i b_i| ≤ max_{i ∈ W_o} |a_i − b_i|``, with
    ``m = max_i #{o : i ∈ W_o}`` the largest number of windows that read one pixel (``m =
    m_h m_w``, per axis ``⌈k/s⌉`` in the interior for stride ``s`` and kernel ``k``, counted
    exactly here):

    * ℓ∞: every output moves by at most ``‖δ‖_∞``: ``Lip_∞ = 1``, and each Jacobian row is a unit
      vector, so ``‖J‖_∞ = 1`` everywhere (saturates ℓ∞);
    * ℓ1: ``Σ_o max_{i ∈ W_o} |δ_i| ≤ Σ_o Σ_{i ∈ W_o} |δ_i| = Σ_i c_i |δ_i| ≤ m ‖δ‖₁``;
    * ℓ2: ``Σ_o max_{i ∈ W_o} δ_i² ≤ Σ_i c_i δ_i² ≤ m ‖δ‖₂²``, so ``Lip₂ = √m``: overlapping
      windows (``k > s``) are *not* 1-Lipschitz in ℓ2.

    Both are attained (so exact): at an ``x`` where a pixel of coverage ``m`` is the strict
    maximum of all its windows, the Jacobian's column for it holds ``m`` ones. Positively
    homogeneous and piecewise linear, but not elementwise: no slope-restricted form, and no
    pieces stated for exact region enumeration. Its surrogate is the window-wise
    ``τ · logsumexp(z / τ)``.
    """

    piecewise_linear = True
    positively_homogeneous = True
    saturating_norms = frozenset({"inf"})

    def rounding_model(self, centre: torch.Tensor, norm: NormName) -> RoundingModel:
        """Computed exactly in any binary format (a maximum over each window): only underflow."""
        return exact_rounding(self.out_features(centre.shape[1]), norm)

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        kernel: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        super().__init__()
        channels, height, width = (int(s) for s in input_shape)
        self.input_shape = (channels, height, width)
        self.axes = pool_axes((height, width), kernel, stride, padding, dilation)
        for axis in self.axes:
            if 2 * axis.pad_before > axis.kernel:
                raise ModelShapeError(
                    f"MaxPool2d: padding {axis.pad_before} exceeds half the kernel {axis.kernel}"
                )
        self.output_shape = (channels, self.axes[0].output, self.axes[1].output)
        self.coverage = int(self.axes[0].coverage().max()) * int(self.axes[1].coverage().max())
        self.lipschitz_constants = MappingProxyType(
            {"1": float(self.coverage), "2": round_up(math.sqrt(self.coverage)), "inf": 1.0}
        )

    def lipschitz(self, norm: NormName | str) -> float:
        return self.lipschitz_constants[parse_norm(norm)]

    def out_features(self, in_features: int) -> int:
        if in_features != math.prod(self.input_shape):
            raise ModelShapeError(
                f"MaxPool2d on {self.input_shape} maps receives {in_features} features"
            )
        return math.prod(self.output_shape)

    def _window_args(self) -> dict[str, tuple[int, int]]:
        return {
            "kernel_size": (self.axes[0].kernel, self.axes[1].kernel),
            "stride": (self.axes[0].stride, self.axes[1].stride),
            "padding": (self.axes[0].pad_before, self.axes[1].pad_before),
            "dilation": (self.axes[0].dilation, self.axes[1].dilation),
        }

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        maps = z.reshape(-1, *self.input_shape)
        out = F.max_pool2d(maps, **self._window_args())
        return out.reshape(*lead, math.prod(self.output_shape))

    def as_slope_network(self, width: int) -> SlopeForm:
        raise MethodNotApplicableError(
            "MaxPool2d, a maximum over windows, which is not elementwise and has no "
            "slope-restricted form"
        )

    def surrogate(self, temperature: Temperature) -> Surrogate:
        """``τ · logsumexp_{i ∈ W_o}(z_i / τ)`` (within ``τ log(k_h k_w)`` of the maximum)."""

        def smooth(z: torch.Tensor) -> torch.Tensor:
            lead = z.shape[:-1]
            u = (z / temperature).reshape(-1, *self.input_shape)
            (ph, pw) = (self.axes[0].pad_before, self.axes[1].pad_before)
            u = F.pad(u, (pw, pw, ph, ph), value=-math.inf)
            args = self._window_args()
            windows = F.unfold(
                u.flatten(0, 1).unsqueeze(1),
                args["kernel_size"],
                dilation=args["dilation"],
                stride=args["stride"],
            )  # (B·C, k_h k_w, L)
            smooth_max = windows.logsumexp(dim=1).reshape(*lead, math.prod(self.output_shape))
            return smooth_max * temperature

        return smooth

    def describe(self) -> str:
        """``max-pool 2`` (the stride when it is not the kernel, padding and dilation if any)."""
        a = self._window_args()
        kernel, stride = a["kernel_size"], a["stride"]
        text = f"max-pool {_pair_text(kernel)}"
        text += f" s{_pair_text(stride)}" if stride != kernel else ""
        text += f" p{_pair_text(a['padding'])}" if a["padding"] != (0, 0) else ""
        text += f" d{_pair_text(a['dilation'])}" if a["dilation"] != (1, 1) else ""
        return text

    def extra_repr(self) -> str:
        a = self._window_args()
        return f"input_shape={self.input_shape}, " + ", ".join(f"{k}={v}" for k, v in a.items())


def _pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}×{pair[1]}"


def max_pool_activation(
    module: nn.MaxPool2d, shape: tuple[int, ...], name: str
) -> MaxPool2dActivation:
    """The chain step of ``module`` on feature maps of ``shape`` ``(C, H, W)``."""
    if len(shape) != 3:
        raise ModelShapeError(f"{name}: expects (C, H, W) feature maps, receives shape {shape}")
    if module.return_indices:
        raise UnsupportedLayerError(f"{name}: MaxPool2d with return_indices=True")
    activation = MaxPool2dActivation(
        (shape[0], shape[1], shape[2]),
        module.kernel_size,  # type: ignore[arg-type]
        module.stride,  # type: ignore[arg-type]
        module.padding,  # type: ignore[arg-type]
        module.dilation,  # type: ignore[arg-type]
    )
    check_floor_mode(module, activation.axes, name)
    return activation
