"""Lower bounds on the Lipschitz constant from witnesses: ``‖J_f(x) v‖_p`` and secants.

Why any witness is a lower bound
--------------------------------
Let ``f: Rⁿ → Rᵐ`` be Lipschitz with constant ``L = Lip_p(f)`` in ``‖·‖_p → ‖·‖_p``. Where ``f``
is differentiable, ``J(x) v = lim_{h→0} (f(x + h v) − f(x)) / h``, hence

    ‖J(x) v‖_p ≤ L ‖v‖_p    for every x and v,    so    ‖J(x)‖_{p→p} ≤ L,

and for every pair ``x ≠ y`` the secant ratio ``‖f(x) − f(y)‖_p / ‖x − y‖_p ≤ L`` by definition.
Each evaluated pair ``(x, v)`` or ``(x, y)`` is a *witness*; the search below maximises over
witnesses and reports the best one. Nothing about the search has to be right for the value to
be valid: only the final evaluation, which is done in float64 (see *Rounding*).

For a piecewise-linear (PL) network the Jacobian at a point where an activation sits exactly on
a kink is whatever autograd returns; with the tightlip activations that is the Jacobian of an
adjacent linear piece (``relu'(0) = 0``, ``|·|'(0) = 0`` and ties of ``sort`` broken by index)
or a convex combination of them, whose norm is at most the largest norm of the adjacent pieces,
so it is still ``≤ L``.

Operator norms of a Jacobian (exact)
------------------------------------
* ``p = 2``: ``σ_max(J)``; we take the top right singular vector ``v`` of the full Jacobian (or a
  power-iteration vector when both dimensions are large) and report ``‖J v‖₂`` for that unit
  ``v``: an exact evaluation of a witness, never above ``σ_max``.
* ``p = 1``: ``max_j Σ_i |J_ij|``, attained at ``v = e_j``;
* ``p = ∞``: ``max_i Σ_j |J_ij|``, attained at ``v = sign(J_i,:)``.

The search: joint ascent over ``(x, v)``
----------------------------------------
We maximise ``ψ(x, v) = ‖J(x) v‖_p`` over ``x ∈ Rⁿ`` and ``‖v‖_p = 1``:

* in ``v``, one step of the Hölder power method (Boyd 1974; Higham, *Accuracy and Stability*,
  Alg. 15.1): with ``y = J v`` and ``g = Jᵀ ∂‖y‖_p/∂y``, set ``v ← argmax_{‖w‖_p ≤ 1} gᵀ w``,
  i.e. ``g/‖g‖₂`` (p = 2), ``sign(g_j) e_j`` with ``j = argmax |g_j|`` (p = 1), ``sign(g)``
  (p = ∞). For fixed ``x`` this never decreases ``ψ``; for p = 2 it is the power iteration on
  ``JᵀJ``, which follows the top singular direction as ``x`` moves;
* in ``x``, Adam on ``log ψ``. By the envelope theorem ``∇_x ψ = ∇_x ‖J(x) v‖`` at the optimal
  ``v``, i.e. ``uᵀ (∂J/∂x) v`` for the top singular pair when p = 2: the step moves ``x`` where
  the top singular value of ``J(x)`` grows. ``J(x) v`` is one forward-mode product (``jvp``)
  and its gradient one reverse pass through it, about six network passes per step, instead
  of ``m`` reverse passes for the full Jacobian;
* every few steps (and at the end) the full Jacobian is formed when ``min(m, n)`` is small
  (``m`` reverse or ``n`` forward products) and ``v`` is reset to the exact maximiser.

Piecewise-linear networks have a piecewise-*constant* Jacobian, so ``∇_x ψ = 0`` almost
everywhere. For them the ascent runs on the surrogate network in which every PL activation
``σ`` is replaced by ``z ↦ c · σ̃₁(z / c)`` with ``σ̃₁ = act.smoothed(1)`` (softplus for ReLU,
``√(z² + 1)`` for ``|z|``) and ``c = τ · rms(z)`` for each row: for the positively homogeneous
PL activations this is σ smoothed at the absolute temperature ``c``, i.e. relative to the scale
of the signal. ``τ`` is annealed geometrically towards 0, with several schedules side by side
(hot starts work best on wide networks, cooler ones on small networks). The surrogate only
steers: every value that is kept is an evaluation of the *true* network.

Starts, refinement, and the end game
------------------------------------
Starting points are the given data points and random points (Gaussian at several scales and
uniform in ``[0, 1]ⁿ``); when evaluating a point is cheap (small networks), a pool of up to
16384 random points is screened by the exact ``‖J(x)‖`` first, which alone finds the best region
of tiny networks. Bias-free PL networks are positively homogeneous, ``J(c x) = J(x)`` for
``c > 0``, so their iterates are kept on a sphere. After the ascent the best points are refined
by a second, re-annealed ascent from perturbed copies, then by a local search (random and
``±v``-directed moves, keeping improvements of the exact ``‖J(x)‖``), which is what crosses
region boundaries of PL networks at the end. Secant witnesses ``(x, 0)`` and ``(x, x ± h v)``
are evaluated for the best points as well.

Rounding
--------
The reported value is ``‖Ĵ v‖_p`` computed in float64. The computed product of matrices and
activation Jacobians differs from the exact one by at most ``γ_N · ∏_i ‖|W_i|‖_p ∏_j Lip_p(σ_j)``
to first order (Higham, Thm 3.5 and §3.5, ``γ_N = N u / (1 − N u)``, ``N`` the total length
of the inner products, ``‖|W|‖₂ ≤ ‖W‖_F``); we subtract that, and in addition deflate by the
relative factor ``1 − 2⁻³⁰``, which covers the evaluation of activation derivatives at
pre-activations that are themselves rounded (errors of order ``N u`` relative for networks of
moderate weight norms). The witness ``x`` is stored, so the value can be re-checked
independently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from itertools import product
from typing import Any

import torch
from torch.func import jvp, vjp, vmap

from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.layers import Abs, Activation
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import UNIT_ROUNDOFF_F64, NormName, p_value, parse_norm, vector_norm

RowFunction = Callable[[torch.Tensor], torch.Tensor]

#: relative deflation of every reported value (see the module docstring, *Rounding*)
RELATIVE_SLACK = 2.0**-30
#: form the full Jacobian when ``min(m, n)`` is at most this (else power iteration for p = 2)
FULL_JACOBIAN_LIMIT = 512
#: the refinement re-anneals from this fraction of each start temperature
REFINE_REHEAT = 0.3
#: witnesses with at most this many coordinates are stored in ``details["witness"]``
WITNESS_LIST_LIMIT = 1024
#: a budget for batched full Jacobians: rows × min(m, n) × widest layer, in elements
_JACOBIAN_ELEMENTS = 2**22


# --------------------------------------------------------------------------------------------
# The network as a row-wise function (optionally with smoothed piecewise-linear activations)
# --------------------------------------------------------------------------------------------


class _Network:
    """A :class:`LayerChain` evaluated row-wise in one dtype, with an optional PL surrogate."""

    def __init__(self, chain: LayerChain, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.steps: list[tuple[torch.Tensor, torch.Tensor | None] | Activation] = []
        widest = chain.input_dim
        width = chain.input_dim
        for step in chain.steps:
            if isinstance(step, AffineStep):
                bias = None if step.bias is None else step.bias.to(dtype)
                self.steps.append((step.weight.to(dtype).T.contiguous(), bias))
                width = step.out_features
            else:
                self.steps.append(step.activation)
                width = step.activation.out_features(width)
            widest = max(widest, width)
        self.widest = widest
        self.input_dim = chain.input_dim
        self.output_dim = chain.output_dim
        self.piecewise_linear = any(s.activation.piecewise_linear for s in chain.activation_steps)
        # bias-free networks of positively homogeneous PL activations: J(c x) = J(x), c > 0
        self.homogeneous = chain.piecewise_linear and not chain.has_bias

    def __call__(
        self, x: torch.Tensor, temperature: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """The network on a batch; with ``temperature`` (a float or one per row, shape
        ``(B, 1)``) every PL activation is replaced by its smoothed surrogate."""
        h = x
        for step in self.steps:
            if isinstance(step, tuple):
                weight_t, bias = step
                h = h @ weight_t
                if bias is not None:
                    h = h + bias
            elif temperature is None or not step.piecewise_linear:
                h = step(h)
            else:
                h = _smoothed_activation(step, h, temperature)
        return h

    def function(self, temperature: float | torch.Tensor | None = None) -> RowFunction:
        return lambda x: self(x, temperature)

    def tail(self, start: int) -> RowFunction:
        """The true network from step ``start`` on (``steps[start:]``), row-wise."""

        def apply(h: torch.Tensor) -> torch.Tensor:
            for step in self.steps[start:]:
                if isinstance(step, tuple):
                    h = h @ step[0] if step[1] is None else h @ step[0] + step[1]
                else:
                    h = step(h)
            return h

        return apply


def _smoothed_activation(
    act: Activation, z: torch.Tensor, temperature: float | torch.Tensor
) -> torch.Tensor:
    """``c · σ̃₁(z / c)`` with ``c = τ · rms(z)`` per row (``rms`` detached).

    For a positively homogeneous σ this is σ smoothed at the absolute temperature ``c``:
    ``c · softplus(z / c) = softplus_{β = 1/c}(z)`` and ``c √((z/c)² + 1) = √(z² + c²)``. Writing it
    this way lets every row have its own temperature.
    """
    rms = z.detach().pow(2).mean(dim=-1, keepdim=True).sqrt()
    scale = (rms * temperature).clamp_min(1e-30)
    return scale * act.smoothed(1.0)(z / scale)


# --------------------------------------------------------------------------------------------
# Jacobians and their operator norms
# --------------------------------------------------------------------------------------------


def _jacobian_vector(fn: RowFunction, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Row-wise ``J(x_b) v_b`` by one forward-mode product (the network acts row by row)."""
    return jvp(fn, (x,), (v,))[1]


def full_jacobian(
    fn: RowFunction, x: torch.Tensor, output_dim: int | None = None, widest: int | None = None
) -> torch.Tensor:
    """The Jacobians ``J(x_b)`` of a row-wise function, shape ``(B, m, n)``.

    Uses ``m`` reverse products (``vmap`` over ``vjp``) when ``m ≤ n``, else ``n`` forward
    products, in batch chunks that keep memory bounded.
    """
    batch, n = x.shape
    m = output_dim if output_dim is not None else fn(x[:1]).shape[-1]
    small = min(m, n)
    chunk = max(1, _JACOBIAN_ELEMENTS // max(1, small * max(widest or n, n, m)))
    pieces = []
    for start in range(0, batch, chunk):
        xs = x[start : start + chunk]
        rows = xs.shape[0]
        if m <= n:
            _, pullback = vjp(fn, xs)
            basis = torch.eye(m, dtype=x.dtype).unsqueeze(1).expand(m, rows, m)
            (jac,) = vmap(pullback)(basis)  # (m, rows, n)
            pieces.append(jac.permute(1, 0, 2))
        else:
            basis = torch.eye(n, dtype=x.dtype).unsqueeze(1).expand(n, rows, n)
            cols = vmap(lambda t, xs=xs: jvp(fn, (xs,), (t,))[1])(basis)  # (n, rows, m)
            pieces.append(cols.permute(1, 2, 0))
    return torch.cat(pieces, dim=0)


def matrix_norm_witness(jac: torch.Tensor, norm: NormName) -> tuple[torch.Tensor, torch.Tensor]:
    """``(‖J_b v_b‖_p, v_b)`` with ``‖v_b‖_p = 1`` the maximiser, for a batch ``(B, m, n)``.

    p = 2: ``v`` the top right singular vector; p = 1: ``e_j`` for the largest column
    abs-sum; p = ∞: ``sign`` of the row with the largest abs-sum. The value is recomputed as
    ``‖J v‖_p`` so that it is an evaluation of an explicit witness.
    """
    batch, _, n = jac.shape
    if norm == "2":
        # top eigenvector of the smaller Gram matrix (much faster than a batched SVD of a
        # wide matrix; v only has to be good, the value is re-evaluated as ‖J v‖ below)
        if jac.shape[1] <= n:
            _, vectors = torch.linalg.eigh(jac @ jac.transpose(1, 2))
            v = torch.einsum("bmn,bm->bn", jac, vectors[:, :, -1])
        else:
            _, vectors = torch.linalg.eigh(jac.transpose(1, 2) @ jac)
            v = vectors[:, :, -1]
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-300)
    elif norm == "1":
        column = jac.abs().sum(dim=1).argmax(dim=-1)
        v = torch.zeros(batch, n, dtype=jac.dtype)
        v[torch.arange(batch), column] = 1.0
    else:
        row = jac.abs().sum(dim=2).argmax(dim=-1)
        v = _sign(jac[torch.arange(batch), row, :])
    values = vector_norm(torch.einsum("bmn,bn->bm", jac, v), norm)
    return values, v


def _sign(g: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = 1`` (a vector of ±1, unit in ℓ∞)."""
    return torch.where(g >= 0, torch.ones_like(g), -torch.ones_like(g))


def _dual_direction(g: torch.Tensor, norm: NormName) -> torch.Tensor:
    """``argmax_{‖w‖_p ≤ 1} gᵀ w`` row-wise: the Hölder power-method update of ``v``."""
    if norm == "2":
        return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(1e-30)
    if norm == "1":
        index = g.abs().argmax(dim=-1)
        v = torch.zeros_like(g)
        rows = torch.arange(g.shape[0])
        v[rows, index] = _sign(g[rows, index])
        return v
    return _sign(g)


def _random_direction(
    batch: int, n: int, norm: NormName, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    g = torch.randn(batch, n, generator=generator, dtype=torch.float64).to(dtype)
    return _dual_direction(g, norm)


def jacobian_operator_norm(
    chain_or_fn: LayerChain | RowFunction,
    x: torch.Tensor,
    norm: NormName | str = "2",
    *,
    iterations: int = 200,
    seed: int = 0,
    return_directions: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``‖J_f(x_b)‖_{p→p}`` for each row of ``x`` (shape ``(B, n)``), in float64.

    ``chain_or_fn`` is a :class:`LayerChain` or a function that maps a batch ``(B, n)`` to
    ``(B, m)`` row by row (row ``b`` of the output depends on row ``b`` of the input only).

    p = 1 and p = ∞ are exact (full Jacobian, max column / row abs-sum). For p = 2 the full
    Jacobian and its SVD are used when ``min(m, n) ≤ FULL_JACOBIAN_LIMIT``; otherwise power
    iteration on ``JᵀJ`` (``iterations`` steps of one ``jvp`` and one ``vjp``). Either way the
    returned value is ``‖J v‖₂`` for an explicit unit vector ``v``: never above the true norm
    beyond rounding. With ``return_directions`` the maximising ``v`` (one per row) is returned.
    """
    norm = parse_norm(norm)
    widest = None
    if isinstance(chain_or_fn, LayerChain):
        network = _Network(chain_or_fn, torch.float64)
        fn, widest = network.function(), network.widest
        x = chain_or_fn.check_input(x)
    else:
        fn = chain_or_fn
    x = x.detach().to(torch.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a batch of shape (B, n), got {tuple(x.shape)}")
    with torch.no_grad():
        m = fn(x[:1]).shape[-1]
    n = x.shape[1]
    if norm != "2" or min(m, n) <= FULL_JACOBIAN_LIMIT:
        with torch.no_grad():
            values, v = matrix_norm_witness(full_jacobian(fn, x, m, widest), norm)
    else:
        values, v = _power_iteration(fn, x, iterations, seed)
    return (values, v) if return_directions else values


def _power_iteration(
    fn: RowFunction, x: torch.Tensor, iterations: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise power iteration on ``J(x)ᵀ J(x)``; returns ``(‖J v‖₂, v)`` for the last ``v``."""
    generator = torch.Generator().manual_seed(seed)
    v = _random_direction(x.shape[0], x.shape[1], "2", generator, x.dtype)
    previous = torch.zeros(x.shape[0], dtype=x.dtype)
    with torch.no_grad():
        for _ in range(iterations):
            y = _jacobian_vector(fn, x, v)
            value = torch.linalg.vector_norm(y, dim=-1)
            u = y / value.clamp_min(1e-300).unsqueeze(-1)
            _, pullback = vjp(fn, x)
            (g,) = pullback(u)
            v = _dual_direction(g, "2")
            if torch.all((value - previous).abs() <= 1e-13 * value):
                break
            previous = value
        values = torch.linalg.vector_norm(_jacobian_vector(fn, x, v), dim=-1)
    return values, v


# --------------------------------------------------------------------------------------------
# Rounding margin for reported values
# --------------------------------------------------------------------------------------------


def _rounding_margin(chain: LayerChain, norm: NormName) -> float:
    """``γ_N · ∏‖|W_i|‖_p · ∏ Lip_p(σ_j)``: first-order forward error of ``‖Ĵ v‖`` (``‖v‖ = 1``)."""
    length = sum(step.in_features for step in chain.affine_steps) + 4 * chain.depth
    gamma = length * UNIT_ROUNDOFF_F64 / (1.0 - length * UNIT_ROUNDOFF_F64)
    product = 1.0
    for step in chain.affine_steps:
        w = step.weight.abs()
        if norm == "1":
            product *= float(w.sum(dim=0).max())
        elif norm == "inf":
            product *= float(w.sum(dim=1).max())
        else:
            product *= float(torch.linalg.matrix_norm(w, ord=2))  # ‖|W|‖₂ ≤ ‖W‖_F, still valid
    for step in chain.activation_steps:
        product *= step.activation.lipschitz(norm)
    return 2.0 * gamma * product


def _deflate(value: float, margin: float) -> float:
    return max(0.0, value * (1.0 - RELATIVE_SLACK) - margin)


# --------------------------------------------------------------------------------------------
# Helpers for the search
# --------------------------------------------------------------------------------------------


def _exact_norms(
    net: _Network, x: torch.Tensor, norm: NormName
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(‖J(x)‖_p, v)`` row-wise from the full Jacobian, or ``None`` when that is too costly."""
    if min(net.input_dim, net.output_dim) > FULL_JACOBIAN_LIMIT and norm == "2":
        return None
    with torch.no_grad():
        jac = full_jacobian(net.function(), x, net.output_dim, net.widest)
        return matrix_norm_witness(jac, norm)


def _row_rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=-1, keepdim=True).sqrt()


def _to_sphere(x: torch.Tensor) -> torch.Tensor:
    """Rescale each row to RMS 1 (for positively homogeneous networks, ``J(c x) = J(x)``)."""
    return x / _row_rms(x).clamp_min(1e-30)


class _Best:
    """Per-row best witness ``(x, v, value)`` found so far (values of the *true* network)."""

    def __init__(self, x: torch.Tensor, v: torch.Tensor) -> None:
        self.x = x.detach().clone()
        self.v = v.detach().clone()
        self.value = torch.full((x.shape[0],), -1.0, dtype=x.dtype)

    def update(self, x: torch.Tensor, v: torch.Tensor, value: torch.Tensor) -> None:
        value = torch.nan_to_num(value.detach(), nan=-1.0)
        better = value > self.value
        if better.any():
            self.value = torch.where(better, value, self.value)
            self.x[better] = x.detach()[better]
            self.v[better] = v.detach()[better]

    def top(self, k: int) -> torch.Tensor:
        return torch.argsort(self.value, descending=True)[:k]


class _Clock:
    def __init__(self, time_limit: float | None) -> None:
        self.start = time.perf_counter()
        self.limit = time_limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out(self, reserve: float = 0.0) -> bool:
        return self.limit is not None and self.elapsed() >= self.limit - reserve


def _ascend(
    net: _Network,
    x0: torch.Tensor,
    v0: torch.Tensor,
    norm: NormName,
    *,
    steps: int,
    lr: float,
    lr_final: float,
    schedules: torch.Tensor,
    refresh_every: int,
    best: _Best,
    clock: _Clock,
    reserve: float,
    counter: list[int],
) -> None:
    """Joint ascent on ``ψ(x, v) = ‖J̃(x) v‖_p`` (Adam in ``x``, power steps in ``v``)."""
    x = x0.detach().clone().requires_grad_(True)
    v = v0.detach().clone()
    optimizer = torch.optim.Adam([x], lr=lr)
    pl = net.piecewise_linear
    t0, t1 = schedules[:, :1], schedules[:, 1:]  # per-row (start, end) temperatures
    for step in range(steps):
        if clock.out(reserve):
            break
        frac = step / max(1, steps - 1)
        temperature = t0 * (t1 / t0) ** frac if pl else None
        for group in optimizer.param_groups:
            group["lr"] = lr_final + 0.5 * (lr - lr_final) * (1.0 + math.cos(math.pi * frac))
        if step % refresh_every == 0:
            # exact maximiser v of the true Jacobian (the power steps keep it up to date in
            # between; for PL networks the surrogate's v tends to it as τ → 0)
            exact = _exact_norms(net, x.detach(), norm)
            if exact is not None:
                v = exact[1]
                best.update(x, v, exact[0])
                counter[0] += x.shape[0]
        v_var = v.clone().requires_grad_(True)
        y = _jacobian_vector(net.function(temperature), x, v_var)
        value = vector_norm(y, norm)
        loss = -torch.log(value.clamp_min(1e-30)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not pl:  # the objective is the true network's ψ(x, v): a witness value for free
            best.update(x, v, value.detach())
            counter[0] += x.shape[0]
        if v_var.grad is not None:
            v = _dual_direction(torch.nan_to_num(v_var.grad), norm)
        if x.grad is not None:
            x.grad = torch.nan_to_num(x.grad)
        optimizer.step()
        if net.homogeneous:
            with torch.no_grad():
                x.copy_(_to_sphere(x))
    exact = _exact_norms(net, x.detach(), norm)
    if exact is not None:
        best.update(x, exact[1], exact[0])
        counter[0] += x.shape[0]
    elif pl:
        with torch.no_grad():
            best.update(x, v, vector_norm(_jacobian_vector(net.function(), x.detach(), v), norm))


def _local_search(
    net: _Network,
    best: _Best,
    norm: NormName,
    *,
    rounds: int,
    top: int,
    candidates: int,
    generator: torch.Generator,
    clock: _Clock,
    reserve: float,
    counter: list[int],
) -> None:
    """Random and ``±v``-directed moves around the best points, kept when ``‖J(x)‖`` grows."""
    indices = best.top(top)
    n = net.input_dim
    for _ in range(rounds):
        if clock.out(reserve):
            break
        x = best.x[indices]
        v = best.v[indices]
        rms = _row_rms(x).clamp_min(1e-12)
        k = x.shape[0]
        scales = 10.0 ** (-3.0 + 3.5 * torch.rand(k, candidates, 1, generator=generator))
        scales = scales.to(x.dtype)
        noise = torch.randn(k, candidates, n, generator=generator, dtype=torch.float64).to(x.dtype)
        along_v = torch.zeros(k, candidates, 1, dtype=torch.bool)
        along_v[:, : candidates // 4] = True
        direction_v = (v / _row_rms(v).clamp_min(1e-30)).unsqueeze(1).expand(k, candidates, n)
        signs = torch.where(torch.arange(candidates) % 2 == 0, 1.0, -1.0).to(x.dtype)
        direction = torch.where(along_v, signs.view(1, -1, 1) * direction_v, noise)
        trial = x.unsqueeze(1) + scales * rms.unsqueeze(1) * direction
        trial = trial.reshape(k * candidates, n)
        if net.homogeneous:
            trial = _to_sphere(trial)
        exact = _exact_norms(net, trial, norm)
        if exact is None:
            trial_v = v.repeat_interleave(candidates, dim=0)
            with torch.no_grad():
                values = vector_norm(_jacobian_vector(net.function(), trial, trial_v), norm)
        else:
            values, trial_v = exact
        counter[0] += trial.shape[0]
        values = torch.nan_to_num(values, nan=-1.0).reshape(k, candidates)
        winner = values.argmax(dim=1)
        rows = torch.arange(k)
        gain = values[rows, winner] > best.value[indices]
        if gain.any():
            chosen = rows * candidates + winner
            index = indices[gain]
            best.value[index] = values[rows, winner][gain]
            best.x[index] = trial[chosen][gain]
            best.v[index] = trial_v[chosen][gain]


def _screen_size(net: _Network, num_random: int, screen: int | None) -> int:
    """How many random points to screen: cheap networks get many (up to 16384)."""
    if screen is not None:
        return max(int(screen), num_random)
    params = sum(step[0].numel() for step in net.steps if isinstance(step, tuple))
    per_point = params * (min(net.input_dim, net.output_dim) + 1)
    return int(min(16384, max(num_random, 4e8 // max(1, per_point))))


def _first_layer_sign_search(
    net: _Network, chain: LayerChain, x: torch.Tensor, norm: NormName, iterations: int = 30
) -> torch.Tensor | None:
    """New candidate witnesses that re-choose the signs of the first layer (ℓ1 / ℓ∞, Abs).

    For ``f(x) = g(|W₁ x|)`` without biases and with ``W₁`` (h × n) of full row rank ``h ≤ n``,
    every sign pattern ``s ∈ {±1}^h`` is realised *without changing* ``a = |W₁ x|``:
    ``x' = x + W₁⁺ (s ⊙ a − W₁ x)`` has ``W₁ x' = s ⊙ a``. Then ``J(x') = M diag(s) W₁`` with
    ``M = J_g(a)`` fixed, and the first-layer signs can be optimised exactly or by the Hölder
    alternation (Boyd 1974), neither of which gradient ascent on ``x`` does (``J`` is piecewise
    constant):

    * ℓ∞: for each output row i, ``max_{s, t ∈ {±1}} Σ_l M_il s_l (W₁ t)_l``, alternating
      ``t = sign(W₁ᵀ (M_i ⊙ s))`` and ``s = sign(M_i ⊙ W₁ t)`` from the current signs (never
      decreasing);
    * ℓ1: for each input column j, ``max_s ‖M (s ⊙ W₁e_j)‖₁ = max_{u ∈ {±1}^m} |Mᵀu|ᵀ |W₁e_j|``,
      exact by enumerating u when ``m ≤ 12`` (else the same alternation).

    Returns one candidate per row of ``x`` (its best row / column), or ``None`` when the network
    is not of this form. The candidates are only proposals: the caller evaluates the true
    ``‖J(x')‖`` (``W₁ W₁⁺ = I`` holds up to rounding, which may flip a tiny pre-activation).
    """
    if norm not in ("1", "inf") or chain.has_bias or len(chain.steps) < 3:
        return None
    first, activation = chain.steps[0], chain.steps[1]
    if not isinstance(first, AffineStep) or not isinstance(activation.activation, Abs):
        return None
    w1 = first.weight.to(torch.float64)
    h, n = w1.shape
    if h > n or torch.linalg.matrix_rank(w1) < h:
        return None
    x = x.to(torch.float64)
    pre = x @ w1.T
    a = pre.abs()
    signs = _sign(pre)
    tail = net.tail(2)
    with torch.no_grad():
        outer = full_jacobian(tail, a, net.output_dim, net.widest)  # (B, m, h): M = J_g(a)
    batch, m, _ = outer.shape
    if norm == "inf":
        s = signs.unsqueeze(1).expand(batch, m, h).clone()  # one sign vector per output row
        for _ in range(iterations):
            t = _sign(torch.einsum("bml,ln->bmn", outer * s, w1))
            s_new = _sign(outer * (t @ w1.T))
            if torch.equal(s_new, s):
                break
            s = s_new
        values = torch.einsum("bml,ln->bmn", outer * s, w1).abs().sum(-1)  # (B, m)
        chosen = s[torch.arange(batch), values.argmax(-1)]
    else:
        if m <= 12:
            u = torch.tensor(list(product((-1.0, 1.0), repeat=m)), dtype=torch.float64)
            mu = torch.einsum("um,bml->bul", u, outer)  # (B, U, h)
            values = mu.abs() @ w1.abs()  # (B, U, n)
            flat = values.flatten(1).argmax(-1)
            best_u, best_j = flat // n, flat % n
            rows = torch.arange(batch)
            chosen = _sign(mu[rows, best_u] * w1[:, best_j].T)
        else:
            column = w1.T.unsqueeze(0)  # (1, n, h)
            s = signs.unsqueeze(1).expand(batch, n, h).clone()
            for _ in range(iterations):
                u = _sign(torch.einsum("bml,bnl->bnm", outer, s * column))
                s_new = _sign(column * torch.einsum("bml,bnm->bnl", outer, u))
                if torch.equal(s_new, s):
                    break
                s = s_new
            values = torch.einsum("bml,bnl->bnm", outer, s * column).abs().sum(-1)  # (B, n)
            chosen = s[torch.arange(batch), values.argmax(-1)]
    shift = torch.linalg.lstsq(w1, (chosen * a - pre).T).solution.T  # min-norm W₁⁺ (…)
    return x + shift


def _sign_search_phase(
    net64: _Network,
    chain: LayerChain,
    best: _Best,
    x0: torch.Tensor,
    norm: NormName,
    extra: int,
    generator: torch.Generator,
    clock: _Clock,
    reserve: float,
    counter: list[int],
    chunk: int = 64,
) -> float | None:
    """Run :func:`_first_layer_sign_search` from the best points, the starts and ``extra``
    Gaussian points, in chunks while time is left; every proposal is evaluated on the true
    network and may replace the best witness of its chunk. Returns the best value found."""
    top = best.top(min(16, best.x.shape[0]))
    pool = torch.cat(
        [
            best.x[top].to(torch.float64),
            x0.to(torch.float64),
            torch.randn(extra, chain.input_dim, generator=generator, dtype=torch.float64),
        ]
    )
    if norm == "1" and net64.output_dim <= 12:  # the enumeration holds (B, 2^m, n) values
        chunk = max(
            1, min(chunk, _JACOBIAN_ELEMENTS * 4 // (2**net64.output_dim * chain.input_dim))
        )
    found = None
    for start in range(0, pool.shape[0], chunk):
        if clock.out(reserve):
            break
        proposals = _first_layer_sign_search(net64, chain, pool[start : start + chunk], norm)
        if proposals is None:
            return None
        exact = _exact_norms(net64, proposals, norm)
        if exact is None:
            return None
        counter[0] += proposals.shape[0]
        k = int(torch.nan_to_num(exact[0], nan=-1.0).argmax())
        value = float(exact[0][k])
        found = value if found is None else max(found, value)
        weakest = int(best.value.argmin())
        if value > float(best.value[weakest]):
            best.x[weakest] = proposals[k].to(best.x.dtype)
            best.v[weakest] = exact[1][k].to(best.v.dtype)
            best.value[weakest] = value
    return found


def _prepare_starts(
    chain: LayerChain,
    net: _Network,
    norm: NormName,
    starts: torch.Tensor | None,
    num_random: int,
    max_starts: int,
    screen: int | None,
    generator: torch.Generator,
    counter: list[int],
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Starting points: data points and random points, screened by their exact ``‖J‖``.

    Data: up to ``8 · max_starts`` of them are evaluated and the best ``max_starts`` kept.
    Random: a pool (half Gaussian at the data's scale times a factor in ``[1/8, 8]``, or in
    ``[1/8, 2¹²]`` for a quarter of them when the network has biases, half
    uniform in ``[0, 1]ⁿ``) of :func:`_screen_size` points is evaluated, and the best
    ``num_random / 2`` plus ``num_random / 2`` others drawn at random are kept.
    """
    n = chain.input_dim
    info: dict[str, Any] = {"screen_budget": _screen_size(net, num_random, screen)}
    pieces = []
    scale = 1.0

    def ranked(pool: torch.Tensor) -> torch.Tensor | None:
        exact = _exact_norms(net, pool.to(net.dtype), norm)
        if exact is None:
            return None
        counter[0] += pool.shape[0]
        return torch.argsort(torch.nan_to_num(exact[0], nan=-1.0), descending=True)

    if starts is not None and starts.numel():
        data = chain.check_input(
            starts.detach().to("cpu", torch.float64).reshape(starts.shape[0], -1)
        )
        data = data[torch.isfinite(data).all(dim=1)]
        if data.shape[0]:
            scale = float(_row_rms(data).median().clamp_min(1e-6))
            if data.shape[0] > max_starts:
                pool = data[torch.randperm(data.shape[0], generator=generator)[: 8 * max_starts]]
                order = ranked(pool)
                data = pool[:max_starts] if order is None else pool[order[:max_starts]]
                info["data_screened"] = int(pool.shape[0])
            pieces.append(data)
            info["data_starts"] = int(data.shape[0])
    if num_random > 0:
        size = info["screen_budget"]
        gaussian = size - size // 2
        exponent = 6.0 * torch.rand(gaussian, 1, generator=generator, dtype=torch.float64) - 3.0
        if chain.has_bias:
            # far away the biases no longer matter: the regions of f(R x)/R, R → ∞, are those
            # of the bias-free network, and unbounded regions may only show up there
            far = torch.arange(gaussian) % 4 == 3
            exponent[far] = (
                15.0 * torch.rand(int(far.sum()), 1, generator=generator, dtype=torch.float64) - 3.0
            )
        spread = 2.0**exponent
        pool = torch.cat(
            [
                scale * spread * torch.randn(gaussian, n, generator=generator, dtype=torch.float64),
                torch.rand(size // 2, n, generator=generator, dtype=torch.float64),
            ]
        )
        if net.homogeneous:
            pool = _to_sphere(pool)
        if size > num_random:
            order = ranked(pool)
            if order is None:
                order = torch.randperm(size, generator=generator)
            top = num_random - num_random // 2
            rest = order[top:][torch.randperm(size - top, generator=generator)[: num_random - top]]
            pool = pool[torch.cat([order[:top], rest])]
        pieces.append(pool)
        info["random_screened"] = size
    if not pieces:
        raise ValueError("no starting points: give starts or num_random > 0")
    x0 = torch.cat(pieces, dim=0)
    x0 = torch.where(torch.isfinite(x0), x0, torch.zeros_like(x0))
    if net.homogeneous:
        zero = _row_rms(x0).squeeze(-1) == 0
        x0[zero] = torch.randn(int(zero.sum()), n, generator=generator, dtype=torch.float64)
        x0 = _to_sphere(x0)
        scale = 1.0
    info["random_starts"] = num_random
    return x0.to(net.dtype), scale, info


def _secant_witnesses(
    net64: _Network, x: torch.Tensor, v: torch.Tensor, norm: NormName
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Secant ratios ``‖f(x) − f(y)‖_p / ‖x − y‖_p`` for ``y ∈ {0, x ± h v}``; returns the pairs."""
    rms = _row_rms(x).clamp_min(1e-12)
    unit_v = v / vector_norm(v, "2").clamp_min(1e-30).unsqueeze(-1)
    n = x.shape[1]
    others = [torch.zeros_like(x)]
    for h in (1e-1, 1e-2, 1e-3):
        for sign in (1.0, -1.0):
            others.append(x + sign * h * math.sqrt(n) * rms * unit_v)
    y = torch.cat(others, dim=0)
    xs = x.repeat(len(others), 1)
    with torch.no_grad():
        ratio = vector_norm(net64(xs) - net64(y), norm) / vector_norm(xs - y, norm)
    ratio = torch.where(vector_norm(xs - y, norm) > 0, ratio, torch.zeros_like(ratio))
    return torch.nan_to_num(ratio, nan=0.0), xs, y


def _witness_details(x: torch.Tensor, prefix: str = "witness") -> dict[str, Any]:
    flat = x.reshape(-1)
    if flat.numel() > WITNESS_LIST_LIMIT:
        return {f"{prefix}_tensor": flat.clone()}
    return {prefix: [float(t) for t in flat]}


# --------------------------------------------------------------------------------------------
# The registered methods
# --------------------------------------------------------------------------------------------


@register_lower("gradient")
def gradient_lower_bound(
    chain: LayerChain,
    norm: NormName | str = "2",
    *,
    starts: torch.Tensor | None = None,
    num_random: int = 64,
    steps: int = 300,
    lr: float = 0.2,
    seed: int = 0,
    time_limit: float | None = None,
    max_starts: int = 32,
    screen: int | None = None,
    refine_steps: int | None = None,
    refine_top: int = 8,
    search_rounds: int = 10,
    temperatures: tuple[tuple[float, float], ...] = ((3.0, 0.01), (1.0, 0.003), (0.3, 0.003)),
    refresh_every: int = 10,
    sign_points: int = 2048,
    sign_search: bool = True,
) -> Certificate:
    """Maximise ``‖J(x)‖_{p→p}`` over ``x`` by multi-start ascent; the best witness is a lower bound.

    ``starts``: data points (``(B, n)`` or images) to start from, screened by their ``‖J‖``
    when there are more than ``max_starts``; ``num_random`` further starts drawn from a
    screened pool of ``screen`` random points (default: as many as are cheap, see
    :func:`_prepare_starts`).
    ``steps`` of joint ascent (see the module docstring) with Adam at learning rate
    ``lr × scale`` (cosine-decayed 100-fold), then ``refine_steps`` (default ``steps // 3``)
    from perturbed copies of the ``refine_top`` best points, then ``search_rounds`` of local
    search. ``temperatures``: (start, end) schedules of the relative smoothing of PL
    activations, assigned to the starts in turn (measured: large networks do best from hot
    starts, small ones from cooler ones, so several are run side by side).
    For ℓ1 / ℓ∞ networks with an Abs first layer, the first-layer signs of the best points,
    the starts and ``sign_points`` random points are then optimised exactly or by alternation
    (:func:`_first_layer_sign_search`) unless ``sign_search`` is off.
    ``time_limit`` (seconds) stops the phases early; the final float64 evaluation always runs.
    """
    norm = parse_norm(norm)
    clock = _Clock(time_limit)
    generator = torch.Generator().manual_seed(seed)
    net = _Network(chain, torch.float32)
    net64 = _Network(chain, torch.float64)
    counter = [0]
    x0, scale, info = _prepare_starts(
        chain, net, norm, starts, num_random, max_starts, screen, generator, counter
    )
    batch, n = x0.shape
    reserve = 0.05 * time_limit if time_limit is not None else 0.0

    v0 = _random_direction(batch, n, norm, generator, net.dtype)
    best = _Best(x0, v0)
    initial = _exact_norms(net, x0, norm)
    if initial is None:  # p = 2 with both dimensions large: a few power steps instead
        initial = _power_iteration(net.function(), x0, 5, seed)
    best.update(x0, initial[1], initial[0])
    v0 = initial[1]
    counter[0] += batch
    sampled_value = float(best.value.max())
    schedules = torch.tensor(temperatures, dtype=net.dtype).reshape(-1, 2)
    schedules = schedules[torch.arange(batch) % schedules.shape[0]]

    _ascend(
        net,
        x0,
        v0,
        norm,
        steps=steps,
        lr=lr * scale,
        lr_final=0.01 * lr * scale,
        schedules=schedules,
        refresh_every=refresh_every,
        best=best,
        clock=clock,
        reserve=reserve,
        counter=counter,
    )
    ascent_value = float(best.value.max())

    refine_steps = steps // 3 if refine_steps is None else refine_steps
    top = best.top(min(refine_top, batch))
    if refine_steps > 0 and not clock.out(reserve):
        copies = 4
        x_top = best.x[top].repeat_interleave(copies, dim=0)
        v_top = best.v[top].repeat_interleave(copies, dim=0)
        noise_levels = torch.tensor([0.0, 0.003, 0.01, 0.03], dtype=x_top.dtype).repeat(len(top))
        noise = torch.randn(x_top.shape, generator=generator, dtype=torch.float64).to(x_top.dtype)
        x_ref = x_top + noise_levels.unsqueeze(-1) * _row_rms(x_top) * noise
        if net.homogeneous:
            x_ref = _to_sphere(x_ref)
        refine_best = _Best(x_ref, v_top)
        _ascend(
            net,
            x_ref,
            v_top,
            norm,
            steps=refine_steps,
            lr=0.1 * lr * scale,
            lr_final=0.001 * lr * scale,
            schedules=schedules[top].repeat_interleave(copies, dim=0)
            * torch.tensor([[REFINE_REHEAT, 1.0]], dtype=net.dtype),
            refresh_every=refresh_every,
            best=refine_best,
            clock=clock,
            reserve=reserve,
            counter=counter,
        )
        # merge: each refined copy may replace the point it came from
        for j, index in enumerate(top.tolist()):
            group = slice(j * copies, (j + 1) * copies)
            k = int(refine_best.value[group].argmax()) + j * copies
            if refine_best.value[k] > best.value[index]:
                best.value[index] = refine_best.value[k]
                best.x[index] = refine_best.x[k]
                best.v[index] = refine_best.v[k]
    refine_value = float(best.value.max())

    if search_rounds > 0:
        _local_search(
            net,
            best,
            norm,
            rounds=search_rounds,
            top=min(refine_top, batch),
            candidates=max(8, min(512, info["screen_budget"] // (4 * min(refine_top, batch)))),
            generator=generator,
            clock=clock,
            reserve=reserve,
            counter=counter,
        )

    # first-layer sign patterns (ℓ1 / ℓ∞ Abs networks; see _first_layer_sign_search): from
    # the best points and, to vary a = |W₁x| and hence the deeper patterns, from the starts
    # and further random points
    sign_value = None
    if sign_search:
        sign_value = _sign_search_phase(
            net64, chain, best, x0, norm, sign_points, generator, clock, reserve, counter
        )

    # final, float64 evaluation of the best few points
    final_top = best.top(min(2 * refine_top, batch))
    x_final = best.x[final_top].to(torch.float64)
    exact = _exact_norms(net64, x_final, norm)
    if exact is None:
        values, v_final = _power_iteration(net64.function(), x_final, 200, seed)
        seeded = best.v[final_top].to(torch.float64)
        with torch.no_grad():
            seeded_values = vector_norm(_jacobian_vector(net64.function(), x_final, seeded), norm)
        use_seeded = seeded_values > values
        values = torch.where(use_seeded, seeded_values, values)
        v_final = torch.where(use_seeded.unsqueeze(-1), seeded, v_final)
    else:
        values, v_final = exact
    counter[0] += x_final.shape[0]
    values = torch.nan_to_num(values, nan=0.0)
    winner = int(values.argmax())
    jacobian_value = float(values[winner])

    secants, xs, ys = _secant_witnesses(net64, x_final, v_final, norm)
    secant_index = int(secants.argmax())
    secant_value = float(secants[secant_index])

    margin = _rounding_margin(chain, norm)
    details: dict[str, Any] = {
        "evaluations": counter[0],
        "starts": batch,
        "sampled_value": sampled_value,
        "ascent_value": ascent_value,
        "refine_value": refine_value,
        "sign_search_value": sign_value,
        "jacobian_value": jacobian_value,
        "secant_value": secant_value,
        "piecewise_linear": net.piecewise_linear,
        "rounding_margin": margin,
        "search_seconds": clock.elapsed(),
        **info,
    }
    if time_limit is not None:
        details["time_limited"] = clock.out()
    if secant_value > jacobian_value * (1.0 + 4.0 * RELATIVE_SLACK):
        # the secant bound needs f evaluated at two points; its forward error scales with them
        x_norm = float(vector_norm(xs[secant_index], norm) + vector_norm(ys[secant_index], norm))
        gap = float(vector_norm(xs[secant_index] - ys[secant_index], norm))
        value = _deflate(secant_value, margin * (1.0 + x_norm / max(gap, 1e-300)))
        details["witness_kind"] = "secant"
        details.update(_witness_details(xs[secant_index]))
        details.update(_witness_details(ys[secant_index], "witness_pair"))
    else:
        value = _deflate(jacobian_value, margin)
        details["witness_kind"] = "jacobian"
        details.update(_witness_details(x_final[winner]))
    return Certificate(
        value=value,
        method="gradient",
        norm=norm,
        side="lower",
        sound=True,
        notes=(
            f"max of ‖J(x)‖_{p_value(norm):g} over {counter[0]} evaluated points "
            "(float64 at the witness)",
        ),
        details=details,
    )


@register_lower("sampled")
def sampled_lower_bound(
    chain: LayerChain,
    norm: NormName | str = "2",
    *,
    points: torch.Tensor | None = None,
    starts: torch.Tensor | None = None,
    num_random: int = 64,
    seed: int = 0,
    batch_size: int = 256,
) -> Certificate:
    """``max_b ‖J(x_b)‖_{p→p}`` over the given points (``points`` or ``starts``), no ascent.

    Without points, ``num_random`` random points (half Gaussian, half uniform in ``[0, 1]ⁿ``)
    are used. Values are computed in float64 and deflated as in the module docstring.
    """
    norm = parse_norm(norm)
    data = points if points is not None else starts
    generator = torch.Generator().manual_seed(seed)
    if data is None:
        n = chain.input_dim
        half = num_random // 2
        data = torch.cat(
            [
                torch.randn(num_random - half, n, generator=generator, dtype=torch.float64),
                torch.rand(half, n, generator=generator, dtype=torch.float64),
            ]
        )
    x = chain.check_input(data.detach().to("cpu", torch.float64).reshape(data.shape[0], -1))
    if x.shape[0] == 0:
        raise ValueError("sampled lower bound needs at least one point")
    values = []
    for start in range(0, x.shape[0], batch_size):
        values.append(jacobian_operator_norm(chain, x[start : start + batch_size], norm, seed=seed))
    all_values = torch.nan_to_num(torch.cat(values), nan=0.0)
    winner = int(all_values.argmax())
    details: dict[str, Any] = {
        "evaluations": int(x.shape[0]),
        "jacobian_value": float(all_values[winner]),
        "witness_index": winner,
        "mean_value": float(all_values.mean()),
    }
    details.update(_witness_details(x[winner]))
    return Certificate(
        value=_deflate(float(all_values[winner]), _rounding_margin(chain, norm)),
        method="sampled",
        norm=norm,
        side="lower",
        sound=True,
        notes=(f"max of ‖J(x)‖ over {x.shape[0]} given points",),
        details=details,
    )
