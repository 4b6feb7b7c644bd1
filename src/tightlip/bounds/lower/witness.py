"""Witnesses as reported: secant pairs, and witness points in a certificate's details.

Besides ``‖J(x) v‖``, each pair ``x ≠ y`` gives the secant lower bound
``‖f(x) − f(y)‖_p / ‖x − y‖_p ≤ Lip_p(f)`` (the definition of the constant); the best points
are tried with ``y ∈ {0, x ± h v}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tightlip.bounds.lower.network import SearchNetwork, row_rms
from tightlip.norms import NormName, vector_norm

#: witnesses with at most this many coordinates are stored in ``details["witness"]``
WITNESS_LIST_LIMIT = 1024


def secant_witnesses(
    net64: SearchNetwork, x: torch.Tensor, v: torch.Tensor, norm: NormName
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Secant ratios ``‖f(x) − f(y)‖_p / ‖x − y‖_p`` for ``y ∈ {0, x ± h v}``; returns the pairs."""
    rms = row_rms(x).clamp_min(1e-12)
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


def witness_details(x: torch.Tensor, prefix: str = "witness") -> dict[str, Any]:
    flat = x.reshape(-1)
    if flat.numel() > WITNESS_LIST_LIMIT:
        return {f"{prefix}_tensor": flat.clone()}
    return {prefix: [float(t) for t in flat]}
