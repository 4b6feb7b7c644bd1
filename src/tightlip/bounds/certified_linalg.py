"""Certified float64 linear algebra for the SDP-style verifiers (ECLipsE, Syed–Hu, LipSDP).

Each step returns its result together with a bound on its rounding error, from this error
model (``u = 2⁻⁵³``, ``c = 64`` the generous constant of :data:`tightlip.norms.SVD_MARGIN`):

* a Schur step ``S = BᵀZ⁻¹B`` computed through a Cholesky factor, a triangular solve and a
  product satisfies ``‖Ŝ − S‖₂ ≤ c·N²·u·κ₂(Z)·‖Ŝ‖`` (``N`` the largest dimension; Cholesky,
  triangular solves and products are backward stable with O(N u) normwise errors, Higham,
  *Accuracy and Stability of Numerical Algorithms*, Thms. 8.5, 10.3 and §3.5, and a relative
  perturbation δ of Z moves BᵀZ⁻¹B by at most κ·δ/(1 − κ·δ) relatively);
* symmetric eigenvalues from LAPACK satisfy ``|λ̂ − λ| ≤ c·n·u·‖Z‖₂`` (backward stability);
* a product ``W Wᵀ`` has ``|ΔS| ≤ γ_n |W||W|ᵀ`` (Higham §3.5).

When a check cannot be certified (a matrix not certified positive definite, a condition
number too large for the error model) the step raises :class:`NotCertifiedError`.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from tightlip.norms import SVD_MARGIN as C_MARGIN
from tightlip.norms import UNIT_ROUNDOFF as U


class NotCertifiedError(ArithmeticError):
    """The float64 check of a candidate certificate failed (not positive definite enough)."""


def certified_spectrum(z: np.ndarray) -> tuple[float, float]:
    """Bounds ``(lo, hi)`` with ``lo ≤ λmin(Z) ≤ λmax(Z) ≤ hi`` for the float symmetric ``Z``."""
    ev = scipy.linalg.eigvalsh(z, check_finite=False)
    err = C_MARGIN * z.shape[0] * U * float(np.max(np.abs(ev)))
    return float(ev[0]) - err, float(ev[-1]) + err


def top_eigenvalue(k: np.ndarray) -> float:
    """Largest eigenvalue of the symmetric ``K`` (LAPACK ``syevr`` on one index)."""
    n = k.shape[0]
    if n <= 32:
        return float(scipy.linalg.eigvalsh(k, check_finite=False)[-1])
    return float(
        scipy.linalg.eigh(k, eigvals_only=True, subset_by_index=[n - 1, n - 1], check_finite=False)[
            0
        ]
    )


def schur_gram(
    z: np.ndarray, lo: float, hi: float, b: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """``(Ŝ, ε, λ̂max(Ŝ))`` with ``Ŝ ≈ BᵀZ⁻¹B``, ``‖Ŝ − BᵀZ⁻¹B‖₂ ≤ ε`` (module docstring).

    ``lo > 0`` and ``hi`` bound Z's spectrum (from :func:`certified_spectrum` or an analytic
    argument); they give the condition number in the error bound. The error has two parts:
    the factorisation and solve, relative to ``‖S‖₂`` with the factor ``c·N²·u·κ``, and the
    final product ``GᵀG`` with ``|ΔS| ≤ γ_n|G|ᵀ|G|``, so ``‖ΔS‖₂ ≤ c·n·u·‖G‖_F²``.
    ``‖S‖₂`` is bounded through the computed top eigenvalue of ``Ŝ``.
    """
    g, rel = _whitened(z, lo, hi, b)
    n, k = b.shape
    s = g.T @ g
    s = (s + s.T) / 2
    product = C_MARGIN * n * U * float(np.sum(g * g))
    top = top_eigenvalue(s)
    s_top = top + C_MARGIN * k * U * float(np.linalg.norm(s)) + product
    return s, (rel / (1 - rel) * s_top + product) * (1 + 8 * U), top


def schur_top(z: np.ndarray, lo: float, hi: float, b: np.ndarray) -> float:
    """A certified upper bound on ``λmax(BᵀZ⁻¹B)``.

    Uses ``λmax(GᵀG) = λmax(GGᵀ)`` with ``G = L⁻¹B`` (``Z = LLᵀ``) and whichever Gram
    matrix is smaller, with the error model of :func:`schur_gram` (the product and the
    eigenvalue error are bounded through ``‖G‖_F²``).
    """
    g, rel = _whitened(z, lo, hi, b)
    n, k = b.shape
    gram = g.T @ g if k <= n else g @ g.T
    gram = (gram + gram.T) / 2
    frob = float(np.sum(g * g))
    top = top_eigenvalue(gram) + C_MARGIN * (n + k) * U * frob
    return math.nextafter(top / (1 - rel) * (1 + 8 * U), math.inf)


def gram_product(w: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(W Wᵀ, ε, λ̂max)``: rounding error ``|ΔS| ≤ γ_n |W||W|ᵀ`` (Higham §3.5)."""
    s = w @ w.T
    s = (s + s.T) / 2
    n = w.shape[1]
    return s, C_MARGIN * n * U * float(np.sum(w * w)), top_eigenvalue(s)


def round_up_sqrt(value: float) -> float:
    """A float ``≥ √value`` (sqrt is correctly rounded; one extra ulp)."""
    return math.nextafter(math.sqrt(max(value, 0.0)), math.inf)


def _whitened(z: np.ndarray, lo: float, hi: float, b: np.ndarray) -> tuple[np.ndarray, float]:
    """``(G, δ)``: ``G = L⁻¹B`` with ``Z = LLᵀ`` (Cholesky) and the relative error factor
    ``δ = c·N²·u·κ`` of ``GᵀG ≈ BᵀZ⁻¹B``, ``κ ≤ hi / lo``.

    Raises :class:`NotCertifiedError` unless ``lo > 0`` (Z certified positive definite) and
    ``δ < 1/4`` (the error model still applies).
    """
    if lo <= 0:
        raise NotCertifiedError("matrix not certified positive definite")
    n, k = b.shape
    chol = scipy.linalg.cholesky(z, lower=True, check_finite=False)
    g = scipy.linalg.solve_triangular(chol, b, lower=True, check_finite=False)
    rel = C_MARGIN * max(n, k) ** 2 * U * (hi / lo)
    if not rel < 0.25:
        raise NotCertifiedError(f"condition number {hi / lo:.3g} too large to certify")
    return g, rel
