"""The ``sampled`` lower bound: ``max_b ‖J(x_b)‖`` over given or random points, no search."""

from __future__ import annotations

from typing import Any

import torch

from tightlip.bounds.lower.jacobians import jacobian_operator_norm
from tightlip.bounds.lower.rounding import deflate, rounding_margin
from tightlip.bounds.lower.witness import witness_details
from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.errors import BadArgumentError
from tightlip.model import LayerChain
from tightlip.norms import NormName, parse_norm


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
        raise BadArgumentError("sampled lower bound needs at least one point")
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
    details.update(witness_details(x[winner]))
    return Certificate(
        value=deflate(float(all_values[winner]), rounding_margin(chain, norm)),
        method="sampled",
        norm=norm,
        side="lower",
        sound=True,
        notes=(f"max of ‖J(x)‖ over {x.shape[0]} given points",),
        details=details,
    )
