"""ECLipsE and ECLipsE-Fast (Xu & Sivaranjani, NeurIPS 2024), with certified float64 margins.

**The LMI.** For a slope-restricted network (see :mod:`tightlip.bounds.slope`) with hidden
increments ``Δv_i = φ_i(z_i) − φ_i(z_i')`` and ``Δz_i = W_i Δv_{i−1}``, the incremental
quadratic constraints give, for diagonal ``Λ_i ⪰ 0`` and ``m_i = (α_i + β_i)/2``,

    (Δv_i − α_iΔz_i)ᵀ Λ_i (β_iΔz_i − Δv_i) = −Δv_iᵀΛ_iΔv_i + 2m_i Δv_iᵀΛ_iW_iΔv_{i−1}
                                              − α_iβ_i Δv_{i−1}ᵀW_iᵀΛ_iW_iΔv_{i−1} ≥ 0.

If the quadratic form ``ρ‖Δx‖² − ‖W_LΔv_{L−1}‖² + Σ_i (that constraint's negative)`` is
non-negative for *all* vectors, then ``‖Δy‖² ≤ ρ‖Δx‖²`` (LipSDP-Neuron, Fazlyab et al. 2019).
Dividing by ρ, its matrix is block tridiagonal, and its sequential Schur complements are

    X_0 = I,   X_i = Λ_i − m_i² Λ_i W_i X_{i−1}⁻¹ W_iᵀ Λ_i   (i = 1 … L−1),

so the LMI holds (Xu & Sivaranjani, Thm. 1) iff every ``X_i ≻ 0`` and
``X_{L−1} ⪰ W_LᵀW_L / ρ``, i.e. ``ρ ≥ λmax(W_L X_{L−1}⁻¹ W_Lᵀ)``: **Lip ≤ √ρ**.
For ``α_i β_i > 0`` the terms ``α_iβ_iW_iᵀΛ_iW_i`` are positive semidefinite and we drop
them: the matrix only gets smaller, so the certificate stays valid (the reference package
``eclipse-nn`` does the same); ``α_i < 0`` is refused.

* **ECLipsE-Fast** takes ``Λ_i = λ_i I`` with ``λ_i = 1/(2 m_i² λmax(K_i))``,
  ``K_i = W_i X_{i−1}⁻¹ W_iᵀ``: the λ that maximises ``λmin(X_i) = λ − λ² m_i² λmax(K_i)``
  (then ``λmin(X_i) = λ_i/2``).
* **ECLipsE** picks diagonal ``Λ_i`` by a small SDP per layer: maximise ``s`` subject to
  ``X_i ⪰ s W_{i+1}ᵀW_{i+1}``, written through a Schur complement as
  ``[[Λ − sW_{i+1}ᵀW_{i+1}, ΛGᵀ], [GΛ, I]] ⪰ 0`` with ``GᵀG = m_i² K_i``.

**Soundness in floating point.** The multipliers Λ_i are just *candidate* numbers; the
recursion is then evaluated in float64 with the error model of
:mod:`tightlip.bounds.certified_linalg` (Schur steps through a Cholesky factor, symmetric
eigenvalues), and every ``X_i`` is shifted down by a margin that covers the rounding of its
step. If ``X̂_i`` is what we computed *minus* a margin ``η_i ≥ ‖rounding of step i‖``, then
``X̂_i ⪯`` the exact Schur complement of the exact matrix with the previous ``X̂_{i−1}``, so the
exact LMI equals (a matrix whose exact Schur complements are the X̂_i) plus a block-diagonal
positive semidefinite matrix. Hence certified ``λmin(X̂_i) > 0`` and a certified
``ρ ≥ λmax(W_L X̂_{L−1}⁻¹ W_Lᵀ)`` prove ``Lip₂(f) ≤ √ρ``. The margins are about 1e−12
relatively, far below any difference between methods. If a candidate Λ_i fails the check
(e.g. an SDP solver's slightly infeasible answer), it is scaled down by θ < 1, which always
helps: ``θΛ − θ²ΛKΛ = θ(Λ − ΛKΛ) + θ(1 − θ)ΛKΛ``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tightlip.bounds.certified_linalg import (
    NotCertifiedError,
    certified_spectrum,
    gram_product,
    round_up_sqrt,
    schur_gram,
    schur_top,
)
from tightlip.bounds.registry import register_upper
from tightlip.bounds.sdp_solver import solve_sdp
from tightlip.bounds.slope import SlopeNetwork, to_slope_network
from tightlip.certificate import Certificate, LayerBound
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain
from tightlip.norms import SVD_MARGIN as C_MARGIN
from tightlip.norms import UNIT_ROUNDOFF as U
from tightlip.norms import NormName, certified_operator_norm

# --------------------------------------------------------------------------------------------
# The compositional recursion
# --------------------------------------------------------------------------------------------


@dataclass
class Choice:
    """Diagonal multipliers ``Λ_i = diag(lam)`` chosen for one layer.

    ``scalar`` marks ``Λ_i = λI`` (then ``k_top``, the computed ``λmax(K̂_i)``, lets the
    spectrum of ``X_i`` be bounded analytically instead of by an eigenvalue solve).
    """

    lam: np.ndarray
    scalar: bool = False
    k_top: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


#: ``chooser(i, K̂_i, λ̂max(K̂_i), W_{i+1}, m_i) → Choice`` for hidden layer i (0-based)
Chooser = Callable[[int, np.ndarray, float, np.ndarray, float], Choice]


@dataclass
class CompositionalResult:
    """A certified ``√ρ`` and the per-layer multipliers that prove it."""

    value: float
    rho: float
    lambdas: list[np.ndarray]
    lambda_min_x: list[float]
    thetas: list[float]
    infos: list[dict[str, Any]]


BACKOFF = (1.0, 1.0 - 1e-9, 1.0 - 1e-6, 0.999, 0.99, 0.9, 0.5, 0.25)


def compositional_bound(net: SlopeNetwork, chooser: Chooser) -> CompositionalResult:
    """Run the certified recursion X_i with multipliers from ``chooser``; return ``√ρ``."""
    ws = net.weights
    if len(ws) == 1:
        value = certified_operator_norm(_torch(ws[0]), "2")
        return CompositionalResult(value, value * value, [], [], [], [])
    x_mat: np.ndarray | None = None
    lo = hi = 1.0
    lambdas: list[np.ndarray] = []
    lam_min: list[float] = []
    thetas: list[float] = []
    infos: list[dict[str, Any]] = []
    for i in range(len(ws) - 1):
        w = ws[i]
        layer = net.activations[i]
        m = (layer.alpha + layer.beta) / 2
        if x_mat is None:
            k, eps_k, k_top = gram_product(w)
        else:
            k, eps_k, k_top = schur_gram(x_mat, lo, hi, w.T)
        choice = chooser(i, k, k_top, ws[i + 1], m)
        lam = np.asarray(choice.lam, dtype=np.float64)
        if lam.shape != (w.shape[0],) or not np.all(np.isfinite(lam)) or np.any(lam <= 0):
            raise NotCertifiedError(f"layer {i + 1}: multipliers must be positive and finite")
        for theta in BACKOFF:
            lam_t = lam * theta
            try:
                x_new, lo_new, hi_new = _next_x(k, eps_k, lam_t, m, choice)
            except NotCertifiedError:
                continue
            if lo_new > 0:
                break
        else:
            raise NotCertifiedError(
                f"layer {i + 1}: X_i is not certified positive definite even after scaling Λ"
            )
        x_mat, lo, hi = x_new, lo_new, hi_new
        lambdas.append(lam_t)
        lam_min.append(lo)
        thetas.append(theta)
        infos.append(choice.info)
    assert x_mat is not None
    rho = schur_top(x_mat, lo, hi, ws[-1].T)
    return CompositionalResult(round_up_sqrt(rho), rho, lambdas, lam_min, thetas, infos)


def _next_x(
    k: np.ndarray, eps_k: float, lam: np.ndarray, m: float, choice: Choice
) -> tuple[np.ndarray, float, float]:
    """``X̂ = Λ − m²ΛK̂Λ − ηI`` and certified bounds on its spectrum."""
    d = lam.shape[0]
    lam_max = float(lam.max())
    if choice.scalar:
        lam0 = float(lam[0])
        c = m * m * lam0 * lam0
        s = c * k
    else:
        s = (m * m) * (lam[:, None] * k * lam[None, :])
    norm_s = float(np.linalg.norm(s))
    # rounding of the exact S from K: K's own error, the scaling, and the subtraction below
    eta = (m * m) * lam_max * lam_max * eps_k + 8 * d * U * (lam_max + norm_s)
    x = -s
    x[np.diag_indices(d)] += lam - eta
    x = (x + x.T) / 2
    if choice.scalar and choice.k_top is not None:
        # spectrum of λI − cK̂ is λ − c·μ_j(K̂); μmax(K̂) known to 64·d·u·‖K̂‖; K̂ ⪰ −ε_K
        rnd = 8 * d * U * (lam0 + norm_s)
        e_top = C_MARGIN * d * U * float(np.linalg.norm(k))
        lo = lam0 - c * (choice.k_top + e_top) - rnd - eta
        hi = lam0 + c * (eps_k + e_top) + rnd
    else:
        lo, hi = certified_spectrum(x)
    if not lo > 0:
        raise NotCertifiedError("X_i not positive definite")
    return x, lo, hi


def _torch(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a)


# --------------------------------------------------------------------------------------------
# Choosers
# --------------------------------------------------------------------------------------------


def fast_chooser(i: int, k: np.ndarray, top: float, w_next: np.ndarray, m: float) -> Choice:
    """ECLipsE-Fast: ``λ = 1/(2m²λmax(K))``, the maximiser of ``λmin(λI − λ²m²K)``."""
    if not top > 0:
        raise NotCertifiedError(f"layer {i + 1}: K_i has no positive eigenvalue")
    lam = 1.0 / (2 * m * m * top)
    return Choice(np.full(k.shape[0], lam), scalar=True, k_top=top, info={"lambda": lam})


def _l2_only(method: str, norm: NormName) -> None:
    if norm != "2":
        raise MethodNotApplicableError(
            f"{method} bounds the ℓ2 Lipschitz constant only (requested ℓ{norm}); use "
            "'trivial' (exact operator norms for ℓ1/ℓ∞) or 'milp'"
        )


def prepare(chain: LayerChain, norm: NormName, method: str) -> SlopeNetwork:
    """Check the norm and convert ``chain`` (raises ``MethodNotApplicableError``)."""
    _l2_only(method, norm)
    net = to_slope_network(chain, method)
    net.require_slopes(method)
    return net


def layer_bounds(net: SlopeNetwork, result: CompositionalResult) -> tuple[LayerBound, ...]:
    """Per hidden layer: the mean multiplier λ_i and the certified ``λmin(X_i)``."""
    out: list[LayerBound] = []
    for i, (lam, lo) in enumerate(zip(result.lambdas, result.lambda_min_x, strict=True)):
        name = net.activations[i].name
        out.append(LayerBound(name, "mean lambda_i", float(np.mean(lam))))
        out.append(LayerBound(name, "lambda_min(X_i) lower bound", lo))
    return tuple(out)


def compositional_certificate(
    method: str,
    net: SlopeNetwork,
    result: CompositionalResult,
    notes: tuple[str, ...] = (),
    details: dict[str, Any] | None = None,
) -> Certificate:
    extra = ()
    if any(a.alpha > 0 for a in net.activations):
        extra = ("αβ ≥ 0 terms dropped (sound, slightly looser)",)
    return Certificate(
        value=result.value,
        method=method,
        norm="2",
        side="upper",
        sound=True,
        layers=layer_bounds(net, result),
        notes=net.notes + extra + notes,
        details={"rho": result.rho, "backoff": result.thetas, **(details or {})},
    )


def _fallback_to_fast(net: SlopeNetwork, reason: str) -> tuple[CompositionalResult, str]:
    return compositional_bound(net, fast_chooser), reason


@register_upper("eclipse-fast")
def eclipse_fast_bound(chain: LayerChain, norm: NormName) -> Certificate:
    """ECLipsE-Fast (Xu & Sivaranjani 2024, Alg. 2), certified in float64."""
    net = prepare(chain, norm, "eclipse-fast")
    try:
        result = compositional_bound(net, fast_chooser)
    except NotCertifiedError as exc:
        raise MethodNotApplicableError(f"eclipse_fast could not certify: {exc}") from exc
    return compositional_certificate("eclipse-fast", net, result)


# --------------------------------------------------------------------------------------------
# ECLipsE: one SDP per layer
# --------------------------------------------------------------------------------------------


def sdp_chooser(
    solver: str = "auto", max_width: int = 400, eps: float = 1e-6, time_limit: float = 300.0
) -> Chooser:
    """ECLipsE's per-layer SDP: maximise s s.t. ``Λ − ΛKΛ ⪰ s W_{i+1}ᵀW_{i+1}`` (m² in K)."""

    def choose(i: int, k: np.ndarray, k_top: float, w_next: np.ndarray, m: float) -> Choice:
        import cvxpy as cp

        d = k.shape[0]
        if d > max_width:
            raise MethodNotApplicableError(
                f"eclipse: hidden layer {i + 1} has width {d} > max_width={max_width}; the "
                "per-layer SDP would be too slow (pass max_width to override)"
            )
        kt = (m * m) * k
        # normalise: ‖K‖ = 1 and ‖W_{i+1}‖ = 1 (Λ' = cΛ, s' = s·c·w²; see module docstring)
        top = m * m * k_top
        if not top > 0:
            raise NotCertifiedError(f"layer {i + 1}: K_i has no positive eigenvalue")
        kn = kt / top
        wn_scale = float(np.linalg.norm(w_next, 2))
        wn = w_next / wn_scale
        ev, vec = np.linalg.eigh(kn)
        keep = ev > 1e-13
        g = (vec[:, keep] * np.sqrt(ev[keep])).T  # GᵀG = kn, shape (r, d)
        r = g.shape[0]
        lam = cp.Variable(d, nonneg=True)
        s = cp.Variable()
        wtw = wn.T @ wn
        lam_d = cp.diag(lam)
        block = cp.bmat([[lam_d - s * wtw, lam_d @ g.T], [g @ lam_d, np.eye(r)]])
        problem = cp.Problem(cp.Maximize(s), [(block + block.T) / 2 >> 0])
        try:
            name = solve_sdp(
                problem,
                solver,
                d + r,
                auto_limit=24,
                eps=eps,
                time_limit=time_limit,
                max_iters=100_000,
            )
        except NotCertifiedError as exc:
            raise NotCertifiedError(f"layer {i + 1}: {exc}") from exc
        if lam.value is None:
            raise NotCertifiedError(f"layer {i + 1}: SDP status {problem.status}")
        lam_v = np.maximum(np.asarray(lam.value, dtype=np.float64), 0.0)
        lam_v = np.maximum(lam_v, 1e-9 * float(lam_v.max()) if lam_v.max() > 0 else 1e-9)
        return Choice(
            lam_v / top,
            info={"status": problem.status, "solver": name, "s": float(s.value or 0.0)},
        )

    return choose


@register_upper("eclipse")
def eclipse_bound(
    chain: LayerChain,
    norm: NormName,
    solver: str = "auto",
    max_width: int = 400,
    eps: float = 1e-6,
    time_limit: float = 300.0,
) -> Certificate:
    """ECLipsE (Xu & Sivaranjani 2024, Alg. 1): per-layer SDPs, certified in float64.

    ``solver``: ``"auto"`` (Clarabel for small layers, else SCS), ``"SCS"`` or
    ``"CLARABEL"``. Layers wider than ``max_width`` raise ``MethodNotApplicableError``.
    Whatever the solver returns is only a candidate: the recursion re-checks it (module
    docstring), and the bound is never worse than ECLipsE-Fast's because we return the
    smaller of the two certified values.
    """
    net = prepare(chain, norm, "eclipse")
    notes: list[str] = []
    try:
        result = compositional_bound(net, sdp_chooser(solver, max_width, eps, time_limit))
    except NotCertifiedError as exc:
        result, note = _fallback_to_fast(net, f"SDP candidate not certified ({exc}); used Fast")
        notes.append(note)
    fast = compositional_bound(net, fast_chooser)
    details: dict[str, Any] = {
        "sdp": [info for info in result.infos],
        "eclipse_fast": fast.value,
    }
    if fast.value < result.value:
        notes.append("ECLipsE-Fast was smaller than the SDP variant; reported Fast's value")
        details["sdp_value"] = result.value
        result = fast
    return compositional_certificate("eclipse", net, result, tuple(notes), details)
