"""A circular convolution evaluated by FFT: fast, for searches only (never certified).

A circular convolution ``A`` on ``(c, H, W)`` maps with stride ``s = (s_h, s_w)`` dividing
``H`` and ``W`` is shift-equivariant on the polyphase grid: write the input by space-to-depth as
``x'[(c, k_h, k_w), u, v] = x[c, s_h u + k_h, s_w v + k_w]`` on ``H' × W' = H/s_h × W/s_w``; then
shifting ``x'`` by one pixel shifts ``x`` by ``s`` pixels, and (indices mod ``H``, ``W``)

    y[i] = Σ_a K[a] x[s i + a − p]  ↦  Σ_a K[a] x[s (i − 1) + a − p] = y[i − 1],

so ``A`` is the multi-channel circular convolution of ``x'`` with its responses to unit
impulses, ``y_o = Σ_{c'} G[o, c'] ⊛ x'_{c'}``, ``G[o, c'] = (A δ_{c'})_o`` with ``δ_{c'}`` the
impulse at polyphase channel ``c'``, pixel ``(0, 0)``. The convolution theorem turns this into one
``c_out × c s_h s_w`` matrix per frequency, ``Ŷ(ω) = Ĝ(ω) X̂'(ω)`` (Sedghi, Gupta & Long, ICLR 2019,
the block diagonalisation that :mod:`~tightlip.convolution.spectral` bounds).

The impulse responses are computed with the operator's own ``apply`` in float64, so this is the
same linear map up to rounding, whatever the padding offsets. For a kernel that covers the whole
map (the full-map kernels of a Sandwich chain, :mod:`tightlip.models.sandwich_conv`) it costs
``O(c_out c' H W)`` per image against the direct convolution's ``O(c_out c' H² W²)``.

FFT rounding is not bounded here: :func:`tightlip.operators.fast_apply` feeds searches (the
lower-bound ascent, attacks) whose results are re-evaluated through ``apply`` with a certified
error bound before anything is reported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tightlip.errors import ModelShapeError

Apply = Callable[[torch.Tensor], torch.Tensor]


class CircularFourierForm:
    """``x ↦ irfft2(Ĝ(ω) · rfft2(x'))`` for a circular convolution (module docstring)."""

    def __init__(
        self,
        apply: Apply,
        input_shape: tuple[int, int, int],
        output_shape: tuple[int, int, int],
        stride: tuple[int, int],
        name: str = "conv",
    ) -> None:
        c_in, height, width = input_shape
        s_h, s_w = stride
        if height % s_h or width % s_w or output_shape[1:] != (height // s_h, width // s_w):
            raise ModelShapeError(
                f"{name}: a {height}×{width} map with stride {s_h}×{s_w} and output "
                f"{output_shape[1]}×{output_shape[2]} has no polyphase Fourier form"
            )
        self.input_shape, self.output_shape, self.stride = input_shape, output_shape, stride
        phases = c_in * s_h * s_w
        impulses = torch.zeros(phases, c_in, height, width, dtype=torch.float64)
        index = torch.arange(phases)
        impulses[index, index // (s_h * s_w), (index // s_w) % s_h, index % s_w] = 1.0
        responses = apply(impulses.reshape(phases, -1)).reshape(phases, *output_shape)
        spectrum = torch.fft.rfft2(responses.transpose(0, 1))  # (c_out, c', H', W'/2 + 1)
        #: ``Ĝ(ω)``, ``(H' (W'/2 + 1), c_out, c')`` complex128
        self.transfer = spectrum.permute(2, 3, 0, 1).reshape(-1, output_shape[0], phases)
        self._cast: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def polyphase(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, c, H, W) → (N, c s_h s_w, H', W')``, channel ``c s_h s_w + k_h s_w + k_w``."""
        n, c, height, width = x.shape
        s_h, s_w = self.stride
        x = x.reshape(n, c, height // s_h, s_h, width // s_w, s_w).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(n, c * s_h * s_w, height // s_h, width // s_w)

    def _transfer(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        key = (complex_dtype, device)
        if key not in self._cast:
            self._cast[key] = self.transfer.to(dtype=complex_dtype, device=device)
        return self._cast[key]

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """``A h`` for rows ``h`` of shape ``(..., c H W)``, in ``h``'s real dtype."""
        lead = h.shape[:-1]
        x = self.polyphase(h.reshape(-1, *self.input_shape))
        n, phases, rows, cols = x.shape
        spectrum = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(-1, phases, n)
        out = self._transfer(h.dtype, h.device) @ spectrum  # (F, c_out, N)
        out = out.reshape(rows, cols // 2 + 1, -1, n).permute(3, 2, 0, 1)
        y = torch.fft.irfft2(out, s=(rows, cols))
        return y.reshape(*lead, -1)
