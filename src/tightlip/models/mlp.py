"""tightlip's own networks, described by a :class:`~tightlip.model.ModelSpec`, as model kinds.

``{"kind": ..., "arguments": ModelSpec.to_dict()}`` with the kind

* ``mlp`` for a spec of dense layers only (what every MLP checkpoint has always said, so
  their descriptions, and resuming them, are unchanged);
* ``spec`` for a convolutional spec (``arch`` with convolutions or pooling): it is not an MLP.

Both kinds build any spec (:func:`tightlip.model.build_model`), so conv checkpoints written
before the ``spec`` kind existed, which say ``mlp``, still load.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tightlip.model import ModelSpec, build_model
from tightlip.models.registry import MODEL_KINDS

#: the kind of an MLP spec, and of a convolutional one
MLP_KIND, SPEC_KIND = "mlp", "spec"


def spec_kind(spec: ModelSpec) -> str:
    """``spec`` for a convolutional network, ``mlp`` for dense layers only."""
    return SPEC_KIND if spec.convolutional else MLP_KIND


def spec_description(spec: ModelSpec) -> dict[str, Any]:
    """The checkpoint description that rebuilds ``build_model(spec)``."""
    return {"kind": spec_kind(spec), "arguments": spec.to_dict()}


#: the name the training method imports (it describes conv specs too)
mlp_description = spec_description


@MODEL_KINDS.register(MLP_KIND)
def build_mlp(arguments: dict[str, Any]) -> nn.Module:
    return build_model(ModelSpec.from_dict(arguments))


@MODEL_KINDS.register(SPEC_KIND)
def build_spec(arguments: dict[str, Any]) -> nn.Module:
    return build_model(ModelSpec.from_dict(arguments))
