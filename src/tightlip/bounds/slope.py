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
:class:`~tightlip.errors.MethodNotApplicableError` saying why none exists. It asks each
activation for its form ``σ(z) = C φ(R z)`` (:meth:`tightlip.layers.Activation.as_slope_network`,
:class:`tightlip.layers.SlopeForm`) and folds ``R = [r_1 I; r_2 I; …]`` into the preceding
weight and bias (``W ← [r_1 W; r_2 W; …]``) and ``C = [c_1 I, c_2 I, …]`` into the next weight
(``V ← [c_1 V, c_2 V, …]``). The activations state their forms, for example:

* ReLU, Tanh, ClippedReLU: elementwise with slopes in [0, 1] (``R = C = I``).
* CReLU(z) = relu([I; −I] z); Abs: |z| = [I, I] relu([I; −I] z).
* SinPair(z) = ((z + sin z)/2, (z − sin z)/2): elementwise on duplicated rows ``[W; W]``.
* SinCos and MaxMin / GroupSort refuse, with their reasons (SinCos's parts are
  slope-restricted only on [−1, 1], which makes the certificate no better than the trivial
  bound; sorting is not elementwise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tightlip.errors import MethodNotApplicableError
from tightlip.layers import ScalarPiece
from tightlip.model import AffineStep, LayerChain


@dataclass(frozen=True)
class SlopeLayer:
    """An elementwise activation with slopes in ``[alpha, beta]``.

    ``pieces`` lists consecutive blocks of units, each applying one scalar function.
    """

    alpha: float
    beta: float
    pieces: tuple[ScalarPiece, ...]
    name: str = "activation"
    #: ``> 0`` when units ``j`` and ``j + negated_pairs`` have pre-activations ``z`` and ``−z``
    #: (the CReLU/Abs conversion): exactly one of the two is active at every point
    negated_pairs: int = 0

    @property
    def width(self) -> int:
        return sum(piece.count for piece in self.pieces)

    @property
    def piecewise_linear(self) -> bool:
        return all(piece.piecewise_linear for piece in self.pieces)

    @property
    def relu_only(self) -> bool:
        """Every unit applies ``max(z, 0)`` (what the MILP encodes)."""
        return all(piece.name == "relu" for piece in self.pieces)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        out = np.empty_like(z)
        start = 0
        for piece in self.pieces:
            block = slice(start, start + piece.count)
            out[..., block] = piece.function(z[..., block])
            start += piece.count
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

    @property
    def relu_only(self) -> bool:
        return all(a.relu_only for a in self.activations)

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


def to_slope_network(chain: LayerChain, method: str = "slope-restriction methods") -> SlopeNetwork:
    """Rewrite ``chain`` as an equivalent :class:`SlopeNetwork` (see the module docstring).

    ``method`` names the caller in error messages. Raises ``MethodNotApplicableError`` for
    activations without a slope-restricted form (their own reason is quoted).
    """
    affine = chain.affine_steps
    weights = [
        step.dense_weight(method).numpy().astype(np.float64, copy=True) for step in affine
    ]
    biases = [_bias(step) for step in affine]
    layers: list[SlopeLayer] = []
    notes: list[str] = []
    for i, step in enumerate(chain.activation_steps):
        d = weights[i].shape[0]
        try:
            form = step.activation.as_slope_network(d)
        except MethodNotApplicableError as exc:
            raise MethodNotApplicableError(
                f"{method} needs slope-restricted elementwise activations; {step.name} is {exc}"
            ) from None
        if form.width != len(form.rows) * d:
            raise AssertionError(f"{step.name}: slope form covers {form.width} of {d} units")
        if form.rows != (1.0,):
            weights[i] = np.concatenate([r * weights[i] for r in form.rows], axis=0)
            b = biases[i]
            biases[i] = None if b is None else np.concatenate([r * b for r in form.rows])
        if form.columns is not None:
            v = weights[i + 1]
            weights[i + 1] = np.concatenate([c * v for c in form.columns], axis=1)
        if form.note:
            notes.append(f"{step.name}: {form.note}")
        pairs = d if form.negated_pairs else 0
        layers.append(SlopeLayer(form.alpha, form.beta, form.pieces, step.name, pairs))
    return SlopeNetwork(
        weights=tuple(weights),
        biases=tuple(biases),
        activations=tuple(layers),
        names=tuple(step.name for step in affine),
        notes=tuple(notes),
    )


def _bias(step: AffineStep) -> np.ndarray | None:
    return None if step.bias is None else step.bias.numpy().astype(np.float64)
