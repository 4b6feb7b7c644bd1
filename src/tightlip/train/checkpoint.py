"""Checkpoints: tensors in safetensors, everything else in JSON. Nothing is ever unpickled.

A checkpoint is a directory holding

* ``checkpoint.safetensors``: the model's state (``model.*``), the training objective's state
  (``objective.*``, e.g. persistent power-iteration vectors) and the optimizer's tensors
  (``optimizer.<param index>.<name>``);
* ``checkpoint.json``: the model description (``model.kind`` + its arguments), the training
  configuration, the epoch, the history, the optimizer's scalar state, ``tensors_sha256`` (the
  sha256 of the tensor file) and ``sha256``, the sha256 of the canonical JSON of every other
  field (:func:`description_digest`: sorted keys, no whitespace). The two digests are checked on
  load, so a truncated or altered tensor file *and* an edited field of the JSON (a width, the
  epoch, λ, ...) are caught: since ``tensors_sha256`` is one of the fields, ``sha256`` covers
  the configuration and the tensors together. The digests detect corruption and accidental
  edits, not forgery (there is no key).

Older checkpoints (format version 1) have no ``sha256`` field. They are accepted, with a note
(:attr:`Checkpoint.notes`) saying that their JSON fields could not be verified; their tensors
are still checked against ``tensors_sha256``. Resuming one writes a version-2 checkpoint.

:func:`read_state_dict_file` reads a plain state dict (``.safetensors``, or ``torch.save`` of
a ``state_dict()``) without unpickling code, and explains a file that holds a whole pickled
model instead.

The model is rebuilt from its description through the model-kind registry
(:mod:`tightlip.models.registry`); nothing here knows about training methods.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
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
VERSION = 2
TENSORS_FILE = "checkpoint.safetensors"
CONFIG_FILE = "checkpoint.json"
#: the JSON field holding :func:`description_digest` of all the others (format version ≥ 2)
DIGEST_FIELD = "sha256"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its JSON config and the raw tensors.

    ``notes`` says what could not be verified (e.g. the JSON of a version-1 checkpoint).
    """

    model: nn.Module
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    directory: Path
    notes: tuple[str, ...] = ()

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
    full_config.pop(DIGEST_FIELD, None)
    # the digest is taken over exactly what a reader will parse back
    full_config = json.loads(json.dumps(full_config, default=_json_default))
    full_config[DIGEST_FIELD] = description_digest(full_config)
    tmp_config = directory / (CONFIG_FILE + ".tmp")
    tmp_config.write_text(json.dumps(full_config, indent=2))
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
    notes = _check_description(config, config_path)
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
    return Checkpoint(
        model=model, config=config, tensors=tensors, directory=directory, notes=notes
    )


def description_digest(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``config`` without its ``sha256`` field.

    Canonical: keys sorted, no whitespace, non-ASCII kept, so the digest depends only on the
    parsed values (Python's JSON floats round-trip exactly, so re-serialising a parsed file
    reproduces the text that was hashed).
    """
    body = {k: v for k, v in config.items() if k != DIGEST_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_description(config: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    """Verify the JSON fields against their recorded digest; the notes for what cannot be."""
    version = config.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid format version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path} has format version {version}, newer than this tightlip reads ({VERSION}): "
            "upgrade tightlip"
        )
    recorded = config.get(DIGEST_FIELD)
    if recorded is None:
        if version >= 2:
            raise CheckpointError(f"{path} lacks its {DIGEST_FIELD!r} field: the file was edited")
        return (
            f"{path} has format version {version}, which records no digest of its fields: "
            "its tensors were verified, its configuration could not be",
        )
    if recorded != description_digest(config):
        raise CheckpointError(
            f"{path} was edited after it was written: its fields no longer match the sha256 it "
            "records; restore the original file (a changed setting belongs in a new run, or in "
            "--resume --override)"
        )
    return ()


def _is_tensor_global(name: str) -> bool:
    """Globals a plain ``torch.save(model.state_dict())`` pickle refers to."""
    return (
        name == "collections.OrderedDict"
        or name.startswith("torch._utils.")
        or (name.startswith("torch.") and name.endswith("Storage"))
    )


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state-dict file, read without unpickling code.

    ``.safetensors`` files are read with safetensors; other files with
    ``torch.load(weights_only=True)``, which refuses pickled classes. A file written by
    ``torch.save(model)`` (a whole pickled module) is explained, naming the class it holds, and
    the two ways to a readable file are suggested (``torch.save(model.state_dict(), path)`` or
    ONNX). Every failure is a :class:`CheckpointError` with a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint or state dict at {path}")
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (truncated or not safetensors): "
                f"{_first_line(error)}"
            ) from error
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is a user error
            raise CheckpointError(_unreadable_message(path, error)) from error
    if isinstance(state, nn.Module):  # only reachable if torch allowlisted the class
        raise CheckpointError(_unreadable_message(path, None))
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path} does not hold a state dict (names → tensors)")
    return dict(state)


def pickled_globals(path: str | Path) -> list[str]:
    """The classes and functions a ``torch.save`` file's pickle refers to, without running it.

    Reads the opcodes (:mod:`pickletools`) of ``data.pkl`` inside the zip archive that
    ``torch.save`` writes (or of the successive pickles at the start of a legacy-format file):
    ``GLOBAL`` carries ``module name``; ``STACK_GLOBAL`` takes the two strings pushed before
    it. Nothing is executed. Unreadable data gives the globals found up to that point.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(member)
        else:
            data = path.read_bytes()
    except (OSError, StopIteration, zipfile.BadZipFile):
        return []
    found: list[str] = []
    strings: list[str] = []
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
    except (ValueError, EOFError, pickle.UnpicklingError):
        pass  # the end of the pickles (raw storage bytes follow in the legacy format)
    return list(dict.fromkeys(found))


def _unreadable_message(path: Path, error: BaseException | None) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in one line, with the way out."""
    others = [g for g in pickled_globals(path) if not _is_tensor_global(g)]
    if not others:
        reason = _first_line(error) if error is not None else "no tensors"
        return f"{path} is not a readable torch state dict (truncated or another format): {reason}"
    advice = (
        "tightlip never unpickles code: save the weights with "
        "torch.save(model.state_dict(), path) (or safetensors.torch.save_file), or export the "
        "model to ONNX"
    )
    if any(g.startswith("torch.nn.modules.") for g in others):
        return (
            f"{path} holds a whole pickled model ({others[0]}), as written by "
            f"torch.save(model): {advice}"
        )
    return f"{path} holds pickled objects other than tensors ({', '.join(others[:3])}): {advice}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
