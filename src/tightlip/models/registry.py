"""Model kinds: how a checkpoint's ``{"kind": ..., "arguments": {...}}`` becomes a module.

Every network family registers a builder ``builder(arguments) -> nn.Module`` in
:data:`MODEL_KINDS` next to its class, and each of its modules answers ``description()`` with
the dictionary that rebuilds it. Persistence (:mod:`tightlip.train.checkpoint`) depends on
this registry and the model modules only, never on training methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tightlip.errors import CheckpointError, UnknownNameError
from tightlip.registry import Registry

ModelBuilder = Callable[[dict[str, Any]], nn.Module]

MODEL_KINDS: Registry[ModelBuilder] = Registry("model kind")


def build_from_description(description: dict[str, Any]) -> nn.Module:
    """An untrained model from ``{"kind": ..., "arguments": {...}}``."""
    kind = description.get("kind")
    if not isinstance(kind, str):
        raise CheckpointError(f"model description has no kind: {description!r}")
    try:
        builder = MODEL_KINDS.get(kind)
    except UnknownNameError as error:
        raise CheckpointError(str(error)) from None
    return builder(dict(description.get("arguments", {})))
