"""Local Lipschitz bounds through convolutions (Huang, Zhang, Shi, Kolter & Anandkumar,
NeurIPS 2021, whose main MNIST network is the 4C3F conv net with clipped ReLUs).

:class:`LocalLipConvNet` is ``Flatten → Unflatten(C, H, W) → [Conv2d → clipped ReLU]… → Flatten
→ [Linear → clipped ReLU]… → Linear`` (biases on, one learnable threshold θ per unit, as in the
MLP), read on flat ``(N, C·H·W)`` or image inputs. :func:`tightlip.models.local_lip.local_bounds`
runs on it unchanged: each convolution answers as a :class:`ConvAffine`, on flat rows in the
C-order of its maps.

**Intervals** (centre / radius form): for ``z = A h + b`` with ``h ∈ [c − r, c + r]``,
``z ∈ A c + b ± |A| r``, where ``A c + b`` is the convolution of ``c`` and ``|A| r`` the
convolution with ``|K|`` (every entry of ``A`` is one kernel entry or zero, so ``|A|`` is the
convolution by ``|K|`` exactly). In float64 the radius gets the relative slack of
:func:`~tightlip.models.local_lip.local_bounds`: ``1e-9 · (|A||h| + |b| + r)``, far above the
summation error ``γ_n ≈ n·1.1e-16`` of any of these sums (``n = C_in k² ≤ 10⁶``).

**Ball radii.** The pre-activation i over the ball moves by at most ``‖a_i ⊙ m‖_q · L ε``; for
a convolution ``‖a_i ⊙ m‖₂² = (m ⋆ K²)_i`` (m is 0/1), ``‖a_i ⊙ m‖₁ = (m ⋆ |K|)_i``, and for
``q = ∞`` we use the unmasked ``max |K_c|`` of the output channel (an upper bound).

**Masked operator norms** ``‖D_out A D_in‖_{p→p}`` (certified, float64):

* ℓ∞ / ℓ1: exact, the largest row / column abs-sum of the masked ``|A|``:
  ``max_i m_out,i (|K| ⋆ m_in)_i`` and ``max_j m_in,j (|K|ᵀ ⋆ m_out)_j`` (the transposed
  convolution), inflated by ``(1 + γ_n)(1 + 4u)``;
* ℓ2: layers with at most :data:`DENSE_ENTRIES` matrix entries are lowered to their dense
  matrix (exact entries) and use the masked-Gram eigenvalue bound of
  :func:`~tightlip.models.local_lip.masked_norms_certified`; larger ones use Schur's test
  ``‖B‖₂ ≤ ‖|B|‖₂ ≤ √(‖B‖₁ ‖B‖_∞)`` on the masked matrix. Either is capped by the certified
  ℓ2 norm of the unmasked convolution (:mod:`tightlip.convolution`), since masking never
  increases a norm. **Looseness:** Schur's test bounds ``‖|B|‖₂``, which for kernels of mixed
  signs can exceed ``‖B‖₂`` by a large factor, so on full-size conv layers the local ℓ2 bound is
  usually the unmasked certified norm (no gain from masking) unless the masks are very sparse;
  the dense layers keep the exact masked bound.

**Training** uses masked power iteration through the convolution and its transpose
(``torch.nn.grad.conv2d_input``), as the paper does, never for certificates.

Circular padding and pooling are refused (the local bound is written for zero-padded
convolutions and dense layers).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tightlip.arch import ConvLayer, DenseLayer, parse_arch
from tightlip.convolution.modules import conv_operator
from tightlip.errors import MethodNotApplicableError
from tightlip.layers import ClippedReLU, OnChannels
from tightlip.models.local_lip import (
    LOCAL_LIP_THRESHOLD_INIT,
    AffineLayer,
    DenseAffine,
    LocalLipNetwork,
    masked_norms_certified,
)
from tightlip.models.registry import MODEL_KINDS
from tightlip.norms import UNIT_ROUNDOFF_F64, NormName

#: conv layers up to this many dense entries get the exact masked ℓ2 bound (dense lowering)
DENSE_ENTRIES = 2**16


class ConvAffine(AffineLayer):
    """An ``nn.Conv2d`` on flat rows of maps ``in_shape`` (module docstring)."""

    def __init__(self, module: nn.Conv2d, in_shape: tuple[int, int, int]) -> None:
        self.module = module
        self.in_shape = in_shape
        with torch.no_grad():
            probe = torch.zeros(
                1, *in_shape, dtype=module.weight.dtype, device=module.weight.device
            )
            self.out_shape = tuple(self._conv(probe, module.weight).shape[1:])

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_shape)

    def _conv(self, maps: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None):
        m = self.module
        return F.conv2d(maps, kernel, bias, m.stride, m.padding, m.dilation)

    def _forward(self, h: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None = None):
        return self._conv(h.reshape(-1, *self.in_shape), kernel, bias).flatten(1)

    def _transpose(self, u: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """``Aᵀ u`` for rows ``u`` of the output maps (the transposed convolution)."""
        m = self.module
        grad = u.reshape(-1, *self.out_shape)
        size = (grad.shape[0], *self.in_shape)
        out = torch.nn.grad.conv2d_input(size, kernel, grad, m.stride, m.padding, m.dilation)
        return out.flatten(1)

    def _pixels(self) -> int:
        return self.out_shape[1] * self.out_shape[2]

    def apply(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self._forward(h, self.weight.to(dtype), self.bias.to(dtype))

    def abs_apply(self, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self._forward(r, self.weight.to(dtype).abs())

    def abs_bias(self, dtype: torch.dtype) -> torch.Tensor:
        return self.bias.to(dtype).abs().repeat_interleave(self._pixels())

    def ball_radii(
        self, prev_mask: torch.Tensor | None, q: NormName, dtype: torch.dtype
    ) -> torch.Tensor:
        kernel = self.weight.to(dtype)
        if q == "inf":
            peak = kernel.abs().flatten(1).amax(dim=1).repeat_interleave(self._pixels())
            return peak[None]
        mask = prev_mask
        if mask is None:
            mask = torch.ones(1, self.in_features, dtype=dtype, device=kernel.device)
        if q == "2":
            return self._forward(mask, kernel * kernel).clamp_min(0).sqrt()
        return self._forward(mask, kernel.abs())

    def _gamma(self) -> float:
        k = self.weight.shape
        n = max(k[0], k[1]) * k[2] * k[3] + 2
        return n * UNIT_ROUNDOFF_F64 / (1 - n * UNIT_ROUNDOFF_F64)

    def dense(self) -> torch.Tensor:
        """The matrix of the convolution (float64; every entry is a kernel value, exact)."""
        eye = torch.eye(self.in_features, dtype=torch.float64)
        return self._forward(eye, self.weight.detach().to(torch.float64).cpu()).T.contiguous()

    def certified_norms(
        self, row_mask: torch.Tensor, col_mask: torch.Tensor | None, norm: NormName
    ) -> torch.Tensor:
        if norm == "2" and self.in_features * self.out_features <= DENSE_ENTRIES:
            return masked_norms_certified(self.dense(), row_mask, col_mask, norm)
        kernel = self.weight.detach().to(torch.float64).cpu().abs()
        rows = row_mask.to(torch.float64).cpu()
        cols = torch.ones(rows.shape[0], self.in_features, dtype=torch.float64)
        if col_mask is not None:
            cols = col_mask.to(torch.float64).cpu()
        inflate = (1 + self._gamma()) * (1 + 4 * UNIT_ROUNDOFF_F64)
        row_sums = (self._forward(cols, kernel) * rows).amax(dim=1) * inflate
        if norm == "inf":
            return row_sums
        col_sums = (self._transpose(rows, kernel) * cols).amax(dim=1) * inflate
        if norm == "1":
            return col_sums
        return torch.sqrt(row_sums * col_sums) * (1 + 4 * UNIT_ROUNDOFF_F64)

    def power_norms(
        self,
        row_mask: torch.Tensor,
        col_mask: torch.Tensor | None,
        start: torch.Tensor,
        iterations: int,
        norm: NormName,
    ) -> torch.Tensor:
        kernel = self.weight.to(row_mask.dtype)
        cols = torch.ones_like(start)[None] if col_mask is None else col_mask
        if norm in ("1", "inf"):
            if norm == "inf":
                sums = self._forward(cols.expand(row_mask.shape[0], -1), kernel.abs()) * row_mask
            else:
                sums = self._transpose(row_mask, kernel.abs()) * cols
            return sums.amax(dim=1)
        with torch.no_grad():
            w = kernel.detach()
            u = start.to(row_mask.dtype).expand(row_mask.shape[0], -1) * cols
            for _ in range(iterations):
                u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
                v = self._forward(u, w) * row_mask
                u = self._transpose(v, w) * cols
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return (self._forward(u, kernel) * row_mask).norm(dim=1)

    @torch.no_grad()
    def refresh(self, u: torch.Tensor) -> torch.Tensor:
        w = self.weight.detach()
        v = self._forward(u[None].to(w.dtype), w)
        u = self._transpose(v / v.norm().clamp_min(1e-12), w)[0]
        return u / u.norm().clamp_min(1e-12)

    def certified_full_norm(self, norm: NormName) -> float:
        operator, _ = conv_operator(self.module, self.in_shape, "local-lip.conv")
        return operator.certified_norm(norm)


class LocalLipConvNet(LocalLipNetwork):
    """Conv layers and dense layers with clipped ReLUs (module docstring), from an
    architecture string of :mod:`tightlip.arch` (e.g. 4C3F ``c32k3,c32k4s2,c64k3,c64k4s2,
    f512,f512``) on inputs of ``input_shape``."""

    kind = "local-lip-conv"

    def __init__(
        self,
        arch: str,
        input_shape: tuple[int, ...] | list[int] = (1, 28, 28),
        num_classes: int = 10,
        init: float = LOCAL_LIP_THRESHOLD_INIT,
    ) -> None:
        shape = tuple(int(s) for s in input_shape)
        layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, shape)]
        in_shapes: list[tuple[int, int, int]] = []
        current: tuple[int, ...] = shape
        flat = False
        for layer in parse_arch(arch):
            if isinstance(layer, ConvLayer):
                if layer.circular:
                    raise MethodNotApplicableError(
                        f"local-lip: {layer.token()!r} uses circular padding; local bounds "
                        "need zero padding"
                    )
                conv = nn.Conv2d(
                    current[0],
                    layer.channels,
                    layer.kernel,
                    stride=layer.stride,
                    padding=layer.pad,
                    dilation=layer.dilation,
                )
                in_shapes.append((current[0], current[1], current[2]))
                with torch.no_grad():
                    current = tuple(conv(torch.zeros(1, *current)).shape[1:])
                layers += [conv, OnChannels(ClippedReLU(math.prod(current), init))]
            elif isinstance(layer, DenseLayer):
                if not flat:
                    layers.append(nn.Flatten())
                    current, flat = (math.prod(current),), True
                layers += [nn.Linear(current[0], layer.width), ClippedReLU(layer.width, init)]
                current = (layer.width,)
            else:
                raise MethodNotApplicableError(
                    f"local-lip: pooling ({layer.token()!r}) is not supported; use strided "
                    "convolutions"
                )
        if not flat:
            layers.append(nn.Flatten())
            current = (math.prod(current),)
        layers.append(nn.Linear(current[0], num_classes))
        super().__init__(*layers)
        self._in_shapes = in_shapes
        self.arguments = {
            "arch": arch,
            "input_shape": list(shape),
            "num_classes": num_classes,
            "init": init,
        }

    def affine_layers(self) -> list[AffineLayer]:
        out: list[AffineLayer] = []
        shapes = iter(self._in_shapes)
        for module in self:
            if isinstance(module, nn.Conv2d):
                out.append(ConvAffine(module, next(shapes)))
            elif isinstance(module, nn.Linear):
                out.append(DenseAffine(module))
        return out


@MODEL_KINDS.register("local-lip-conv")
def build_local_lip_conv(arguments: dict[str, Any]) -> nn.Module:
    return LocalLipConvNet(
        str(arguments["arch"]),
        tuple(arguments.get("input_shape", (1, 28, 28))),
        int(arguments.get("num_classes", 10)),
        init=float(arguments.get("init", LOCAL_LIP_THRESHOLD_INIT)),
    )
