"""Checkpoints round-trip, and bad files give clear errors (never an unpickle)."""

from __future__ import annotations

import json

import pytest
import torch

import tightlip as t
from tightlip.model import ModelShapeError, UnsupportedLayerError
from tightlip.train.checkpoint import (
    DIGEST_FIELD,
    CheckpointError,
    description_digest,
    load_checkpoint,
    pickled_globals,
    read_state_dict_file,
    save_checkpoint,
)


def _saved(tmp_path):
    spec = t.ModelSpec(input_dim=12, widths=(8,), num_classes=3, activation="crelu")
    model = t.build_model(spec)
    save_checkpoint(tmp_path, model, {"model": {"kind": "mlp", "arguments": spec.to_dict()}})
    return model


def test_round_trip(tmp_path) -> None:
    model = _saved(tmp_path)
    loaded = load_checkpoint(tmp_path).model
    x = torch.rand(4, 12)
    assert torch.equal(model(x), loaded(x))


def test_corrupt_tensor_file(tmp_path) -> None:
    _saved(tmp_path)
    path = tmp_path / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_truncated_tensor_file_and_bad_json(tmp_path) -> None:
    _saved(tmp_path)
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "nowhere")


def test_nan_weights_in_checkpoint(tmp_path) -> None:
    spec = t.ModelSpec(input_dim=12, widths=(8,), num_classes=3)
    model = t.build_model(spec)
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    save_checkpoint(tmp_path, model, {"model": {"kind": "mlp", "arguments": spec.to_dict()}})
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path)


def test_nan_weights_in_bound() -> None:
    model = t.build_model(t.ModelSpec(input_dim=5, widths=(4,), num_classes=2))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        t.upper_bound(model, "2")


def _edit_json(directory, edit, *, resign: bool) -> None:
    path = directory / "checkpoint.json"
    config = json.loads(path.read_text())
    edit(config)
    if resign:
        config[DIGEST_FIELD] = description_digest(config)
    path.write_text(json.dumps(config, indent=1))


def test_description_mismatch(tmp_path) -> None:
    """A consistently signed description that does not fit the tensors."""
    _saved(tmp_path)
    _edit_json(tmp_path, lambda c: c["model"]["arguments"].update(widths=[9]), resign=True)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["model"]["arguments"].update(widths=[9]),
        lambda c: c["model"]["arguments"].update(activation="abs"),  # same shapes
        lambda c: c.update(epoch=7),
        lambda c: c.update(method="sandwich"),
        lambda c: c.update(tensors_sha256="0" * 64),
    ],
)
def test_edited_json_field_is_refused(tmp_path, edit) -> None:
    """The recorded sha256 covers the configuration, not only the tensors."""
    _saved(tmp_path)
    _edit_json(tmp_path, edit, resign=False)
    with pytest.raises(CheckpointError, match="was edited after it was written"):
        load_checkpoint(tmp_path)


def test_reformatted_json_still_loads(tmp_path) -> None:
    """The digest is over parsed values: re-indenting the file changes nothing."""
    _saved(tmp_path)
    _edit_json(tmp_path, lambda c: None, resign=False)
    assert load_checkpoint(tmp_path).notes == ()


def test_version_1_checkpoint_is_accepted_with_a_note(tmp_path) -> None:
    model = _saved(tmp_path)

    def downgrade(config):
        config["version"] = 1
        del config[DIGEST_FIELD]

    _edit_json(tmp_path, downgrade, resign=False)
    loaded = load_checkpoint(tmp_path)
    assert len(loaded.notes) == 1 and "could not be" in loaded.notes[0]
    x = torch.rand(2, 12)
    assert torch.equal(model(x), loaded.model(x))


def test_missing_digest_or_newer_version_is_refused(tmp_path) -> None:
    _saved(tmp_path)
    _edit_json(tmp_path, lambda c: c.pop(DIGEST_FIELD), resign=False)
    with pytest.raises(CheckpointError, match="lacks its 'sha256' field"):
        load_checkpoint(tmp_path)
    _saved(tmp_path)
    _edit_json(tmp_path, lambda c: c.update(version=99), resign=True)
    with pytest.raises(CheckpointError, match="newer than this tightlip"):
        load_checkpoint(tmp_path)


def test_truncated_tensor_file_in_checkpoint(tmp_path) -> None:
    _saved(tmp_path)
    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def _plain_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def test_state_dict_files_round_trip(tmp_path) -> None:
    from safetensors.torch import save_file

    model = _plain_model()
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    save_file(model.state_dict(), str(tmp_path / "plain.safetensors"))
    for name in ("plain.pt", "plain.safetensors"):
        state = read_state_dict_file(tmp_path / name)
        assert set(state) == set(model.state_dict())
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("legacy", [False, True])
def test_whole_pickled_model_is_explained(tmp_path, legacy) -> None:
    path = tmp_path / "whole.pt"
    torch.save(_plain_model(), path, _use_new_zipfile_serialization=not legacy)
    assert pickled_globals(path)[0] == "torch.nn.modules.container.Sequential"
    with pytest.raises(CheckpointError) as caught:
        read_state_dict_file(path)
    message = str(caught.value)
    assert "whole pickled model (torch.nn.modules.container.Sequential)" in message
    assert "state_dict()" in message and "ONNX" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("garbage.safetensors", b"\x00garbage" * 10, "not a readable safetensors file"),
        ("empty.safetensors", b"", "not a readable safetensors file"),
        ("garbage.pt", b"garbage" * 10, "not a readable torch state dict"),
    ],
)
def test_garbage_state_dict_files(tmp_path, name, content, expected) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected):
        read_state_dict_file(path)


def test_truncated_state_dict_files(tmp_path) -> None:
    from safetensors.torch import save_file

    model = _plain_model()
    torch.save(model.state_dict(), tmp_path / "full.pt")
    save_file(model.state_dict(), str(tmp_path / "full.safetensors"))
    for suffix, expected in ((".pt", "torch state dict"), (".safetensors", "safetensors file")):
        data = (tmp_path / f"full{suffix}").read_bytes()
        truncated = tmp_path / f"truncated{suffix}"
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=f"not a readable {expected}"):
            read_state_dict_file(truncated)


def test_unsupported_layer_and_wrong_shape() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softplus(), torch.nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match="Softplus"):
        t.upper_bound(model, "2")
    chain = t.to_chain(t.build_model(t.ModelSpec(input_dim=6, widths=(4,), num_classes=2)))
    with pytest.raises(ModelShapeError, match="expects 6"):
        chain.forward(torch.rand(3, 7))
