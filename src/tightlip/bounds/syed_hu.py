"""Closed-form ℓ2 bounds from more general LipSDP feasible points (after Syed & Hu 2025).

Syed & Hu (*Improved scalable Lipschitz bounds for deep neural networks*, arXiv 2503.14297)
observe that ECLipsE-Fast is one member of a large family of closed-form feasible points of
LipSDP, and that combining members beats it. The full text of the paper was not available
while this module was written (only its abstract), so the members below are **our own
derivation** from the same LipSDP feasibility conditions; the names are ours.

**Template** (see :mod:`tightlip.bounds.eclipse` for the LMI and its Schur complements).
Any diagonal ``Λ_i ≻ 0`` with ``Λ_i⁻¹ ≻ m_i² K_i``, ``K_i = W_i X_{i−1}⁻¹ W_iᵀ``, gives
``X_i = Λ_i − m_i² Λ_i K_i Λ_i ≻ 0``, and the final ``√λmax(W_L X_{L−1}⁻¹ W_Lᵀ)`` is a valid
Lipschitz bound. We parameterise ``Λ_i = λ D_i`` with a fixed positive diagonal ``D_i`` and a
scalar λ. With ``K' = D^{1/2} K D^{1/2} = V diag(μ) Vᵀ`` (μ_max its top eigenvalue),

    X_i(λ) = D^{1/2} (λI − λ²m²K') D^{1/2},   positive definite iff θ := λ m² μ_max ∈ (0, 1),

and the quantity that the *next* step sees is

    g(θ) = λmax(W_{i+1} X_i(λ)⁻¹ W_{i+1}ᵀ) = λmax(Σ_j c_j(λ) b_j b_jᵀ),
    c_j(λ) = 1 / (λ − λ² m² μ_j),   b_j the columns of B = W_{i+1} D^{−1/2} V.

Each ``c_j`` is convex in λ on ``(0, 1/(m²μ_max))`` (the reciprocal of a positive concave
function), so g — the largest eigenvalue of a nonnegative combination of fixed PSD matrices —
is convex in λ, hence in θ: a bounded scalar search finds its minimiser. For the last hidden
layer, ``g`` *is* ρ, so the search gives the best bound over all ``λD`` for that layer. For
earlier layers, minimising g minimises ``λmax(K_{i+1})``, which is what fixes the next
layer's achievable ``λmin(X_{i+1})`` (ECLipsE-Fast reaches ``1/(4m²λmax(K_{i+1}))``).

Members (each a feasible point of LipSDP, certified by the float64 recursion of
:func:`tightlip.bounds.eclipse.compositional_bound`):

* ``fast``: D = I, θ = 1/2 — exactly ECLipsE-Fast (kept so that the combination is never
  worse than ECLipsE-Fast);
* ``lookahead``: D = I, θ minimising g (ECLipsE-Fast's "relaxed" choice replaced by the best
  scalar for what comes next);
* ``gershgorin``: ``D = diag(|K|·1)⁻¹`` — Gershgorin's ``diag(|K|1) ⪰ K`` as in the AOL/SLL
  rescalings (Prach & Lampert 2022; Araujo et al. 2023), which gives every unit its own
  multiplier, with the lookahead θ;
* ``sll``: ``D = diag(|W_{i+1}ᵀW_{i+1}|·1)``, the SLL bound ``W_{i+1}ᵀW_{i+1} ⪯ D`` aimed at the
  constraint ``X_i ⪰ s·W_{i+1}ᵀW_{i+1}`` that ECLipsE's SDP maximises, with the lookahead θ;
* ``greedy``: at every layer, the best of the three lookahead members by ``g``.

``syed_hu`` reports the smallest certified member (a minimum of valid bounds is valid).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg

from tightlip.bounds.certified_linalg import NotCertifiedError
from tightlip.bounds.eclipse import (
    Choice,
    Chooser,
    CompositionalResult,
    compositional_bound,
    compositional_certificate,
    fast_chooser,
    prepare,
)
from tightlip.bounds.registry import register_upper
from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain
from tightlip.norms import NormName

MEMBERS: tuple[str, ...] = ("fast", "lookahead", "gershgorin", "sll", "greedy")
_DIAGONALS = ("identity", "gershgorin", "sll")


def _diagonal(kind: str, k: np.ndarray, w_next: np.ndarray) -> np.ndarray:
    """The fixed positive diagonal D of a member (see the module docstring), max entry 1.

    Entries are clipped to ``[1e−8, 1]``: any positive D is valid, and the clip keeps
    ``X_i`` well conditioned when a unit is dead (zero row or column).
    """
    if kind == "identity":
        return np.ones(k.shape[0])
    if kind == "gershgorin":
        rows = np.abs(k).sum(axis=1)
        d = 1.0 / np.maximum(rows, 1e-300)
    elif kind == "sll":
        d = np.abs(w_next.T @ w_next).sum(axis=1)
    else:  # pragma: no cover - internal
        raise ValueError(kind)
    finite = d[np.isfinite(d) & (d > 0)]
    if finite.size == 0:
        return np.ones(k.shape[0])
    d = np.where(np.isfinite(d), d, finite.max())
    d = d / float(finite.max())
    return np.clip(d, 1e-8, 1.0)


def _top_weighted(b: np.ndarray, c: np.ndarray, gram: np.ndarray | None) -> float:
    """``λmax(B diag(c) Bᵀ)`` for ``c > 0`` (an estimate: only used to *choose* λ)."""
    n, d = b.shape
    small = min(n, d)
    if small <= 256:
        if n <= d:
            m = (b * c) @ b.T
        else:
            assert gram is not None
            sc = np.sqrt(c)
            m = sc[:, None] * gram * sc[None, :]
        return float(scipy.linalg.eigh(m, eigvals_only=True, subset_by_index=[small - 1] * 2)[0])
    op = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=lambda v: b @ (c * (b.T @ v)), dtype=np.float64
    )
    return float(scipy.sparse.linalg.eigsh(op, k=1, which="LA", tol=1e-10)[0][0])


def _lookahead(
    k: np.ndarray, w_next: np.ndarray, m: float, d: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Best ``Λ = λD`` by the convex one-dimensional search; returns ``(Λ, g, θ)``."""
    sq = np.sqrt(d)
    kp = sq[:, None] * k * sq[None, :]
    kp = (kp + kp.T) / 2
    mu, vec = np.linalg.eigh(kp)
    mu_max = float(mu[-1])
    if not mu_max > 0:
        raise NotCertifiedError("K_i has no positive eigenvalue")
    mu = np.maximum(mu, 0.0)
    b = (w_next / sq[None, :]) @ vec
    gram = b.T @ b if b.shape[0] > b.shape[1] else None
    ratio = mu / mu_max

    def g(theta: float) -> float:
        lam = theta / (m * m * mu_max)
        return _top_weighted(b, 1.0 / (lam * (1.0 - theta * ratio)), gram)

    res = scipy.optimize.minimize_scalar(
        g, bounds=(1e-4, 1 - 1e-6), method="bounded", options={"xatol": 1e-6}
    )
    theta = float(res.x)
    g_best = float(res.fun)
    g_half = g(0.5)
    if g_half <= g_best:
        theta, g_best = 0.5, g_half
    lam = theta / (m * m * mu_max)
    return lam * d, g_best, theta


def member_chooser(member: str) -> Chooser:
    """The per-layer multiplier rule of one member (module docstring)."""
    if member == "fast":
        return fast_chooser
    if member in ("lookahead", "gershgorin", "sll"):
        kinds: Sequence[str] = ("identity" if member == "lookahead" else member,)
    elif member == "greedy":
        kinds = _DIAGONALS
    else:
        raise MethodNotApplicableError(
            f"unknown syed_hu member {member!r}: choose from {', '.join(MEMBERS)}"
        )

    def choose(i: int, k: np.ndarray, k_top: float, w_next: np.ndarray, m: float) -> Choice:
        best: tuple[float, np.ndarray, str, float] | None = None
        for kind in kinds:
            lam, g, theta = _lookahead(k, w_next, m, _diagonal(kind, k, w_next))
            if best is None or g < best[0]:
                best = (g, lam, kind, theta)
        assert best is not None
        g, lam, kind, theta = best
        scalar = kind == "identity"
        return Choice(
            lam,
            scalar=scalar,
            k_top=k_top if scalar else None,
            info={"diagonal": kind, "theta": theta, "next_lambda_max": g},
        )

    return choose


@register_upper("syed-hu")
def syed_hu_bound(
    chain: LayerChain, norm: NormName, members: Sequence[str] = MEMBERS
) -> Certificate:
    """The smallest certified bound among ``members`` (default: all, including Fast)."""
    net = prepare(chain, norm, "syed-hu")
    results: dict[str, CompositionalResult] = {}
    failures: dict[str, str] = {}
    for member in members:
        try:
            results[member] = compositional_bound(net, member_chooser(member))
        except NotCertifiedError as exc:
            failures[member] = str(exc)
    if not results:
        raise MethodNotApplicableError(f"syed_hu: no member could be certified: {failures}")
    best = min(results, key=lambda name: results[name].value)
    details: dict[str, Any] = {
        "members": {name: r.value for name, r in results.items()},
        "best_member": best,
        "failed_members": failures,
        "choices": results[best].infos,
    }
    return compositional_certificate(
        "syed-hu",
        net,
        results[best],
        (f"best member: {best}",),
        details,
    )
