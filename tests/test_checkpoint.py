"""Checkpoints round-trip, and bad files give clear errors (never an unpickle)."""

from __future__ import annotations

import json

import pytest
import torch

import tightlip as t
from tightlip.model import ModelShapeError, UnsupportedLayerError
from tightlip.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


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


def test_description_mismatch(tmp_path) -> None:
    _saved(tmp_path)
    config = json.loads((tmp_path / "checkpoint.json").read_text())
    config["model"]["arguments"]["widths"] = [9]
    (tmp_path / "checkpoint.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(tmp_path)


def test_unsupported_layer_and_wrong_shape() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softplus(), torch.nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match="Softplus"):
        t.upper_bound(model, "2")
    chain = t.to_chain(t.build_model(t.ModelSpec(input_dim=6, widths=(4,), num_classes=2)))
    with pytest.raises(ModelShapeError, match="expects 6"):
        chain.forward(torch.rand(3, 7))
