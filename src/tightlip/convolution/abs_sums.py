"""The ℓ∞ and ℓ1 operator norms of a 2-D convolution, exactly (then rounded upwards).

Write the convolution as a matrix ``A`` with rows ``(o, a, b)`` (output channel and position)
and columns ``(i, h, w)``. Tap ``(u, v)`` of row ``(o, a, b)`` contributes ``K[o, i, u, v]`` to
column ``(i, pos_h(a, u), pos_w(b, v))`` when both positions are real inputs (zero padding;
:mod:`tightlip.convolution.geometry`); distinct taps of one row read distinct columns (zero
padding always; circular padding because aliased kernels are refused), so every entry of ``A``
is a single kernel value and no cancellation occurs inside an entry.

* ``‖A‖_∞ = max_row Σ_col |A|``: row ``(o, a, b)`` sums ``|K[o, i, u, v]|`` over the channels
  and the taps that read a real input,

      R[o, a, b] = Σ_{u,v} S[o, u, v] · valid_h[a, u] · valid_w[b, v],   S = Σ_i |K[o, i, ·, ·]|,

  the convolution of ``|K|`` with an all-ones image. Border rows have fewer terms (zero
  padding), so the maximum is taken over *all* rows, not assumed at the interior; with
  circular padding every row has all ``k_h k_w`` taps.
* ``‖A‖_1 = max_col Σ_row |A|``: column ``(i, h, w)`` is read by tap ``(u, v)`` of
  ``hits_h[h, u] · hits_w[w, v]`` rows of each output channel, so

      C[i, h, w] = Σ_{u,v} T[i, u, v] · hits_h[h, u] · hits_w[w, v],   T = Σ_o |K[o, ·, ·, ·]|,

  the transposed convolution of ``|K|`` with an all-ones output. With stride ``s`` the hit
  counts vary with ``h mod s`` and near the borders, which the exact counts capture.

Floating point: the counts are exact integers, and each ``R`` (``C``) is a sum of at most
``c_in k_h k_w`` (``c_out k_h k_w``) non-negative terms, each a product of at most three
floats, so its computed value is within relative ``γ_{N+2}`` of the exact one (Higham,
*Accuracy and Stability of Numerical Algorithms*, §3.1 and §4.2, for any order of summation);
we inflate the maximum by ``1 + γ_{N+2}``, as :mod:`tightlip.norms` does for dense matrices.
"""

from __future__ import annotations

import numpy as np
import torch

from tightlip.convolution.geometry import Axis
from tightlip.norms import gamma, round_up


def row_abs_sums(kernel: torch.Tensor, axes: tuple[Axis, Axis]) -> torch.Tensor:
    """``R[o, a, b]``, the absolute row sums of the convolution (module docstring), float64."""
    s = kernel.detach().to(torch.float64).abs().sum(dim=1)  # (c_out, k_h, k_w)
    valid_h, valid_w = (_as_tensor(axis.valid()) for axis in axes)
    return torch.einsum("ouv,au,bv->oab", s, valid_h, valid_w)


def column_abs_sums(kernel: torch.Tensor, axes: tuple[Axis, Axis]) -> torch.Tensor:
    """``C[i, h, w]``, the absolute column sums of the convolution (module docstring), float64."""
    t = kernel.detach().to(torch.float64).abs().sum(dim=0)  # (c_in, k_h, k_w)
    hits_h, hits_w = (_as_tensor(axis.hits()) for axis in axes)
    return torch.einsum("iuv,hu,wv->ihw", t, hits_h, hits_w)


def certified_inf_norm(kernel: torch.Tensor, axes: tuple[Axis, Axis]) -> float:
    """A float ``≥ ‖A‖_{∞→∞}``: ``max R · (1 + γ_{c_in k_h k_w + 2})``."""
    terms = kernel.shape[1] * kernel.shape[2] * kernel.shape[3]
    return _inflated_max(row_abs_sums(kernel, axes), terms)


def certified_one_norm(kernel: torch.Tensor, axes: tuple[Axis, Axis]) -> float:
    """A float ``≥ ‖A‖_{1→1}``: ``max C · (1 + γ_{c_out k_h k_w + 2})``."""
    terms = kernel.shape[0] * kernel.shape[2] * kernel.shape[3]
    return _inflated_max(column_abs_sums(kernel, axes), terms)


def _inflated_max(sums: torch.Tensor, terms: int) -> float:
    if sums.numel() == 0:
        return 0.0
    return round_up(float(sums.max()) * round_up(1.0 + gamma(terms + 2)))


def _as_tensor(counts: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float64))
