"""The ℓ2 norm of a convolution, certified through the Gram matrix of its smaller side.

**Why.** The Fourier bound of :mod:`tightlip.convolution.spectral` is the norm of a circulant
that *contains* a zero-padded convolution; the rows and columns it adds at the border make it
larger than the operator: 0.1 % for a stride-1 layer on 28×28, up to 1.8 % for a strided layer
on a 14×14 → 7×7 grid (``benchmarks/results/conv_norms.md``). A trivial bound multiplies these
over the layers, and that excess is looseness that no training can remove.

**The Gram matrix.** For ``A`` (``m × n``, given by its exact nonzero entries, each a kernel
value) and ``k = min(m, n)``, ``‖A‖₂² = λ_max(G)`` with the ``k × k`` Gram matrix ``G = AAᵀ``
(``m ≤ n``) or ``AᵀA``. A convolution is sparse (``c_in k_h k_w`` entries a row), so ``Ĝ`` is
a sparse product in float64; each entry sums at most ``p`` products (``p`` the largest number
of nonzeros in a row of ``A``, or a column for ``AᵀA``), so (Higham, *Accuracy and Stability of
Numerical Algorithms*, §3.5, any summation order; ``η = 2⁻¹⁰⁷⁴`` for gradual underflow)

    |Ĝ − G| ≤ γ_p |A||A|ᵀ + p η,   hence   ‖Ĝ − G‖₂ ≤ γ_p ‖A‖₁ ‖A‖_∞ + k p η

by Schur's test on ``|A|`` (``‖|A|‖₂² ≤ ‖A‖₁ ‖A‖_∞``). ``Ĝ`` is made symmetric by mirroring its
lower triangle, which moves no entry.

**Its top eigenvalue, certified by a Cholesky factorisation.** A Lanczos estimate ``λ̃`` of
``λ_max(Ĝ)`` (any estimate: it is only a candidate) gives ``μ = λ̃ (1 + g)`` for a small gap
``g``. If the Cholesky factorisation of the float matrix ``B = fl(μI − Ĝ)`` runs to completion
with factor ``R̂``, then ``R̂ᵀR̂ = B + ΔB`` with ``|ΔB| ≤ γ_{k+1} |R̂ᵀ||R̂|`` (Demmel 1989; Higham,
Thm 10.3; any order of the inner products, so blocked LAPACK with conventional, non-Strassen
products too), so ``λ_min(B) ≥ −γ_{k+1} ‖R̂‖_F²``; forming ``B`` rounds only its diagonal, by at
most ``u max|B_ii|``; gradual underflow adds at most ``(k + 2) η`` to an entry. Hence

    λ_max(Ĝ) ≤ μ + γ_{k+1} ‖R̂‖_F² + u max|B_ii| + k (k + 2) η,

and ``‖A‖₂ ≤ √(λ_max(Ĝ) + ‖Ĝ − G‖₂)``, every operation rounded upwards. If the factorisation
fails (``μ`` below the top eigenvalue, or too close to it) the gap grows; after the last gap no
bound is claimed (``inf``), and the caller keeps its other bounds. The result is the exact norm
up to a relative ``~k² u`` (``3·10⁻⁹`` at ``k = 6272``); it costs a sparse product and one
``k × k`` Cholesky factorisation (``k³/3`` flops: about 3 s at ``k = 6272`` on one core), so it
is used up to :data:`GRAM_SIDE_LIMIT` and :data:`GRAM_ENTRY_LIMIT` (a full-map kernel, whose
matrix is dense, keeps the Fourier bound, exact for circular padding). Power iteration, which
converges from below, is never used as a bound.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from tightlip.norms import (
    SMALLEST_SUBNORMAL,
    UNIT_ROUNDOFF,
    gamma,
    product_rounded_up,
    round_up,
    single_threaded,
)

#: the Gram route is used when the smaller side has at most this many coordinates (a 0.5 GiB
#: Gram matrix and about 8 s of Cholesky on one core at the limit)
GRAM_SIDE_LIMIT = 2**13
#: ... and when the operator has at most this many nonzero entries (a sparse product of that
#: size takes about a second; a 4C3F layer at full width has 3.6 million)
GRAM_ENTRY_LIMIT = 2**23
#: the relative gaps ``g`` tried for the Cholesky certificate, smallest first
_GAPS = (1e-9, 1e-6, 1e-3)
#: below this side, the candidate comes from a dense eigensolver instead of Lanczos
_DENSE_ESTIMATE_SIDE = 256


def gram_side_fits(shape: tuple[int, int], nonzeros: int) -> bool:
    """Whether :func:`certified_gram_norm` is affordable for an ``m × n`` operator with at most
    ``nonzeros`` stored entries (a full-map kernel, as in a Sandwich layer, is not: its sparse
    matrix is dense)."""
    return 0 < min(shape) <= GRAM_SIDE_LIMIT and nonzeros <= GRAM_ENTRY_LIMIT


def certified_gram_norm(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]
) -> float:
    """A float ``≥ ‖A‖₂`` for the ``m × n`` matrix with the given exact nonzero entries (each
    position at most once), or ``inf`` if no certificate was found (module docstring)."""
    m, n = shape
    if values.size == 0:
        return 0.0
    if not np.isfinite(values).all():
        raise ValueError("matrix entries contain NaN or infinite values: no bound can be certified")
    matrix = scipy.sparse.csr_matrix((values, (rows, cols)), shape=shape)
    if matrix.nnz != values.size:  # a repeated position would have been summed, with rounding
        raise ValueError("certified_gram_norm needs each matrix position at most once")
    side, inner = (rows, m) if m <= n else (cols, n)
    per_line = int(np.bincount(side, minlength=inner).max())
    gram = (matrix @ matrix.T) if m <= n else (matrix.T @ matrix)
    dense = _mirrored_lower(torch.from_numpy(gram.toarray()))
    k = dense.shape[0]
    top = _certified_top_eigenvalue(dense, gram)
    if math.isinf(top):
        return math.inf
    abs_values = np.abs(values)
    abs_norms = [
        round_up(float(np.bincount(index, abs_values, minlength=size).max()) * (1 + 2 * gamma(per)))
        for index, size, per in (
            (rows, m, int(np.bincount(rows, minlength=m).max())),
            (cols, n, int(np.bincount(cols, minlength=n).max())),
        )
    ]
    product_error = product_rounded_up((gamma(per_line), *abs_norms))
    underflow = product_rounded_up((k, per_line, SMALLEST_SUBNORMAL))
    total = round_up(round_up(max(top, 0.0) + product_error) + underflow)
    return round_up(math.sqrt(total))


def _certified_top_eigenvalue(dense: torch.Tensor, sparse: scipy.sparse.spmatrix) -> float:
    """A float ``≥ λ_max`` of the symmetric ``dense``, by the Cholesky certificate of
    ``μI − dense`` (module docstring); ``inf`` if every gap fails."""
    k = dense.shape[0]
    estimate = _top_eigenvalue_estimate(dense, sparse)
    scale = max(abs(estimate), float(dense.diagonal().abs().max()), SMALLEST_SUBNORMAL)
    for gap in _GAPS:
        mu = round_up(max(estimate, 0.0) + gap * scale)
        shifted = -dense
        shifted.diagonal().add_(mu)
        with single_threaded():
            factor, info = torch.linalg.cholesky_ex(shifted)
        if int(info) != 0 or not bool(torch.isfinite(factor).all()):
            continue
        frobenius = product_rounded_up((float((factor * factor).sum()), 1 + 2 * gamma(k * k)))
        diagonal = product_rounded_up((UNIT_ROUNDOFF, float(shifted.diagonal().abs().max())))
        factorisation = product_rounded_up((gamma(k + 1), frobenius))
        underflow = product_rounded_up((k, k + 2, SMALLEST_SUBNORMAL))
        return round_up(round_up(round_up(mu + factorisation) + diagonal) + underflow)
    return math.inf


def _top_eigenvalue_estimate(dense: torch.Tensor, sparse: scipy.sparse.spmatrix) -> float:
    """``λ_max`` approximately (a candidate for the certificate, not a bound)."""
    if dense.shape[0] <= _DENSE_ESTIMATE_SIDE:
        return float(torch.linalg.eigvalsh(dense)[-1])
    try:
        return float(scipy.sparse.linalg.eigsh(sparse, k=1, which="LA", tol=1e-12)[0][0])
    except scipy.sparse.linalg.ArpackError:
        return float(torch.linalg.eigvalsh(dense)[-1])


def _mirrored_lower(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric matrix with ``matrix``'s lower triangle (no arithmetic on any entry)."""
    return torch.tril(matrix) + torch.tril(matrix, diagonal=-1).T
