"""The one certificate type every bound in tightlip returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tightlip.norms import NormName

BoundKind = Literal["upper", "lower", "exact"]


@dataclass(frozen=True)
class LayerBound:
    """One factor of a per-layer breakdown, e.g. ``‖W_2‖₂ = 1.73`` or ``Lip(SinCos) = 1``."""

    name: str
    kind: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "value": self.value}


@dataclass(frozen=True)
class Certificate:
    """A bound on the Lipschitz constant of a network in ``‖·‖_p → ‖·‖_p``.

    ``kind`` says which side it bounds: an ``upper`` bound must never be below the true
    constant, a ``lower`` bound never above it; ``exact`` is both (``details`` then holds the
    solver's gap when it stopped early). ``sound`` is ``True`` only when the value is
    guaranteed in floating point, rounding included (a solver's unverified answer is not).
    """

    value: float
    method: str
    norm: NormName
    kind: BoundKind
    seconds: float
    sound: bool
    layers: tuple[LayerBound, ...] = ()
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.value):
            raise ValueError(f"{self.method}: bound is NaN")

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "method": self.method,
            "norm": self.norm,
            "kind": self.kind,
            "seconds": self.seconds,
            "sound": self.sound,
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
            "details": {k: v for k, v in self.details.items() if _is_jsonable(v)},
        }


def tightness(upper: Certificate | float, lower: Certificate | float) -> float:
    """``upper / lower`` (≥ 1 for a sound pair; ``inf`` when the lower bound is 0)."""
    u = upper.value if isinstance(upper, Certificate) else float(upper)
    l = lower.value if isinstance(lower, Certificate) else float(lower)
    return math.inf if l <= 0 else u / l


def _is_jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | tuple | dict | type(None))
