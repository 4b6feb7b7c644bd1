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
        for name, value, least in (
            ("pgd steps", self.pgd_steps, 0),
            ("pgd restarts", self.pgd_restarts, 1),
            ("lower starts", self.lower_starts, 1),
            ("lower seconds", self.lower_seconds, 0),
            ("attack limit", self.attack_limit if self.attack_limit is not None else 0, 0),
        ):
            if value < least:
                raise BadArgumentError(f"{name} must be ≥ {least}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
