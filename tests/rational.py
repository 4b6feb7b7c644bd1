"""Exact rational arithmetic on float matrices, for checking certified bounds in tests.

Every float64 is a rational number, so ``fractions.Fraction`` gives the *exact* product of float
matrices and exact ℓ1 / ℓ∞ operator norms. For ℓ2, ``σ_max(P) ≤ c`` iff ``c² I − PᵀP ⪰ 0``,
which is decided exactly by a symmetric Gaussian elimination (LDLᵀ) in rationals.
"""

from __future__ import annotations

from fractions import Fraction

import torch

Matrix = list[list[Fraction]]


def to_fractions(t: torch.Tensor) -> Matrix:
    """The exact rational entries of a 2-D float tensor (float32 converts exactly too)."""
    return [[Fraction(float(v)) for v in row] for row in t.detach().to(torch.float64).tolist()]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    inner = len(b)
    cols = len(b[0]) if b else 0
    return [
        [sum((row[k] * b[k][j] for k in range(inner)), Fraction(0)) for j in range(cols)]
        for row in a
    ]


def product(factors: list[torch.Tensor]) -> Matrix:
    """``factors[-1] ⋯ factors[0]`` exactly (``factors[0]`` is applied first)."""
    result = to_fractions(factors[0])
    for factor in factors[1:]:
        result = matmul(to_fractions(factor), result)
    return result


def transpose(a: Matrix) -> Matrix:
    return [list(col) for col in zip(*a, strict=True)] if a else []


def abs_sum_norm(a: Matrix, norm: str) -> Fraction:
    """Exact ``‖A‖_{1→1}`` (max column sum) or ``‖A‖_{∞→∞}`` (max row sum)."""
    rows = transpose(a) if norm == "1" else a
    return max((sum((abs(v) for v in row), Fraction(0)) for row in rows), default=Fraction(0))


def _gram(a: Matrix) -> Matrix:
    """The smaller of ``AᵀA`` and ``AAᵀ`` (same non-zero eigenvalues)."""
    return matmul(transpose(a), a) if len(a) >= len(a[0]) else matmul(a, transpose(a))


def is_positive_semidefinite(m: Matrix, strict: bool = False) -> bool:
    """Exact test of ``M ⪰ 0`` (``M ≻ 0`` when ``strict``) for a symmetric rational ``M``."""
    m = [row[:] for row in m]
    n = len(m)
    for i in range(n):
        pivot = m[i][i]
        if pivot < 0 or (strict and pivot == 0):
            return False
        if pivot == 0:
            if any(m[i][j] != 0 for j in range(i + 1, n)):
                return False
            continue
        for r in range(i + 1, n):
            factor = m[r][i] / pivot
            if factor:
                for c in range(i, n):
                    m[r][c] -= factor * m[i][c]
    return True


def spectral_norm_at_most(a: Matrix, bound: float) -> bool:
    """Exactly whether ``σ_max(A) ≤ bound``."""
    if bound < 0:
        return False
    g = _gram(a)
    c2 = Fraction(bound) ** 2
    shifted = [[(c2 if i == j else 0) - g[i][j] for j in range(len(g))] for i in range(len(g))]
    return is_positive_semidefinite(shifted)


def spectral_norm_at_least(a: Matrix, value: float) -> bool:
    """Exactly whether ``σ_max(A) ≥ value`` (i.e. ``value² I − AᵀA`` is not positive definite)."""
    if value <= 0:
        return True
    g = _gram(a)
    c2 = Fraction(value) ** 2
    shifted = [[(c2 if i == j else 0) - g[i][j] for j in range(len(g))] for i in range(len(g))]
    return not is_positive_semidefinite(shifted, strict=True)


def norm_at_most(a: Matrix, bound: float, norm: str) -> bool:
    """Exactly whether ``‖A‖_{p→p} ≤ bound`` for ``norm`` in ``"1"``, ``"2"``, ``"inf"``."""
    if norm == "2":
        return spectral_norm_at_most(a, bound)
    return abs_sum_norm(a, norm) <= Fraction(bound)


def norm_at_least(a: Matrix, value: float, norm: str) -> bool:
    """Exactly whether ``‖A‖_{p→p} ≥ value``."""
    if norm == "2":
        return spectral_norm_at_least(a, value)
    return abs_sum_norm(a, norm) >= Fraction(value)
