"""Interior points: where a piecewise-linear network is certified to be affine on a ball.

At a point where some pre-activation sits on a kink, autograd returns one particular
subgradient, which need not be the Jacobian of any neighbouring linear piece: for
``f(x) = [relu(x−1) − relu(1−x)] − [relu(x) − relu(−x)] + 1 ≡ 0`` it reports slope 1 at
``x = 0``. A Jacobian is a lower bound only where ``f`` is differentiable, and we certify it
where ``f`` is *affine on a ball*.

Each piecewise-linear activation describes its linear pieces
(:meth:`~tightlip.layers.Activation.pieces`): a decision unit (one pre-activation, or a group
for GroupSort) is on the piece ``choice`` exactly where the strict inequalities
``g · z_unit + c > 0`` of :meth:`~tightlip.layers.pieces.Pieces.constraints` hold (asked with
the unit's own coordinates, ``a = I``). With ``ẑ`` the computed pre-activations and
``|ẑ − z| ≤ e`` (:mod:`~tightlip.bounds.lower.forward_error`), the true pre-activations satisfy
every inequality of the observed pattern when

    fl(g · ẑ + c) > 2 |g| · e + γ (|g| |ẑ| + |c|)        (the *slack* is the difference).

The factor 2 keeps every evaluation within ``e`` of the true ``z`` (another summation order, say)
on the same piece too. Then ``x`` lies in the open region of that pattern, ``f`` is affine near
``x`` and ``J(x)`` is that region's Jacobian.

The ball. A pre-activation of layer ``k`` moves by at most ``‖row_i(W_k)‖_q · P_k · ‖x′ − x‖_p``
with ``q`` dual to ``p`` (Hölder) and ``P_k = ∏_{j<k} ‖W_j‖_p Lip_p(σ_j)`` the trivial bound of
the prefix network, so every inequality keeps its sign on the ``p``-ball of radius

    r = min over inequalities of  slack / (Σ_i |g_i| ‖row_i(|Ŵ_k| + E_k)‖_q · P_k),

on which ``f`` is therefore affine: every secant inside it equals ``J(x)``, so ``‖J(x)‖ ≤ Lip``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tightlip.bounds.lower.forward_error import BoundedEvaluation
from tightlip.bounds.lower.network import inner_length, is_matrix_free
from tightlip.layers.pieces import Pieces
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import (
    UNIT_ROUNDOFF,
    NormName,
    dual_norm,
    gamma,
    product_rounded_up,
    vector_norm,
)


def chain_pieces(chain: LayerChain) -> list[Pieces] | None:
    """The pieces of every activation step, or ``None`` when some activation is not PL."""
    pieces: list[Pieces] = []
    for affine, step in zip(chain.affine_steps, chain.activation_steps, strict=False):
        found = step.activation.pieces(affine.out_features)
        if found is None:
            return None
        pieces.append(found)
    return pieces


@dataclass(frozen=True)
class Slacks:
    """The inequalities of one row's pattern: certified ``slack``, the ``unit`` each belongs to
    and ``|g|`` per coordinate of that unit (shapes ``(k,)``, ``(k,)``, ``(k, unit_size)``)."""

    slack: np.ndarray
    unit: np.ndarray
    g_abs: np.ndarray


class PatternConstraints:
    """A :class:`Pieces` object's inequalities per ``(unit, choice)``, asked once each.

    Rows ``[g, c]`` of ``g · z_unit + c > 0`` in the unit's own coordinates (``a = I``, ``c = 0``
    in :meth:`~tightlip.layers.pieces.Pieces.constraints`).
    """

    def __init__(self, pieces: Pieces) -> None:
        self.pieces = pieces
        self.size = pieces.unit_size
        self._identity, self._zero = np.eye(self.size), np.zeros(self.size)
        self._rows: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}

    def rows(self, unit: int, choice: tuple[int, ...]) -> np.ndarray:
        key = (unit, choice)
        if key not in self._rows:
            found = self.pieces.constraints(unit, self._identity, self._zero, choice)
            self._rows[key] = np.array(
                [np.append(np.asarray(g, dtype=np.float64), c) for g, c in found],
                dtype=np.float64,
            ).reshape(-1, self.size + 1)
        return self._rows[key]


def unit_slacks(memo: PatternConstraints, z: np.ndarray, e: np.ndarray) -> Slacks | None:
    """The certified slack of every inequality of the pattern of ``z`` (module docstring), or
    ``None`` when ``z`` is on a boundary. ``z``, ``e``: one row's pre-activations, error bound."""
    pattern = memo.pieces.observe(z)
    if pattern is None:
        return None
    size = memo.size
    blocks = [memo.rows(unit, tuple(choice)) for unit, choice in enumerate(pattern)]
    counts = np.array([block.shape[0] for block in blocks], dtype=np.int64)
    stacked = np.concatenate(blocks) if blocks else np.zeros((0, size + 1))
    unit = np.repeat(np.arange(len(blocks)), counts)
    g, c = stacked[:, :size], stacked[:, size]
    zu = z.reshape(-1, size)[unit]
    eu = e.reshape(-1, size)[unit]
    magnitude = np.abs(g)
    value = (g * zu).sum(axis=1) + c
    need = 2.0 * (magnitude * eu).sum(axis=1)
    need = need + gamma(size + 2) * ((magnitude * np.abs(zu)).sum(axis=1) + np.abs(c))
    need = need * (1.0 + 2.0 * gamma(size + 4))
    return Slacks(value - need, unit, magnitude)


def interior_radii(
    chain: LayerChain, evaluation: BoundedEvaluation, norm: NormName
) -> torch.Tensor:
    """Per row, a radius ``r`` (``p``-ball) on which ``f`` is affine, ``0`` if none is certified.

    ``evaluation``: the error-bounded evaluation of the rows (module docstring). A network
    with a non-PL activation gets 0 everywhere (its Jacobians are certified by secants).
    """
    batch = evaluation.output.shape[0]
    pieces = chain_pieces(chain)
    if pieces is None or not torch.isfinite(evaluation.output).all(dim=-1).any():
        return torch.zeros(batch, dtype=torch.float64)
    radii = np.full(batch, np.inf)
    radii[~torch.isfinite(evaluation.output).all(dim=-1).numpy()] = 0.0
    affine, activations = chain.affine_steps, chain.activation_steps
    q = dual_norm(norm)
    prefix = 1.0  # P_k, the trivial bound of the network before layer k
    for k, piece in enumerate(pieces):
        step = affine[k]
        row_norms = _row_dual_norms(step, q).numpy()
        z_all = evaluation.pre_activations[k].numpy()
        e_all = evaluation.pre_errors[k].numpy()
        memo = PatternConstraints(piece)
        for b in range(batch):
            if radii[b] > 0:
                radii[b] = min(radii[b], _radius(memo, z_all[b], e_all[b], row_norms, prefix))
        prefix = product_rounded_up(
            (prefix, step.certified_norm(norm), activations[k].activation.lipschitz(norm))
        )
    return torch.from_numpy(radii)


def _row_dual_norms(step: AffineStep, q: NormName) -> torch.Tensor:
    """Per row ``i`` of the step, a float ``≥ ‖|W_i| + E_i‖_q``.

    Dense: the norm of the row, inflated by ``1 + γ_{n+2}`` for its rounding. Matrix-free (a
    large convolution, :func:`~tightlip.bounds.lower.network.is_matrix_free`): ``‖w‖_q ≤ ‖w‖_1``
    for every ``q ≥ 1``, and the row abs-sums are ``|W| 1``, the ``abs_operator`` applied to
    ones (non-negative terms: inflated by ``1 + γ_{n+2}``). Looser than the row's ``q``-norm,
    so radii are smaller, never larger, than the exact ones.
    """
    n = step.in_features
    if is_matrix_free(step):
        ones = torch.ones(1, n, dtype=torch.float64)
        sums = step.operator.abs_operator().apply(ones).reshape(-1)  # type: ignore[attr-defined]
        return sums * (1.0 + gamma(inner_length(step) + 2))
    rows = step.weight.abs() + (0.0 if step.exact else step.weight_error())
    return vector_norm(rows, q) * (1.0 + gamma(rows.shape[1] + 2))


def _radius(
    memo: PatternConstraints, z: np.ndarray, e: np.ndarray, row_norms: np.ndarray, prefix: float
) -> float:
    """The radius of one row for one layer: ``min slack / (Σ |g_i| ‖row_i‖_q · P)``, rounded
    down; 0 when some inequality is not certified, ``inf`` when there is none."""
    found = unit_slacks(memo, z, e)
    if found is None or not np.all(found.slack > 0):
        return 0.0
    if found.slack.size == 0:
        return float("inf")
    size = memo.size
    coordinates = found.unit[:, None] * size + np.arange(size)[None, :]
    speed = (found.g_abs * row_norms[coordinates]).sum(axis=1) * prefix
    speed = speed * (1.0 + 4.0 * gamma(size + 4))
    slack = found.slack * (1.0 - 4.0 * UNIT_ROUNDOFF)
    with np.errstate(divide="ignore"):
        ratios = np.where(speed > 0, slack / np.where(speed > 0, speed, 1.0), np.inf)
    return float(ratios.min())
