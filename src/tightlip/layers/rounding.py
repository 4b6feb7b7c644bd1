"""How an activation layer rounds in a binary floating-point format: its float rounding model.

Each activation answers for itself through ``rounding_model(centre, norm)`` (the activation
counterpart of :meth:`tightlip.operators.Dense.float_rounding` for linear maps); the float32
certificate (:mod:`tightlip.eval.float32`, whose docstring derives every bound) composes them
and never asks which activation it holds. A model bounds ``‖fl(σ(v)) − σ(v)‖_p`` for every
computed pre-activation ``v`` within a radius (in ℓp) of the centres it was built for:

* :func:`exact_rounding` — comparisons, sign changes and copies (ReLU, Abs, CReLU, sorting,
  max pooling): ``μ m^{1/p}``, only the underflow of reading ``m`` outputs;
* :func:`bounded_function_rounding` — ``sin``/``cos``/``tanh`` with values in ``[−1, 1]``:
  ``A m^{1/p}``, ``A`` the format's accuracy of those functions;
* :class:`SinPairRounding` — ``(z ± fl(sin z))/2``: ``(½(A + u(1 + A)) + μ) m^{1/p} +
  ½ u 2^{1/p} (‖c‖_p + R)``;
* :class:`ThresholdRounding` — ``min(relu z, fl(θ))``: ``u ‖θ‖_p + 2 μ m^{1/p}``.

Every bound is a float64 upper bound, inflated by :func:`rounded_up_bound` against its own
rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from tightlip.norms import NormName, round_up, vector_norm

#: relative inflation of a float64 upper bound against its own rounding (float32 module docs)
INFLATION = 1.0 + 2.0**-30
#: absolute inflation against underflow
ABSOLUTE_SLACK = 2.0**-1000


class FloatFormat(Protocol):
    """What a rounding model reads of a format (:class:`tightlip.eval.float32.Precision`)."""

    #: ``u``: ``fl(a ∘ b) = (a ∘ b)(1 + δ)``, ``|δ| ≤ u``, barring underflow
    unit_roundoff: float
    #: ``μ``: the absolute error an operation or an operand read may add near underflow
    underflow: float
    #: ``A``: ``|fl(φ(z)) − φ(z)| ≤ A`` for ``φ`` in sin, cos, tanh
    bounded_function_error: float


class RoundingModel(Protocol):
    """The rounding error of one activation layer, at the centres it was built for."""

    def local_error(self, precision: FloatFormat, radius: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bounds on ``‖fl(σ(v)) − σ(v)‖_p`` for every computed input ``v`` within
        ``radius`` (in ℓp) of the centre."""
        ...


def rounded_up_bound(t: torch.Tensor) -> torch.Tensor:
    """Inflate a float64 upper bound against its own rounding (NaN, from ``0 · inf``, → inf)."""
    return torch.nan_to_num(t * INFLATION + ABSOLUTE_SLACK, nan=math.inf, posinf=math.inf)


def ones_norm(m: int, norm: NormName) -> float:
    """``m^{1/p} ≥ ‖1_m‖_p`` (rounded up)."""
    return {"1": float(m), "2": round_up(math.sqrt(m)), "inf": 1.0}[norm]


@dataclass(frozen=True)
class PerEntryRounding:
    """Each of ``outputs`` entries is off by at most ``error(precision)``."""

    outputs: int
    norm: NormName
    error: Callable[[FloatFormat], float]

    def local_error(self, precision: FloatFormat, radius: torch.Tensor) -> torch.Tensor:
        value = round_up(self.error(precision) * ones_norm(self.outputs, self.norm))
        return torch.full_like(radius, value)


@dataclass(frozen=True)
class SinPairRounding:
    """``(z ± fl(sin z))/2``: ``½(A + u(|ẑ_i| + 1 + A)) + μ`` per entry (module docstring)."""

    centre_norm: torch.Tensor  # (B,) ‖c‖_p of the pre-activations
    outputs: int
    norm: NormName

    @classmethod
    def around(cls, centre: torch.Tensor, outputs: int, norm: NormName) -> SinPairRounding:
        return cls(rounded_up_bound(vector_norm(centre, norm)), outputs, norm)

    def local_error(self, precision: FloatFormat, radius: torch.Tensor) -> torch.Tensor:
        a, u, mu = precision.bounded_function_error, precision.unit_roundoff, precision.underflow
        constant = (0.5 * (a + u * (1.0 + a)) + mu) * ones_norm(self.outputs, self.norm)
        slope = 0.5 * u * ones_norm(2, self.norm)  # ‖(|v|, |v|)‖_p = 2^{1/p} ‖v‖_p
        return rounded_up_bound(constant + slope * (self.centre_norm + radius))


@dataclass(frozen=True)
class ThresholdRounding:
    """``min(relu z, fl(θ))``: off by at most ``uθ_i + 2μ`` per entry."""

    threshold_norm: float  # ‖θ‖_p
    outputs: int
    norm: NormName

    @classmethod
    def of(cls, theta: torch.Tensor, outputs: int, norm: NormName) -> ThresholdRounding:
        """For thresholds ``θ`` (one per entry, float64)."""
        return cls(float(rounded_up_bound(vector_norm(theta, norm))), outputs, norm)

    def local_error(self, precision: FloatFormat, radius: torch.Tensor) -> torch.Tensor:
        value = precision.unit_roundoff * self.threshold_norm
        value += 2.0 * precision.underflow * ones_norm(self.outputs, self.norm)
        return torch.full_like(radius, value * INFLATION)


def exact_rounding(outputs: int, norm: NormName) -> PerEntryRounding:
    """An activation computed exactly (comparisons, sign changes, copies): underflow only."""
    return PerEntryRounding(outputs, norm, lambda precision: precision.underflow)


def bounded_function_rounding(outputs: int, norm: NormName) -> PerEntryRounding:
    """``sin``, ``cos`` or ``tanh`` entrywise: each output off by at most ``A``."""
    return PerEntryRounding(outputs, norm, lambda precision: precision.bounded_function_error)
