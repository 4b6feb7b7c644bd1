"""A per-channel scale folded into a convolution's kernel, with its certified rounding error.

Batch normalisation after a convolution, ``y = diag(s) (K ⋆ x)`` with ``s_o = γ_o / √(v_o + ε)``
constant over the pixels of output channel ``o``, is the convolution with kernel ``s_o K_o``;
an input normalisation ``(x − μ)/σ`` before it, a scale ``d_c`` per input channel, is the
convolution with kernel ``K_{:,c} d_c`` (zero padding commutes with a per-channel scale). Folding
it into the kernel keeps the step a convolution, whose ℓ2 bound (Fourier, Schur) is that of
``s ⊙ K`` rather than the product ``max|s| · ‖K‖`` of the two factors.

The scale is a :class:`~tightlip.interop.diagonal.Diagonal` ``ŝ`` with ``|ŝ − s| ≤ e``, and the
kernel ``K̂ = fl(ŝ K)`` is rounded once more (``|fl(ŝk) − ŝk| ≤ u|ŝk| + η/2``, ``u = 2⁻⁵³``,
``η`` the smallest subnormal; Higham, *Accuracy and Stability*, §2.2), so entrywise

    |K̂ − sK| ≤ (u|ŝ| + e) |K| + η/2 =: E.

``E`` is evaluated with three roundings (each relative ``≤ u``, absolute ``≤ η/2``) and then
inflated by ``1 + 8u`` and ``2η``, which covers them. Without aliasing (zero padding, or circular
padding whose kernel fits the map: :class:`~tightlip.convolution.geometry.Axis` refuses the rest)
every entry of the matrix is one kernel entry, so the true matrix is ``Â + Δ`` with
``|Δ| ≤ A_E``, the matrix of the convolution by ``E``; ``‖Δ‖_p ≤ ‖|Δ|‖_p ≤ ‖A_E‖_p`` for p = 1, 2,
∞ (these norms are monotone on non-negative matrices), hence the certified norm
``‖Â‖_cert + ‖A_E‖_cert``, and ``dense_error()`` is ``A_E``. When ``ŝ`` is exact and every
product ``ŝ_o k`` is exact, the fold is a plain exact convolution
(:func:`fold_channel_scale` returns a :class:`~tightlip.convolution.operators.Conv2dOperator`).
"""

from __future__ import annotations

import torch

from tightlip.convolution.operators import Conv2dOperator
from tightlip.interop.diagonal import Diagonal
from tightlip.interop.exact import exact_product
from tightlip.norms import SMALLEST_SUBNORMAL, UNIT_ROUNDOFF, NormName, round_up
from tightlip.operators import DENSE_ENTRY_LIMIT


def _per_channel(diagonal: Diagonal, channels: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The scale and error per channel, if ``diagonal`` is constant over each channel's pixels."""
    if diagonal.in_features % channels:
        return None
    values = diagonal.values.reshape(channels, -1)
    errors = diagonal.error.reshape(channels, -1)
    if not (bool((values == values[:, :1]).all()) and bool((errors == errors[:, :1]).all())):
        return None
    return values[:, 0], errors[:, 0]


class RoundedConv:
    """``x ↦ (sK) ⋆ x`` held as ``K̂ = fl(ŝK)`` and an entrywise error kernel (module doc)."""

    def __init__(self, conv: Conv2dOperator, error_kernel: torch.Tensor, *, name: str) -> None:
        self.conv = conv
        self.error = Conv2dOperator(
            error_kernel,
            conv.input_shape,
            stride=conv.stride,
            dilation=conv.dilation,
            padding=conv.padding,
            circular=conv.circular,
            name=f"{name}.error",
        )
        self.name = name
        self.output_shape = conv.output_shape
        self._norms: dict[str, float] = {}

    @property
    def in_features(self) -> int:
        return self.conv.in_features

    @property
    def out_features(self) -> int:
        return self.conv.out_features

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.conv.input_shape

    @property
    def exact_dense(self) -> bool:
        return False

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv.apply(h)

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return self.conv.apply_transpose(g)

    def certified_norm(self, norm: NormName) -> float:
        """``‖Â‖_cert + ‖A_E‖_cert``, rounded up (module docstring)."""
        if norm not in self._norms:
            self._norms[norm] = round_up(
                self.conv.certified_norm(norm) + self.error.certified_norm(norm)
            )
        return self._norms[norm]

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        return self.conv.dense(max_entries)

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        return self.error.dense(max_entries)

    def __repr__(self) -> str:
        return f"RoundedConv({self.conv!r}, name={self.name!r})"


def fold_channel_scale(
    conv: Conv2dOperator, diagonal: Diagonal, *, after: bool
) -> Conv2dOperator | RoundedConv | None:
    """``diag ∘ conv`` (``after``) or ``conv ∘ diag`` as one convolution, or ``None`` when the
    diagonal is not constant per channel (module docstring)."""
    channels = conv.output_shape[0] if after else conv.input_shape[0]
    per_channel = _per_channel(diagonal, channels)
    if per_channel is None:
        return None
    scale, error = per_channel
    shape = (-1, 1, 1, 1) if after else (1, -1, 1, 1)
    s, e = scale.reshape(shape), error.reshape(shape)
    kernel = conv.kernel * s
    name = f"{conv.name}+{diagonal.name}" if after else f"{diagonal.name}+{conv.name}"
    folded = Conv2dOperator(
        kernel,
        conv.input_shape,
        stride=conv.stride,
        dilation=conv.dilation,
        padding=conv.padding,
        circular=conv.circular,
        name=name,
    )
    if diagonal.exact_dense and exact_product(conv.kernel, s) is not None:
        return folded
    magnitude = conv.kernel.abs()
    bound = (UNIT_ROUNDOFF * s.abs() + e) * magnitude + SMALLEST_SUBNORMAL / 2
    bound = bound * (1.0 + 8.0 * UNIT_ROUNDOFF) + 2.0 * SMALLEST_SUBNORMAL
    return RoundedConv(folded, bound.expand_as(kernel).contiguous(), name=name)
