"""Sandwich convolutions: LBDN's conv nets, Lipschitz ≤ γ by construction.

Wang & Manchester, "Direct parameterization of Lipschitz-bounded deep networks", ICML 2023
(reference code github acfr/LBDN, ``SandwichConv``; written here from the paper's equations and
:mod:`tightlip.models.sandwich`, whose docstring has the 1-Lipschitz proof).

**Fourier domain.** With circular padding a convolution ``c_in → c_out`` on ``H × W`` maps is
block-diagonalised by the 2-D DFT: at each frequency ``ω`` it is a complex ``c_out × c_in``
matrix. A Sandwich convolution holds a free kernel ``W`` of shape ``(c_out, c_out + c_in, k, k)``
(centred, zero-padded to ``H × W``), its DFT ``Ŵ(ω)`` (``c_out × (c_out + c_in)`` per
frequency), ``X(ω) = α Ŵ(ω) / ‖Ŵ‖_F`` with a learnable α, and the complex Cayley transform

    Z = U − Uᴴ + VᴴV,   Q(ω) = [ (I + Z)⁻¹(I − Z) ; −2 V (I + Z)⁻¹ ]ᴴ,   Xᴴ = [U; V],

which has orthonormal rows, ``Q Qᴴ = I``. Split ``Q = [A | B]`` (``A`` square). The layer is

    h⁺ = √2 Aᴴ Ψ σ(√2 Ψ⁻¹ B (s h) + b),   Ψ = diag(e^ψ) per channel, σ = ReLU,

evaluated as ``irfft2 ∘ (matrix per frequency) ∘ rfft2``. Ψ acts per channel, so it commutes
with the DFT, and the real operator ``Q = [A B]`` on maps has ``QQᵀ = I`` because the unitary DFT
diagonalises it; the proof of :mod:`tightlip.models.sandwich` applies word for word: the layer
is ``s · c``-Lipschitz in ℓ2 with ``c ≥ max_ω ‖Q(ω)‖₂²`` (= 1 in exact arithmetic).

**Strides.** As LBDN (and Trockman & Kolter's Cayley convolutions), a stride-2 layer ``cKs2``
first rearranges its input by space-to-depth (``(c, 2H, 2W) → (4c, H, W)``,
``x'[4c + 2k₁ + k₂, i, j] = x[c, 2i + k₁, 2j + k₂]``, a permutation, so an isometry) and then
applies a stride-1 Sandwich convolution with a ``max(1, ⌊K/2⌋)`` kernel on ``4 c_in`` channels.
Other strides, dilation, explicit padding and pooling are refused (LBDN has none).

**Network.** ``(Sandwich conv)… → flatten → (Sandwich dense, :class:`SandwichLinear`)… →
linear head (:class:`SandwichOutput`)``; √γ scales the first layer's input and √γ the head, so
``Lip(f) ≤ γ``. :meth:`SandwichConvNet.certified_lipschitz` is the sound float64 version:
``∏ s_l c_l`` with ``c_l`` a certified ``max_ω ‖Q_l(ω)‖₂²`` (SVDs of the real embeddings
``[[Re, −Im], [Im, Re]]`` in float64, inflated by the SVD error bound) and the rounding
allowance of :mod:`tightlip.models.sandwich`.

**Chain.** A Sandwich convolution *is* a circular convolution whose kernel covers the whole map:
``G = irfft2(M(ω))`` for the per-frequency matrices ``M = √2 s Ψ⁻¹B`` and ``√2 AᴴΨ``
(``x ↦ irfft2(M · rfft2(x))`` is linear and shift-equivariant, so it is the circular
convolution with its response to a unit impulse, ``irfft2(M)``). :meth:`chain_steps` writes each
layer as ``Conv2dOperator(G_B, circular) + b → ReLU → Conv2dOperator(G_A, circular)`` with ``H × W``
kernels read as cross-correlations (padding ``⌊H/2⌋`` before and ``H − 1 − ⌊H/2⌋`` after);
a strided layer's space-to-depth is folded into its first convolution, which becomes a stride-2
circular convolution with a ``2H × 2W`` kernel, ``K[o, c, 2u + k₁, 2v + k₂] = K'[o, 4c + 2k₁ + k₂,
u, v]``. Every verifier, the float32 certificate and PGD then see the same function as the
model (up to float rounding of the FFTs). The chain's trivial bound ignores the structure and is
much larger than γ; the certificate is γ.

**Caching.** The Cayley transforms (one batched solve per layer) are recomputed at every forward
in train mode and cached in eval mode (dropped by ``train()`` and by loading a state dict).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tightlip.arch import ConvLayer, DenseLayer
from tightlip.convolution.fourier import CircularFourierForm
from tightlip.convolution.operators import Conv2dOperator
from tightlip.errors import ModelShapeError
from tightlip.layers import ReLU
from tightlip.model import ActivationStep, AffineStep, ModelSpec, Step
from tightlip.models.registry import MODEL_KINDS
from tightlip.models.sandwich import (
    SANDWICH_GAMMA,
    SandwichLinear,
    SandwichOutput,
    _inflate,
    certified_product,
    head_weight,
)
from tightlip.norms import round_up, svd_inflation

SQRT2 = math.sqrt(2.0)


def complex_cayley(x: torch.Tensor) -> torch.Tensor:
    """``Q (…, n, n+m)`` with orthonormal rows (``QQᴴ = I``) from a free complex ``x``."""
    n = x.shape[-2]
    if x.shape[-1] < n:
        raise ValueError(f"cayley needs wide matrices (n × (n+m)), got {tuple(x.shape)}")
    u, v = x[..., :n].mH, x[..., n:].mH  # U (n×n), V (m×n)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    z = u - u.mH + v.mH @ v
    first = torch.linalg.solve(eye + z, eye - z)  # (I + Z)⁻¹(I − Z)
    second = -2.0 * torch.linalg.solve((eye + z).mH, v.mH).mH  # −2 V (I + Z)⁻¹
    return torch.cat([first, second], dim=-2).mH


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``(N, c, 2H, 2W) → (N, 4c, H, W)``, ``x'[4c + 2k₁ + k₂, i, j] = x[c, 2i + k₁, 2j + k₂]``."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(n, 4 * c, h // 2, w // 2)


#: im2col entries per chunk when a chain's full-map kernels are applied (2^26: 512 MiB float64)
CHUNK_ENTRIES = 2**26


class FullMapConvOperator(Conv2dOperator):
    """A :class:`Conv2dOperator` whose kernel covers the whole map, applied to a batch in
    chunks: torch's direct convolution unfolds ``c_in k_h k_w × pixels`` entries per image
    (157 MB for a 32-channel 28 × 28 kernel on 28 × 28 maps), so a batch at once would not fit.
    Same arithmetic per image, so the operator's norms and rounding bounds are unchanged.
    Searches evaluate it by FFT instead (:meth:`fast_apply`), ~100× faster on 28 × 28 maps."""

    _fourier: CircularFourierForm | None = None

    def _chunk(self) -> int:
        k = self.kernel
        per_image = (
            k.shape[1] * k.shape[2] * k.shape[3] * self.output_shape[1] * self.output_shape[2]
        )
        return max(1, CHUNK_ENTRIES // per_image)

    def apply(self, h: torch.Tensor) -> torch.Tensor:
        return self._in_chunks(h, super().apply, self.in_features, self.out_features)

    def apply_transpose(self, g: torch.Tensor) -> torch.Tensor:
        return self._in_chunks(g, super().apply_transpose, self.out_features, self.in_features)

    def fast_apply(self, h: torch.Tensor) -> torch.Tensor:
        """``A h`` by FFT (:class:`~tightlip.convolution.fourier.CircularFourierForm`), built on
        first use from this operator's impulse responses; for searches only (its rounding is
        not bounded)."""
        if self._fourier is None:
            self._fourier = CircularFourierForm(
                self.apply, self._input_shape, self.output_shape, self.stride, self.name
            )
        return self._fourier(h)

    def _in_chunks(
        self,
        h: torch.Tensor,
        single: Callable[[torch.Tensor], torch.Tensor],
        width: int,
        out_width: int,
    ) -> torch.Tensor:
        """``single`` on at most :meth:`_chunk` rows at a time."""
        rows = h.reshape(-1, width)
        chunk = self._chunk()
        if rows.shape[0] <= chunk:
            return single(h)
        parts = [single(rows[i : i + chunk]) for i in range(0, rows.shape[0], chunk)]
        return torch.cat(parts).reshape(*h.shape[:-1], out_width)


class SandwichConv(nn.Module):
    """One Sandwich convolution ``c_in → c_out`` on ``(c_in, H, W)`` maps (module docstring)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        input_hw: tuple[int, int],
        stride: int = 1,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ModelShapeError(f"a Sandwich convolution has stride 1 or 2, got {stride}")
        h, w = input_hw
        if stride == 2:
            if h % 2 or w % 2:
                raise ModelShapeError(
                    f"a stride-2 Sandwich convolution needs even map sizes, got {h}×{w}"
                )
            in_channels, kernel, h, w = 4 * in_channels, max(1, kernel // 2), h // 2, w // 2
        if kernel > min(h, w):
            raise ModelShapeError(f"kernel {kernel} is larger than the {h}×{w} maps")
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, kernel
        self.stride, self.hw, self.scale = stride, (h, w), float(scale)
        self.weight = nn.Parameter(
            torch.empty(out_channels, out_channels + in_channels, kernel, kernel)
        )
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.alpha = nn.Parameter(self._fourier(self.weight.detach()).norm().reshape(1).clone())
        self.psi = nn.Parameter(torch.zeros(out_channels))
        bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        self._cache: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.clear_cache())

    # --- parameterisation ------------------------------------------------------------------
    def _fourier(self, weight: torch.Tensor) -> torch.Tensor:
        """``Ŵ(ω)`` as ``(F, c_out, c_out + c_in)``, the kernel centred on the origin."""
        h, w = self.hw
        shift = (self.kernel - 1) // 2
        padded = torch.zeros(*weight.shape[:2], h, w, dtype=weight.dtype, device=weight.device)
        padded[..., : self.kernel, : self.kernel] = weight
        padded = torch.roll(padded, shifts=(-shift, -shift), dims=(2, 3))
        spectrum = torch.fft.rfft2(padded)  # (c_out, c_out + c_in, H, W//2 + 1)
        return spectrum.permute(2, 3, 0, 1).reshape(-1, *weight.shape[:2])

    def _q(self) -> torch.Tensor:
        spectrum = self._fourier(self.weight)
        return complex_cayley(self.alpha * spectrum / spectrum.norm())

    def clear_cache(self) -> None:
        self._cache = None

    def train(self, mode: bool = True) -> SandwichConv:
        self.clear_cache()
        return super().train(mode)

    def q(self) -> torch.Tensor:
        """``Q(ω)``, ``(F, c_out, c_out + c_in)`` complex (cached, detached, in eval mode)."""
        if self.training:
            self._cache = None
            return self._q()
        if self._cache is None:
            with torch.no_grad():
                self._cache = self._q().detach()
        return self._cache

    @torch.no_grad()
    def q64(self) -> torch.Tensor:
        """``Q(ω)`` recomputed in float64 (complex128) on the CPU."""
        weight = self.weight.detach().to(device="cpu", dtype=torch.float64)
        alpha = self.alpha.detach().to(device="cpu", dtype=torch.float64)
        spectrum = self._fourier(weight)
        return complex_cayley(alpha * spectrum / spectrum.norm())

    # --- evaluation ----------------------------------------------------------------------
    def _fourier_map(self, matrices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``irfft2(M(ω) · rfft2(x))`` for ``x (N, c, H, W)`` and ``M (F, c', c)``."""
        n, c, h, w = x.shape
        spectrum = torch.fft.rfft2(x).permute(2, 3, 1, 0).reshape(-1, c, n)
        out = (matrices @ spectrum.to(matrices.dtype)).reshape(h, w // 2 + 1, -1, n)
        return torch.fft.irfft2(out.permute(3, 2, 0, 1), s=(h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = space_to_depth(x)
        q = self.q()
        a, b = q[..., : self.out_channels], q[..., self.out_channels :]
        z = self._fourier_map(b, self.scale * x)
        z = SQRT2 * torch.exp(-self.psi)[:, None, None] * z + self.bias[:, None, None]
        v = torch.relu(z) * torch.exp(self.psi)[:, None, None]
        return SQRT2 * self._fourier_map(a.mH, v)

    # --- chain and certificate ----------------------------------------------------------
    def output_shape(self) -> tuple[int, int, int]:
        return (self.out_channels, *self.hw)

    def input_shape(self) -> tuple[int, int, int]:
        h, w = self.hw
        if self.stride == 2:
            return (self.in_channels // 4, 2 * h, 2 * w)
        return (self.in_channels, h, w)

    @torch.no_grad()
    def kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The circular kernels ``G_B (c_out, c_in, H, W)`` and ``G_A (c_out, c_out, H, W)``
        (``y[o,i,j] = Σ G[o,c,a,b] x[c, i−a, j−b]``, indices mod H, W), float64."""
        q = self.q64()
        psi = self.psi.detach().to(device="cpu", dtype=torch.float64)
        a, b = q[..., : self.out_channels], q[..., self.out_channels :]
        first = SQRT2 * self.scale * torch.exp(-psi)[:, None] * b
        second = SQRT2 * a.mH * torch.exp(psi)[None, :]
        return self._spatial(first), self._spatial(second)

    def _spatial(self, matrices: torch.Tensor) -> torch.Tensor:
        h, w = self.hw
        grid = matrices.reshape(h, w // 2 + 1, *matrices.shape[1:]).permute(2, 3, 0, 1)
        return torch.fft.irfft2(grid, s=(h, w))

    def _operator(self, kernel: torch.Tensor, strided: bool, name: str) -> Conv2dOperator:
        """The circular convolution with ``kernel`` as a cross-correlation operator."""
        h, w = self.hw
        before_h, before_w = h // 2, w // 2
        rows = (before_h - torch.arange(h)) % h
        cols = (before_w - torch.arange(w)) % w
        k = kernel[:, :, rows][:, :, :, cols]
        padding = ((before_h, h - 1 - before_h), (before_w, w - 1 - before_w))
        if not strided:
            return FullMapConvOperator(
                k, (k.shape[1], h, w), padding=padding, circular=True, name=name
            )
        c_out, c4 = k.shape[:2]
        k = k.reshape(c_out, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        k = k.reshape(c_out, c4 // 4, 2 * h, 2 * w)
        padding = tuple((2 * p[0], 2 * p[1]) for p in padding)  # type: ignore[assignment]
        return FullMapConvOperator(
            k, self.input_shape(), stride=(2, 2), padding=padding, circular=True, name=name
        )

    def chain_steps(self) -> list[Step]:
        first, second = self.kernels()
        pixels = self.hw[0] * self.hw[1]
        bias = self.bias.detach().to(device="cpu", dtype=torch.float64).repeat_interleave(pixels)
        return [
            AffineStep(
                self._operator(first, self.stride == 2, "sandwich.conv.in"),
                bias,
                name="sandwich.conv.in",
            ),
            ActivationStep(ReLU(), name="sandwich.conv.relu"),
            AffineStep(
                self._operator(second, False, "sandwich.conv.out"), name="sandwich.conv.out"
            ),
        ]

    def certified_lipschitz(self) -> float:
        """``s · c``, ``c`` a certified ``max_ω ‖Q(ω)‖₂²``, plus the rounding allowance."""
        q = self.q64()
        embedded = torch.cat(
            [torch.cat([q.real, -q.imag], dim=-1), torch.cat([q.imag, q.real], dim=-1)], dim=-2
        )
        sigma = float(torch.linalg.svdvals(embedded)[..., 0].max())
        sigma = round_up(sigma * svd_inflation(*embedded.shape[-2:]))
        return _inflate(self.scale * sigma * sigma)


class SandwichConvNet(nn.Module):
    """LBDN's conv net of a convolutional ``arch`` (module docstring), ``Lip ≤ γ``."""

    def __init__(self, spec: ModelSpec, gamma: float = SANDWICH_GAMMA) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        if not spec.convolutional:
            raise ModelShapeError("SandwichConvNet needs a convolutional arch")
        self.spec, self.gamma = spec, float(gamma)
        root = math.sqrt(self.gamma)
        shape = spec.input_shape
        convs: list[nn.Module] = []
        for layer in spec.layers:
            if isinstance(layer, DenseLayer):
                break
            if not isinstance(layer, ConvLayer):
                raise ModelShapeError(
                    f"sandwich: {layer.token()!r}: LBDN's conv nets have no pooling (use s2)"
                )
            default = layer.dilation * (layer.kernel - 1) // 2
            if layer.dilation != 1 or (layer.padding is not None and layer.padding != default):
                raise ModelShapeError(
                    f"sandwich: {layer.token()!r}: Sandwich convolutions are circular, stride 1 "
                    "or 2, without dilation or explicit padding"
                )
            conv = SandwichConv(
                shape[0],
                layer.channels,
                layer.kernel,
                (shape[1], shape[2]),
                stride=layer.stride,
                scale=root if not convs else 1.0,
            )
            convs.append(conv)
            shape = conv.output_shape()
        expected = spec.feature_shapes()[len(convs) - 1] if convs else shape
        if tuple(expected[1:]) != tuple(shape[1:]):
            raise ModelShapeError(
                f"sandwich: {spec.arch!r} gives {shape[1]}×{shape[2]} maps with circular "
                f"padding but {expected[1]}×{expected[2]} with the arch's zero padding"
            )
        self.convs = nn.ModuleList(convs)
        dense: list[nn.Module] = []
        fan_in = math.prod(shape)
        for width in spec.widths:
            dense.append(SandwichLinear(fan_in, width))
            fan_in = width
        dense.append(SandwichOutput(fan_in, spec.num_classes, scale=root))
        self.dense = nn.ModuleList(dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], *self.spec.input_shape)
        for conv in self.convs:
            h = conv(h)
        h = h.flatten(1)
        for layer in self.dense:
            h = layer(h)
        return h

    def chain_steps(self) -> list[Step]:
        steps: list[Step] = []
        for layer in (*self.convs, *self.dense):
            steps.extend(layer.chain_steps())
        return steps

    def certified_lipschitz(self, tight: bool = False) -> float:
        """Sound ℓ2 bound ``∏ (layer bounds)`` = γ up to ~1e-9 (module docstring); ``tight``
        uses the head's ``√γ‖B‖`` instead of ``√γ‖Q‖`` (as :class:`SandwichMLP`)."""
        return certified_product((*self.convs, *self.dense), tight)

    def last_layer(self) -> tuple[torch.Tensor, float]:
        """``(W_last, L_backbone)``: ``f = W_last h + b`` with ``Lip(h) ≤ √γ``."""
        return head_weight(self.dense[-1]), math.sqrt(self.gamma)

    def certified_read_out(self) -> tuple[torch.Tensor, float]:
        """``(W_last, L_backbone)`` sound in float64, as :meth:`SandwichMLP.certified_read_out`."""
        head = self.dense[-1]
        assert isinstance(head, SandwichOutput)
        return head.weight64(), certified_product((*self.convs, *self.dense[:-1]))

    def description(self) -> dict[str, Any]:
        return {
            "kind": "sandwich-conv",
            "arguments": {**self.spec.to_dict(), "gamma": self.gamma},
        }


@MODEL_KINDS.register("sandwich-conv")
def build_sandwich_conv(arguments: dict[str, Any]) -> nn.Module:
    arguments = dict(arguments)
    gamma = float(arguments.pop("gamma", SANDWICH_GAMMA))
    return SandwichConvNet(ModelSpec.from_dict(arguments), gamma=gamma)
