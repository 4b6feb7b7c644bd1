"""The index geometry of a 2-D convolution or pooling window, one spatial axis at a time.

Along one axis of length ``n`` a convolution with kernel size ``k``, stride ``s``, dilation
``d`` and padding ``(p₋, p₊)`` reads, for output ``a ∈ [0, m)`` and tap ``u ∈ [0, k)``, the input
position

    pos(a, u) = a·s + t(u),     t(u) = u·d − p₋,     m = ⌊(n + p₋ + p₊ − d(k − 1) − 1)/s⌋ + 1,

which is the zero padding when ``pos ∉ [0, n)`` (zero padding) or the position ``pos mod n``
(circular padding, PyTorch's ``padding_mode="circular"``, which pads periodically and then
runs an unpadded convolution). A 2-D window is the product of two such axes, so every count
a bound needs factorises into one-axis counts, computed here in exact integer arithmetic:

* :meth:`Axis.valid` — ``valid[a, u] = 1`` if tap ``u`` of output ``a`` reads a real input
  (zero padding), all ones for circular padding;
* :meth:`Axis.hits` — ``hits[h, u] = #{a : pos(a, u) ≡ h}``, how often input ``h`` is read by
  tap ``u`` (0 or 1 for zero padding; more for circular padding when ``m·s > n``);
* :meth:`Axis.fourier_plans` — the tori on which the operator is a restriction of a circular
  convolution (the ℓ2 bound of :mod:`tightlip.convolution.spectral`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tightlip.errors import ModelShapeError, UnsupportedLayerError


@dataclass(frozen=True)
class Axis:
    """One spatial axis of a convolution (module docstring)."""

    size: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    pad_before: int = 0
    pad_after: int = 0
    circular: bool = False

    def __post_init__(self) -> None:
        if min(self.size, self.kernel, self.stride, self.dilation) < 1:
            raise ModelShapeError(f"a convolution axis needs positive sizes, got {self}")
        if min(self.pad_before, self.pad_after) < 0:
            raise ModelShapeError(f"padding must be non-negative, got {self}")
        if self.output < 1:
            raise ModelShapeError(
                f"a kernel spanning {self.span} positions does not fit an input of size "
                f"{self.size} padded by ({self.pad_before}, {self.pad_after})"
            )
        if self.circular and self.aliased:
            raise UnsupportedLayerError(
                f"circular padding with a kernel spanning {self.span} positions (dilation "
                f"{self.dilation}) on an input of size {self.size} wraps the kernel onto itself; "
                "tightlip supports circular padding only when the kernel's taps stay distinct"
            )

    @property
    def span(self) -> int:
        """``d(k − 1) + 1``, the number of positions one window covers."""
        return self.dilation * (self.kernel - 1) + 1

    @property
    def output(self) -> int:
        """``m``, the number of outputs along the axis (PyTorch's formula, floor mode)."""
        padded = self.size + self.pad_before + self.pad_after
        return (padded - self.span) // self.stride + 1

    @property
    def offsets(self) -> tuple[int, ...]:
        """``t(u) = u·d − p₋``: tap ``u`` of output ``a`` reads position ``a·s + t(u)``."""
        return tuple(u * self.dilation - self.pad_before for u in range(self.kernel))

    @property
    def aliased(self) -> bool:
        """Two taps of one window read the same input (only possible with circular padding)."""
        return len({t % self.size for t in self.offsets}) < self.kernel

    def positions(self) -> np.ndarray:
        """``pos(a, u)`` as an ``(m, k)`` integer array (before the periodic wrap)."""
        a = np.arange(self.output, dtype=np.int64)[:, None]
        return a * self.stride + np.asarray(self.offsets, dtype=np.int64)[None, :]

    def valid(self) -> np.ndarray:
        """``valid[a, u]``: tap ``u`` of output ``a`` reads a real input, as 0/1 ``(m, k)``."""
        pos = self.positions()
        if self.circular:
            return np.ones_like(pos)
        return ((pos >= 0) & (pos < self.size)).astype(np.int64)

    def hits(self) -> np.ndarray:
        """``hits[h, u] = #{a : pos(a, u) ≡ h}``, an ``(n, k)`` integer array."""
        pos = self.positions()
        counts = np.zeros((self.size, self.kernel), dtype=np.int64)
        taps = np.broadcast_to(np.arange(self.kernel), pos.shape)
        if self.circular:
            np.add.at(counts, (pos % self.size, taps), 1)
        else:
            inside = (pos >= 0) & (pos < self.size)
            np.add.at(counts, (pos[inside], taps[inside]), 1)
        return counts

    def coverage(self) -> np.ndarray:
        """``c[h] = Σ_u hits[h, u]``: how many windows read input ``h`` (taps are distinct)."""
        return self.hits().sum(axis=1)

    def fourier_plans(self) -> tuple[FourierPlan, ...]:
        """Tori on which this axis is a restriction of a circular convolution (see
        :class:`FourierPlan`); each one gives a sound ℓ2 bound, the caller takes the smallest."""
        plans = [self._polyphase_plan()]
        if self.stride > 1:
            plans.append(self._unstrided_plan())
        return tuple(p for p in plans if p is not None)

    def _polyphase_plan(self) -> FourierPlan | None:
        """Space-to-depth: ``pos = s(a + q(u)) + r(u)`` with ``(q, r) = divmod(t(u), s)``."""
        s = self.stride
        q, r = zip(*(divmod(t, s) for t in self.offsets), strict=True)
        if not self.circular:
            phase_length = -(-self.size // s)  # M = ⌈n / s⌉
            torus = max(phase_length - min(min(q), 0), self.output + max(q), phase_length)
            return FourierPlan(torus, s, tuple(q), tuple(r), 1)
        if self.size % s:
            return None  # the phases are not periodic; the unstrided plan applies
        torus = self.size // s
        return FourierPlan(torus, s, tuple(q), tuple(r), -(-self.output // torus))

    def _unstrided_plan(self) -> FourierPlan:
        """The stride-1 convolution with the same taps, of which every ``s``-th row is kept."""
        offsets = self.offsets
        zeros = tuple(0 for _ in offsets)
        if self.circular:
            rows = (np.arange(self.output) * self.stride) % self.size
            return FourierPlan(self.size, 1, offsets, zeros, int(np.bincount(rows).max()))
        rows1 = self.size + self.pad_before + self.pad_after - self.span + 1
        torus = max(self.size - min(min(offsets), 0), rows1 + max(offsets), self.size)
        return FourierPlan(torus, 1, offsets, zeros, 1)


@dataclass(frozen=True)
class FourierPlan:
    """The axis as a row restriction of a circular convolution on ``Z_N`` (``N = torus``).

    Split the (zero- or periodically extended) input into ``phases`` sub-sequences
    ``X_r[j] = x̃[s·j + r]`` (``r < s``; space-to-depth, a permutation of the input's entries).
    Output ``a`` of the axis is then ``Σ_u K[u] X_{r(u)}[a + q(u)]``, a stride-1 convolution of
    the phases with shifts ``q(u)`` and ``s`` times the channels (Sedghi, Gupta & Long, ICLR
    2019, for ``s = 1``; the polyphase form for ``s > 1``). On ``Z_N`` it is a circular
    convolution ``z`` with ``y[a] = z[a mod N]``:

    * zero padding: ``X_r`` is supported on ``[0, M)``, ``M = ⌈n/s⌉``. If
      ``N ≥ max(M − min(q, 0), m + max q, M)`` every read ``a + q(u)`` outside ``[0, M)``
      lands, modulo ``N``, in the zero region ``[M, N)``, and the ``m ≤ N`` output rows are
      distinct: the axis is a row restriction of the circular convolution of the embedded input
      (an isometry), so its norm is at most the circulant's. ``multiplicity = 1``.
    * circular padding with ``s | n``: ``X_r`` is ``(n/s)``-periodic, so ``N = n/s`` and no
      embedding is needed; output rows repeat when ``m > N``: ``‖S z‖² ≤ μ ‖z‖²`` with
      ``μ = multiplicity = ⌈m/N⌉`` the largest number of outputs sharing one row of ``z``.
    * the unstrided plan (``phases = 1``, ``q = t``) keeps every ``s``-th row of the stride-1
      convolution: a row restriction again (``μ`` counts repeats for circular padding).

    ``‖A‖₂ ≤ √(μ_h μ_w) · max_ξ ‖K̂(ξ)‖₂`` with ``K̂(ξ)`` the ``c_out × (c_in s_h s_w)`` blocks
    of the 2-D circulant (:mod:`tightlip.convolution.spectral`).
    """

    torus: int
    phases: int
    shifts: tuple[int, ...]
    phase_of_tap: tuple[int, ...]
    multiplicity: int

    @property
    def cost(self) -> int:
        """``N · phases``: the size of this axis's factor in the number of block entries."""
        return self.torus * self.phases


def conv_axes(
    input_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[tuple[int, int], tuple[int, int]],
    circular: bool,
) -> tuple[Axis, Axis]:
    """The two axes ``(height, width)`` of a 2-D window."""
    return tuple(  # type: ignore[return-value]
        Axis(input_hw[i], kernel[i], stride[i], dilation[i], *padding[i], circular=circular)
        for i in range(2)
    )


def resolve_padding(
    padding: str | int | tuple[int, ...],
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    stride: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch's ``padding`` argument as ``((top, bottom), (left, right))``.

    ``"valid"`` is no padding; ``"same"`` (stride 1) pads ``d(k − 1)`` in all, the smaller half
    before, as :class:`torch.nn.Conv2d` does; an int or a pair pads symmetrically.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding == "same":
            if stride != (1, 1):
                raise UnsupportedLayerError("padding='same' needs stride 1 (as in PyTorch)")
            totals = [dilation[i] * (kernel[i] - 1) for i in range(2)]
            return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
        raise UnsupportedLayerError(f"unknown padding {padding!r}")
    pair = pair_of(padding, "padding")
    return ((pair[0], pair[0]), (pair[1], pair[1]))


def pair_of(value: int | tuple[int, ...] | list[int], what: str) -> tuple[int, int]:
    """``3 → (3, 3)``; a pair stays a pair; anything else is refused."""
    if isinstance(value, int):
        return (value, value)
    values = tuple(int(v) for v in value)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise UnsupportedLayerError(f"{what} must be an int or a pair, got {value!r}")
    return values  # type: ignore[return-value]


def output_hw(axes: tuple[Axis, Axis]) -> tuple[int, int]:
    return (axes[0].output, axes[1].output)


def flat_size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
