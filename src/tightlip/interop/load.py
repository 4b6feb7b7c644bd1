"""One loader for every command: ``tightlip.load_model(path)``.

==========================================  =================================================
a directory holding ``checkpoint.json``      the tightlip checkpoint (its own description)
(or either checkpoint file)
``*.onnx``                                   :func:`~tightlip.interop.onnx_import.import_onnx`
a state dict (``.safetensors``, ``.pt``)     with ``architecture`` only
                                             (:func:`~tightlip.interop.architecture.from_state_dict`)
an ``nn.Module`` object (Python API)         checked: its chain must reproduce it
==========================================  =================================================

A bare state dict is refused: the order and the kind of its layers cannot be read from its
keys, and a guessed architecture gives a "sound" bound for a different network. The message
says how to give the architecture or export the model to ONNX. Every refusal is a
:class:`~tightlip.errors.TightlipError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from tightlip.errors import BadArgumentError, CheckpointError
from tightlip.interop.architecture import from_state_dict
from tightlip.interop.check import check_torch
from tightlip.model import to_chain
from tightlip.train.checkpoint import (
    CONFIG_FILE,
    TENSORS_FILE,
    Checkpoint,
    load_checkpoint,
    read_state_dict_file,
)

#: how many key names a refusal lists
_KEYS_SHOWN = 6


@dataclass(frozen=True)
class LoadedModel:
    """What a file held: the model, how it was read, and what could not be verified."""

    model: nn.Module
    kind: str
    source: Path
    input_shape: tuple[int, ...]
    checkpoint: Checkpoint | None = None
    notes: tuple[str, ...] = ()


def is_checkpoint(path: Path) -> bool:
    return (path.is_dir() and (path / CONFIG_FILE).exists()) or path.name in (
        CONFIG_FILE,
        TENSORS_FILE,
    )


def bare_state_dict_message(path: Path, keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN]) + (", …" if len(keys) > _KEYS_SHOWN else "")
    return (
        f"{path} holds a bare state dict ({len(keys)} tensors: {shown}), which does not say "
        "which layer follows which or what activations sit between them, and tightlip does "
        "not guess: give the architecture with --architecture (e.g. 'flatten,linear,relu,linear'"
        ", 'fc1=linear,relu,fc2=linear' for named keys, or a tightlip model spec JSON), or "
        "export the model with torch.onnx.export and pass the .onnx file"
    )


def load(
    path: str | Path, *, architecture: str | None = None, check: bool = True
) -> LoadedModel:
    """Read any model file (module docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if architecture is not None:
            raise BadArgumentError(
                f"{path} is an ONNX file, which describes its own architecture; "
                "--architecture is for state dicts"
            )
        from tightlip.interop.onnx_import import import_onnx  # onnx loads in about a second

        imported = import_onnx(path, check=check)
        return LoadedModel(imported, "onnx", path, imported.input_shape, notes=imported.notes)
    if is_checkpoint(path) or path.is_dir() or (not path.exists() and not path.suffix):
        if architecture is not None:
            raise BadArgumentError(
                f"{path} is a tightlip checkpoint, which describes its own architecture; "
                "--architecture is for state dicts"
            )
        checkpoint = load_checkpoint(path)
        chain = to_chain(checkpoint.model)
        return LoadedModel(
            checkpoint.model,
            "checkpoint",
            checkpoint.directory,
            chain.input_shape,
            checkpoint=checkpoint,
            notes=checkpoint.notes,
        )
    state = read_state_dict_file(path)
    if architecture is None:
        raise CheckpointError(bare_state_dict_message(path, list(state)))
    model = from_state_dict(state, architecture, source=str(path), check=check)
    shape = getattr(model, "input_shape", None) or to_chain(model).input_shape
    return LoadedModel(model, "state-dict", path, tuple(shape), notes=getattr(model, "notes", ()))


def load_model(
    source: str | Path | nn.Module,
    *,
    architecture: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    check: bool = True,
) -> nn.Module:
    """A model every part of tightlip accepts, from any file it reads (module docstring).

    An ``nn.Module`` is returned as it is, after checking that its chain reproduces it on
    random inputs of ``input_shape`` (default: flat, the chain's input width).
    """
    if isinstance(source, nn.Module):
        if check:
            chain = to_chain(source)
            shape = tuple(input_shape) if input_shape is not None else (chain.input_dim,)
            check_torch(source, chain, shape, type(source).__name__)
        return source
    return load(source, architecture=architecture, check=check).model
