"""GloRo's network as a model kind: a MinMax network with biases (Leino, Wang & Fredrikson,
"Globally-robust neural networks", ICML 2021).

``{"kind": "gloro", "arguments": ModelSpec.to_dict()}``: the :func:`tightlip.model.build_model`
network of the spec with the activation forced to ``maxmin`` (MinMax: on channels for
convolutions, on neighbouring units for dense layers, 1-Lipschitz in every p-norm) and biases
on. 4C3F on MNIST is ``arch = "c32k3,c32k4s2,c64k3,c64k4s2,f512,f512"``. The model reads flat
``(N, 784)`` or image inputs and is an ordinary tightlip ``nn.Sequential``, so ``to_chain`` and
the sound trivial bound apply unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from tightlip.model import ModelSpec, build_model
from tightlip.models.registry import MODEL_KINDS

GLORO_ACTIVATION = "maxmin"


def gloro_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` with GloRo's MinMax activation and biases."""
    return replace(spec, activation=GLORO_ACTIVATION, bias=True)


def gloro_description(spec: ModelSpec) -> dict[str, Any]:
    return {"kind": "gloro", "arguments": gloro_spec(spec).to_dict()}


@MODEL_KINDS.register("gloro")
def build_gloro(arguments: dict[str, Any]) -> nn.Module:
    return build_model(gloro_spec(ModelSpec.from_dict(arguments)))
