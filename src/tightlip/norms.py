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
  LAPACK Users' Guide §4.9). We take ``c = SVD_MARGIN = 64`` as a generous constant and
  inflate by ``1 + 64·max(m,n)·u``. Power iteration is *never* used for a certificate: it
  converges from below and under-estimates (1.2–1.4 % measured on rectangular layers).
* a non-negative matrix ``E`` (an entrywise error bound): ``‖E‖₂ ≤ √(‖E‖₁ ‖E‖_∞)`` (Schur's
  test; Higham, *Accuracy and Stability*, §6.3), which needs no SVD.

The constants of that error model live here and only here: :data:`UNIT_ROUNDOFF` (``u``),
:func:`gamma` (``γ_n``) and :data:`SVD_MARGIN` (``c``). The per-norm facts (which axis an
ℓ1 / ℓ∞ operator norm sums over, the dual exponent, the margin constant) are small tables, so
code elsewhere asks :func:`abs_sum_axis` or :func:`dual_norm` instead of comparing strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from tightlip.errors import NormError

NormName = Literal["1", "2", "inf"]
NORMS: tuple[NormName, ...] = ("1", "2", "inf")

#: ``u``, the unit roundoff of float64 (round to nearest): ``fl(x ∘ y) = (x ∘ y)(1 + δ), |δ| ≤ u``
UNIT_ROUNDOFF = 2.0**-53
UNIT_ROUNDOFF_F64 = UNIT_ROUNDOFF  # the older name, kept for importers
#: the smallest positive float64 (a subnormal): the absolute error of one product that underflows
#: is at most half of it (Higham, §2.1)
SMALLEST_SUBNORMAL = 2.0**-1074
#: ``c`` in the SVD error bound ``|σ̂ − σ| ≤ c · max(m, n) · u · σ_max`` (module docstring)
SVD_MARGIN = 64.0

#: for ℓ1 / ℓ∞, the axis of ``|W|`` that the induced norm sums over before taking the max
_ABS_SUM_AXIS: dict[str, int] = {"1": 0, "inf": 1}


def gamma(n: int) -> float:
    """``γ_n = n u / (1 − n u)`` rounded up (Higham, *Accuracy and Stability*, Lemma 3.1).

    A sum of ``n`` products, or a product of ``n + 1`` factors, computed in float64 has relative
    error at most ``γ_n`` (barring underflow).
    """
    nu = n * UNIT_ROUNDOFF
    if not 0.0 <= nu < 0.5:
        raise ValueError(f"gamma({n}): n·u must be in [0, 1/2)")
    return round_up(round_up(nu) / (1.0 - nu))


def svd_inflation(rows: int, cols: int) -> float:
    """``1 + c · max(m, n) · u``, the factor that makes a computed ``σ_max`` an upper bound."""
    return 1.0 + SVD_MARGIN * max(rows, cols) * UNIT_ROUNDOFF


def abs_sum_axis(norm: NormName) -> int:
    """The axis of ``|W|`` that ``‖W‖_{p→p}`` sums over: 0 (columns) for ℓ1, 1 (rows) for ℓ∞."""
    if norm not in _ABS_SUM_AXIS:
        raise NormError(f"the ℓ{norm} operator norm is not a maximum of absolute sums")
    return _ABS_SUM_AXIS[norm]


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
    weight_error: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖w_y − w_j‖_q`` for every example and class ``j`` (``q`` dual to ``p``), shape ``(B, C)``.

    ``w_k`` are the rows of the last weight ``(C, h)``. Over an input ball whose backbone
    features move by at most ``δ`` in ℓp, the logit gap ``z_y − z_j`` moves by at most
    ``‖w_y − w_j‖_q · δ`` (Hölder): the last-layer-exact certificate and the GloRo-style
    losses. ``input_mask`` ``(B, h)`` (0/1) drops features that are constant over the ball
    (local bounds). ``weight_error`` ``(C, h)``, an entrywise bound ``|last_weight − W| ≤ E`` on
    a rounded weight (a merged layer), adds ``‖e_y + e_j‖_q ≥ ‖(W − Ŵ)_y − (W − Ŵ)_j‖_q`` so
    that the result bounds the distances of the true ``W`` (the triangle inequality).
    """
    rows = last_weight[labels][:, None, :] - last_weight[None, :, :]  # (B, C, h): w_y − w_j
    if input_mask is not None:
        rows = rows * input_mask[:, None, :]
    distances = vector_norm(rows, dual_norm(norm))
    if weight_error is None or not bool((weight_error > 0).any()):
        return distances
    spread = weight_error[labels][:, None, :] + weight_error[None, :, :]  # e_y + e_j ≥ 0
    if input_mask is not None:
        spread = spread * input_mask[:, None, :]
    return distances + vector_norm(spread.to(distances.dtype), dual_norm(norm))


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
    if w.numel() == 0:
        return 0.0
    if norm == "2":
        return float(torch.linalg.matrix_norm(w, ord=2))
    return float(w.abs().sum(dim=abs_sum_axis(norm)).max())


def abs_operator_norm(weight: torch.Tensor, norm: NormName) -> float:
    """``‖|W|‖_{p→p}`` in float64, no margin: equal to ``‖W‖`` for ℓ1 / ℓ∞, ``≥ ‖W‖₂`` for ℓ2.

    ``‖|W|‖_p`` bounds how entrywise errors ``|ΔW| ≤ ε|W|`` propagate (Higham, §6.2).
    """
    return operator_norm(_as_float64_matrix(weight).abs(), norm)


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
    if norm == "2":
        sigma = float(torch.linalg.svdvals(w)[0]) if w.numel() else 0.0
        return round_up(sigma * svd_inflation(*w.shape))
    length = w.shape[abs_sum_axis(norm)]
    return round_up(operator_norm(w, norm) * (1.0 + gamma(length)))


def certified_nonnegative_norm(matrix: torch.Tensor, norm: NormName) -> float:
    """A float ``≥ ‖E‖_{p→p}`` for a matrix ``E ≥ 0`` entrywise, without an SVD.

    ℓ1 / ℓ∞ as :func:`certified_operator_norm`; ℓ2 by Schur's test ``‖E‖₂ ≤ √(‖E‖₁ ‖E‖_∞)``.
    Used for entrywise rounding-error bounds, whose norms need only be upper bounds.
    """
    e = _as_float64_matrix(matrix)
    if bool((e < 0).any()):
        raise ValueError("certified_nonnegative_norm needs a non-negative matrix")
    if norm != "2":
        return _certified_operator_norm(e, norm)
    product = round_up(_certified_operator_norm(e, "1") * _certified_operator_norm(e, "inf"))
    return round_up(math.sqrt(product))


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


def round_up(value: float) -> float:
    """The next float64 above ``value``: ``≥`` any real that rounded to ``value``."""
    return math.nextafter(value, math.inf)


def product_rounded_up(values: Iterable[float]) -> float:
    """``∏ values`` (non-negative) computed so that the float result is ``≥`` the exact product."""
    result = 1.0
    for value in values:
        result = round_up(result * float(value))
    return result
