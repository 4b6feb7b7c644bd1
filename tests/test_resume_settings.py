"""Resuming with other settings is refused, naming each difference, unless overridden; an
override is recorded in the checkpoint's history from the epoch it applied to."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import mnist_dir_or_skip
from typer.testing import CliRunner

import tightlip as t
from tightlip.cli import app
from tightlip.errors import BadArgumentError, CheckpointError
from tightlip.methods import fit
from tightlip.train.checkpoint import load_checkpoint
from tightlip.train.config import TrainConfig
from tightlip.train.loop import settings_changes, training_settings

SPEC = t.ModelSpec(input_dim=20, widths=(16,), num_classes=3, activation="abs")
CONFIG = TrainConfig(epochs=3, batch_size=50, loss="ce", penalty_weight=0.05)


def _toy(n: int = 200):
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=generator)
    x = torch.randn(3, 20, generator=generator)[y] * 3 + torch.randn(n, 20, generator=generator)
    return x, y


def _interrupted(directory, spec=SPEC, config=CONFIG) -> None:
    x, y = _toy()
    fit("tightlip", spec, config, x, y, out_dir=directory, progress=False, stop_after_epochs=1)


def _resume(directory, spec=SPEC, config=CONFIG, method="tightlip", **kwargs):
    x, y = _toy()
    return fit(method, spec, config, x, y, out_dir=directory, progress=False, resume=True, **kwargs)


def _files(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_settings_changes_names_each_difference() -> None:
    saved = training_settings("tightlip", {"kind": "mlp", "arguments": SPEC.to_dict()}, CONFIG)
    assert saved["model.widths"] == [16] and saved["train.penalty_weight"] == 0.05
    spec = replace(SPEC, activation="crelu")
    config = replace(CONFIG, loss="margin", penalty_weight=0.1)
    current = training_settings("sandwich", {"kind": "mlp", "arguments": spec.to_dict()}, config)
    assert settings_changes(saved, current) == {
        "method": {"from": "tightlip", "to": "sandwich"},
        "model.activation": {"from": "abs", "to": "crelu"},
        "train.loss": {"from": "ce", "to": "margin"},
        "train.penalty_weight": {"from": 0.05, "to": 0.1},
    }
    assert settings_changes(saved, saved) == {}


@pytest.mark.parametrize(
    ("spec", "config", "names"),
    [
        (SPEC, replace(CONFIG, penalty_weight=0.2), ["train.penalty_weight 0.05 → 0.2"]),
        (replace(SPEC, widths=(8,)), CONFIG, ["model.widths [16] → [8]"]),
        (
            replace(SPEC, activation="relu"),
            replace(CONFIG, loss="margin", lr=1e-2),
            ["model.activation 'abs' → 'relu'", "train.loss 'ce' → 'margin'", "train.lr"],
        ),
        (SPEC, replace(CONFIG, epochs=5), ["train.epochs 3 → 5"]),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, spec, config, names) -> None:
    _interrupted(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(BadArgumentError, match="--override") as caught:
        _resume(tmp_path, spec, config)
    for name in names:
        assert name in str(caught.value)
    assert _files(tmp_path) == before


def test_resume_with_another_method_is_refused(tmp_path) -> None:
    _interrupted(tmp_path)
    with pytest.raises(BadArgumentError, match="method 'tightlip' → 'plain'"):
        _resume(tmp_path, method="plain")


def test_override_records_the_changes_from_their_epoch(tmp_path) -> None:
    _interrupted(tmp_path)
    changed = replace(CONFIG, penalty_weight=0.2, lr=1e-3)
    result = _resume(tmp_path, config=changed, override=True)
    assert result.epochs_run == 3
    history = load_checkpoint(tmp_path).config["history"]
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    assert "settings_changes" not in history[0]
    assert history[1]["settings_changes"] == {
        "train.lr": {"from": 2e-3, "to": 1e-3},
        "train.penalty_weight": {"from": 0.05, "to": 0.2},
    }
    assert "settings_changes" not in history[2]
    saved = load_checkpoint(tmp_path).config["train"]
    assert saved["penalty_weight"] == 0.2 and saved["lr"] == 1e-3


def test_resume_after_an_override_compares_with_the_new_settings(tmp_path) -> None:
    _interrupted(tmp_path, config=replace(CONFIG, epochs=4))
    x, y = _toy()
    changed = replace(CONFIG, epochs=4, penalty_weight=0.2)
    fit(
        "tightlip", SPEC, changed, x, y, out_dir=tmp_path, progress=False,
        resume=True, override=True, stop_after_epochs=2,
    )
    _resume(tmp_path, config=changed)  # no difference from the latest checkpoint
    with pytest.raises(BadArgumentError, match="train.penalty_weight 0.2 → 0.05"):
        _resume(tmp_path, config=replace(CONFIG, epochs=4))


def test_override_of_a_shape_change_cannot_load_the_tensors(tmp_path) -> None:
    _interrupted(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(CheckpointError, match="model.widths .* do not fit"):
        _resume(tmp_path, spec=replace(SPEC, widths=(8,)), override=True)
    assert _files(tmp_path) == before


# --- through the command line -------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def trained_run(tmp_path):
    mnist_dir_or_skip()
    out = tmp_path / "run"
    args = ["train", "--quick", "--widths", "16", "--epochs", "2", "--no-certify"]
    first = runner.invoke(app, [*args, "--out", str(out)])
    assert first.exit_code == 0, first.output
    return out, args


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_cli_resume_refuses_then_overrides(trained_run) -> None:
    out, args = trained_run
    before = _files(out / "checkpoint")
    refused = runner.invoke(app, [*args, "--resume", "--lambda", "0.5", "--out", str(out)])
    line = _one_line_error(refused)
    assert "train.penalty_weight 0.01 → 0.5" in line and "--override" in line
    assert _files(out / "checkpoint") == before

    longer = [*args, "--epochs", "3"]  # the last --epochs counts
    done = runner.invoke(app, [*longer, "--resume", "--override", "--out", str(out)])
    assert done.exit_code == 0, done.output
    history = json.loads((out / "checkpoint" / "checkpoint.json").read_text())["history"]
    assert history[2]["settings_changes"] == {"train.epochs": {"from": 2, "to": 3}}


@pytest.mark.slow
def test_cli_does_not_replace_a_run_by_accident(trained_run) -> None:
    out, args = trained_run
    before = _files(out / "checkpoint")
    again = runner.invoke(app, [*args, "--out", str(out)])
    line = _one_line_error(again)
    assert "already holds a run" in line and "--force" in line and "--resume" in line
    assert _files(out / "checkpoint") == before
    lone = runner.invoke(app, [*args, "--override", "--out", str(out)])
    assert "--override applies only with --resume" in _one_line_error(lone)
    forced = runner.invoke(app, [*args, "--epochs", "1", "--force", "--out", str(out)])
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "checkpoint" / "checkpoint.json").read_text())["epoch"] == 1


def test_an_interrupted_run_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch) -> None:
    """Issue 21, item 7: Ctrl-C exited 130 with nothing printed."""
    import tightlip.cli as cli
    from tightlip.cli import app, interrupted_message

    assert "nothing was kept" in interrupted_message(tmp_path / "empty")

    def interrupt(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_experiment", interrupt)
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "checkpoint.json").write_text('{"epoch": 3}')
    result = runner.invoke(app, ["train", "--widths", "8", "--epochs", "5", "--out", str(out),
                                 "--resume", "--data", str(tmp_path)])
    assert result.exit_code == 130, result.output
    assert "after epoch 3" in result.stderr and "--resume" in result.stderr
