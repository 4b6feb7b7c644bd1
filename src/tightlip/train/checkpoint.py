"""Checkpoints: tensors in safetensors, everything else in JSON. Nothing is ever unpickled.

A checkpoint is a directory holding

* ``checkpoint.safetensors``: the model's state (``model.*``), the training objective's state
  (``objective.*``, e.g. persistent power-iteration vectors) and the optimizer's tensors
  (``optimizer.<param index>.<name>``);
* ``checkpoint.json``: the model description (``model.kind`` + its arguments), the training
  configuration, the epoch, the history, the optimizer's scalar state, and the sha256 of the
  tensor file, which is checked on load so a truncated or altered file is caught.

The model is rebuilt from its description through the model-kind registry
(:mod:`tightlip.models.registry`); nothing here knows about training methods.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tightlip.errors import CheckpointError
from tightlip.models import build_from_description

FORMAT = "tightlip-checkpoint"
VERSION = 1
TENSORS_FILE = "checkpoint.safetensors"
CONFIG_FILE = "checkpoint.json"

@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its JSON config and the raw tensors."""

    model: nn.Module
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    directory: Path

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix.``, with the prefix removed."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}


def checkpoint_dir(path: str | Path) -> Path:
    """Accept the directory itself or either of its two files."""
    path = Path(path)
    return path.parent if path.name in (TENSORS_FILE, CONFIG_FILE) else path


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    config: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint atomically (temp files, then rename); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(extra_tensors or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp_tensors = directory / (TENSORS_FILE + ".tmp")
    save_file(tensors, str(tmp_tensors))
    digest = _sha256(tmp_tensors)
    full_config = {"format": FORMAT, "version": VERSION, **config, "tensors_sha256": digest}
    tmp_config = directory / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(full_config, indent=2, default=_json_default))
    os.replace(tmp_tensors, directory / TENSORS_FILE)
    os.replace(tmp_config, directory / CONFIG_FILE)
    return directory


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint; raise :class:`CheckpointError` saying what is wrong."""
    directory = checkpoint_dir(path)
    config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
    for required in (config_path, tensors_path):
        if not required.is_file():
            raise CheckpointError(f"checkpoint file {required} is missing")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a tightlip checkpoint description")
    if _sha256(tensors_path) != config.get("tensors_sha256"):
        raise CheckpointError(
            f"{tensors_path} does not match the sha256 recorded in {config_path}: "
            "the file is corrupt or was modified"
        )
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{tensors_path} cannot be read: {error}") from error
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{tensors_path}: tensor {name!r} contains NaN or infinite values"
            )
    model = build_from_description(config.get("model", {}))
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"{tensors_path} does not fit the model described: {error}"
        ) from error
    model.eval()
    return Checkpoint(model=model, config=config, tensors=tensors, directory=directory)


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors (for safetensors) and a JSON-able remainder."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, entry in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON")
