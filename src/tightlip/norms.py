"""Vector norms, induced operator norms, and their *certified* upper bounds.

Every Lipschitz constant in tightlip is measured in one vector norm ``p`` used on the input,
on every hidden layer and on the output, so the constant of a composition is at most the
product of the layers' constants (the "trivial bound").

Operator norms ``‖W‖_{p→p}``:

* ``p = 1``: the largest column absolute sum, ``max_j Σ_i |W_ij|``  (exact);
* ``p = ∞``: the largest row absolute sum, ``max_i Σ_j |W_ij|``  (exact);
* ``p = 2``: the largest singular value ``σ_max(W)``.

Exact in exact arithmetic is not the same as sound in floating point. The functions named
``certified_*`` return a number that is guaranteed to be ``≥`` the true operator norm of the
matrix whose entries are the given floats:

* ℓ1 / ℓ∞: sums of ``n`` non-negative float64 numbers carry a relative rounding error of at
  most ``n·u/(1 − n·u)`` with ``u = 2⁻⁵³`` (Higham, *Accuracy and Stability*, §4.2). We inflate
  by that factor, and float32 → float64 conversion is exact.
* ℓ2: LAPACK's SVD is backward stable: each computed singular value satisfies
  ``|σ̂ − σ| ≤ c·max(m, n)·u·σ_max`` for a small constant ``c`` (Demmel & Kahan 1990;
  LAPACK Users' Guide §4.9). We take ``c = 64`` as a generous constant and inflate by
  ``1 + 64·max(m,n)·u``. Power iteration is *never* used for a certificate: it converges from
  below and under-estimates (BRIEF §9 measured 1.2–1.4 % on rectangular layers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from tightlip.errors import NormError

NormName = Literal["1", "2", "inf"]
NORMS: tuple[NormName, ...] = ("1", "2", "inf")

UNIT_ROUNDOFF_F64 = 2.0**-53


def parse_norm(norm: str | int | float) -> NormName:
    """Normalise user spellings (``2``, ``"l2"``, ``"inf"``, ``math.inf``, ``"linf"``) to a NormName."""
    text = str(norm).strip().lower().removeprefix("l").removeprefix("ℓ")
    if text in {"1", "1.0"}:
        return "1"
    if text in {"2", "2.0"}:
        return "2"
    if text in {"inf", "infinity", "∞", "math.inf"}:
        return "inf"
    raise NormError(f"unsupported norm {norm!r}: choose one of 1, 2, inf")


def p_value(norm: NormName) -> float:
    """The exponent ``p`` as a float (``math.inf`` for ``"inf"``)."""
    return math.inf if norm == "inf" else float(norm)


def dual_norm(norm: NormName) -> NormName:
    """The dual exponent ``q`` with ``1/p + 1/q = 1``: ``|aᵀx| ≤ ‖a‖_q ‖x‖_p`` (Hölder)."""
    return {"1": "inf", "2": "2", "inf": "1"}[norm]


def vector_norm(x: torch.Tensor, norm: NormName, dim: int = -1) -> torch.Tensor:
    """``‖x‖_p`` along ``dim``."""
    return torch.linalg.vector_norm(x, ord=p_value(norm), dim=dim)


def class_pair_distances(
    last_weight: torch.Tensor,
    labels: torch.Tensor,
    norm: NormName,
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖w_y − w_j‖_q`` for every example and class ``j`` (``q`` dual to ``p``), shape ``(B, C)``.

    ``w_k`` are the rows of the last weight ``(C, h)``. Over an input ball whose backbone
    features move by at most ``δ`` in ℓp, the logit gap ``z_y − z_j`` moves by at most
    ``‖w_y − w_j‖_q · δ`` (Hölder): the last-layer-exact certificate of certify.py and the
    GloRo-style losses. ``input_mask`` ``(B, h)`` (0/1) drops features that are constant over
    the ball (local bounds).
    """
    rows = last_weight[labels][:, None, :] - last_weight[None, :, :]  # (B, C, h): w_y − w_j
    if input_mask is not None:
        rows = rows * input_mask[:, None, :]
    return vector_norm(rows, dual_norm(norm))


def margin_constant(norm: NormName) -> float:
    """``c_p = ‖e_i − e_j‖_q`` (q dual to p): how much a logit *difference* can move.

    If ``‖f(x) − f(x')‖_p ≤ δ`` then ``|(f_i − f_j)(x) − (f_i − f_j)(x')| ≤ ‖e_i − e_j‖_q · δ``
    by Hölder. So ``c_2 = √2``, ``c_∞ = 2`` (q = 1) and ``c_1 = 1`` (q = ∞). A point is
    certified at radius ε by a global bound L when ``top1 − top2 > c_p · L · ε``.
    """
    return {"1": 1.0, "2": math.sqrt(2.0), "inf": 2.0}[norm]


def operator_norm(weight: torch.Tensor, norm: NormName) -> float:
    """``‖W‖_{p→p}`` computed in float64 (no safety margin; see ``certified_operator_norm``)."""
    w = _as_float64_matrix(weight)
    if norm == "1":
        return float(w.abs().sum(dim=0).max())
    if norm == "inf":
        return float(w.abs().sum(dim=1).max())
    return float(torch.linalg.matrix_norm(w, ord=2))


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run LAPACK work on one thread.

    On a shared 2-core machine a multi-threaded float64 SVD of a 512×1024 matrix was measured
    50–100× slower than the single-threaded one (10–20 s against 0.2 s) whenever another
    process held a core; these factorisations are small enough that one thread is never slow.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def certified_operator_norm(weight: torch.Tensor, norm: NormName) -> float:
    """A float guaranteed to be ``≥ ‖W‖_{p→p}`` despite rounding (see module docstring)."""
    with single_threaded():
        return _certified_operator_norm(weight, norm)


def _certified_operator_norm(weight: torch.Tensor, norm: NormName) -> float:
    w = _as_float64_matrix(weight)
    rows, cols = w.shape
    if norm in ("1", "inf"):
        length = rows if norm == "1" else cols
        slack = length * UNIT_ROUNDOFF_F64
        return _round_up(operator_norm(w, norm) * (1.0 + slack / (1.0 - slack)))
    sigma = float(torch.linalg.svdvals(w)[0]) if w.numel() else 0.0
    return _round_up(sigma * (1.0 + 64.0 * max(rows, cols) * UNIT_ROUNDOFF_F64))


def gram_iteration_upper_bound(weight: torch.Tensor, steps: int = 6) -> float:
    """Upper bound on ``σ_max(W)`` by Gram iteration (Delattre et al., ICML 2023).

    With ``G₀ = W`` and ``G_{k+1} = G_kᵀ G_k`` (rescaled to avoid overflow),
    ``σ_max(W) ≤ ‖G_k‖_F^{1/2^k}`` and the bound converges to ``σ_max`` super-linearly.
    It upper-bounds in exact arithmetic; we use it as an independent cross-check of the SVD
    route in tests, and keep the SVD route (with its stated margin) for certificates.
    """
    g = _as_float64_matrix(weight)
    log_scale = 0.0
    for _ in range(steps):
        norm_f = torch.linalg.matrix_norm(g, ord="fro")
        if norm_f == 0:
            return 0.0
        g = g / norm_f
        log_scale = 2.0 * (log_scale + math.log(float(norm_f)))
        g = g.T @ g if g.shape[0] >= g.shape[1] else g @ g.T
    log_bound = (log_scale + math.log(float(torch.linalg.matrix_norm(g, ord="fro")))) / 2**steps
    return math.exp(log_bound)


def _as_float64_matrix(weight: torch.Tensor) -> torch.Tensor:
    w = weight.detach().to(dtype=torch.float64, device="cpu")
    if w.ndim != 2:
        raise ValueError(f"expected a weight matrix, got a tensor of shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(
            "weight matrix contains NaN or infinite entries: no bound can be certified"
        )
    return w


def _round_up(value: float) -> float:
    """The next float64 above ``value`` (one more ulp of safety for the final product)."""
    return math.nextafter(value, math.inf)
