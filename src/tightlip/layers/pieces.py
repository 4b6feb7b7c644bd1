"""The linear pieces of a piecewise-linear activation (for exact region enumeration).

A piecewise-linear (PL) activation ``σ: R^d → R^{d'}`` is affine on each cell of a partition
of its input space. The exact verifiers (region enumeration; see
:mod:`tightlip.bounds.exact`) need four answers, given by a :class:`Pieces` object:

* the *decision units*: groups of ``unit_size`` consecutive pre-activations that each pick
  one of ``choices`` (which piece they are on);
* for a unit whose pre-activations are affine in the input, ``z = a x + c``, the strict linear
  inequalities ``g·x + h > 0`` that hold exactly on the open cell of a choice;
* for a full pattern (one choice per unit), the affine map ``σ(z) = M z + m`` on its cell;
* the pattern that a given ``z`` is on, or ``None`` when ``z`` lies on a cell boundary.

Two families cover the activations in tightlip:

* :class:`ElementwisePieces`: every scalar pre-activation ``z_i`` lies in one of ``k + 1``
  intervals cut by breakpoints ``b_{i,1} < … < b_{i,k}``; on interval ``j`` output block ``r``
  is ``s_{r,j} z_i + t_{r,j,i}``. ReLU, ``|·|`` and CReLU have ``k = 1`` (breakpoint 0);
  the clipped ReLU ``min(max(z, 0), θ)`` has ``k = 2`` (breakpoints 0 and θ). A choice is the
  interval index ``(j,)``.
* :class:`SortedGroupPieces`: GroupSort sorts groups of ``g`` units; a choice is the
  permutation that lists the group's entries from largest to smallest, and ``M`` is that
  permutation matrix (Anil, Lucas & Grosse, ICML 2019).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: one decision unit's choice (an interval index ``(j,)`` or a permutation)
Choice = tuple[int, ...]
#: a constraint ``g·x + h > 0``
Constraint = tuple[np.ndarray, float]


class Pieces(Protocol):
    """What an exact verifier asks a piecewise-linear activation (see the module docstring)."""

    @property
    def unit_size(self) -> int: ...

    @property
    def choices(self) -> tuple[Choice, ...]: ...

    def constraints(
        self, unit: int, a: np.ndarray, c: np.ndarray, choice: Choice
    ) -> list[Constraint]:
        """Rows ``(g, h)`` with ``g·x + h > 0`` that define ``choice`` for unit ``unit``, whose
        pre-activations are ``z = a x + c`` (``a`` has one row per pre-activation of the unit)."""
        ...

    def linear_map(self, pattern: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(M, m)`` with ``σ(z) = M z + m`` on the cell of ``pattern`` (``m = None``: zero)."""
        ...

    def observe(self, z: np.ndarray) -> list[Choice] | None:
        """The pattern of the pre-activations ``z``, or ``None`` if ``z`` is on a boundary."""
        ...


@dataclass(frozen=True, eq=False)
class ElementwisePieces:
    """Scalar PL functions with per-unit breakpoints (module docstring).

    ``breakpoints`` has shape ``(d, k)``, increasing along each row; ``slopes[r][j]`` is the
    slope of output block ``r`` on interval ``j`` (``k + 1`` entries per block);
    ``intercepts`` has shape ``(blocks, k + 1, d)`` (``None``: all zero).
    """

    breakpoints: np.ndarray
    slopes: tuple[tuple[float, ...], ...]
    intercepts: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = self.breakpoints.shape[1]
        if any(len(block) != k + 1 for block in self.slopes):
            raise ValueError(f"{k} breakpoints need {k + 1} slopes per output block")

    @property
    def unit_size(self) -> int:
        return 1

    @property
    def choices(self) -> tuple[Choice, ...]:
        """Interval indices, the highest first (for ReLU: active, then inactive)."""
        return tuple((j,) for j in range(self.breakpoints.shape[1], -1, -1))

    def constraints(
        self, unit: int, a: np.ndarray, c: np.ndarray, choice: Choice
    ) -> list[Constraint]:
        (j,) = choice
        cuts = self.breakpoints[unit]
        rows: list[Constraint] = []
        if j > 0:  # z > b_{j−1}
            rows.append((a[0], float(c[0] - cuts[j - 1])))
        if j < cuts.shape[0]:  # z < b_j
            rows.append((-a[0], float(cuts[j] - c[0])))
        return rows

    def linear_map(self, pattern: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray | None]:
        index = np.array([choice[0] for choice in pattern], dtype=np.int64)
        m = np.vstack(
            [np.diag(np.asarray(block, dtype=np.float64)[index]) for block in self.slopes]
        )
        if self.intercepts is None:
            return m, None
        units = np.arange(index.shape[0])
        return m, np.concatenate([block[index, units] for block in self.intercepts])

    def observe(self, z: np.ndarray) -> list[Choice] | None:
        if np.any(z[:, None] == self.breakpoints):
            return None
        return [(int(j),) for j in (z[:, None] > self.breakpoints).sum(axis=1)]


def sign_pieces(width: int, *slopes: tuple[float, float]) -> ElementwisePieces:
    """Pieces of a positively homogeneous function with one kink at 0 per unit.

    ``slopes`` holds, per output block, the slopes on ``z < 0`` and ``z > 0``: ReLU
    ``(0, 1)``; ``|·|`` ``(−1, 1)``; CReLU ``(0, 1), (−1, 0)``.
    """
    return ElementwisePieces(np.zeros((width, 1)), tuple(slopes))


@dataclass(frozen=True)
class SortedGroupPieces:
    """GroupSort over ``width / group_size`` groups (module docstring)."""

    group_size: int
    width: int

    @property
    def unit_size(self) -> int:
        return self.group_size

    @property
    def choices(self) -> tuple[Choice, ...]:
        return tuple(itertools.permutations(range(self.group_size)))

    def constraints(
        self, unit: int, a: np.ndarray, c: np.ndarray, choice: Choice
    ) -> list[Constraint]:
        return [
            (a[choice[t]] - a[choice[t + 1]], float(c[choice[t]] - c[choice[t + 1]]))
            for t in range(len(choice) - 1)
        ]

    def linear_map(self, pattern: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray | None]:
        g = self.group_size
        m = np.zeros((self.width, self.width))
        for unit, order in enumerate(pattern):
            for rank, index in enumerate(order):
                m[unit * g + rank, unit * g + index] = 1.0
        return m, None

    def observe(self, z: np.ndarray) -> list[Choice] | None:
        g = self.group_size
        result = []
        for unit in range(len(z) // g):
            block = z[unit * g : (unit + 1) * g]
            order = tuple(int(i) for i in np.argsort(-block, kind="stable"))
            if np.any(np.diff(block[list(order)]) >= 0):
                return None
            result.append(order)
        return result
