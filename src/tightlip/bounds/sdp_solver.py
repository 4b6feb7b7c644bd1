"""Solving the SDPs of ECLipsE and LipSDP with cvxpy: one choice of solver and options.

A solver's answer is never a certificate here: the callers keep only its multipliers and
re-check them in float64 (:mod:`tightlip.bounds.certified_linalg`). So the choice below only
trades speed for how good the multipliers are: Clarabel (interior point, accurate) for small
SDPs, SCS (first order, scales to large ones) above ``auto_limit`` rows.
"""

from __future__ import annotations

import warnings
from typing import Any

from tightlip.bounds.certified_linalg import NotCertifiedError


def solver_options(
    solver: str, size: int, *, auto_limit: int, eps: float, time_limit: float, max_iters: int
) -> tuple[str, dict[str, Any]]:
    """``(name, keyword arguments)`` for ``problem.solve`` on an SDP with ``size`` rows.

    ``solver``: ``"auto"`` (Clarabel up to ``auto_limit`` rows, else SCS), ``"SCS"`` or
    ``"CLARABEL"`` (any case). SCS runs to tolerance ``eps`` in at most ``max_iters``
    iterations; both stop after ``time_limit`` seconds.
    """
    name = solver.upper()
    if name == "AUTO":
        name = "CLARABEL" if size <= auto_limit else "SCS"
    if name == "SCS":
        options = {"eps_abs": eps, "eps_rel": eps, "max_iters": max_iters}
        return name, {**options, "time_limit_secs": time_limit}
    if name == "CLARABEL":
        return name, {"time_limit": time_limit}
    return name, {}


def solve_sdp(
    problem: Any,
    solver: str,
    size: int,
    *,
    auto_limit: int,
    eps: float,
    time_limit: float,
    max_iters: int,
) -> str:
    """Solve the cvxpy ``problem`` (see :func:`solver_options`); return the solver's name.

    A solver failure raises :class:`NotCertifiedError` (the callers fall back to a
    closed-form certificate).
    """
    import cvxpy as cp

    name, options = solver_options(
        solver, size, auto_limit=auto_limit, eps=eps, time_limit=time_limit, max_iters=max_iters
    )
    try:
        with warnings.catch_warnings():
            # "Solution may be inaccurate": the callers never report the solver's value; they
            # re-check its multipliers in float64 (a certified Cholesky) and say so
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=name, **options)
    except cp.error.SolverError as exc:
        raise NotCertifiedError(f"SDP solver {name} failed: {exc}") from exc
    return name
