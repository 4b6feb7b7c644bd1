"""How an activation is written as a slope-restricted network (the input of SDP verifiers).

LipSDP (Fazlyab et al., NeurIPS 2019), ECLipsE (Xu & Sivaranjani, NeurIPS 2024) and the
Syed–Hu family reason about networks whose activations act *elementwise* with every scalar
function φ slope-restricted on ``[α, β]``:

    α ≤ (φ(a) − φ(b)) / (a − b) ≤ β   for all a ≠ b.

Many activations that are not elementwise are exactly such a layer between two linear maps.
A :class:`SlopeForm` states that identity for an activation ``σ: R^d → R^{d'}``:

    σ(z) = C φ(R z),   R = [r_1 I; r_2 I; …] (r_k = ±1),   C = [c_1 I, c_2 I, …] or C = I,

so a verifier folds ``R`` into the preceding affine step (``W ← [r_1 W; r_2 W; …]``,
``b ← [r_1 b; r_2 b; …]``) and ``C`` into the next one (``V ← [c_1 V, c_2 V, …]``), both exact.
φ acts on the ``len(rows) · d`` rows block by block (:class:`ScalarPiece`). Examples:
``CReLU(z) = relu([I; −I] z)``, ``|z| = [I, I] relu([I; −I] z)``,
``SinPair(z) = φ([I; I] z)`` with ``φ = ((z + sin z)/2, (z − sin z)/2)``.

This module holds data only; :func:`tightlip.bounds.slope.to_slope_network` applies it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ScalarFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ScalarPiece:
    """``count`` consecutive units applying one scalar function (elementwise, float64 numpy).

    ``name`` identifies the function to verifiers that encode it exactly: ``"relu"`` means
    ``φ(z) = max(z, 0)`` (the MILP encodes only those). ``function`` maps an array whose last
    axis has ``count`` entries to an array of the same shape (it may hold per-unit
    parameters, e.g. thresholds).
    """

    name: str
    count: int
    function: ScalarFunction
    piecewise_linear: bool = False


@dataclass(frozen=True)
class SlopeForm:
    """``σ(z) = C φ(R z)`` with φ elementwise and slope-restricted on ``[alpha, beta]``.

    ``rows`` are the signs ``r_k`` of ``R = [r_1 I; r_2 I; …]``; ``columns`` the signs of
    ``C = [c_1 I, c_2 I, …]`` (``None``: ``C = I``); ``pieces`` cover the ``len(rows) · d`` units
    of φ in order; ``note`` says what the rewriting is, for certificates.
    """

    rows: tuple[float, ...]
    pieces: tuple[ScalarPiece, ...]
    alpha: float
    beta: float
    columns: tuple[float, ...] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.rows or any(r not in (1.0, -1.0) for r in self.rows):
            raise ValueError(f"rows must be signs ±1, got {self.rows}")
        if self.columns is not None and any(c not in (1.0, -1.0) for c in self.columns):
            raise ValueError(f"columns must be signs ±1, got {self.columns}")
        if not self.alpha <= self.beta:
            raise ValueError(f"slopes need alpha ≤ beta, got [{self.alpha}, {self.beta}]")

    @property
    def width(self) -> int:
        """Number of units of φ (``len(rows) · d``)."""
        return sum(piece.count for piece in self.pieces)

    @property
    def negated_pairs(self) -> bool:
        """``R = [I; −I]``: units ``j`` and ``j + d`` see ``z`` and ``−z``."""
        return self.rows == (1.0, -1.0)

    @classmethod
    def elementwise(
        cls,
        name: str,
        width: int,
        function: ScalarFunction,
        slopes: tuple[float, float],
        piecewise_linear: bool = False,
    ) -> SlopeForm:
        """An activation that already is elementwise: ``R = C = I``."""
        piece = ScalarPiece(name, width, function, piecewise_linear)
        return cls(rows=(1.0,), pieces=(piece,), alpha=slopes[0], beta=slopes[1])


def relu(z: np.ndarray) -> np.ndarray:
    """``max(z, 0)``, the scalar function the MILP encodes exactly."""
    return np.maximum(z, 0.0)
