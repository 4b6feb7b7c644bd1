"""The search: joint ascent over ``(x, v)``, its refinement, and a local search.

We maximise ``ψ(x, v) = ‖J(x) v‖_p`` over ``x ∈ Rⁿ`` and ``‖v‖_p = 1``:

* in ``v``, one step of the Hölder power method (Boyd 1974; Higham, *Accuracy and Stability
  of Numerical Algorithms*, Alg. 15.1): with ``y = J v`` and ``g = Jᵀ ∂‖y‖_p/∂y``, set
  ``v ← argmax_{‖w‖_p ≤ 1} gᵀ w``. For fixed ``x`` this never decreases ``ψ``; for p = 2 it is
  the power iteration on ``JᵀJ``, which follows the top singular direction as ``x`` moves;
* in ``x``, Adam on ``log ψ``. By the envelope theorem ``∇_x ψ = ∇_x ‖J(x) v‖`` at the optimal
  ``v``, i.e. ``uᵀ (∂J/∂x) v`` for the top singular pair when p = 2: the step moves ``x`` where
  the top singular value of ``J(x)`` grows. ``J(x) v`` is one forward-mode product (``jvp``)
  and its gradient one reverse pass through it, about six network passes per step, instead
  of ``m`` reverse passes for the full Jacobian;
* every few steps (and at the end) the full Jacobian is formed when ``min(m, n)`` is small
  and ``v`` is reset to the exact maximiser.

Piecewise-linear networks have a piecewise-*constant* Jacobian, so ``∇_x ψ = 0`` almost
everywhere. For them the ascent runs on the surrogate network in which every PL activation is
replaced by its smooth surrogate (softplus for ReLU, ``√(z² + c²)`` for ``|z|``) at a
temperature ``c = τ · rms(z)`` relative to the scale of the signal. ``τ`` is annealed
geometrically towards 0, with several schedules side by side (hot starts work best on wide
networks, cooler ones on small networks). The surrogate only steers: every value that is kept
is an evaluation of the *true* network.

After the ascent the best points are refined by a second, re-annealed ascent from perturbed
copies (:func:`refine`), then by a local search (random and ``±v``-directed moves, keeping
improvements of the exact ``‖J(x)‖``), which is what crosses region boundaries of PL networks
at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from tightlip.bounds.lower.jacobians import dual_direction, exact_norms, jacobian_vector
from tightlip.bounds.lower.network import SearchNetwork, row_rms, to_sphere
from tightlip.bounds.lower.state import Best, SearchState
from tightlip.norms import NormName, vector_norm

#: the refinement re-anneals from this fraction of each start temperature
REFINE_REHEAT = 0.3
#: perturbed copies of each refined point, and their relative noise levels
REFINE_NOISE = (0.0, 0.003, 0.01, 0.03)


@dataclass(frozen=True)
class Schedule:
    """One ascent: ``steps`` of Adam at a learning rate cosine-decayed from ``lr`` to
    ``lr_final``, each row's temperature annealed geometrically from ``temperatures[:, 0]`` to
    ``temperatures[:, 1]`` (shape ``(B, 2)``), the exact ``v`` refreshed every
    ``refresh_every`` steps."""

    steps: int
    lr: float
    lr_final: float
    temperatures: torch.Tensor
    refresh_every: int

    def temperature(self, frac: float) -> torch.Tensor:
        """Per-row temperature at ``frac ∈ [0, 1]`` of the ascent, shape ``(B, 1)``."""
        t0, t1 = self.temperatures[:, :1], self.temperatures[:, 1:]
        return t0 * (t1 / t0) ** frac

    def learning_rate(self, frac: float) -> float:
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1.0 + math.cos(math.pi * frac))


def ascend(
    net: SearchNetwork,
    x0: torch.Tensor,
    v0: torch.Tensor,
    norm: NormName,
    schedule: Schedule,
    best: Best,
    state: SearchState,
) -> None:
    """Joint ascent on ``ψ(x, v) = ‖J̃(x) v‖_p`` (Adam in ``x``, power steps in ``v``)."""
    x = x0.detach().clone().requires_grad_(True)
    v = v0.detach().clone()
    optimizer = torch.optim.Adam([x], lr=schedule.lr)
    pl = net.piecewise_linear
    steps = schedule.steps
    for step in range(steps):
        if state.out_of_time():
            break
        frac = step / max(1, steps - 1)
        temperature = schedule.temperature(frac) if pl else None
        for group in optimizer.param_groups:
            group["lr"] = schedule.learning_rate(frac)
        if step % schedule.refresh_every == 0:
            # exact maximiser v of the true Jacobian (the power steps keep it up to date in
            # between; for PL networks the surrogate's v tends to it as τ → 0)
            exact = exact_norms(net, x.detach(), norm)
            if exact is not None:
                v = exact[1]
                best.update(x, v, exact[0])
                state.count(x.shape[0])
        v_var = v.clone().requires_grad_(True)
        y = jacobian_vector(net.function(temperature), x, v_var)
        value = vector_norm(y, norm)
        loss = -torch.log(value.clamp_min(1e-30)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not pl:  # the objective is the true network's ψ(x, v): a witness value for free
            best.update(x, v, value.detach())
            state.count(x.shape[0])
        if v_var.grad is not None:
            v = dual_direction(torch.nan_to_num(v_var.grad), norm)
        if x.grad is not None:
            x.grad = torch.nan_to_num(x.grad)
        optimizer.step()
        if net.homogeneous:
            with torch.no_grad():
                x.copy_(to_sphere(x))
    exact = exact_norms(net, x.detach(), norm)
    if exact is not None:
        best.update(x, exact[1], exact[0])
        state.count(x.shape[0])
    elif pl:
        with torch.no_grad():
            best.update(x, v, vector_norm(jacobian_vector(net.function(), x.detach(), v), norm))


def local_search(
    net: SearchNetwork,
    best: Best,
    norm: NormName,
    state: SearchState,
    *,
    rounds: int,
    top: int,
    candidates: int,
) -> None:
    """Random and ``±v``-directed moves around the best points, kept when ``‖J(x)‖`` grows."""
    indices = best.top(top)
    n = net.input_dim
    generator = state.generator
    for _ in range(rounds):
        if state.out_of_time():
            break
        x = best.x[indices]
        v = best.v[indices]
        rms = row_rms(x).clamp_min(1e-12)
        k = x.shape[0]
        scales = 10.0 ** (-3.0 + 3.5 * torch.rand(k, candidates, 1, generator=generator))
        scales = scales.to(x.dtype)
        noise = torch.randn(k, candidates, n, generator=generator, dtype=torch.float64).to(x.dtype)
        along_v = torch.zeros(k, candidates, 1, dtype=torch.bool)
        along_v[:, : candidates // 4] = True
        direction_v = (v / row_rms(v).clamp_min(1e-30)).unsqueeze(1).expand(k, candidates, n)
        signs = torch.where(torch.arange(candidates) % 2 == 0, 1.0, -1.0).to(x.dtype)
        direction = torch.where(along_v, signs.view(1, -1, 1) * direction_v, noise)
        trial = x.unsqueeze(1) + scales * rms.unsqueeze(1) * direction
        trial = trial.reshape(k * candidates, n)
        if net.homogeneous:
            trial = to_sphere(trial)
        exact = exact_norms(net, trial, norm)
        if exact is None:
            trial_v = v.repeat_interleave(candidates, dim=0)
            with torch.no_grad():
                values = vector_norm(jacobian_vector(net.function(), trial, trial_v), norm)
        else:
            values, trial_v = exact
        state.count(trial.shape[0])
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


def refine(
    net: SearchNetwork,
    best: Best,
    norm: NormName,
    schedule: Schedule,
    top: torch.Tensor,
    state: SearchState,
) -> None:
    """Re-anneal from perturbed copies of the points ``top``; each copy may replace its point.

    ``schedule`` is the refinement's, with the temperatures of the rows ``top`` (one row
    each); every row gets ``len(REFINE_NOISE)`` copies, perturbed by those fractions of its
    RMS, whose start temperatures are re-heated to ``REFINE_REHEAT`` of the original.
    """
    copies = len(REFINE_NOISE)
    temperatures = schedule.temperatures.repeat_interleave(copies, dim=0) * torch.tensor(
        [[REFINE_REHEAT, 1.0]], dtype=schedule.temperatures.dtype
    )
    schedule = replace(schedule, temperatures=temperatures)
    x_top = best.x[top].repeat_interleave(copies, dim=0)
    v_top = best.v[top].repeat_interleave(copies, dim=0)
    noise_levels = torch.tensor(REFINE_NOISE, dtype=x_top.dtype).repeat(len(top))
    noise = torch.randn(x_top.shape, generator=state.generator, dtype=torch.float64)
    x_ref = x_top + noise_levels.unsqueeze(-1) * row_rms(x_top) * noise.to(x_top.dtype)
    if net.homogeneous:
        x_ref = to_sphere(x_ref)
    refined = Best(x_ref, v_top)
    ascend(net, x_ref, v_top, norm, schedule, refined, state)
    for j, index in enumerate(top.tolist()):
        group = slice(j * copies, (j + 1) * copies)
        k = int(refined.value[group].argmax()) + j * copies
        if refined.value[k] > best.value[index]:
            best.replace(index, refined.x[k], refined.v[k], refined.value[k])
