"""A sound upper bound on the spectral norm of a multi-channel 2-D convolution.

**The bound.** A circular convolution on the torus ``Z_{N_h} × Z_{N_w}`` with ``c_out × c_in``
kernel taps is block-diagonalised by the 2-D discrete Fourier transform: its singular values
are those of the ``c_out × c_in`` matrices

    K̂(ξ) = Σ_{u,v} K[:, :, u, v] · ω_h^{ξ_h q_h(u)} · ω_w^{ξ_w q_w(v)},   ω_N = e^{−2πi/N},

over the ``N_h N_w`` frequencies ``ξ`` (Sedghi, Gupta & Long, *The singular values of
convolutional layers*, ICLR 2019, Thm 6), so its norm is ``max_ξ σ_max(K̂(ξ))``. A zero-padded
or strided convolution is a row restriction of such a circulant acting on an isometric
embedding of its input (:class:`~tightlip.convolution.geometry.FourierPlan`: zero padding fits
on a torus just large enough that no tap wraps into the image; a stride ``s`` becomes ``s²``
times the input channels by space-to-depth, so the bound does not pay for the subsampling), and
restricting rows never increases a norm. Circular padding with repeated output rows multiplies
the bound by ``√μ``. Real kernels give ``K̂(−ξ) = conj K̂(ξ)``, which has the same singular
values, so only ``ξ_w ≤ N_w/2`` is computed.

**Rounding.** The blocks are computed by two real matrix products per part with explicit
twiddle factors ``cos θ, sin θ``, ``θ = 2π ((ξ q) mod N) / N`` (the integer reduction is exact;
``θ`` carries a relative error ≤ 3u and ``|θ| < 2π``; ``cos``/``sin`` are within 1 ulp, so each
computed twiddle is within ``ε = 32u`` of the true one, ``u = 2⁻⁵³``). The first product sums
``k_w`` terms, the second ``2k_h`` (real and imaginary parts), so with exact twiddles
``|ΔRe|, |ΔIm| ≤ 2γ_{2k_h + k_w} a`` (Higham, *Accuracy and Stability of Numerical
Algorithms*, §3.1 and Lemma 3.3, ``|c|, |s| ≤ 1``), where ``a = Σ_taps |K|`` is the block entry's
absolute tap sum; twiddle errors add ``(4ε + 2ε²) a``; gradual underflow adds ``τ`` per entry
(``η = 2⁻¹⁰⁷⁴`` per product). So the computed block ``K̂_c(ξ)`` satisfies

    σ_max(K̂(ξ)) ≤ σ_max(K̂_c(ξ)) + ‖K̂_c(ξ) − K̂(ξ)‖_F ≤ σ_max(K̂_c(ξ)) + √2 (δ ‖a‖_F + τ √(#entries)),

``δ = 2γ_{2k_h+k_w}(1 + ε)² + 4ε + 2ε²``. The computed singular value is inflated by
``1 + c · 2max(m, n) · u`` (the SVD margin of :mod:`tightlip.norms`, applied to the real
``2m × 2n`` form ``[[Re, −Im], [Im, Re]]`` of a complex block, which has the same singular
values; complex LAPACK SVDs are backward stable with an error of that form). Every operation
that builds the bound is rounded upwards. Power iteration, which converges from below, is
never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product

import torch

from tightlip.convolution.geometry import Axis, FourierPlan
from tightlip.norms import (
    SMALLEST_SUBNORMAL,
    UNIT_ROUNDOFF,
    gamma,
    product_rounded_up,
    round_up,
    svd_inflation,
)

#: the absolute error of one computed twiddle factor ``cos θ`` or ``sin θ`` (module docstring)
TWIDDLE_ERROR = 32.0 * UNIT_ROUNDOFF
#: blocks are computed in chunks of at most this many complex entries (memory, not accuracy)
_CHUNK_ENTRIES = 2**21


def circulant_spectral_bound(kernel: torch.Tensor, axes: tuple[Axis, Axis]) -> float:
    """A float ``≥ ‖A‖₂`` for the convolution with ``kernel`` ``(c_out, c_in, k_h, k_w)`` on
    ``axes`` (module docstring): the smallest bound over the axes' Fourier plans."""
    k = kernel.detach().to(dtype=torch.float64, device="cpu")
    if not bool(torch.isfinite(k).all()):
        raise ValueError("kernel contains NaN or infinite entries: no bound can be certified")
    if not bool((k != 0).any()):
        return 0.0
    plans = product(axes[0].fourier_plans(), axes[1].fourier_plans())
    return min(_plan_bound(k, plan_h, plan_w) for plan_h, plan_w in plans)


def _plan_bound(kernel: torch.Tensor, plan_h: FourierPlan, plan_w: FourierPlan) -> float:
    """``√(μ_h μ_w) · max_ξ (σ̂(ξ) · inflation + error)`` for one pair of plans."""
    c_out, c_in, k_h, k_w = kernel.shape
    cos_h, sin_h = _twiddles(plan_h, half=False)
    cos_w, sin_w = _twiddles(plan_w, half=True)
    # stage 1 (sum over v): (c_out, c_in, k_h, ξ_w, r_w)
    p = torch.einsum("oiuv,yrv->oiuyr", kernel, cos_w)
    q = torch.einsum("oiuv,yrv->oiuyr", kernel, sin_w)
    columns = c_in * plan_h.phases * plan_w.phases
    rows_per_chunk = max(1, _CHUNK_ENTRIES // (cos_w.shape[0] * c_out * columns))
    sigma = 0.0
    for start in range(0, cos_h.shape[0], rows_per_chunk):
        ch, sh = cos_h[start : start + rows_per_chunk], sin_h[start : start + rows_per_chunk]
        # stage 2 (sum over u): (ξ_h, ξ_w, c_out, c_in, r_h, r_w)
        real = torch.einsum("xsu,oiuyr->xyoisr", ch, p) - torch.einsum("xsu,oiuyr->xyoisr", sh, q)
        imag = torch.einsum("xsu,oiuyr->xyoisr", sh, p) + torch.einsum("xsu,oiuyr->xyoisr", ch, q)
        blocks = torch.complex(real, -imag).reshape(-1, c_out, columns)
        sigma = max(sigma, float(torch.linalg.svdvals(blocks).max()))
    error = _block_error(kernel, plan_h, plan_w)
    inflated = round_up(sigma * round_up(svd_inflation(2 * c_out, 2 * columns)))
    per_block = round_up(inflated + error)
    repeats = plan_h.multiplicity * plan_w.multiplicity
    return per_block if repeats == 1 else product_rounded_up((per_block, round_up(math.sqrt(repeats))))


def _twiddles(plan: FourierPlan, half: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos θ[ξ, r, u]`` and ``sin θ[ξ, r, u]`` (zero unless tap ``u`` is in phase ``r``)."""
    n = plan.torus
    frequencies = torch.arange(n // 2 + 1 if half else n, dtype=torch.int64)
    shifts = torch.tensor(plan.shifts, dtype=torch.int64)
    reduced = (frequencies[:, None] * shifts[None, :]) % n  # exact integers in [0, N)
    angle = (2.0 * math.pi) * reduced.to(torch.float64) / n
    mask = torch.zeros(plan.phases, len(plan.shifts), dtype=torch.float64)
    mask[torch.tensor(plan.phase_of_tap), torch.arange(len(plan.shifts))] = 1.0
    return torch.cos(angle)[:, None, :] * mask, torch.sin(angle)[:, None, :] * mask


def _block_error(kernel: torch.Tensor, plan_h: FourierPlan, plan_w: FourierPlan) -> float:
    """``√2 (δ ‖a‖_F + τ √entries) ≥ ‖K̂_c(ξ) − K̂(ξ)‖_F`` for every ξ (module docstring)."""
    c_out, c_in, k_h, k_w = kernel.shape
    eps = TWIDDLE_ERROR
    delta = product_rounded_up((2.0, gamma(2 * k_h + k_w), 1 + 2 * eps, 1 + 2 * eps))
    delta = round_up(delta + round_up(4 * eps + 2 * eps * eps))
    abs_sums = _phase_abs_sums(kernel.abs(), plan_h.phase_of_tap, plan_w.phase_of_tap, plan_h, plan_w)
    entries = abs_sums.numel()
    # ‖a‖_F: each computed a is within relative γ_{k_h k_w} of the true one (so the true one is
    # at most (1 + 2γ_{k_h k_w}) times it), and √(Σ a²) over n entries, computed with ordinary
    # floating-point operations in any order, within relative γ_{n+2}: 1 + γ_{2(k_h k_w + n + 2)}
    # covers the product of the two factors (Higham, Lemma 3.3)
    frobenius = float(torch.linalg.vector_norm(abs_sums))
    frobenius = round_up(frobenius * round_up(1.0 + gamma(2 * (k_h * k_w + entries + 2))))
    tau = 4.0 * k_h * (k_w + 1) * SMALLEST_SUBNORMAL
    total = round_up(round_up(delta * frobenius) + product_rounded_up((tau, math.isqrt(entries) + 1)))
    return product_rounded_up((total, round_up(math.sqrt(2.0))))


def _phase_abs_sums(
    abs_kernel: torch.Tensor,
    phase_h: Sequence[int],
    phase_w: Sequence[int],
    plan_h: FourierPlan,
    plan_w: FourierPlan,
) -> torch.Tensor:
    """``a[o, i, r_h, r_w] = Σ_{u ∈ r_h, v ∈ r_w} |K[o, i, u, v]|``."""
    mask_h = torch.zeros(plan_h.phases, len(phase_h), dtype=torch.float64)
    mask_h[torch.tensor(phase_h), torch.arange(len(phase_h))] = 1.0
    mask_w = torch.zeros(plan_w.phases, len(phase_w), dtype=torch.float64)
    mask_w[torch.tensor(phase_w), torch.arange(len(phase_w))] = 1.0
    return torch.einsum("oiuv,su,rv->oisr", abs_kernel, mask_h, mask_w)
