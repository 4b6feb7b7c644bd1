"""Convolution and average pooling as :class:`~tightlip.operators.LinearOperator` objects.

:class:`Conv2dOperator` is a bias-free 2-D convolution (groups 1; stride, dilation, zero or
circular padding) acting on flat rows ``(..., C·H·W)`` reshaped to its ``input_shape``
``(C, H, W)`` in C order; :class:`AvgPool2dOperator` is average pooling, the same structure
with one all-ones kernel per channel divided by the window size. Both answer the protocol's
questions without ever forming their matrix unless asked (``dense(max_entries)``):

* ``apply`` / ``apply_transpose`` by ``conv2d`` / ``conv_transpose2d`` in the argument's dtype
  (differentiable; circular padding by a periodic index, whose adjoint sums the wrapped parts);
* ``certified_norm``: ℓ1 and ℓ∞ exactly from the absolute row and column sums
  (:mod:`tightlip.convolution.abs_sums`); ℓ2 the smallest of three sound bounds — the Fourier
  bound of :mod:`tightlip.convolution.spectral` (Sedghi et al. 2019, with the polyphase form for
  strides), Schur's ``√(‖A‖₁ ‖A‖_∞)`` (Higham, *Accuracy and Stability*, §6.3), and, when the
  matrix is small (:data:`DENSE_SVD_LIMIT`), the certified SVD of the matrix itself
  (:func:`tightlip.norms.certified_operator_norm`), which is exact up to its margin, else, for
  a smaller side of at most :data:`~tightlip.convolution.gram.GRAM_SIDE_LIMIT` coordinates and
  a sparse matrix (:data:`~tightlip.convolution.gram.GRAM_ENTRY_LIMIT` nonzeros, so not a
  full-map kernel), the certified top eigenvalue of the Gram matrix of that side
  (:mod:`tightlip.convolution.gram`), also exact up to its margin, which removes the Fourier
  bound's border excess (up to 1.8 % on strided MNIST layers);
* ``dense``: the matrix built entry by entry from the kernel (each entry is one kernel value,
  so it is exact), refused above ``max_entries`` with
  :class:`~tightlip.errors.MethodNotApplicableError`;
* beyond the protocol, ``abs_operator()``: ``|A|`` entrywise as an operator of the same kind
  (for forward-error bounds ``|A||h|`` without a dense matrix), and ``float_rounding()``:
  how ``apply`` rounds in float32 (:class:`~tightlip.operators.FloatRounding`). An output of a
  convolution is an inner product of ``n = c_in k_h k_w`` products (fewer at a zero-padded
  border), so ``|fl(K ⋆ h) − K ⋆ h| ≤ γ_{n+1} (|K| ⋆ |h|)`` with the kernel's rounding
  (Higham, Lemma 3.3); the taps of a window read distinct pixels (aliasing circular padding is
  refused), so row ``i`` of ``|A|`` holds a subset of ``|K_o|``'s entries and
  ``‖|A|_i‖_q ≤ ‖K_o‖_q``. Average pooling sums ``k_h k_w`` exact products ``1 · h`` and
  divides once: ``γ_{k_h k_w + 1} A|h|``, and ``‖A_i‖_q = #window^{1/q} / D``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tightlip.convolution.abs_sums import certified_inf_norm, certified_one_norm
from tightlip.convolution.geometry import Axis, conv_axes
from tightlip.convolution.gram import certified_gram_norm, gram_side_fits
from tightlip.convolution.spectral import circulant_spectral_bound
from tightlip.errors import ModelShapeError
from tightlip.norms import (
    UNIT_ROUNDOFF,
    NormName,
    certified_operator_norm,
    gamma,
    product_rounded_up,
    round_up,
)
from tightlip.operators import DENSE_ENTRY_LIMIT, FloatRounding, check_dense_size

#: ℓ2 also tries the certified SVD of the dense matrix when ``m · n · min(m, n)`` is at most this
#: (about a second of LAPACK on one core)
DENSE_SVD_LIMIT = 2**30
#: dense matrices up to this many entries are kept once built
_CACHE_ENTRIES = 2**22

Padding = tuple[tuple[int, int], tuple[int, int]]


class _FeatureMapOperator:
    """Sizes of an operator between ``(C, H, W)`` feature maps, flattened in C order."""

    _input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]

    @property
    def in_features(self) -> int:
        return math.prod(self._input_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.output_shape)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._input_shape


class Conv2dOperator(_FeatureMapOperator):
    """``x ↦ K ⋆ x`` on ``input_shape = (c_in, H, W)`` (module docstring)."""

    def __init__(
        self,
        kernel: torch.Tensor,
        input_shape: tuple[int, int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        dilation: tuple[int, int] = (1, 1),
        padding: Padding = ((0, 0), (0, 0)),
        circular: bool = False,
        name: str = "conv",
    ) -> None:
        k = torch.as_tensor(kernel).detach().to(device="cpu", dtype=torch.float64)
        if k.ndim != 4:
            raise ModelShapeError(f"{name}: kernel must be 4-D, got shape {tuple(k.shape)}")
        if not bool(torch.isfinite(k).all()):
            raise ValueError(f"{name}: kernel contains NaN or infinite entries")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[0] != k.shape[1]:
            raise ModelShapeError(
                f"{name}: a kernel with {k.shape[1]} input channels cannot read an input of "
                f"shape {shape}"
            )
        self.kernel = k
        self.name = name
        self.stride, self.dilation, self.padding = stride, dilation, padding
        self.circular = circular
        self.axes: tuple[Axis, Axis] = conv_axes(
            (shape[1], shape[2]), (k.shape[2], k.shape[3]), stride, dilation, padding, circular
        )
        self._input_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.output_shape = (k.shape[0], self.axes[0].output, self.axes[1].output)
        self._norms: dict[str, float] = {}
        self._dense: torch.Tensor | None = None

    # --- sizes -------------------------------------------------------------------------------
    @property
    def exact_dense(self) -> bool:
        return True

    # --- evaluation --------------------------------------------------------------------------
    def apply(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]
        x = h.reshape(-1, *self._input_shape)
        y = F.conv2d(
            self._pad(x),
            self.kernel.to(dtype=h.dtype, device=h.device),
            stride=self.stride,
            dilation=self.dilation,
        )
        return y.reshape(*lead, self.out_features)

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        lead = g.shape[:-1]
        y = g.reshape(-1, *self.output_shape)
        padded_hw = [a.size + a.pad_before + a.pad_after for a in self.axes]
        extra = [
            padded_hw[i] - ((a.output - 1) * a.stride + a.span) for i, a in enumerate(self.axes)
        ]
        x = F.conv_transpose2d(
            y,
            self.kernel.to(dtype=g.dtype, device=g.device),
            stride=self.stride,
            dilation=self.dilation,
            output_padding=tuple(extra),
        )
        return self._unpad(x).reshape(*lead, self.in_features)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.padding
        if not self.circular:
            return F.pad(x, (left, right, top, bottom))
        for dim, axis in ((2, self.axes[0]), (3, self.axes[1])):
            x = x.index_select(dim, _periodic_index(axis, x.device))
        return x

    def _unpad(self, x: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`_pad`: crop (zero padding) or fold (circular padding)."""
        (top, _), (left, _) = self.padding
        _, height, width = self._input_shape
        if not self.circular:
            return x[:, :, top : top + height, left : left + width]
        for dim, axis in ((2, self.axes[0]), (3, self.axes[1])):
            shape = list(x.shape)
            shape[dim] = axis.size
            x = x.new_zeros(shape).index_add(dim, _periodic_index(axis, x.device), x)
        return x

    # --- what verifiers ask ------------------------------------------------------------------
    def certified_norm(self, norm: NormName) -> float:
        if norm not in self._norms:
            self._norms[norm] = self._certified_norm(norm)
        return self._norms[norm]

    def quick_certified_norm(self, norm: NormName) -> float:
        """``certified_norm`` when computed; else for ℓ2 the least of Schur's and the Fourier
        bound (an FFT, no SVD or Gram matrix), for ℓ1 / ℓ∞ the exact sums."""
        if norm in self._norms or norm != "2":
            return self.certified_norm(norm)
        if "quick 2" not in self._norms:
            schur = round_up(
                math.sqrt(
                    product_rounded_up((self.certified_norm("1"), self.certified_norm("inf")))
                )
            )
            self._norms["quick 2"] = min(schur, circulant_spectral_bound(self.kernel, self.axes))
        return self._norms["quick 2"]

    def _certified_norm(self, norm: NormName) -> float:
        if norm == "1":
            return certified_one_norm(self.kernel, self.axes)
        if norm == "inf":
            return certified_inf_norm(self.kernel, self.axes)
        value = self.quick_certified_norm("2")
        m, n = self.out_features, self.in_features
        if m * n * min(m, n) <= DENSE_SVD_LIMIT:
            return min(value, certified_operator_norm(self.dense(None), "2"))
        if gram_side_fits((m, n), m * math.prod(self.kernel.shape[1:])):
            value = min(value, certified_gram_norm(*self.coordinates(), (m, n)))
        return value

    def abs_operator(self) -> Conv2dOperator:
        """``|A|`` (entrywise) as an operator: the same convolution with ``|K|``. Exact, since
        every entry of ``A`` is a single kernel value (for forward-error bounds ``|A||h|``).
        A subclass (e.g. one that applies the kernel in chunks) gets ``|A|`` of its own type."""
        return type(self)(
            self.kernel.abs(),
            self._input_shape,
            stride=self.stride,
            dilation=self.dilation,
            padding=self.padding,
            circular=self.circular,
            name=f"|{self.name}|",
        )

    def float_rounding(self) -> FloatRounding:
        """``γ_{n+1} (|K| ⋆ |h|)`` with ``n = c_in k_h k_w`` (module docstring)."""
        magnitude = self.abs_operator()
        products = math.prod(self.kernel.shape[1:])
        spatial = self.output_shape[1] * self.output_shape[2]

        def row_norms(q: NormName) -> torch.Tensor:
            order = {"1": 1.0, "2": 2.0, "inf": math.inf}[q]
            per_channel = torch.linalg.vector_norm(self.kernel.flatten(1), ord=order, dim=1)
            return per_channel.repeat_interleave(spatial)

        return FloatRounding(products + 1, products, magnitude.apply, row_norms)

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        if self._dense is not None:
            return self._dense
        matrix = self._build_dense()
        if matrix.numel() <= _CACHE_ENTRIES:
            self._dense = matrix
        return matrix

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return torch.zeros(self.out_features, self.in_features, dtype=torch.float64)

    def _build_dense(self) -> torch.Tensor:
        rows, cols, values = self.coordinates()
        matrix = torch.zeros(self.out_features, self.in_features, dtype=torch.float64)
        matrix[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.from_numpy(values)
        return matrix

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nonzero pattern ``(rows, columns, values)`` of ``A``, entry by entry: tap
        ``(u, v)`` of row ``(o, a, b)`` is column ``(i, pos_h, pos_w)`` with value ``K[o, i, u, v]``
        (taps read distinct pixels, so no entry appears twice and every value is exact)."""
        c_out, out_h, out_w = self.output_shape
        c_in, height, width = self._input_shape
        kernel = self.kernel.numpy()
        pos_h, pos_w = (a.positions() for a in self.axes)
        ok_h, ok_w = (a.valid().astype(bool) for a in self.axes)
        out_channel = np.arange(c_out)[:, None, None, None] * (out_h * out_w)
        in_channel = np.arange(c_in)[None, :, None, None] * (height * width)
        parts = []
        for u in range(kernel.shape[2]):
            for v in range(kernel.shape[3]):
                a, b = np.flatnonzero(ok_h[:, u]), np.flatnonzero(ok_w[:, v])
                h, w = pos_h[a, u] % height, pos_w[b, v] % width
                row = out_channel + (a[:, None] * out_w + b[None, :])[None, None]
                col = in_channel + (h[:, None] * width + w[None, :])[None, None]
                value = kernel[:, :, u, v][:, :, None, None]
                shape = np.broadcast_shapes(row.shape, col.shape, value.shape)
                parts.append(tuple(np.broadcast_to(t, shape).ravel() for t in (row, col, value)))
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]

    def describe(self) -> str:
        """``conv 1→32 k3 s1 p1 on 28×28`` (``d2``, ``circ`` when they apply)."""
        c_out, c_in = self.kernel.shape[0], self.kernel.shape[1]
        (top, bottom), (left, right) = self.padding
        pads = {top, bottom, left, right}
        pad = f"p{top}" if len(pads) == 1 else f"p({top},{bottom},{left},{right})"
        text = (
            f"conv {c_in}→{c_out} k{_pair_text(tuple(self.kernel.shape[2:]))} "
            f"s{_pair_text(self.stride)} {pad}"
        )
        text += f" d{_pair_text(self.dilation)}" if self.dilation != (1, 1) else ""
        text += " circ" if self.circular else ""
        return f"{text} on {self._input_shape[1]}×{self._input_shape[2]}"

    def __repr__(self) -> str:
        return (
            f"Conv2dOperator({self._input_shape} → {self.output_shape}, stride={self.stride}, "
            f"dilation={self.dilation}, padding={self.padding}, circular={self.circular}, "
            f"name={self.name!r})"
        )


class AvgPool2dOperator(_FeatureMapOperator):
    """Average pooling on ``input_shape = (C, H, W)``: ``y[c] = (1/D) Σ_window x̃[c]``.

    The window sum is the convolution of each channel with an all-ones ``k_h × k_w`` kernel on
    zero-padded input (``count_include_pad``: the divisor ``D`` is fixed, ``k_h k_w`` or the
    ``divisor_override``). The channels are independent copies of one single-channel operator
    ``U``, so ``A = (I_C ⊗ U) / D`` and ``‖A‖_p = ‖U‖_p / D`` in every p: ℓ1 is the largest
    number of windows covering a pixel over ``D``, ℓ∞ the largest number of real pixels in a
    window over ``D`` (both exact), ℓ2 is ``U``'s bound over ``D``.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        kernel: tuple[int, int],
        *,
        stride: tuple[int, int],
        padding: Padding = ((0, 0), (0, 0)),
        divisor: int | None = None,
        name: str = "avgpool",
    ) -> None:
        channels, height, width = (int(s) for s in input_shape)
        self.name = name
        self.divisor = int(divisor) if divisor is not None else kernel[0] * kernel[1]
        if self.divisor < 1:
            raise ModelShapeError(f"{name}: the divisor must be positive, got {self.divisor}")
        ones = torch.ones(1, 1, *kernel, dtype=torch.float64)
        self.window = Conv2dOperator(
            ones, (1, height, width), stride=stride, padding=padding, name=f"{name}.window"
        )
        self._input_shape = (channels, height, width)
        self.output_shape = (channels, *self.window.output_shape[1:])

    @property
    def exact_dense(self) -> bool:
        """``1/D`` is a float64 number exactly when ``D`` is a power of two."""
        return self.divisor & (self.divisor - 1) == 0

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return self._per_channel(h, self.window.apply, self._input_shape) / self.divisor

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return self._per_channel(g, self.window.apply_transpose, self.output_shape) / self.divisor

    @staticmethod
    def _per_channel(
        h: torch.Tensor,
        single: Callable[[torch.Tensor], torch.Tensor],
        shape: tuple[int, int, int],
    ) -> torch.Tensor:
        """``single`` applied to each channel of the rows ``h`` (shape ``(..., C·H·W)``)."""
        lead = h.shape[:-1]
        out = single(h.reshape(-1, shape[1] * shape[2]))
        return out.reshape(*lead, shape[0] * out.shape[-1])

    def certified_norm(self, norm: NormName) -> float:
        return round_up(self.window.certified_norm(norm) / self.divisor)

    def abs_operator(self) -> AvgPool2dOperator:
        """``|A| = A`` (the entries are ``1/D ≥ 0``)."""
        return self

    def float_rounding(self) -> FloatRounding:
        """``γ_{k_h k_w + 1} A|h|``: an exact-product window sum, one division (module docs)."""
        window = math.prod(self.window.kernel.shape[2:])
        ones = torch.ones(self.in_features, dtype=torch.float64)

        def row_norms(q: NormName) -> torch.Tensor:
            counts = self.apply(ones) * self.divisor  # pixels per window (small integers)
            counts = counts.round()
            if q == "inf":
                return (counts > 0).to(torch.float64) / self.divisor
            return counts ** (1.0 / {"1": 1.0, "2": 2.0}[q]) / self.divisor

        return FloatRounding(window + 1, window, self.apply, row_norms)

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        block = self.window.dense(None) / self.divisor
        return torch.block_diag(*([block] * self._input_shape[0]))

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        """``|fl(1/D) − 1/D| ≤ u/D`` per non-zero entry (one correctly rounded division)."""
        matrix = self.dense(max_entries)
        if self.exact_dense:
            return torch.zeros_like(matrix)
        bound = round_up(round_up(UNIT_ROUNDOFF / self.divisor) * round_up(1.0 + 2 * UNIT_ROUNDOFF))
        return (matrix != 0).to(torch.float64) * bound

    def describe(self) -> str:
        """``avg-pool 2`` (the stride when it is not the kernel, padding when there is some)."""
        kernel = (self.window.axes[0].kernel, self.window.axes[1].kernel)
        stride = self.window.stride
        text = f"avg-pool {_pair_text(kernel)}"
        text += f" s{_pair_text(stride)}" if stride != kernel else ""
        (top, _), (left, _) = self.window.padding
        text += f" p{_pair_text((top, left))}" if (top, left) != (0, 0) else ""
        return text

    def __repr__(self) -> str:
        return f"AvgPool2dOperator({self._input_shape} → {self.output_shape}, D={self.divisor})"


class PaddingExcludedAvgPool2dOperator(AvgPool2dOperator):
    """Average pooling that divides each window by its real pixels (``count_include_pad=0``).

    ONNX's default and PyTorch's ``count_include_pad=False``: ``y_i = (1/n_i) Σ_window x̃``,
    ``n_i ≥ 1`` the pixels of window ``i`` inside the map (exact small integers, the window
    sum of an all-ones map). Per channel ``A = N⁻¹ U`` with ``U`` the window sum, channels
    independent, so ``‖A‖_p = ‖N⁻¹U‖_p``:

    * ℓ∞: row ``i`` holds ``n_i`` entries ``1/n_i``, so ``‖A‖_∞ = 1`` exactly;
    * ℓ1: the largest column sum ``max_j Σ_{i ∋ j} 1/n_i`` (``Uᵀ`` applied to ``1/n``: at most
      ``k_h k_w`` positive terms, each one division, inflated by ``1 + γ_{k_h k_w + 2}``);
    * ℓ2: Schur's ``√(‖A‖₁ ‖A‖_∞)``, and the certified SVD of one channel's matrix plus its
      rounding (``|fl(1/n) − 1/n| ≤ u/n``) when that matrix is small.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """:class:`AvgPool2dOperator`'s arguments; a ``divisor`` is refused (there is none)."""
        if kwargs.get("divisor") is not None:
            raise TypeError("a padding-excluded average pool has no divisor override")
        super().__init__(*args, **kwargs)
        _, height, width = self._input_shape
        plane = torch.ones(1, height * width, dtype=torch.float64)
        self.counts = self.window.apply(plane).reshape(-1)  # n_i, exact
        if bool((self.counts < 1).any()):
            raise ModelShapeError(f"{self.name}: a pooling window lies entirely in the padding")

    @property
    def exact_dense(self) -> bool:
        """``1/n_i`` are float64 numbers exactly when every ``n_i`` is a power of two."""
        n = self.counts.to(torch.int64)
        return bool(((n & (n - 1)) == 0).all())

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        counts = self.counts.to(dtype=h.dtype, device=h.device)
        return self._per_channel(h, lambda t: self.window.apply(t) / counts, self._input_shape)

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        counts = self.counts.to(dtype=g.dtype, device=g.device)
        return self._per_channel(
            g, lambda t: self.window.apply_transpose(t / counts), self.output_shape
        )

    def certified_norm(self, norm: NormName) -> float:
        if norm == "inf":
            return 1.0
        window = math.prod(self.window.kernel.shape[2:])
        columns = self.window.apply_transpose((1.0 / self.counts)[None])
        one = round_up(float(columns.max()) * round_up(1.0 + gamma(window + 2)))
        if norm == "1":
            return one
        value = round_up(math.sqrt(one))  # Schur, with ‖A‖_∞ = 1
        single = self._single_channel_dense()
        m, n = single.shape
        if m * n * min(m, n) <= DENSE_SVD_LIMIT:
            error = round_up(UNIT_ROUNDOFF * round_up(1.0 + 2 * UNIT_ROUNDOFF))
            rounded = certified_operator_norm(single, "2")
            # ‖N⁻¹U − fl‖₂ ≤ √(‖E‖₁‖E‖_∞) ≤ √(u·one · u) ≤ u·max(1, one)
            value = min(value, round_up(rounded + round_up(error * max(1.0, one))))
        return value

    def _single_channel_dense(self) -> torch.Tensor:
        return self.window.dense(None) / self.counts[:, None]

    def float_rounding(self) -> FloatRounding:
        """``γ_{k_h k_w + 1} A|h|``: an exact-product window sum, one division (module docs)."""
        window = math.prod(self.window.kernel.shape[2:])
        counts = self.counts.repeat(self._input_shape[0])

        def row_norms(q: NormName) -> torch.Tensor:
            if q == "inf":
                return 1.0 / counts
            return counts ** (1.0 / {"1": 1.0, "2": 2.0}[q]) / counts

        return FloatRounding(window + 1, window, self.apply, row_norms)

    def dense(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        check_dense_size(self.out_features, self.in_features, max_entries, self.name)
        return torch.block_diag(*([self._single_channel_dense()] * self._input_shape[0]))

    def dense_error(self, max_entries: int | None = DENSE_ENTRY_LIMIT) -> torch.Tensor:
        """``|fl(1/n_i) − 1/n_i| ≤ u/n_i`` per non-zero entry of row ``i``."""
        matrix = self.dense(max_entries)
        if self.exact_dense:
            return torch.zeros_like(matrix)
        per_row = (UNIT_ROUNDOFF / self.counts.repeat(self._input_shape[0])) * (
            1.0 + 4 * UNIT_ROUNDOFF
        )
        return (matrix != 0).to(torch.float64) * per_row[:, None]

    def describe(self) -> str:
        return super().describe() + " excl. pad"

    def __repr__(self) -> str:
        return f"PaddingExcludedAvgPool2dOperator({self._input_shape} → {self.output_shape})"


def ungrouped_kernel(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """The group-1 kernel ``(c_out, c_in, k_h, k_w)`` of a grouped convolution, exactly.

    A convolution with ``groups = g`` (kernel ``(c_out, c_in/g, k_h, k_w)``) sends input
    channels ``[j c_in/g, (j+1) c_in/g)`` to output channels ``[j c_out/g, (j+1) c_out/g)``
    only (PyTorch ``conv2d``, ONNX ``Conv``): its matrix is the group-1 convolution whose kernel
    is that block diagonal, zeros elsewhere. Every entry is copied, so the result is exact, and
    every norm, rounding model and verifier of :class:`Conv2dOperator` applies unchanged (the
    rounding model counts the zero taps as products too: ``γ_{c_in k_h k_w + 1}`` covers the
    grouped evaluation's ``γ_{c_in k_h k_w / g + 1}``).
    """
    c_out, per_group = int(kernel.shape[0]), int(kernel.shape[1])
    if groups < 1 or c_out % groups:
        raise ValueError(f"{c_out} output channels do not split into {groups} groups")
    full = kernel.new_zeros((c_out, per_group * groups, *kernel.shape[2:]))
    rows = c_out // groups
    for j in range(groups):
        full[j * rows : (j + 1) * rows, j * per_group : (j + 1) * per_group] = kernel[
            j * rows : (j + 1) * rows
        ]
    return full


def _pair_text(pair: tuple[int, ...]) -> str:
    """``3`` for ``(3, 3)``, ``3×4`` otherwise."""
    return str(pair[0]) if len(set(pair)) == 1 else "×".join(str(v) for v in pair)


def _periodic_index(axis: Axis, device: torch.device) -> torch.Tensor:
    """Index ``(j − p₋) mod n`` of padded position ``j``: PyTorch's circular padding."""
    padded = axis.size + axis.pad_before + axis.pad_after
    return (torch.arange(padded, device=device) - axis.pad_before) % axis.size
