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

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from scipy.optimize import linprog

from tightlip.bounds.registry import register_lower
from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError
from tightlip.layers.pieces import Choice, Constraint, Pieces
from tightlip.model import ActivationStep, LayerChain
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
# The enumeration (each activation states its pieces: tightlip.layers.Pieces)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    """Hidden layer ``index`` under a fixed prefix: pre-activations ``z = a x + c``."""

    index: int
    a: np.ndarray
    c: np.ndarray
    pieces: Pieces
    #: the size of the layer's coefficients, for deciding which constraints are constant
    scale: float


@dataclass(frozen=True)
class _Prefix:
    """A pattern prefix and its polyhedron ``{x : rows x + offsets > 0}``.

    ``witness`` is an interior point whose slack is at least ``margin``; ``patterns`` holds the
    choices of the finished layers, ``current`` those made so far in the current layer.
    """

    rows: np.ndarray
    offsets: np.ndarray
    witness: np.ndarray
    margin: float
    patterns: tuple[tuple[Choice, ...], ...] = ()
    current: tuple[Choice, ...] = ()


class _Enumerator:
    def __init__(self, chain: LayerChain, tol: float, max_regions: int) -> None:
        self.tol = tol
        self.max_regions = max_regions
        self.n = chain.input_dim
        #: per affine step: weight, bias, and the pieces of the activation after it (None: last)
        self.layers: list[tuple[np.ndarray, np.ndarray, Pieces | None]] = []
        activations = chain.activation_steps
        for index, step in enumerate(chain.affine_steps):
            bias = (
                np.zeros(step.out_features)
                if step.bias is None
                else step.bias.numpy().astype(np.float64)
            )
            pieces = (
                _pieces(activations[index], step.out_features) if index < len(activations) else None
            )
            weight = step.dense_weight("exact-regions").numpy().astype(np.float64)
            self.layers.append((weight, bias, pieces))
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
        w, b, _ = self.layers[0]
        root = _Prefix(np.zeros((0, self.n)), np.zeros(0), np.zeros(self.n), 1.0)
        self._layer(0, w, b, root)
        return self.result

    def _layer(self, k: int, a: np.ndarray, c: np.ndarray, prefix: _Prefix) -> None:
        """Layer ``k`` has pre-activations ``z = a x + c`` on the prefix's polyhedron."""
        pieces = self.layers[k][2]
        if pieces is None:  # the last affine layer: a region is complete
            self._complete(a, prefix)
            return
        scale = max(1.0, float(np.abs(a).max(initial=0.0)))
        self._unit(_Layer(k, a, c, pieces, scale), 0, prefix)

    def _unit(self, layer: _Layer, unit: int, prefix: _Prefix) -> None:
        """Choose the piece of decision unit ``unit`` of ``layer``, depth first."""
        self.result.nodes += 1
        size = layer.pieces.unit_size
        if unit * size == layer.a.shape[0]:
            m, offset = layer.pieces.linear_map(prefix.current)
            w_next, b_next, _ = self.layers[layer.index + 1]
            a_next = w_next @ (m @ layer.a)
            h = m @ layer.c if offset is None else m @ layer.c + offset
            c_next = w_next @ h + b_next
            done = replace(prefix, patterns=(*prefix.patterns, prefix.current), current=())
            self._layer(layer.index + 1, a_next, c_next, done)
            return
        block = slice(unit * size, (unit + 1) * size)
        for choice in layer.pieces.choices:
            constraints = layer.pieces.constraints(unit, layer.a[block], layer.c[block], choice)
            child = self._child(prefix, constraints, layer.scale)
            if child is not None:
                self._unit(layer, unit + 1, replace(child, current=(*prefix.current, choice)))

    def _child(
        self, prefix: _Prefix, constraints: list[Constraint], scale: float
    ) -> _Prefix | None:
        """The prefix with ``constraints`` added, or ``None`` if it has no interior."""
        new_rows, new_offsets = [], []
        for g, h in constraints:
            length = float(np.linalg.norm(g))
            if length <= _ZERO_ROW * scale:  # constant constraint: decided by h alone
                if h < -_ZERO_ROW * scale:
                    return None
                continue
            new_rows.append(g / length)
            new_offsets.append(h / length)
        if not new_rows:
            return prefix
        g_new = np.array(new_rows)
        h_new = np.array(new_offsets)
        rows = np.vstack([prefix.rows, g_new])
        offsets = np.concatenate([prefix.offsets, h_new])
        slack = float((g_new @ prefix.witness + h_new).min())
        if slack > self.tol:  # the parent's interior point already works
            return replace(prefix, rows=rows, offsets=offsets, margin=min(prefix.margin, slack))
        witness, margin = self._interior_point(rows, offsets)
        if not margin > self.tol:
            return None
        return replace(prefix, rows=rows, offsets=offsets, witness=witness, margin=margin)

    def _complete(self, jacobian: np.ndarray, prefix: _Prefix) -> None:
        if len(self.result.regions) >= self.max_regions:
            raise MethodNotApplicableError(
                f"exact-regions: more than {self.max_regions} linear regions; the network is "
                "too large for enumeration (raise max_regions to insist)"
            )
        patterns = prefix.patterns
        pattern = tuple(tuple(choice for unit in layer for choice in unit) for layer in patterns)
        self.result.regions.append(
            Region(
                pattern=pattern,
                jacobian=torch.from_numpy(jacobian.copy()),
                witness=torch.from_numpy(prefix.witness.copy()),
                margin=prefix.margin,
                verified=self._verify(prefix.witness, patterns),
            )
        )

    def _verify(self, x: np.ndarray, patterns: tuple[tuple[Choice, ...], ...]) -> bool:
        """Does the network, evaluated at ``x`` in float64, show exactly this pattern?"""
        h = x
        for k, (w, b, pieces) in enumerate(self.layers):
            z = w @ h + b
            if pieces is None:
                return True
            observed = pieces.observe(z)
            if observed is None or tuple(observed) != patterns[k]:
                return False
            m, offset = pieces.linear_map(observed)
            h = m @ z if offset is None else m @ z + offset
        return True


def _pieces(step: ActivationStep, width: int) -> Pieces:
    """The activation's linear pieces on ``width`` units (raises if it states none)."""
    pieces = step.activation.pieces(width)
    if pieces is None:
        raise MethodNotApplicableError(
            f"exact-regions needs activations that state their linear pieces; {step.name} "
            f"({type(step.activation).__name__}) does not"
        )
    return pieces


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
            f"exact-regions needs piecewise-linear activations; this network has {', '.join(names)}"
        )
    if chain.input_dim > max_input_dim:
        raise MethodNotApplicableError(
            f"exact-regions: input dimension {chain.input_dim} exceeds max_input_dim="
            f"{max_input_dim} (the number of regions grows like units^input_dim)"
        )
    hidden = 0
    for step, affine in zip(chain.activation_steps, chain.affine_steps, strict=False):
        _pieces(step, affine.out_features)  # raises for activations without pieces
        hidden += affine.out_features
    if hidden > max_hidden_units:
        raise MethodNotApplicableError(
            f"exact-regions: {hidden} hidden units (pre-activations) exceed max_hidden_units="
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
