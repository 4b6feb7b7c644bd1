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

from tightlip.errors import BadArgumentError, CheckpointError, UnsupportedLayerError
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
    """Read any model file (module docstring). A run directory (``runs/X``, holding
    ``checkpoint/``) stands for its checkpoint."""
    path = Path(path)
    if path.is_dir() and not (path / CONFIG_FILE).exists() and (path / "checkpoint" / CONFIG_FILE).exists():
        path = path / "checkpoint"
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

    An ``nn.Module`` is read with ``input_shape`` (one input's shape, e.g. ``(1, 28, 28)``;
    default: flat, the chain's input width) and checked: its chain must reproduce it on random
    inputs. A module whose layers tightlip does not read directly (``BatchNorm2d`` after a
    convolution, ``Conv → BN → ReLU → MaxPool`` stacks) is exported to ONNX in memory and read
    by the ONNX importer, which folds eval-mode batch normalisation, so a module, its ONNX file
    and its state dict with ``--architecture`` give the same network.
    """
    if not isinstance(source, nn.Module):
        return load(source, architecture=architecture, check=check).model
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    try:
        chain = to_chain(source, input_shape=shape if shape and len(shape) > 1 else None)
    except UnsupportedLayerError:
        if shape is None:
            raise
        return _through_onnx(source, shape, check)
    model = with_input_shape(source, shape) if shape is not None and len(shape) > 1 else source
    if check:
        check_torch(model, chain, shape or (chain.input_dim,), type(source).__name__)
    return model


def with_input_shape(module: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """``module`` behind ``Flatten, Unflatten(shape)``: it then reads flat rows or images, and
    every later conversion finds its input shape (as :func:`tightlip.build_model` writes it)."""
    children = list(module.children()) if isinstance(module, nn.Sequential) else []
    if children and isinstance(children[0], nn.Unflatten):
        return module
    return nn.Sequential(nn.Flatten(), nn.Unflatten(1, shape), module)


def _through_onnx(module: nn.Module, shape: tuple[int, ...], check: bool) -> nn.Module:
    """Export ``module`` (eval mode) to a temporary ONNX file and import it."""
    import tempfile

    import torch

    from tightlip.interop.onnx_import import import_onnx

    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "module.onnx"
            first = next(module.parameters(), None)
            dtype = first.dtype if first is not None else torch.float32
            example = torch.zeros(1, *shape, dtype=dtype)
            torch.onnx.export(module, (example,), str(path), dynamo=False,
                              input_names=["input"], output_names=["logits"])
            return import_onnx(path, check=check)
    finally:
        module.train(was_training)
