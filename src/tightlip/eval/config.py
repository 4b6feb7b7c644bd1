"""``EvalConfig``: how a trained model is measured (built-in defaults of every command)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tightlip.errors import BadArgumentError


@dataclass
class EvalConfig:
    """Radii (default: per norm, :data:`tightlip.eval.certify.DEFAULT_RADII`), the PGD attack
    that cross-checks every certificate, and the lower-bound search's budget."""

    radii: tuple[float, ...] | None = None
    pgd_steps: int = 50
    pgd_restarts: int = 2
    attack_limit: int | None = 1000
    lower_starts: int = 256
    lower_seconds: float = 60.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.radii is not None:
            self.radii = tuple(float(r) for r in self.radii)
            if not self.radii or any(r <= 0 for r in self.radii):
                raise BadArgumentError(f"radii must be positive numbers, got {self.radii}")
        if self.pgd_steps < 0 or self.lower_starts < 1 or self.lower_seconds < 0:
            raise BadArgumentError("pgd steps, lower starts and lower seconds must be ≥ 0")
        if self.attack_limit is not None and self.attack_limit < 0:
            raise BadArgumentError(f"attack limit must be ≥ 0, got {self.attack_limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
