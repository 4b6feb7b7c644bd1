"""Exact ℓ1 / ℓ∞ Lipschitz constants of small ReLU networks by mixed-integer LP.

In the style of LipMIP (Jordan & Dimakis, *Exactly computing the local Lipschitz constant of
ReLU networks*, NeurIPS 2020). A ReLU network is piecewise linear, so its Lipschitz constant
in ``‖·‖_p → ‖·‖_p`` is the largest operator norm of its Jacobian over the linear pieces
with non-empty interior:

* ℓ∞: ``‖J‖_{∞→∞} = max_i Σ_j |J_ij| = max_i max_{s ∈ [−1,1]ⁿ} (J s)_i`` (a linear function
  of s is maximised at a vertex of the box, so s may be continuous);
* ℓ1: ``‖J‖_{1→1} = ‖Jᵀ‖_{∞→∞} = max_j max_{s ∈ [−1,1]ᵐ} (Jᵀ s)_j``.

For each output row i (resp. input column j) one MILP encodes

* the *forward pass* of a point x of the domain with binary activation indicators δ
  (standard big-M ReLU constraints with interval-arithmetic bounds on each pre-activation z;
  for the negated pairs of the CReLU/Abs conversion, exactly one unit of a pair is on);
* the *Jacobian-vector product* through the same pattern: ``u_1 = W_1 s``,
  ``a_l = δ_l ⊙ u_l``, ``u_{l+1} = W_{l+1} a_l`` (for ℓ1 the transposed chain from the output),
  where each product ``δ ⊙ u`` is linearised with big-M bounds on u (from |W| and |s| ≤ 1).

**Two encodings, two guarantees.**

* *relaxed* (``δ = 1 ⇒ z ≥ 0``, ``δ = 0 ⇒ z ≤ 0``): every differentiable point with its
  pattern is feasible, and at a kink δ picks a one-sided derivative, an element of the
  Clarke chain-rule set, which contains Clarke's generalised Jacobian. Its optimum is
  therefore an **upper bound** on the constant over the domain (Jordan & Dimakis, Thm. 1).
  For bias-free networks the domain is the shell ``‖x‖_∞ = 1`` (2n extra binaries): by
  homogeneity ``J(tx) = J(x)`` it loses nothing, and it excludes x = 0 where every pattern
  would be "feasible".
* *strict* (``δ = 1 ⇒ z ≥ ε``, ``δ = 0 ⇒ z ≤ −ε`` for units that can change sign): every
  feasible point is interior to its linear piece, so its value is a true Jacobian norm: a
  **lower bound**.

The reported value is always a *verified witness*: a point x whose pattern is re-evaluated in
float64 (every unit at least τ away from its kink, or with identically-zero input), whose
Jacobian norm is computed directly and rounded down. We first try to realise the relaxed
optimum's pattern by an LP (maximise the margin t of all units' signs); if that fails we
solve the strict MILP. ``kind = "exact"`` when the witness matches the relaxed upper bound
(to the solver's tolerance ``rel_tol``); otherwise the certificate is a lower bound and
``details["upper"]`` holds the relaxed bound (or the solver's dual bound after a time-out).

**Domain.** For bias-free networks the result is the *global* constant (every linear piece
is a cone through 0 and meets any box around 0). With biases the pieces far away are not
seen: the value is the constant of f restricted to ``box`` (default ``[−1, 1]ⁿ``; pass
``box=(lo, hi)``), hence only a *lower bound* on the global constant, and ``kind`` is
``"lower"`` with a note.

Abs and CReLU networks are handled through their exact ReLU forms
(:func:`tightlip.bounds.slope.to_slope_network`). HiGHS (``scipy.optimize.milp``) solves the
MILPs with a time limit; ℓ2 is not supported here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize
import scipy.sparse

from tightlip.bounds.registry import register_lower
from tightlip.bounds.slope import SlopeNetwork, to_slope_network
from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain
from tightlip.norms import UNIT_ROUNDOFF, NormName, abs_sum_axis

U = UNIT_ROUNDOFF


# --------------------------------------------------------------------------------------------
# A small sparse MILP builder
# --------------------------------------------------------------------------------------------


@dataclass
class _Program:
    lb: list[float] = field(default_factory=list)
    ub: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)

    def variables(self, n: int, lb: Any, ub: Any, integer: bool = False) -> np.ndarray:
        start = len(self.lb)
        self.lb.extend(np.broadcast_to(np.asarray(lb, dtype=float), (n,)).tolist())
        self.ub.extend(np.broadcast_to(np.asarray(ub, dtype=float), (n,)).tolist())
        self.integer.extend([1 if integer else 0] * n)
        return np.arange(start, start + n)

    def constraint(self, coefs: dict[int, float], lo: float, hi: float) -> None:
        r = len(self.row_lb)
        for c, v in coefs.items():
            if v != 0.0:
                self.rows.append(r)
                self.cols.append(int(c))
                self.vals.append(float(v))
        self.row_lb.append(lo)
        self.row_ub.append(hi)

    def solve(
        self, objective: dict[int, float], cutoff: float, time_limit: float, gap: float
    ) -> Any:
        """Maximise ``objective`` subject to the program and ``objective ≥ cutoff``."""
        n = len(self.lb)
        c = np.zeros(n)
        for k, v in objective.items():
            c[k] -= v  # milp minimises
        r = len(self.row_lb)
        keys = list(objective)
        matrix = scipy.sparse.csr_array(
            (
                self.vals + [objective[k] for k in keys],
                (self.rows + [r] * len(keys), self.cols + keys),
            ),
            shape=(r + 1, n),
        )
        constraint = scipy.optimize.LinearConstraint(
            matrix, [*self.row_lb, cutoff], [*self.row_ub, math.inf]
        )
        return scipy.optimize.milp(
            c,
            integrality=np.asarray(self.integer),
            bounds=scipy.optimize.Bounds(self.lb, self.ub),
            constraints=[constraint],
            options={"time_limit": max(time_limit, 0.05), "mip_rel_gap": gap, "disp": False},
        )


def _affine(weights: np.ndarray, inputs: np.ndarray, bias: float = 0.0) -> dict[int, float]:
    out: dict[int, float] = {}
    for w, k in zip(weights, inputs, strict=True):
        if w != 0.0:
            out[int(k)] = out.get(int(k), 0.0) + float(w)
    return out


def _plus(a: dict[int, float], b: dict[int, float], scale: float = 1.0) -> dict[int, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + scale * v
    return out


# --------------------------------------------------------------------------------------------
# Bounds and encodings
# --------------------------------------------------------------------------------------------


def _interval_bounds(
    net: SlopeNetwork, lo: np.ndarray, hi: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Interval bounds on every hidden pre-activation over the box (slightly widened)."""
    out = []
    h_lo, h_hi = lo, hi
    for i, w in enumerate(net.weights[:-1]):
        center, radius = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        mid = w @ center + (0.0 if net.biases[i] is None else net.biases[i])
        rad = np.abs(w) @ radius
        pad = 1e-9 * (np.abs(mid) + rad) + 1e-12
        z_lo, z_hi = mid - rad - pad, mid + rad + pad
        out.append((z_lo, z_hi))
        h_lo, h_hi = np.maximum(z_lo, 0.0), np.maximum(z_hi, 0.0)
    return out


@dataclass
class _Encoding:
    program: _Program
    x: np.ndarray
    deltas: list[np.ndarray]  # per hidden layer: variable index or −1 (active) / −2 (inactive)
    objective_vars: np.ndarray  # a_last variables
    final: np.ndarray  # objective = row of final @ a_last


def _encode(
    net: SlopeNetwork,
    norm: NormName,
    lo: np.ndarray,
    hi: np.ndarray,
    bounds: list[tuple[np.ndarray, np.ndarray]],
    strict: bool,
    shell: bool,
) -> _Encoding:
    prog = _Program()
    n = net.input_dim
    x = prog.variables(n, lo, hi)
    if shell:  # ‖x‖_∞ = 1 on the box [−1, 1]ⁿ: one coordinate sits at +1 or −1
        plus = prog.variables(n, 0, 1, integer=True)
        minus = prog.variables(n, 0, 1, integer=True)
        prog.constraint({**{int(k): 1.0 for k in plus}, **{int(k): 1.0 for k in minus}}, 1, 1)
        for k in range(n):
            prog.constraint({int(x[k]): 1.0, int(plus[k]): -2.0}, -1.0, math.inf)
            prog.constraint({int(x[k]): 1.0, int(minus[k]): 2.0}, -math.inf, 1.0)
    # forward pass with patterns
    deltas: list[np.ndarray] = []
    prev = x
    for i, w in enumerate(net.weights[:-1]):
        z_lo, z_hi = bounds[i]
        b = np.zeros(w.shape[0]) if net.biases[i] is None else net.biases[i]
        d = w.shape[0]
        h = prog.variables(d, 0.0, np.maximum(z_hi, 0.0))
        delta = np.full(d, -1, dtype=np.int64)
        for j in range(d):
            z = _affine(w[j], prev)
            if z_lo[j] >= 0:  # active on the whole domain: relu(z) = z
                prog.constraint(_plus({int(h[j]): 1.0}, z, -1.0), b[j], b[j])
                delta[j] = -1
                continue
            if z_hi[j] <= 0:  # inactive on the whole domain: relu(z) = 0
                prog.ub[int(h[j])] = 0.0
                delta[j] = -2
                continue
            (dj,) = prog.variables(1, 0, 1, integer=True)
            delta[j] = dj
            hj = int(h[j])
            # h ≥ z ;  h ≤ z − z_lo(1 − δ) ;  h ≤ z_hi δ
            prog.constraint(_plus({hj: 1.0}, z, -1.0), b[j], math.inf)
            prog.constraint(_plus({hj: 1.0, int(dj): -z_lo[j]}, z, -1.0), -math.inf, b[j] - z_lo[j])
            prog.constraint({hj: 1.0, int(dj): -z_hi[j]}, -math.inf, 0.0)
            if strict:
                eps = 1e-6 * max(z_hi[j] - z_lo[j], 1e-12)
                # δ = 1 ⇒ z ≥ ε:  z − (ε − z_lo)δ ≥ z_lo
                prog.constraint(_plus({int(dj): -(eps - z_lo[j])}, z), z_lo[j] - b[j], math.inf)
                # δ = 0 ⇒ z ≤ −ε:  z − (z_hi + ε)δ ≤ −ε
                prog.constraint(_plus({int(dj): -(z_hi[j] + eps)}, z), -math.inf, -eps - b[j])
        pairs = net.activations[i].negated_pairs
        for j in range(pairs):
            # units j and j + pairs see z and −z: exactly one is on, also at z = 0 where the
            # one-sided derivatives are (1, 0) and (0, 1) — never both or neither
            a, c = int(delta[j]), int(delta[j + pairs])
            if a >= 0 and c >= 0:
                prog.constraint({a: 1.0, c: 1.0}, 1.0, 1.0)
        deltas.append(delta)
        prev = h

    # Jacobian-vector product through the pattern
    ws = net.weights
    if norm == "inf":
        mats = list(ws[:-1])
        order = list(range(len(ws) - 1))
        final = ws[-1]
        s_dim = n
    else:
        mats = [w.T for w in ws[:0:-1]]
        order = list(range(len(ws) - 2, -1, -1))
        final = ws[0].T
        s_dim = net.output_dim
    s = prog.variables(s_dim, -1.0, 1.0)
    prev = s
    prev_bound = np.ones(s_dim)
    for mat, layer in zip(mats, order, strict=True):
        bound = np.abs(mat) @ prev_bound + 1e-12
        delta = deltas[layer]
        a = prog.variables(mat.shape[0], -bound, bound)
        for j in range(mat.shape[0]):
            u = _affine(mat[j], prev)
            aj = int(a[j])
            if delta[j] == -1:
                prog.constraint(_plus({aj: 1.0}, u, -1.0), 0.0, 0.0)
            elif delta[j] == -2:
                prog.lb[aj] = prog.ub[aj] = 0.0
            else:
                dj = int(delta[j])
                m = float(bound[j])
                # |a| ≤ mδ ;  |a − u| ≤ m(1 − δ)
                prog.constraint({aj: 1.0, dj: -m}, -math.inf, 0.0)
                prog.constraint({aj: 1.0, dj: m}, 0.0, math.inf)
                prog.constraint(_plus({aj: 1.0, dj: m}, u, -1.0), -math.inf, m)
                prog.constraint(_plus({aj: 1.0, dj: -m}, u, -1.0), -m, math.inf)
        bound = np.where(delta == -2, 0.0, bound)
        prev, prev_bound = a, bound
    return _Encoding(prog, x, deltas, prev, final)


# --------------------------------------------------------------------------------------------
# Witness verification
# --------------------------------------------------------------------------------------------


def _pattern_jacobian(net: SlopeNetwork, x: np.ndarray, tau: float) -> tuple[np.ndarray, bool]:
    """Jacobian at x and whether x is verified to be a differentiable point.

    Every unit must be at least ``tau`` (relative) away from its kink, or have an input
    whose gradient with respect to x is exactly zero (then its mask does not matter).
    """
    h = x.astype(np.float64)
    jac = np.eye(net.input_dim)
    ok = True
    for i, w in enumerate(net.weights[:-1]):
        z = w @ h + (0.0 if net.biases[i] is None else net.biases[i])
        grad = w @ jac
        scale = np.abs(w) @ np.abs(h) + (0.0 if net.biases[i] is None else np.abs(net.biases[i]))
        near = np.abs(z) <= tau * np.maximum(scale, 1e-300)
        flat = ~np.any(grad != 0.0, axis=1)
        if np.any(near & ~flat):
            ok = False
        mask = (z > 0).astype(np.float64)
        h = mask * z
        jac = mask[:, None] * grad
    return net.weights[-1] @ jac, ok


def _norm_down(jac: np.ndarray, norm: NormName) -> float:
    sums = np.abs(jac).sum(axis=abs_sum_axis(norm))
    value = float(sums.max()) if sums.size else 0.0
    length = jac.shape[abs_sum_axis(norm)]
    return value * (1.0 - 4 * (length + 2 * jac.size) * U)


def _realise(
    net: SlopeNetwork, pattern: list[np.ndarray], lo: np.ndarray, hi: np.ndarray
) -> np.ndarray | None:
    """An x in the box whose units all have the signs of ``pattern``, with maximal margin."""
    n = net.input_dim
    a_mat, c_vec = np.eye(n), np.zeros(n)
    rows, rhs = [], []
    for i, w in enumerate(net.weights[:-1]):
        za = w @ a_mat
        zc = w @ c_vec + (0.0 if net.biases[i] is None else net.biases[i])
        mask = pattern[i]
        for j in range(w.shape[0]):
            if not np.any(za[j] != 0.0) and zc[j] == 0.0:
                continue  # identically zero: its mask does not matter
            sign = 1.0 if mask[j] else -1.0
            scale = float(np.abs(za[j]).sum() + abs(zc[j]))
            # sign·(za x + zc) ≥ t·scale  ⇔  −sign·za x + scale·t ≤ sign·zc
            rows.append(np.concatenate([-sign * za[j], [scale]]))
            rhs.append(sign * zc[j])
        a_mat = mask[:, None] * za
        c_vec = mask * zc
    if not rows:
        return (lo + hi) / 2
    res = scipy.optimize.linprog(
        np.concatenate([np.zeros(n), [-1.0]]),
        A_ub=np.array(rows),
        b_ub=np.array(rhs),
        bounds=[*zip(lo, hi, strict=True), (None, 1.0)],
        method="highs",
    )
    if res.status != 0 or -res.fun <= 1e-7:
        return None
    return np.asarray(res.x[:n])


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


#: scipy's ``milp`` status codes
STATUS_NAMES = {
    0: "optimal",
    1: "time or iteration limit",
    2: "infeasible",
    3: "unbounded",
    4: "solver error",
}
#: HiGHS's default absolute MIP gap (scipy's ``milp`` does not expose it): "optimal" means a
#: relative gap ≤ ``mip_rel_gap`` *or* an absolute gap ≤ this
HIGHS_ABS_GAP = 1e-6


def status_name(status: int) -> str:
    return STATUS_NAMES.get(int(status), f"status {status}")


@dataclass(frozen=True)
class _RowResult:
    """What one MILP solve proved: its incumbent value (if any) and a bound on its optimum.

    ``bound`` is the solver's dual bound; when HiGHS reports "optimal" without one (it can,
    e.g. when presolve or a heuristic closes the problem), the gap it guarantees is used:
    ``incumbent + max(gap·|incumbent|, HIGHS_ABS_GAP)``. Without a dual bound and without
    optimality the bound is ``inf``. ``proved``: the optimum is within the gap of the bound.
    """

    status: str
    incumbent: float | None
    bound: float
    proved: bool


def _row_result(res: Any, gap: float) -> _RowResult:
    """Read a ``scipy.optimize.milp`` result of a *maximisation* (objective negated)."""
    status = status_name(res.status)
    incumbent = None
    if res.x is not None and res.fun is not None:
        incumbent = -float(res.fun)
    dual = getattr(res, "mip_dual_bound", None)
    dual_bound = None if dual is None or not math.isfinite(float(dual)) else -float(dual)
    if res.status == 0 and incumbent is not None:
        if dual_bound is None:
            dual_bound = incumbent + max(gap * abs(incumbent), HIGHS_ABS_GAP)
        return _RowResult(status, incumbent, max(dual_bound, incumbent), True)
    bound = math.inf if dual_bound is None else dual_bound
    if incumbent is not None:
        bound = max(bound, incumbent)
    return _RowResult(status, incumbent, bound, False)


@dataclass
class _Search:
    best: float = 0.0
    witness: np.ndarray | None = None
    upper: float = 0.0
    complete: bool = True
    statuses: list[str] = field(default_factory=list)


def _run_rows(
    net: SlopeNetwork,
    norm: NormName,
    lo: np.ndarray,
    hi: np.ndarray,
    strict: bool,
    shell: bool,
    deadline: float,
    gap: float,
    floor: float,
) -> tuple[_Search, list[tuple[float, list[np.ndarray], np.ndarray]]]:
    bounds = _interval_bounds(net, lo, hi)
    enc = _encode(net, norm, lo, hi, bounds, strict, shell)
    # order rows by a cheap upper estimate so that good incumbents come first
    order = np.argsort(-np.abs(enc.final).sum(axis=1))
    search = _Search(best=floor, upper=0.0)
    incumbents: list[tuple[float, list[np.ndarray], np.ndarray]] = []
    for r in order:
        objective = _affine(enc.final[r], enc.objective_vars)
        if not objective:
            continue
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            search.complete = False
            search.upper = math.inf
            search.statuses.append("time limit before row")
            break
        res = enc.program.solve(objective, search.best, remaining, gap)
        if res.status == 2:  # infeasible: this row cannot beat the incumbent
            search.statuses.append(status_name(res.status))
            continue
        row = _row_result(res, gap)
        search.statuses.append(row.status)
        if row.incumbent is not None:
            pattern = [
                np.where(d == -1, 1.0, np.where(d == -2, 0.0, np.round(res.x[np.maximum(d, 0)])))
                for d in enc.deltas
            ]
            incumbents.append((row.incumbent, pattern, np.asarray(res.x[enc.x])))
            if row.incumbent > search.best:
                search.best = row.incumbent
                search.witness = np.asarray(res.x[enc.x])
        search.complete = search.complete and row.proved
        search.upper = max(search.upper, row.bound)
    search.upper = max(search.upper, search.best)
    return search, incumbents


@register_lower("milp")
def milp_lipschitz(
    chain: LayerChain,
    norm: NormName,
    box: tuple[float, float] | None = None,
    time_limit: float = 60.0,
    max_neurons: int = 200,
    rel_tol: float = 1e-6,
) -> Certificate:
    """Exact ℓ1/ℓ∞ Lipschitz constant of a small ReLU (Abs, CReLU) network (module docstring)."""
    if norm == "2":
        raise MethodNotApplicableError(
            "milp computes exact ℓ1 and ℓ∞ constants only (ℓ2 needs a non-linear objective)"
        )
    net = to_slope_network(chain, "milp")
    if not net.relu_only:
        others = {p.name for a in net.activations for p in a.pieces if p.name != "relu"}
        raise MethodNotApplicableError(
            "milp needs a piecewise-linear network of ReLU units (ReLU, Abs, CReLU); "
            + ", ".join(sorted(others))
            + " is not"
        )
    hidden = sum(net.hidden_widths)
    if hidden > max_neurons:
        raise MethodNotApplicableError(
            f"milp: {hidden} hidden ReLU units (after conversion) > max_neurons={max_neurons}; "
            "the MILP would be too slow (pass max_neurons to override)"
        )
    n = net.input_dim
    biased = net.has_bias
    if box is None or not biased:
        lo, hi = -np.ones(n), np.ones(n)
    else:
        lo = np.broadcast_to(np.asarray(box[0], dtype=float), (n,)).copy()
        hi = np.broadcast_to(np.asarray(box[1], dtype=float), (n,)).copy()
    notes = list(net.notes)
    start = time.perf_counter()
    deadline = start + time_limit
    gap = max(rel_tol / 10, 1e-9)

    if net.depth == 1:
        jac = net.weights[0]
        value = _norm_down(jac, norm)
        return _certificate(value, value, norm, "exact", notes, {"domain": "global (linear)"})

    relaxed, incumbents = _run_rows(net, norm, lo, hi, False, not biased, deadline, gap, 0.0)
    upper = relaxed.upper
    # lower bound: realise the relaxed incumbents' patterns, best first
    lower, witness = 0.0, None
    for _value, pattern, _x in sorted(incumbents, key=lambda t: -t[0]):
        x = _realise(net, pattern, lo, hi)
        if x is None:
            continue
        jac, ok = _pattern_jacobian(net, x, 1e-9)
        if ok:
            v = _norm_down(jac, norm)
            if v > lower:
                lower, witness = v, x
        if lower >= upper * (1 - rel_tol):
            break
    strict_status: list[str] = []
    if lower < upper * (1 - rel_tol) and time.perf_counter() < deadline:
        strict, _ = _run_rows(net, norm, lo, hi, True, False, deadline, gap, lower)
        strict_status = strict.statuses
        if strict.witness is not None:
            jac, ok = _pattern_jacobian(net, strict.witness, 1e-9)
            if ok and _norm_down(jac, norm) > lower:
                lower, witness = _norm_down(jac, norm), strict.witness
        notes.append("relaxed optimum not realised by an LP; solved the strict MILP")
    exact = relaxed.complete and lower >= upper * (1 - rel_tol) - 1e-12
    domain = "global (bias-free, homogeneous)" if not biased else f"box [{lo.min()}, {hi.max()}]^n"
    kind = "exact" if exact and not biased else "lower"
    if biased:
        notes.append(
            f"network has biases: value is the constant on the box {domain.split(' ', 1)[1]}, a "
            "lower bound on the global constant (pass box=(lo, hi) to widen)"
        )
    status = _summary_status(relaxed)
    if not exact:
        notes.append(
            f"MILP gap not closed to rel_tol (solver: {status}): value is a verified lower "
            "bound, details['upper'] the relaxed bound"
        )
    details = {
        "upper": upper,
        "gap": _relative_gap(lower, upper),
        "solver_status": status,
        "domain": domain,
        "exact_on_domain": exact,
        "complete": relaxed.complete,
        "incumbent": relaxed.best,
        "witness": None if witness is None else [float(v) for v in witness],
        "relaxed_status": relaxed.statuses,
        "strict_status": strict_status,
        "seconds_used": time.perf_counter() - start,
    }
    return _certificate(lower, upper, norm, kind, notes, details)


def _summary_status(search: _Search) -> str:
    """``"optimal"`` when every row was solved to optimality, else the first other status."""
    others = [s for s in search.statuses if s not in ("optimal", "infeasible")]
    return "optimal" if search.complete and not others else (others[0] if others else "unknown")


def _relative_gap(lower: float, upper: float) -> float:
    """``(upper − lower) / upper``: 0 when both are 0, ``inf`` without a finite upper bound."""
    if not math.isfinite(upper):
        return math.inf
    return (upper - lower) / upper if upper > 0 else 0.0


def _certificate(
    value: float, upper: float, norm: NormName, kind: str, notes: list[str], details: dict[str, Any]
) -> Certificate:
    return Certificate(
        value=value,
        method="milp",
        norm=norm,
        side=kind,  # type: ignore[arg-type]
        sound=True,
        notes=tuple(notes),
        details={"upper": upper, **details},
    )
