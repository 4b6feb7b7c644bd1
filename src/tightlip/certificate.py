"""The one certificate type every bound in tightlip returns.

A :class:`Certificate` is built with keyword arguments only. Its ``side`` says what it bounds:
an ``upper`` bound is never below the true Lipschitz constant, a ``lower`` bound never above
it, an ``exact`` value is both. ``seconds`` is filled in by the runner
(:func:`tightlip.bounds.upper_bound` / :func:`~tightlip.bounds.lower_bound`), not by a method.

Serialisation policy (:meth:`Certificate.to_dict`): ``details`` values that are JSON (numbers,
strings, booleans, ``None``, lists/tuples and string-keyed dicts of those) are written inline,
numpy scalars as Python numbers. A tensor or array that *is* a ``details`` value (e.g. a
witness with many coordinates) is not inlined: it is returned by :meth:`Certificate.tensors`
and *recorded* in the JSON under ``"tensors"`` (shape and dtype), and :meth:`Certificate.save`
writes it to a safetensors file beside the JSON (:meth:`Certificate.load` reads both back);
arrays nested inside lists or dicts are inlined as lists. Any other value raises ``TypeError`` naming its key: nothing is dropped
silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tightlip.norms import NormName, parse_norm

Side = Literal["upper", "lower", "exact"]
SIDES: tuple[Side, ...] = ("upper", "lower", "exact")


@dataclass(frozen=True)
class LayerBound:
    """One factor of a per-layer breakdown, e.g. ``‖W_2‖₂ = 1.73`` or ``Lip(SinCos) = 1``."""

    name: str
    kind: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "value": self.value}


@dataclass(frozen=True, kw_only=True)
class Certificate:
    """A bound on the Lipschitz constant of a network in ``‖·‖_p → ‖·‖_p``.

    ``side`` says which side it bounds: an ``upper`` bound must never be below the true
    constant, a ``lower`` bound never above it; ``exact`` is both (``details`` then holds the
    solver's gap when it stopped early). ``sound`` is ``True`` only when the value is
    guaranteed in floating point, rounding included (a solver's unverified answer is not).
    ``seconds`` is the wall time, stamped by the runner (0 when a method is called directly).
    """

    value: float
    method: str
    norm: NormName
    side: Side
    sound: bool
    seconds: float = 0.0
    layers: tuple[LayerBound, ...] = ()
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.value):
            raise ValueError(f"{self.method}: bound is NaN")
        if self.side not in SIDES:
            raise ValueError(f"{self.method}: side must be one of {SIDES}, got {self.side!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "notes", tuple(self.notes))

    # --- serialisation -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor- and array-valued ``details`` (e.g. a large witness), as CPU tensors."""
        return {key: _as_tensor(value) for key, value in self.details.items() if _is_array(value)}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; tensors are recorded under ``"tensors"`` (module docstring)."""
        details = {
            key: _jsonable(value, f"details[{key!r}]")
            for key, value in self.details.items()
            if not _is_array(value)
        }
        data: dict[str, Any] = {
            "value": self.value,
            "method": self.method,
            "norm": self.norm,
            "side": self.side,
            "seconds": self.seconds,
            "sound": self.sound,
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
            "details": details,
        }
        tensors = self.tensors()
        if tensors:
            data["tensors"] = {
                key: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                for key, t in tensors.items()
            }
        return data

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None
    ) -> Certificate:
        """Inverse of :meth:`to_dict`; reads the old key ``kind``. The tensors recorded under
        ``"tensors"`` are not in ``data``: pass them (as read from the safetensors file written
        by :meth:`save`) to put them back into ``details``."""
        side = data["side"] if "side" in data else data["kind"]
        return cls(
            value=float(data["value"]),
            method=str(data["method"]),
            norm=parse_norm(data["norm"]),
            side=side,
            sound=bool(data["sound"]),
            seconds=float(data.get("seconds", 0.0)),
            layers=tuple(
                LayerBound(str(x["name"]), str(x["kind"]), float(x["value"]))
                for x in data.get("layers", ())
            ),
            notes=tuple(data.get("notes", ())),
            details={**data.get("details", {}), **(tensors or {})},
        )

    @classmethod
    def load(cls, path: str | Path) -> Certificate:
        """Read a certificate written by :meth:`save` (the JSON file), with its tensors."""
        from safetensors.torch import load_file

        path = Path(path)
        data = json.loads(path.read_text())
        tensors = None
        if data.get("tensor_file"):
            tensors = load_file(str(path.parent / data["tensor_file"]))
        return cls.from_dict(data, tensors)

    def save(self, directory: str | Path, name: str = "certificate") -> Path:
        """Write ``name.json`` and, when there are tensors, ``name.safetensors``; returns the JSON."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        tensors = self.tensors()
        if tensors:
            tensor_file = directory / f"{name}.safetensors"
            save_file({k: t.contiguous() for k, t in tensors.items()}, str(tensor_file))
            data["tensor_file"] = tensor_file.name
        path = directory / f"{name}.json"
        path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
        return path


def tightness(upper: Certificate | float, lower: Certificate | float) -> float:
    """``upper / lower`` (≥ 1 for a sound pair; ``inf`` when the lower bound is 0)."""
    u = upper.value if isinstance(upper, Certificate) else float(upper)
    l = lower.value if isinstance(lower, Certificate) else float(lower)
    return math.inf if l <= 0 else u / l


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor | np.ndarray) and value.ndim > 0


def _as_tensor(value: torch.Tensor | np.ndarray) -> torch.Tensor:
    tensor = (
        torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
    )
    return tensor.detach().cpu()


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON data (numpy / 0-d tensor scalars to numbers), or ``TypeError``."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, torch.Tensor | np.ndarray):  # 0-d, or nested in a list / dict
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"certificate {where} has a non-string key {k!r}")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    raise TypeError(
        f"certificate {where} holds a {type(value).__name__}, which is not JSON; store "
        "numbers, strings, lists, dicts or tensors (tensors go to Certificate.tensors())"
    )
