"""LipSDP-Neuron (Fazlyab, Robey, Hassani, Morari & Pappas, NeurIPS 2019), certified.

For a slope-restricted network (:mod:`tightlip.bounds.slope`) with hidden layers
``i = 1 … L−1``, slopes in ``[0, β_i]`` (``m_i = β_i/2``), and diagonal multipliers
``T_i = diag(t_i) ⪰ 0``, LipSDP-Neuron solves

    minimise ρ   s.t.   M(ρ, T) ⪰ 0,

where ``M`` is the matrix of the quadratic form in ``(Δx, Δv_1, …, Δv_{L−1})``

    ρ‖Δx‖² − ‖W_LΔv_{L−1}‖² + Σ_i (Δv_iᵀT_iΔv_i − 2m_i Δv_iᵀT_iW_iΔv_{i−1}),

block tridiagonal with diagonal blocks ``ρI, T_1, …, T_{L−2}, T_{L−1} − W_LᵀW_L`` and
off-diagonal blocks ``−m_i T_i W_i``. Then ``Lip₂(f) ≤ √ρ``. (For slopes with ``α > 0`` the
dropped terms ``α_iβ_iW_iᵀT_iW_i`` are PSD, so leaving them out keeps the bound valid.)

Implementation notes:

* **Thin SVD of the first layer.** ``W_1 = U S Vᵀ`` enters only through ``T_1W_1Δx`` and
  ``ρ‖Δx‖²``; with ``Δx = Vξ + V_⊥ζ`` the ζ part separates as ``ρ‖ζ‖² ≥ 0``, so the SDP with
  ``W_1`` replaced by ``U S`` (``d_1 × r``) is equivalent. A 784-pixel input costs nothing.
* **Scaling.** Each ``W_i`` is divided by a power of two near ``‖W_i‖₂`` for the solver (exact
  in floating point); the LipSDP value is positively homogeneous in each W_i separately
  (substitute ``Δv_i → (∏_{k≤i} c_k) Δv_i``), and the final bound is multiplied back exactly.
* **Soundness.** A solver's answer is not a certificate (SCS at a loose tolerance can return
  a value *below* the optimum). We keep only the solver's multipliers ``t_i ≥ 0`` and compute,
  in float64, the smallest ρ they certify, by Schur complements from the *last* block up:

      Z_{L−1} = T_{L−1} − W_LᵀW_L,   Z_{i−1} = T_{i−1} − m_i² W_iᵀT_i Z_i⁻¹ T_iW_i,
      ρ* = λmax(m_1² W_1ᵀT_1 Z_1⁻¹ T_1W_1),

  (``M(ρ, T) ⪰ 0`` iff every ``Z_i ≻ 0`` and ``ρ ≥ ρ*``) with the same certified margins as
  :mod:`tightlip.bounds.eclipse`: every ``Z_i`` is shifted down by a bound on its rounding
  error, certified positive definite through its eigenvalues, and the last eigenvalue is
  rounded up. The check uses the original ``W_1`` (not ``U S``). If the solver's ``T`` is on
  the boundary (some ``Z_i`` singular), it is mixed with a strictly feasible closed-form
  point ``T^F = ρ_F Λ^F`` (the better of ECLipsE-Fast and the greedy member of
  :mod:`tightlip.bounds.syed_hu`): ``(1−θ)T + θT^F`` is feasible for ``(1−θ)ρ + θρ_F`` by
  convexity, and we take the smallest θ that certifies. If the solver stalled (deep nets,
  time limit) and the closed-form point is better, that point is reported, so LipSDP is
  never worse than it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tightlip.bounds.certified_linalg import (
    NotCertifiedError,
    certified_spectrum,
    gram_product,
    schur_gram,
    schur_top,
)
from tightlip.bounds.eclipse import compositional_bound, fast_chooser, prepare
from tightlip.bounds.registry import register_upper
from tightlip.bounds.sdp_solver import solve_sdp
from tightlip.bounds.slope import SlopeNetwork
from tightlip.certificate import Certificate, LayerBound
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain
from tightlip.norms import UNIT_ROUNDOFF as U
from tightlip.norms import NormName, certified_operator_norm

MIX_THETAS = (0.0, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0)


def _power_of_two_near(x: float) -> float:
    return 1.0 if not x > 0 else 2.0 ** round(math.log2(x))


def scaled_network(net: SlopeNetwork) -> tuple[list[np.ndarray], float]:
    """Weights divided by powers of two near their spectral norms, and the exact product."""
    weights = []
    scale = 1.0
    for w in net.weights:
        c = _power_of_two_near(float(np.linalg.norm(w, 2)) if w.size else 1.0)
        weights.append(w / c)
        scale *= c
    return weights, scale


def certify_multipliers(
    weights: list[np.ndarray], slopes_m: list[float], ts: list[np.ndarray]
) -> float:
    """The smallest certified ρ with ``M(ρ, T) ⪰ 0`` (module docstring), or raise."""
    n_hidden = len(weights) - 1
    # last block: T_{L−1} − W_LᵀW_L
    wtw, eps, _ = gram_product(weights[-1].T)
    t = np.maximum(ts[-1], 0.0)
    z = _diag_minus(t, wtw, eps)
    lo, hi = certified_spectrum(z)
    if not lo > 0:
        raise NotCertifiedError("last hidden block T_{L−1} − W_LᵀW_L is not positive definite")
    for i in range(n_hidden - 1, 0, -1):  # 0-based: hidden layer i feeds from hidden i−1
        b = slopes_m[i] * (ts[i][:, None] * weights[i])  # m_i T_i W_i, (d_i × d_{i−1})
        s, eps, _ = schur_gram(z, lo, hi, b)
        z = _diag_minus(np.maximum(ts[i - 1], 0.0), s, eps)
        lo, hi = certified_spectrum(z)
        if not lo > 0:
            raise NotCertifiedError(f"block {i} of the LipSDP matrix is not positive definite")
    b = slopes_m[0] * (ts[0][:, None] * weights[0])
    return schur_top(z, lo, hi, b)


def _diag_minus(t: np.ndarray, s: np.ndarray, eps: float) -> np.ndarray:
    """``diag(t) − S − ηI`` with η covering ``eps`` and the rounding of this step."""
    d = t.shape[0]
    eta = eps + 8 * d * U * (float(t.max(initial=0.0)) + float(np.linalg.norm(s)))
    z = -s
    z[np.diag_indices(d)] += t - eta
    return (z + z.T) / 2


def _solve(
    weights: list[np.ndarray],
    slopes_m: list[float],
    solver: str,
    eps: float,
    time_limit: float,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    import cvxpy as cp

    u, sv, _ = np.linalg.svd(weights[0], full_matrices=False)
    keep = sv > 1e-12 * (sv[0] if sv.size else 1.0)
    first = u[:, keep] * sv[keep]  # thin-SVD factor U·S, same W_1W_1ᵀ
    r = first.shape[1]
    hidden = [w.shape[0] for w in weights[:-1]]
    rho = cp.Variable(nonneg=True)
    ts = [cp.Variable(d, nonneg=True) for d in hidden]
    n_blocks = len(hidden) + 1
    blocks: list[list[Any]] = [[None] * n_blocks for _ in range(n_blocks)]
    sizes = [r, *hidden]
    for a in range(n_blocks):
        for c in range(n_blocks):
            blocks[a][c] = np.zeros((sizes[a], sizes[c]))
    blocks[0][0] = rho * np.eye(r)
    last_wtw = weights[-1].T @ weights[-1]
    for i in range(len(hidden)):
        diag = cp.diag(ts[i])
        blocks[i + 1][i + 1] = diag - last_wtw if i == len(hidden) - 1 else diag
        w_in = first if i == 0 else weights[i]
        off = -slopes_m[i] * (diag @ w_in)
        blocks[i + 1][i] = off
        blocks[i][i + 1] = off.T
    matrix = cp.bmat(blocks)
    problem = cp.Problem(cp.Minimize(rho), [(matrix + matrix.T) / 2 >> 0])
    name = solve_sdp(
        problem,
        solver,
        r + sum(hidden),
        auto_limit=40,
        eps=eps,
        time_limit=time_limit,
        max_iters=200_000,
    )
    if any(t.value is None for t in ts):
        raise NotCertifiedError(f"SDP solver {name} returned status {problem.status}")
    info = {
        "solver": name,
        "status": problem.status,
        "solver_rho": float(rho.value) if rho.value is not None else None,
        "sdp_size": r + sum(hidden),
    }
    return [np.asarray(t.value, dtype=np.float64) for t in ts], info


@register_upper("lipsdp")
def lipsdp_bound(
    chain: LayerChain,
    norm: NormName,
    solver: str = "auto",
    max_size: int = 1000,
    eps: float = 1e-7,
    time_limit: float = 600.0,
) -> Certificate:
    """LipSDP-Neuron through cvxpy, re-checked in float64 (module docstring).

    ``solver``: ``"auto"`` (Clarabel when the SDP has at most 40 rows, else SCS), ``"SCS"``
    or ``"CLARABEL"``. The SDP has ``rank(W_1) + Σ hidden widths`` rows; larger than
    ``max_size`` raises ``MethodNotApplicableError`` instead of running for hours.
    """
    net = prepare(chain, norm, "lipsdp")
    if net.depth == 1:
        value = certified_operator_norm(chain.weights[0], "2")
        return Certificate(
            value=value,
            method="lipsdp",
            norm="2",
            side="upper",
            sound=True,
            notes=("single layer",),
        )
    rank_bound = min(net.weights[0].shape)
    size = rank_bound + sum(net.hidden_widths)
    if size > max_size:
        raise MethodNotApplicableError(
            f"lipsdp: the SDP would have {size} rows (rank of W_1 + hidden widths) > "
            f"max_size={max_size}; too large for cvxpy (pass max_size to override)"
        )
    weights, scale = scaled_network(net)
    slopes_m = [(a.alpha + a.beta) / 2 for a in net.activations]
    ts, info = _solve(weights, slopes_m, solver, eps, time_limit)

    # strictly feasible closed-form points on the same scaled weights (ECLipsE-Fast and the
    # greedy Syed–Hu-style member), for mixing and as a floor when the solver stalls
    from tightlip.bounds.syed_hu import member_chooser

    scaled_net = SlopeNetwork(tuple(weights), net.biases, net.activations, net.names)
    anchor = compositional_bound(scaled_net, fast_chooser)
    try:
        greedy = compositional_bound(scaled_net, member_chooser("greedy"))
        if greedy.rho < anchor.rho:
            anchor = greedy
    except NotCertifiedError:
        pass
    t_anchor = [anchor.rho * lam for lam in anchor.lambdas]
    rho: float | None = None
    theta_used = None
    failures: list[str] = []
    for theta in MIX_THETAS:
        mixed = [
            (1 - theta) * np.maximum(t, 0.0) + theta * ta
            for t, ta in zip(ts, t_anchor, strict=True)
        ]
        try:
            rho = certify_multipliers(weights, slopes_m, mixed)
        except NotCertifiedError as exc:
            failures.append(f"θ={theta}: {exc}")
            continue
        theta_used = theta
        ts = mixed
        break
    used_anchor = rho is None or anchor.rho < rho
    if used_anchor:
        rho, theta_used = anchor.rho, 1.0
        ts = t_anchor
    value = math.nextafter(math.sqrt(rho), math.inf) * scale
    value = math.nextafter(value, math.inf)
    notes = list(net.notes)
    if used_anchor:
        notes.append(
            "the SDP solver's multipliers certified less than a closed-form feasible point "
            "(solver not converged): reported that point"
        )
    elif theta_used:
        notes.append(f"solver multipliers mixed with a closed-form point (θ = {theta_used})")
    solver_value = info["solver_rho"]
    details = {
        **info,
        "solver_value": None if solver_value is None else math.sqrt(max(solver_value, 0)) * scale,
        "mix_theta": theta_used,
        "weight_scale": scale,
        "closed_form_value": anchor.value * scale,
        "certify_failures": failures,
    }
    layers = tuple(
        LayerBound(net.activations[i].name, "mean multiplier t_i", float(np.mean(t)))
        for i, t in enumerate(ts)
    )
    return Certificate(
        value=value,
        method="lipsdp",
        norm="2",
        side="upper",
        sound=True,
        layers=layers,
        notes=tuple(notes),
        details=details,
    )


__all__ = ["certify_multipliers", "lipsdp_bound", "scaled_network"]
