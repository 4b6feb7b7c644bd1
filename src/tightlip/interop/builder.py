"""Assembling a :class:`~tightlip.model.LayerChain` while a file is read.

The reader keeps one *frontier*: the output of the last activation (at first, the input).
Every tensor it tracks is either an affine function of the frontier
(:class:`~tightlip.interop.affine.PendingAffine`) or an activation applied to one. When an
activation is committed, the pending affine map becomes an
:class:`~tightlip.model.AffineStep`, the activation an :class:`~tightlip.model.ActivationStep`,
and the frontier moves past it. A tensor computed from an older frontier is then a branch (a
skip or residual connection), which a chain cannot express: it is refused.

A network that ends with an activation (a ReLU on the logits) gets an identity read-out
``I · σ(z)``: the chain stays "affine first and last" and computes exactly the same function,
so every verifier handles it without a special case, and the trivial bound picks up
``‖I‖ = 1`` (an :class:`~tightlip.operators.Identity`, exactly 1 in every norm), which is the composition
bound ``Lip(σ ∘ A) ≤ Lip(σ) · ‖A‖``.
"""

from __future__ import annotations

from typing import Any

from tightlip.errors import UnsupportedLayerError
from tightlip.interop.affine import PendingAffine
from tightlip.layers import Activation
from tightlip.model import ActivationStep, AffineStep, LayerChain, Step

#: the name of the identity read-out after a trailing activation
IDENTITY_READOUT = "identity-readout"


class ChainBuilder:
    """The steps read so far and the current frontier (module docstring)."""

    def __init__(self, input_width: int) -> None:
        self.steps: list[Step] = []
        self.frontier = 0
        self.input_width = input_width

    def start(self) -> PendingAffine:
        """The identity on the input: the first frontier."""
        return PendingAffine(self.input_width)

    def activate(
        self, pending: PendingAffine, frontier: int, activation: Activation, name: str
    ) -> PendingAffine:
        """Commit ``pending`` and then ``activation``; returns the identity on the new frontier."""
        self.check_frontier(frontier, name)
        step = pending.step()
        self.steps += [step, ActivationStep(activation, name=name)]
        self.frontier += 1
        return PendingAffine(activation.out_features(step.out_features))

    def finish(
        self, pending: PendingAffine, frontier: int, name: str, metadata: dict[str, Any]
    ) -> LayerChain:
        """The chain ending with ``pending`` (an identity read-out after a trailing activation)."""
        self.check_frontier(frontier, name)
        if not self.steps and pending.is_identity:
            raise UnsupportedLayerError(f"{name}: the network computes nothing (no layer)")
        last = pending.step()
        if pending.is_identity:
            last = AffineStep(last.operator, last.bias, name=IDENTITY_READOUT)
        return LayerChain((*self.steps, last), metadata)

    def check_frontier(self, frontier: int, name: str) -> None:
        if frontier != self.frontier:
            raise UnsupportedLayerError(
                f"{name} uses a tensor computed before the activation that precedes it: the "
                "network branches (a skip or residual connection), and tightlip reads chains of "
                "affine layers and activations"
            )
