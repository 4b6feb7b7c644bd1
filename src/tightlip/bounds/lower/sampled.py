"""The ``sampled`` lower bound: ``max_b ‖J(x_b)‖`` over given or random points, no search,
certified by the best witness around the best points."""

from __future__ import annotations

from typing import Any

import torch

from tightlip.bounds.lower.jacobians import jacobian_operator_norm
from tightlip.bounds.lower.rounding import reported
from tightlip.bounds.lower.witness import best_certified_witness
from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.errors import BadArgumentError
from tightlip.model import LayerChain
from tightlip.norms import NormName, parse_norm

#: the points with the largest ``‖J‖`` (autograd) that are certified as witnesses
CERTIFIED_CANDIDATES = 8


@register_lower("sampled", dense_error="included")
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
    are used. The :data:`CERTIFIED_CANDIDATES` points with the largest ``‖J‖`` are certified as
    interior points or by secants around them (:mod:`~tightlip.bounds.lower.witness`): at a
    kink autograd's value is not a lower bound, and the certified one is reported.
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
        raise BadArgumentError("sampled lower bound needs at least one point")
    values, directions = [], []
    for start in range(0, x.shape[0], batch_size):
        value, direction = jacobian_operator_norm(
            chain, x[start : start + batch_size], norm, seed=seed, return_directions=True
        )
        values.append(value)
        directions.append(direction)
    all_values = torch.nan_to_num(torch.cat(values), nan=0.0)
    order = torch.argsort(all_values, descending=True)[:CERTIFIED_CANDIDATES]
    choice = best_certified_witness(chain, x[order], torch.cat(directions)[order], norm)
    winner = int(order[choice.best.row])
    details: dict[str, Any] = {
        "evaluations": int(x.shape[0]),
        "jacobian_value": float(all_values.max()),
        "interior_value": choice.interior_value,
        "secant_value": choice.secant_value,
        "witness_index": winner,
        "mean_value": float(all_values.mean()),
        **choice.best.details(),
    }
    return Certificate(
        value=reported(choice.best.value),
        method="sampled",
        norm=norm,
        side="lower",
        sound=True,
        notes=(f"max of ‖J(x)‖ over {x.shape[0]} given points, certified by a witness",),
        details=details,
    )
