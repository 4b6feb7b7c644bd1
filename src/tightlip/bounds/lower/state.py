"""What the phases of the gradient search share: a :class:`SearchState` and the best witnesses.

One :class:`SearchState` per search holds the clock and its time budget, the random generator
(every phase draws from it in a fixed order, so a seed reproduces the search exactly) and the
number of points whose true ``‖J(x)‖`` was evaluated. :class:`Best` keeps, per starting point,
the best witness ``(x, v, ‖J(x) v‖)`` of the *true* network found so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

#: fraction of the time limit kept for the final float64 evaluation
RESERVE_FRACTION = 0.05


@dataclass
class SearchState:
    """Clock, time budget, random generator and evaluation count of one search."""

    generator: torch.Generator
    time_limit: float | None = None
    start: float = field(default_factory=time.perf_counter)
    evaluations: int = 0

    @classmethod
    def seeded(cls, seed: int, time_limit: float | None = None) -> SearchState:
        return cls(torch.Generator().manual_seed(seed), time_limit)

    @property
    def reserve(self) -> float:
        """Seconds kept back for the final evaluation."""
        return RESERVE_FRACTION * self.time_limit if self.time_limit is not None else 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time(self, keep_reserve: bool = True) -> bool:
        """Whether the budget (less the reserve, unless ``keep_reserve`` is off) is spent."""
        if self.time_limit is None:
            return False
        reserve = self.reserve if keep_reserve else 0.0
        return self.elapsed() >= self.time_limit - reserve

    def count(self, points: int) -> None:
        """Record that the true ``‖J(x)‖`` was evaluated at ``points`` points."""
        self.evaluations += int(points)


class Best:
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

    def replace(
        self, index: int, x: torch.Tensor, v: torch.Tensor, value: float | torch.Tensor
    ) -> None:
        """Put the witness ``(x, v, value)`` in row ``index``."""
        self.x[index] = x.to(self.x.dtype)
        self.v[index] = v.to(self.v.dtype)
        self.value[index] = value

    def top(self, k: int) -> torch.Tensor:
        return torch.argsort(self.value, descending=True)[:k]
