"""The ``gradient`` lower bound: multi-start ascent on ``‖J(x)‖``; the best witness is reported.

The phases, each in its own module, share one :class:`~tightlip.bounds.lower.state.SearchState`:

1. starts (:mod:`~tightlip.bounds.lower.starts`): data and random points, screened;
2. joint ascent over ``(x, v)``, refinement and local search
   (:mod:`~tightlip.bounds.lower.ascent`);
3. for ℓ1 / ℓ∞ networks with an ``|·|`` first layer, the first-layer sign search
   (:mod:`~tightlip.bounds.lower.sign_search`);
4. the final float64 evaluation of the best points, each certified as an interior point of a
   linear region or by secants around it (:mod:`~tightlip.bounds.lower.witness`), with its
   rounding bounded.

Only step 4 has to be right for the value to be valid; the rest only finds the witness (and the
search's own values, kept in the details as ``*_value``, are autograd's, not certified).
"""

from __future__ import annotations

from typing import Any

import torch

from tightlip.bounds.lower.ascent import Schedule, ascend, local_search, refine
from tightlip.bounds.lower.jacobians import (
    exact_norms,
    jacobian_vector,
    power_iteration,
    random_direction,
)
from tightlip.bounds.lower.network import SearchNetwork
from tightlip.bounds.lower.options import GradientOptions
from tightlip.bounds.lower.rounding import reported
from tightlip.bounds.lower.sign_search import sign_search_phase
from tightlip.bounds.lower.starts import prepare_starts
from tightlip.bounds.lower.state import Best, SearchState
from tightlip.bounds.lower.witness import CertifiedWitness, best_certified_witness
from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.model import LayerChain
from tightlip.norms import NormName, p_value, parse_norm, vector_norm


@register_lower("gradient", dense_error="included")
def gradient_lower_bound(
    chain: LayerChain,
    norm: NormName | str = "2",
    *,
    starts: torch.Tensor | None = None,
    options: GradientOptions | None = None,
    **overrides: Any,
) -> Certificate:
    """Maximise ``‖J(x)‖_{p→p}`` over ``x`` by multi-start ascent; the best witness is a lower bound.

    ``starts``: data points (``(B, n)`` or images) to start from, screened by their ``‖J‖``
    when there are more than ``max_starts``. The search effort is a :class:`GradientOptions`
    (``options``), whose fields may also be given as keywords (``steps=40``, ``time_limit=5``).
    """
    opts = (options or GradientOptions()).with_overrides(overrides)
    norm = parse_norm(norm)
    state = SearchState.seeded(opts.seed, opts.time_limit)
    net = SearchNetwork(chain, torch.float32)
    net64 = SearchNetwork(chain, torch.float64)
    x0, scale, info = prepare_starts(net, norm, starts, opts, state)
    batch, n = x0.shape

    v0 = random_direction(batch, n, norm, state.generator, net.dtype)
    best = Best(x0, v0)
    initial = exact_norms(net, x0, norm)
    if initial is None:  # p = 2 with both dimensions large: a few power steps instead
        initial = power_iteration(net.function(), x0, 5, opts.seed)
    best.update(x0, initial[1], initial[0])
    v0 = initial[1]
    state.count(batch)
    #: the best value after each phase, in order (reported in the details)
    progress: dict[str, float | None] = {"sampled_value": float(best.value.max())}
    schedules = torch.tensor(opts.temperatures, dtype=net.dtype).reshape(-1, 2)
    schedules = schedules[torch.arange(batch) % schedules.shape[0]]

    lr = opts.lr
    schedule = Schedule(opts.steps, lr * scale, 0.01 * lr * scale, schedules, opts.refresh_every)
    ascend(net, x0, v0, norm, schedule, best, state)
    progress["ascent_value"] = float(best.value.max())

    top = best.top(min(opts.refine_top, batch))
    if opts.refinement_steps > 0 and not state.out_of_time():
        refinement = Schedule(
            opts.refinement_steps,
            0.1 * lr * scale,
            0.001 * lr * scale,
            schedules[top],
            opts.refresh_every,
        )
        refine(net, best, norm, refinement, top, state)
    progress["refine_value"] = float(best.value.max())

    if opts.search_rounds > 0:
        k = min(opts.refine_top, batch)
        candidates = max(8, min(512, info["screen_budget"] // (4 * k)))
        local_search(
            net, best, norm, state, rounds=opts.search_rounds, top=k, candidates=candidates
        )

    # first-layer sign patterns (ℓ1 / ℓ∞ Abs networks): from the best points and, to vary
    # a = |W₁x| and hence the deeper patterns, from the starts and further random points
    progress["sign_search_value"] = None
    if opts.sign_search:
        progress["sign_search_value"] = sign_search_phase(
            net64, best, x0, norm, opts.sign_points, state
        )

    return _final_certificate(net64, best, norm, opts, state, progress, info)


def _final_certificate(
    net64: SearchNetwork,
    best: Best,
    norm: NormName,
    opts: GradientOptions,
    state: SearchState,
    progress: dict[str, float | None],
    starts_info: dict[str, Any],
) -> Certificate:
    """Evaluate the best points' Jacobians in float64 and certify the best witness around them
    (interior point or secants, :mod:`~tightlip.bounds.lower.witness`).

    ``progress``: the best value after each phase; ``starts_info``: the starts' bookkeeping.
    """
    batch = best.x.shape[0]
    final_top = best.top(min(2 * opts.refine_top, batch))
    x_final = best.x[final_top].to(torch.float64)
    exact = exact_norms(net64, x_final, norm)
    if exact is None:
        values, v_final = power_iteration(net64.function(), x_final, 200, opts.seed)
        seeded = best.v[final_top].to(torch.float64)
        with torch.no_grad():
            seeded_values = vector_norm(jacobian_vector(net64.function(), x_final, seeded), norm)
        use_seeded = seeded_values > values
        values = torch.where(use_seeded, seeded_values, values)
        v_final = torch.where(use_seeded.unsqueeze(-1), seeded, v_final)
    else:
        values, v_final = exact
    state.count(x_final.shape[0])
    values = torch.nan_to_num(values, nan=0.0)
    choice = best_certified_witness(net64.chain, x_final, v_final, norm)
    witness = choice.best
    details: dict[str, Any] = {
        "evaluations": state.evaluations,
        "starts": batch,
        **progress,
        "jacobian_value": float(values.max()),
        "interior_value": choice.interior_value,
        "secant_value": choice.secant_value,
        "piecewise_linear": net64.piecewise_linear,
        "search_seconds": state.elapsed(),
        **starts_info,
        **witness.details(),
    }
    if opts.time_limit is not None:
        details["time_limited"] = state.out_of_time(keep_reserve=False)
    return Certificate(
        value=reported(witness.value),
        method="gradient",
        norm=norm,
        side="lower",
        sound=True,
        notes=(
            f"max of ‖J(x)‖_{p_value(norm):g} over {state.evaluations} evaluated points, "
            f"certified by {_witness_note(witness)}",
        ),
        details=details,
    )


def _witness_note(witness: CertifiedWitness) -> str:
    if witness.kind == "interior":
        return f"an interior point (f affine on a ball of radius {witness.radius:.3g})"
    return "a secant pair evaluated in float64 with its rounding bounded"
