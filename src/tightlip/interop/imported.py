"""An imported network as a ``torch.nn.Module`` that every part of tightlip accepts.

:class:`ImportedModel` holds the float64 :class:`~tightlip.model.LayerChain` read from a file
(ONNX, or a state dict with its architecture). It answers ``chain_steps()``, so
:func:`~tightlip.model.to_chain` and every verifier read it as they read tightlip's own
models, and its ``forward`` evaluates the chain in the dtype of its input (float32 images for
accuracy and attacks, float64 for checks), after flattening the input shape the file declares.

:data:`IMPORTED` is how ``certify`` treats a network it did not train: the certified global
bound is the best of the sound cheap ones (the trivial bound; in ℓ2 also ECLipsE-Fast where it
applies), with no local certificate.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from tightlip.bounds import upper_bound
from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError, ModelShapeError
from tightlip.methods.registry import Method
from tightlip.model import LayerChain, Step
from tightlip.norms import NormName


class ImportedModel(nn.Module):
    """A network read from a file, evaluated through its float64 chain (module docstring).

    ``input_shape`` is the shape of one input without the batch dimension (e.g. ``(1, 28, 28)``
    or ``(784,)``); ``source`` says where it came from (a path) and ``kind`` how
    (``"onnx"``, ``"state-dict"``).
    """

    def __init__(
        self,
        chain: LayerChain,
        *,
        input_shape: tuple[int, ...],
        source: str,
        kind: str,
        notes: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        features = 1
        for size in input_shape:
            features *= size
        if features != chain.input_dim:
            raise ModelShapeError(
                f"{source}: input shape {input_shape} has {features} entries but the network "
                f"reads {chain.input_dim}"
            )
        self.chain = chain
        self.input_shape = tuple(input_shape)
        self.source = source
        self.kind = kind
        self.notes = tuple(notes)

    def chain_steps(self) -> list[Step]:
        return list(self.chain.steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chain(x.reshape(x.shape[0], -1))

    def extra_repr(self) -> str:
        return f"{self.kind} {self.source}, input {self.input_shape}, depth {self.chain.depth}"


def imported_certificate(model: nn.Module, norm: NormName) -> Certificate:
    """The smallest of the trivial bound and (ℓ2) ECLipsE-Fast's, both sound."""
    best = upper_bound(model, norm, "trivial")
    if norm == "2":
        try:
            fast = upper_bound(model, norm, "eclipse-fast")
        except MethodNotApplicableError:
            return best
        if fast.value < best.value:
            best = replace(fast, notes=(*fast.notes, f"trivial bound: {best.value:.6g}"))
    return best


def _not_trainable(*_: Any) -> Any:
    raise MethodNotApplicableError("an imported network is certified here, not trained")


#: how ``certify`` treats an imported network (module docstring); not a registered method
IMPORTED = Method(
    name="imported",
    build=_not_trainable,
    objective=_not_trainable,
    certified_bound=imported_certificate,
    description="a network trained elsewhere: the best sound cheap global bound",
)
