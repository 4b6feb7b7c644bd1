"""Slope-restricted networks: the common input of ECLipsE, Syed–Hu, LipSDP and the MILP.

SDP-style verifiers (LipSDP, Fazlyab et al. NeurIPS 2019; ECLipsE, Xu & Sivaranjani NeurIPS
2024; Syed & Hu, arXiv 2503.14297) reason about

    f(x) = W_L φ_{L−1}(W_{L−1} ⋯ φ_1(W_1 x + b_1) ⋯ + b_{L−1}) + b_L

where every φ_i acts *elementwise* and each scalar function is slope-restricted on [α_i, β_i]:

    α_i ≤ (φ(a) − φ(b)) / (a − b) ≤ β_i   for all a ≠ b.

This gives the incremental quadratic constraint (Δv − αΔz)ᵀ Λ (βΔz − Δv) ≥ 0 for every diagonal
Λ ⪰ 0, the only fact about φ these methods use. Biases never change a global Lipschitz bound
(they cancel in differences), so they are kept only for evaluation and for the MILP.

:func:`to_slope_network` rewrites a :class:`~tightlip.model.LayerChain` as an *equivalent*
slope-restricted network (same function, exactly), or raises
:class:`~tightlip.bounds.MethodNotApplicableError` saying why none exists:

* ReLU, Tanh: elementwise with slopes in [0, 1].
* CReLU(z) = (relu z, relu(−z)) = relu([I; −I] z): fold [I; −I] into the preceding weight,
  ``W ← [W; −W]``, ``b ← [b; −b]``; the next weight is unchanged.
* Abs: |z| = relu(z) + relu(−z): ``W ← [W; −W]``, ``b ← [b; −b]`` and the next weight's
  columns are duplicated, ``V ← [V, V]``.
* SinPair(z) = ((z + sin z)/2, (z − sin z)/2): elementwise on duplicated rows ``[W; W]``, with
  the two scalar functions (z ± sin z)/2 whose slopes (1 ± cos z)/2 lie in [0, 1].
* SinCos(z) = (sin z, cos z): sin and cos are slope-restricted only on [−1, 1], i.e. αβ < 0,
  on duplicated rows. The quadratic constraints then cannot see sin² + cos² = 1, so the best
  such certificate is the trivial bound inflated by √2 per layer: we refuse (callers fall back
  to the trivial bound, which is tight for SinCos in ℓ2).
* MaxMin / GroupSort are not elementwise: refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tightlip.bounds import MethodNotApplicableError
from tightlip.layers import Abs, CReLU, GroupSort, ReLU, SinCos, SinPair, Tanh
from tightlip.model import ActivationStep, AffineStep, LayerChain


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def _sinpair_plus(z: np.ndarray) -> np.ndarray:
    return (z + np.sin(z)) / 2


def _sinpair_minus(z: np.ndarray) -> np.ndarray:
    return (z - np.sin(z)) / 2


#: the scalar functions a slope-restricted layer may apply, by name
SCALAR_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": _relu,
    "tanh": np.tanh,
    "sinpair_plus": _sinpair_plus,
    "sinpair_minus": _sinpair_minus,
}


@dataclass(frozen=True)
class SlopeLayer:
    """An elementwise activation with slopes in ``[alpha, beta]``.

    ``pieces`` lists consecutive blocks of units as ``(scalar function name, count)``.
    """

    alpha: float
    beta: float
    pieces: tuple[tuple[str, int], ...]
    name: str = "activation"
    #: ``> 0`` when units ``j`` and ``j + negated_pairs`` have pre-activations ``z`` and ``−z``
    #: (the CReLU/Abs conversion): exactly one of the two is active at every point
    negated_pairs: int = 0

    @property
    def width(self) -> int:
        return sum(count for _, count in self.pieces)

    @property
    def piecewise_linear(self) -> bool:
        return all(kind == "relu" for kind, _ in self.pieces)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        start = 0
        for kind, count in self.pieces:
            out[..., start : start + count] = SCALAR_FUNCTIONS[kind](z[..., start : start + count])
            start += count
        return out


@dataclass(frozen=True)
class SlopeNetwork:
    """``W_L φ_{L−1}(⋯ φ_1(W_1 x + b_1) ⋯) + b_L`` with elementwise slope-restricted φ_i.

    ``weights[i]`` has shape ``(out, in)`` (float64); ``activations[i]`` follows ``weights[i]``;
    ``len(activations) == len(weights) − 1``.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray | None, ...]
    activations: tuple[SlopeLayer, ...]
    names: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return tuple(w.shape[0] for w in self.weights[:-1])

    @property
    def input_dim(self) -> int:
        return self.weights[0].shape[1]

    @property
    def output_dim(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def has_bias(self) -> bool:
        return any(b is not None and bool(np.any(b != 0)) for b in self.biases)

    @property
    def piecewise_linear(self) -> bool:
        return all(a.piecewise_linear for a in self.activations)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Evaluate on a batch ``(B, input_dim)`` in float64 (used to test equivalence)."""
        h = np.asarray(x, dtype=np.float64)
        for i, weight in enumerate(self.weights):
            h = h @ weight.T
            if self.biases[i] is not None:
                h = h + self.biases[i]
            if i < len(self.activations):
                h = self.activations[i](h)
        return h

    def require_slopes(self, method: str, allow_alpha_positive: bool = True) -> None:
        """Raise unless every layer has ``0 ≤ α ≤ β`` (``α = 0`` if not allowed otherwise)."""
        for layer in self.activations:
            if layer.alpha < 0 or (layer.alpha > 0 and not allow_alpha_positive):
                raise MethodNotApplicableError(
                    f"{method} needs slopes in [α, β] with α ≥ 0; {layer.name} has "
                    f"[{layer.alpha}, {layer.beta}]"
                )
            if layer.beta <= 0:
                raise MethodNotApplicableError(
                    f"{method}: {layer.name} has β = {layer.beta} ≤ 0 (constant activation)"
                )


_ELEMENTWISE_NEEDED = "needs slope-restricted elementwise activations"


def to_slope_network(chain: LayerChain, method: str = "slope-restriction methods") -> SlopeNetwork:
    """Rewrite ``chain`` as an equivalent :class:`SlopeNetwork` (see the module docstring).

    ``method`` names the caller in error messages. Raises ``MethodNotApplicableError`` for
    activations without an elementwise slope-restricted equivalent (MaxMin/GroupSort, SinCos,
    unknown activations).
    """
    weights: list[np.ndarray] = []
    biases: list[np.ndarray | None] = []
    names: list[str] = []
    for step in chain.affine_steps:
        weights.append(step.weight.numpy().astype(np.float64, copy=True))
        biases.append(None if step.bias is None else step.bias.numpy().astype(np.float64))
        names.append(step.name)

    layers: list[SlopeLayer] = []
    notes: list[str] = []
    activation_index = 0
    for step in chain.steps:
        if isinstance(step, AffineStep):
            continue
        assert isinstance(step, ActivationStep)
        i = activation_index
        activation_index += 1
        act = step.activation
        w, b = weights[i], biases[i]
        d = w.shape[0]
        if isinstance(act, GroupSort):
            raise MethodNotApplicableError(
                f"{method} {_ELEMENTWISE_NEEDED}; {step.name} is {type(act).__name__}, which "
                "sorts groups of units and has no elementwise slope-restricted equivalent"
            )
        if isinstance(act, SinCos):
            raise MethodNotApplicableError(
                f"{method} {_ELEMENTWISE_NEEDED} with sign-definite slopes; {step.name} is "
                "SinCos (sin z, cos z), whose parts are slope-restricted only on [−1, 1]: the "
                "quadratic constraints cannot use sin² + cos² = 1, so no equivalent "
                "slope-restricted network gives a bound better than the trivial one"
            )
        if isinstance(act, ReLU | Tanh):
            kind = "relu" if isinstance(act, ReLU) else "tanh"
            layers.append(SlopeLayer(0.0, 1.0, ((kind, d),), step.name))
        elif isinstance(act, CReLU | Abs):
            weights[i] = np.concatenate([w, -w], axis=0)
            biases[i] = None if b is None else np.concatenate([b, -b])
            if isinstance(act, Abs):
                v = weights[i + 1]
                weights[i + 1] = np.concatenate([v, v], axis=1)
                notes.append(f"{step.name}: |z| = relu(z) + relu(−z) on rows [W; −W]")
            else:
                notes.append(f"{step.name}: CReLU(z) = relu([I; −I] z) on rows [W; −W]")
            layers.append(SlopeLayer(0.0, 1.0, (("relu", 2 * d),), step.name, negated_pairs=d))
        elif isinstance(act, SinPair):
            weights[i] = np.concatenate([w, w], axis=0)
            biases[i] = None if b is None else np.concatenate([b, b])
            notes.append(f"{step.name}: SinPair as (z ± sin z)/2 on rows [W; W], slopes in [0, 1]")
            layers.append(
                SlopeLayer(0.0, 1.0, (("sinpair_plus", d), ("sinpair_minus", d)), step.name)
            )
        else:
            raise MethodNotApplicableError(
                f"{method} {_ELEMENTWISE_NEEDED}; {step.name} is {type(act).__name__}, for "
                "which no slope-restricted form is known"
            )
    return SlopeNetwork(
        weights=tuple(weights),
        biases=tuple(biases),
        activations=tuple(layers),
        names=tuple(names),
        notes=tuple(notes),
    )
