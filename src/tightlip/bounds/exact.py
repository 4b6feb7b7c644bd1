"""Exact Lipschitz constants of tiny piecewise-linear networks, by enumerating linear regions.

The statement
-------------
Let ``f = A_L ∘ σ_{L−1} ∘ … ∘ σ_1 ∘ A_1`` with affine ``A_i`` and piecewise-linear (PL)
activations (ReLU, |·|, CReLU, GroupSort/MaxMin). Fixing, for every hidden unit, which linear
piece its activation is on (an *activation pattern* ``π``: the sign of each pre-activation, or
the order within each sorted group) makes every layer linear, so on the closed polyhedron

    R_π = { x : the pre-activations of x are consistent with π }

``f`` is affine with a constant Jacobian ``J_π = W_L M_{L−1} W_{L−1} ⋯ M_1 W_1`` (``M_k`` the
0/±1 or permutation matrix of the pattern). The full-dimensional ``R_π`` cover ``Rⁿ``, and

    Lip_p(f) = max { ‖J_π‖_{p→p} : R_π has a non-empty interior }.

``≥``: on an open set ``f`` is affine with Jacobian ``J_π``, so the difference quotients along
``v`` attain ``‖J_π v‖``. ``≤``: for any ``x, y``, perturb them slightly so that the segment
``[x, y]`` meets the (finitely many) region boundaries in finitely many points and otherwise
runs through interiors; then ``f(y) − f(x) = Σ_k J_{π_k} (y_k − y_{k−1})`` over the pieces of the
segment, so ``‖f(y) − f(x)‖_p ≤ max_k ‖J_{π_k}‖ ‖y − x‖_p``, and continuity of ``f`` removes the
perturbation.

The enumeration
---------------
Patterns are built unit by unit, layer by layer (depth-first). At each node the pre-activations
of the current layer are affine in ``x`` (``z = A x + c``, exact in float64 given the pattern so
far) and each choice adds strict linear inequalities ``g·x + h > 0`` (rows normalised to
``‖g‖₂ = 1``). A prefix is kept only if its polyhedron has an interior, decided by the LP

    maximise t   subject to   g_jᵀ x + h_j ≥ t  for all constraints,   t ≤ 1,   x free,

whose optimum ``t*`` is the radius of the largest ℓ2 ball inside the polyhedron (capped at 1):
the interior is non-empty iff ``t* > 0``. We accept ``t* > tol``. Infeasible prefixes are
pruned, which is what keeps the enumeration to the (few) actual regions instead of all
``2^{units}`` patterns. The LP solution ``x*`` of a parent is an interior point; the child that
agrees with the signs at ``x*`` is feasible without a new LP, so only the other children need
one.

Every accepted region keeps its interior point ``x*``; we re-evaluate the network at ``x*`` and
check that the observed pattern is the assumed one (``verified``). The maximum over verified
regions is a witnessed lower bound; the maximum over all accepted regions is the exact value
as far as the LP tolerances go, which is why the certificate is not marked ``sound``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linprog

from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError
from tightlip.layers import Abs, Activation, CReLU, GroupSort, ReLU
from tightlip.model import ActivationStep, AffineStep, LayerChain
from tightlip.norms import NormName, operator_norm, parse_norm

#: constraints whose gradient is below this (relative to the layer's scale) are constants
_ZERO_ROW = 1e-12


@dataclass
class Region:
    """One full-dimensional linear region: its pattern, Jacobian and an interior point."""

    pattern: tuple[tuple[int, ...], ...]
    jacobian: torch.Tensor
    witness: torch.Tensor
    margin: float
    verified: bool


@dataclass
class RegionEnumeration:
    """All full-dimensional regions of a PL network, with the bookkeeping of the search."""

    regions: list[Region] = field(default_factory=list)
    linear_programs: int = 0
    lp_failures: int = 0
    nodes: int = 0

    def lipschitz(self, norm: NormName) -> tuple[float, Region | None]:
        """``max_π ‖J_π‖_{p→p}`` over the regions and the region that attains it."""
        best, arg = 0.0, None
        for region in self.regions:
            value = operator_norm(region.jacobian, norm)
            if value > best or arg is None:
                best, arg = value, region
        return best, arg


# --------------------------------------------------------------------------------------------
# Per-activation descriptions: the choices of one decision unit and the linear map they induce
# --------------------------------------------------------------------------------------------


def _decision_units(act: Activation, width: int) -> tuple[int, list[tuple[int, ...]]]:
    """``(unit size, choices)``: each unit covers ``size`` pre-activations and picks one choice.

    Sign-type activations (ReLU, Abs, CReLU): units of size 1, choices ``(+1,)`` and ``(−1,)``.
    GroupSort(g): units are the groups; a choice is the permutation listing the group's
    entries from largest to smallest.
    """
    if isinstance(act, GroupSort):
        g = act.group_size
        if width % g:
            raise MethodNotApplicableError(
                f"GroupSort({g}) after a layer of width {width}: not divisible"
            )
        return g, list(itertools.permutations(range(g)))
    if isinstance(act, ReLU | Abs | CReLU):
        return 1, [(1,), (-1,)]
    raise MethodNotApplicableError(
        f"exact_regions handles ReLU, Abs, CReLU and GroupSort/MaxMin activations, not "
        f"{type(act).__name__}"
    )


def _choice_constraints(
    act: Activation, a: np.ndarray, c: np.ndarray, choice: tuple[int, ...]
) -> list[tuple[np.ndarray, float]]:
    """Rows ``(g, h)`` with ``g·x + h > 0`` that define ``choice`` for the unit ``z = a x + c``.

    ``a`` has one row per pre-activation of the unit.
    """
    if isinstance(act, GroupSort):
        return [
            (a[choice[t]] - a[choice[t + 1]], float(c[choice[t]] - c[choice[t + 1]]))
            for t in range(len(choice) - 1)
        ]
    sign = choice[0]
    return [(sign * a[0], float(sign * c[0]))]


def _pattern_matrix(act: Activation, pattern: list[tuple[int, ...]], width: int) -> np.ndarray:
    """``M`` with ``σ(z) = M z`` on the region of ``pattern`` (one choice per unit)."""
    if isinstance(act, GroupSort):
        g = act.group_size
        m = np.zeros((width, width))
        for unit, order in enumerate(pattern):
            for rank, index in enumerate(order):
                m[unit * g + rank, unit * g + index] = 1.0
        return m
    signs = np.array([choice[0] for choice in pattern], dtype=np.float64)
    if isinstance(act, ReLU):
        return np.diag((signs > 0).astype(np.float64))
    if isinstance(act, Abs):
        return np.diag(signs)
    # CReLU: (relu z, relu −z) = ([z > 0] z, −[z < 0] z)
    return np.vstack([np.diag((signs > 0).astype(np.float64)), -np.diag((signs < 0) * 1.0)])


def _observed_pattern(act: Activation, z: np.ndarray) -> list[tuple[int, ...]] | None:
    """The pattern of pre-activations ``z``, or ``None`` if some unit is on a boundary."""
    if isinstance(act, GroupSort):
        g = act.group_size
        result = []
        for unit in range(len(z) // g):
            block = z[unit * g : (unit + 1) * g]
            order = tuple(int(i) for i in np.argsort(-block, kind="stable"))
            if np.any(np.diff(block[list(order)]) >= 0):
                return None
            result.append(order)
        return result
    if np.any(z == 0):
        return None
    return [(1,) if value > 0 else (-1,) for value in z]


# --------------------------------------------------------------------------------------------
# The enumeration
# --------------------------------------------------------------------------------------------


class _Enumerator:
    def __init__(self, chain: LayerChain, tol: float, max_regions: int) -> None:
        self.chain = chain
        self.tol = tol
        self.max_regions = max_regions
        self.n = chain.input_dim
        self.layers: list[tuple[np.ndarray, np.ndarray, Activation | None]] = []
        steps = list(chain.steps)
        for index, step in enumerate(steps):
            if isinstance(step, AffineStep):
                nxt = steps[index + 1] if index + 1 < len(steps) else None
                bias = (
                    np.zeros(step.out_features)
                    if step.bias is None
                    else step.bias.numpy().astype(np.float64)
                )
                act = nxt.activation if isinstance(nxt, ActivationStep) else None
                self.layers.append((step.weight.numpy().astype(np.float64), bias, act))
        self.result = RegionEnumeration()

    # --- LP -----------------------------------------------------------------------------------
    def _interior_point(self, rows: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, float]:
        """Chebyshev-style LP: ``max t`` s.t. ``rows x + offsets ≥ t``, ``t ≤ 1``."""
        self.result.linear_programs += 1
        if rows.shape[0] == 0:
            return np.zeros(self.n), 1.0
        a_ub = np.hstack([-rows, np.ones((rows.shape[0], 1))])
        cost = np.zeros(self.n + 1)
        cost[-1] = -1.0
        bounds = [(None, None)] * self.n + [(None, 1.0)]
        res = linprog(cost, A_ub=a_ub, b_ub=offsets, bounds=bounds, method="highs")
        if res.status != 0 or res.x is None:
            self.result.lp_failures += 1
            return np.zeros(self.n), -math.inf
        return res.x[: self.n], float(res.x[-1])

    # --- search -------------------------------------------------------------------------------
    def run(self) -> RegionEnumeration:
        w, b, act = self.layers[0]
        rows = np.zeros((0, self.n))
        offsets = np.zeros(0)
        self._layer(0, w, b, rows, offsets, np.zeros(self.n), 1.0, [])
        return self.result

    def _layer(
        self,
        k: int,
        a: np.ndarray,
        c: np.ndarray,
        rows: np.ndarray,
        offsets: np.ndarray,
        witness: np.ndarray,
        margin: float,
        patterns: list[list[tuple[int, ...]]],
    ) -> None:
        """Layer ``k`` has pre-activations ``z = a x + c`` on the current polyhedron."""
        act = self.layers[k][2]
        if act is None:  # the last affine layer: a region is complete
            self._complete(a, witness, margin, patterns)
            return
        size, choices = _decision_units(act, a.shape[0])
        scale = max(1.0, float(np.abs(a).max(initial=0.0)))
        self._unit(
            k, act, size, choices, scale, 0, a, c, rows, offsets, witness, margin, patterns, []
        )

    def _unit(
        self,
        k: int,
        act: Activation,
        size: int,
        choices: list[tuple[int, ...]],
        scale: float,
        unit: int,
        a: np.ndarray,
        c: np.ndarray,
        rows: np.ndarray,
        offsets: np.ndarray,
        witness: np.ndarray,
        margin: float,
        patterns: list[list[tuple[int, ...]]],
        current: list[tuple[int, ...]],
    ) -> None:
        self.result.nodes += 1
        if unit * size == a.shape[0]:
            m = _pattern_matrix(act, current, a.shape[0])
            w_next, b_next, _ = self.layers[k + 1]
            a_next = w_next @ (m @ a)
            c_next = w_next @ (m @ c) + b_next
            self._layer(k + 1, a_next, c_next, rows, offsets, witness, margin, [*patterns, current])
            return
        block = slice(unit * size, (unit + 1) * size)
        for choice in choices:
            new_rows, new_offsets, possible = [], [], True
            for g, h in _choice_constraints(act, a[block], c[block], choice):
                length = float(np.linalg.norm(g))
                if length <= _ZERO_ROW * scale:  # constant constraint: decided by h alone
                    if h < -_ZERO_ROW * scale:
                        possible = False
                        break
                    continue
                new_rows.append(g / length)
                new_offsets.append(h / length)
            if not possible:
                continue
            if new_rows:
                g_new = np.array(new_rows)
                h_new = np.array(new_offsets)
                child_rows = np.vstack([rows, g_new])
                child_offsets = np.concatenate([offsets, h_new])
                slack = float((g_new @ witness + h_new).min())
                if slack > self.tol:  # the parent's interior point already works
                    child_witness, child_margin = witness, min(margin, slack)
                else:
                    child_witness, child_margin = self._interior_point(child_rows, child_offsets)
                    if not child_margin > self.tol:
                        continue
            else:
                child_rows, child_offsets = rows, offsets
                child_witness, child_margin = witness, margin
            self._unit(
                k,
                act,
                size,
                choices,
                scale,
                unit + 1,
                a,
                c,
                child_rows,
                child_offsets,
                child_witness,
                child_margin,
                patterns,
                [*current, choice],
            )

    def _complete(
        self,
        jacobian: np.ndarray,
        witness: np.ndarray,
        margin: float,
        patterns: list[list[tuple[int, ...]]],
    ) -> None:
        if len(self.result.regions) >= self.max_regions:
            raise MethodNotApplicableError(
                f"exact_regions: more than {self.max_regions} linear regions; the network is "
                "too large for enumeration (raise max_regions to insist)"
            )
        pattern = tuple(tuple(choice for unit in layer for choice in unit) for layer in patterns)
        self.result.regions.append(
            Region(
                pattern=pattern,
                jacobian=torch.from_numpy(jacobian.copy()),
                witness=torch.from_numpy(witness.copy()),
                margin=margin,
                verified=self._verify(witness, patterns),
            )
        )

    def _verify(self, x: np.ndarray, patterns: list[list[tuple[int, ...]]]) -> bool:
        """Does the network, evaluated at ``x`` in float64, show exactly this pattern?"""
        h = x
        for k, (w, b, act) in enumerate(self.layers):
            z = w @ h + b
            if act is None:
                return True
            observed = _observed_pattern(act, z)
            if observed is None or observed != patterns[k]:
                return False
            h = _pattern_matrix(act, observed, z.shape[0]) @ z
        return True


def _check_applicable(chain: LayerChain, max_input_dim: int, max_hidden_units: int) -> None:
    if not chain.piecewise_linear:
        names = sorted(
            {
                type(s.activation).__name__
                for s in chain.activation_steps
                if not s.activation.piecewise_linear
            }
        )
        raise MethodNotApplicableError(
            f"exact_regions needs piecewise-linear activations; this network has {', '.join(names)}"
        )
    if chain.input_dim > max_input_dim:
        raise MethodNotApplicableError(
            f"exact_regions: input dimension {chain.input_dim} exceeds max_input_dim="
            f"{max_input_dim} (the number of regions grows like units^input_dim)"
        )
    hidden = 0
    for index, step in enumerate(chain.steps):
        if isinstance(step, ActivationStep):
            width = chain.steps[index - 1].out_features
            _decision_units(step.activation, width)  # raises for unsupported activations
            hidden += width
    if hidden > max_hidden_units:
        raise MethodNotApplicableError(
            f"exact_regions: {hidden} hidden units (pre-activations) exceed max_hidden_units="
            f"{max_hidden_units}; the enumeration is exponential in the number of units"
        )


def enumerate_regions(
    chain: LayerChain,
    *,
    max_input_dim: int = 6,
    max_hidden_units: int = 16,
    max_regions: int = 200_000,
    tol: float = 1e-9,
) -> RegionEnumeration:
    """All full-dimensional linear regions of a small PL network (see the module docstring).

    Raises :class:`MethodNotApplicableError` for non-PL activations, or when the input
    dimension, the number of hidden units, or the number of regions exceeds its limit.
    """
    _check_applicable(chain, max_input_dim, max_hidden_units)
    return _Enumerator(chain, tol, max_regions).run()


def exact_lipschitz_by_regions(
    chain: LayerChain, norm: NormName | str = "2", **options: Any
) -> float:
    """``Lip_p(f) = max_π ‖J_π‖_{p→p}`` over the full-dimensional regions of a tiny PL net."""
    value, _ = enumerate_regions(chain, **options).lipschitz(parse_norm(norm))
    return value


@register_lower("exact-regions")
def exact_regions_bound(
    chain: LayerChain,
    norm: NormName | str = "2",
    *,
    max_input_dim: int = 6,
    max_hidden_units: int = 16,
    max_regions: int = 200_000,
    tol: float = 1e-9,
) -> Certificate:
    """The exact constant of a tiny PL network by region enumeration (kind ``exact``).

    ``sound=False``: the regions are accepted by floating-point LPs, whose verdicts are not
    verified. ``details["verified_value"]`` is the maximum over regions whose interior point
    was re-checked by evaluating the network (a witnessed lower bound).
    """
    norm = parse_norm(norm)
    result = enumerate_regions(
        chain,
        max_input_dim=max_input_dim,
        max_hidden_units=max_hidden_units,
        max_regions=max_regions,
        tol=tol,
    )
    value, region = result.lipschitz(norm)
    verified = [operator_norm(r.jacobian, norm) for r in result.regions if r.verified]
    details: dict[str, Any] = {
        "regions": len(result.regions),
        "verified_regions": len(verified),
        "verified_value": max(verified, default=0.0),
        "linear_programs": result.linear_programs,
        "lp_failures": result.lp_failures,
        "search_nodes": result.nodes,
    }
    if region is not None:
        details["witness"] = [float(t) for t in region.witness]
        details["witness_margin"] = region.margin
    return Certificate(
        value=value,
        method="exact-regions",
        norm=norm,
        side="exact",
        sound=False,
        notes=(
            f"max of ‖J‖ over {len(result.regions)} linear regions found by LP-pruned "
            "enumeration (LP feasibility in floating point)",
        ),
        details=details,
    )
