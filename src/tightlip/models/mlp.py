"""The tightlip MLP as a model kind: ``{"kind": "mlp", "arguments": ModelSpec.to_dict()}``."""

from __future__ import annotations

from typing import Any

from torch import nn

from tightlip.model import ModelSpec, build_model
from tightlip.models.registry import MODEL_KINDS


def mlp_description(spec: ModelSpec) -> dict[str, Any]:
    return {"kind": "mlp", "arguments": spec.to_dict()}


@MODEL_KINDS.register("mlp")
def build_mlp(arguments: dict[str, Any]) -> nn.Module:
    return build_model(ModelSpec.from_dict(arguments))
