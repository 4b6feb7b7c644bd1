"""The options of the gradient search, in one frozen dataclass.

``lower_bound(model, norm, "gradient", steps=..., ...)`` takes these as keyword arguments; see
:class:`GradientOptions` for what each does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tightlip.errors import BadArgumentError

#: (start, end) schedules of the relative smoothing of PL activations, assigned to the starts in
#: turn (measured: large networks do best from hot starts, small ones from cooler ones)
DEFAULT_TEMPERATURES = ((3.0, 0.01), (1.0, 0.003), (0.3, 0.003))
#: seconds a search may take unless told otherwise (``time_limit=None``: no limit)
DEFAULT_TIME_LIMIT = 30.0


@dataclass(frozen=True)
class GradientOptions:
    """How hard the gradient search works (every field is a keyword of ``lower_bound``).

    * starts: ``num_random`` random starts drawn from a screened pool of ``screen`` random
      points (default: as many as are cheap); at most ``max_starts`` data points are kept;
    * ascent: ``steps`` of joint ascent with Adam at learning rate ``lr × scale`` (cosine
      decayed 100-fold), the exact maximiser ``v`` refreshed every ``refresh_every`` steps,
      PL activations smoothed along the ``temperatures`` schedules;
    * refinement: ``refine_steps`` (default ``steps // 3``) from perturbed copies of the
      ``refine_top`` best points, then ``search_rounds`` of local search;
    * ``sign_search``: the first-layer sign search (ℓ1 / ℓ∞, Abs first layer) from the best
      points, the starts and ``sign_points`` random points;
    * ``seed`` fixes every random draw; ``time_limit`` (seconds, default
      :data:`DEFAULT_TIME_LIMIT`; ``None`` for none) stops the phases early, the final float64
      evaluation and the certification of its witness always run.
    """

    num_random: int = 64
    steps: int = 300
    lr: float = 0.2
    seed: int = 0
    time_limit: float | None = DEFAULT_TIME_LIMIT
    max_starts: int = 32
    screen: int | None = None
    refine_steps: int | None = None
    refine_top: int = 8
    search_rounds: int = 10
    temperatures: tuple[tuple[float, float], ...] = DEFAULT_TEMPERATURES
    refresh_every: int = 10
    sign_points: int = 2048
    sign_search: bool = True

    def __post_init__(self) -> None:
        counts = ("num_random", "steps", "max_starts", "refine_top", "search_rounds", "sign_points")
        for name in counts:
            if getattr(self, name) < 0:
                raise BadArgumentError(f"gradient: {name} must be ≥ 0, got {getattr(self, name)}")
        if self.refresh_every < 1:
            raise BadArgumentError(f"gradient: refresh_every must be ≥ 1, got {self.refresh_every}")
        if self.time_limit is not None and not self.time_limit >= 0:
            raise BadArgumentError(f"gradient: time_limit must be ≥ 0, got {self.time_limit}")

    @property
    def refinement_steps(self) -> int:
        return self.steps // 3 if self.refine_steps is None else self.refine_steps

    def with_overrides(self, overrides: dict[str, Any]) -> GradientOptions:
        """A copy with ``overrides`` applied; an unknown name raises listing the valid ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise BadArgumentError(
                f"gradient: unknown option(s) {', '.join(unknown)}; choose from "
                + ", ".join(sorted(known))
            )
        return replace(self, **overrides)
