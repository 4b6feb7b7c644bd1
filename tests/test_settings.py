"""One merge of settings: built-in defaults < method defaults < preset < quick < explicit.

Bug fixed here: explicit flags were overwritten by a baseline's defaults
(``tightlip train --method sandwich --loss ce`` trained with the offset loss).
"""

from __future__ import annotations

import json

import pytest
from conftest import mnist_dir_or_skip
from typer.testing import CliRunner

from tightlip.cli import app
from tightlip.errors import BadArgumentError, UnknownNameError
from tightlip.settings import PRESETS, QUICK_EPOCHS, merge_settings
from tightlip.train.config import TrainConfig

runner = CliRunner()


def test_built_in_defaults_live_in_train_config() -> None:
    settings = merge_settings("tightlip")
    assert settings.train == TrainConfig()
    assert settings.origin == {}


def test_method_defaults_override_built_in_ones() -> None:
    settings = merge_settings("sandwich")
    assert settings.train.loss == "offset" and settings.train.lr == 1e-2
    assert settings.options == {"gamma": 1.0}
    assert settings.origin["loss"] == "method"


def test_explicit_flags_beat_method_defaults() -> None:
    settings = merge_settings("sandwich", explicit={"loss": "ce", "temperature": 0.5, "lr": None})
    assert settings.train.loss == "ce"
    assert settings.train.temperature == 0.5
    assert settings.train.lr == 1e-2  # None means "not given"
    assert settings.origin["loss"] == "explicit" and settings.origin["lr"] == "method"


def test_preset_beats_method_and_explicit_beats_preset() -> None:
    settings = merge_settings(preset="robust", explicit={"epochs": 2})
    assert settings.method == "tightlip"
    assert settings.spec.activation == "abs" and settings.spec.bias
    assert settings.train.batch_size == 256 and settings.train.penalty_weight == 0.1
    assert settings.train.optimizer == "muon" and settings.train.projection == "clip"
    assert settings.train.epochs == 2 and settings.origin["epochs"] == "explicit"
    assert settings.origin["batch_size"] == "preset robust"


def test_quick_overlay_sits_between_preset_and_explicit() -> None:
    quick = merge_settings(preset="accurate", quick=True)
    assert quick.train.epochs == QUICK_EPOCHS and quick.train.batch_size == 64
    assert quick.evaluation.attack_limit == 200
    assert merge_settings(preset="accurate", quick=True, explicit={"epochs": 1}).train.epochs == 1


def test_every_preset_builds_and_states_its_purpose() -> None:
    for name, preset in PRESETS.items():
        settings = merge_settings(preset=name)
        assert settings.method == preset.method and len(preset.purpose) > 20


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(BadArgumentError, match="preset 'robust' is for method 'tightlip'"):
        merge_settings("sandwich", preset="robust")
    with pytest.raises(UnknownNameError, match="choose one of"):
        merge_settings("nope")
    with pytest.raises(UnknownNameError, match="unknown loss 'hinge-ce'"):
        merge_settings("tightlip", explicit={"loss": "hinge-ce"})
    with pytest.raises(BadArgumentError, match="unknown setting"):
        merge_settings("tightlip", explicit={"colour": "red"})


def test_loss_names_accept_the_underscore_spelling() -> None:
    assert merge_settings(explicit={"loss": "normalized_margin"}).train.loss == "normalized-margin"
    assert merge_settings(explicit={"loss": "last_layer_margin"}).train.loss == "last-layer"


@pytest.fixture()
def real_mnist():

    return mnist_dir_or_skip()


def test_cli_records_the_loss_the_user_asked_for(tmp_path, real_mnist) -> None:
    out = tmp_path / "sandwich"
    args = ["train", "--method", "sandwich", "--loss", "ce", "--quick", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--widths", "16", "--no-certify", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert saved["train"]["loss"] == "ce"
    assert saved["train"]["lr"] == 1e-2  # the method's default where no flag was given


def test_cli_presets(tmp_path) -> None:
    listed = runner.invoke(app, ["run", "--preset", "list"])
    assert listed.exit_code == 0
    assert "robust" in listed.output and "accurate" in listed.output
    unknown = runner.invoke(app, ["run", "--preset", "fast", "--out", str(tmp_path / "o")])
    assert unknown.exit_code == 2 and "unknown preset 'fast'" in unknown.output
    mismatch = runner.invoke(
        app, ["train", "--method", "sandwich", "--preset", "robust", "--out", str(tmp_path / "o")]
    )
    assert mismatch.exit_code == 2 and "is for method 'tightlip'" in mismatch.output
    assert not (tmp_path / "o").exists()


def test_internal_errors_keep_their_traceback(tmp_path, monkeypatch) -> None:
    import tightlip.cli as cli

    def broken(run):
        raise RuntimeError("a bug, not the user's fault")

    monkeypatch.setattr(cli, "run_experiment", broken)
    result = runner.invoke(app, ["run", "--quick", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
