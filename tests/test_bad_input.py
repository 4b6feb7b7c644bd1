"""Bad input gets one clear line: exit code 2, one line on stderr naming the problem, no
traceback, and nothing in the output directory is touched."""

from __future__ import annotations

import pytest
import torch
from conftest import mnist_dir_or_skip
from typer.testing import CliRunner

import tightlip as t
from tightlip.cli import app
from tightlip.data import resolve_data_dir
from tightlip.train.checkpoint import save_checkpoint

runner = CliRunner()

SENTINEL = '{"schema": "an earlier run"}\n'


def _mnist_or_skip() -> None:
    mnist_dir_or_skip()


def assert_one_line_error(result, *words: str) -> None:
    """Exit 2 through ``typer.Exit`` (not an exception), one stderr line containing ``words``."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--epochs", "0"], ["epochs", "0"]),
        (["train", "--epochs", "-3"], ["epochs", "-3"]),
        (["run", "--epochs", "0"], ["epochs", "0"]),
        (["train", "--widths", ","], ["widths", "empty"]),
        (["train", "--widths", "0,4"], ["layer sizes must be positive"]),
        (["run", "--widths", "64,-1"], ["layer sizes must be positive"]),
        (["train", "--radii", "1,-1"], ["radii", "-1"]),
        (["train", "--radii", "0"], ["radii"]),
        (["train", "--attack-limit", "-1"], ["attack limit", "-1"]),
        (["train", "--lower-seconds", "-1"], ["lower seconds"]),
        (["train", "--batch-size", "0"], ["batch size"]),
        (["train", "--activation", "[red]nope"], ["[red]nope", "abs"]),
        (["train", "--method", "[bold]x"], ["[bold]x", "sandwich"]),
        (["train", "--arch", ""], ["architecture", "no layer"]),
        (["train", "--arch", "c16k3,"], ["c16k3,", "empty layer"]),
        (["train", "--arch", "c16k3,,f10"], ["c16k3,,f10", "empty layer"]),
        (["run", "--arch", " "], ["no layer"]),
        (["train", "--optimizer", "sgd"], ["optimizer", "sgd", "muon"]),
        (["train", "--projection", "rescale", "--activation", "sincos"], ["positively homogeneous"]),
        (["train", "--projection", "project"], ["projection", "'project'", "clip"]),
    ],
)
def test_training_options_refused_in_one_line(tmp_path, args, words) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text(SENTINEL)
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert_one_line_error(result, *words)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == SENTINEL


def test_long_message_stays_one_line(tmp_path) -> None:
    """Rich wraps at 80 columns under CliRunner; the unknown-loss message is longer."""
    result = runner.invoke(
        app, ["train", "--loss", "a-loss-name-that-is-long-enough", "--out", str(tmp_path)]
    )
    assert_one_line_error(result, "a-loss-name-that-is-long-enough", "normalized-margin")
    assert len(result.stderr.strip()) > 80


def _small_checkpoint(directory, input_dim: int = 16) -> None:
    spec = t.ModelSpec(input_dim=input_dim, widths=(8,), num_classes=10, activation="abs")
    save_checkpoint(
        directory,
        t.build_model(spec),
        {"method": "tightlip", "model": {"kind": "mlp", "arguments": spec.to_dict()},
         "train": {"norm": "2"}},
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--radii", "1,-1"], ["radii", "-1"]),
        (["--attack-limit", "-5"], ["attack limit", "-5"]),
        (["--lower-seconds", "-2"], ["lower seconds"]),
    ],
)
def test_certify_options_refused_before_loading(tmp_path, args, words) -> None:
    """Options are checked first: the checkpoint does not even need to exist."""
    result = runner.invoke(app, ["certify", str(tmp_path / "nothing"), *args])
    assert_one_line_error(result, *words)


def test_bound_refuses_negative_lower_seconds(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    result = runner.invoke(
        app, ["bound", str(tmp_path / "plain.pt"), "--lower-seconds", "-1", "--data", str(tmp_path)]
    )
    assert_one_line_error(result, "--lower-seconds", "-1")


def test_certify_wrong_input_dimension_names_both_shapes(tmp_path) -> None:
    _mnist_or_skip()
    _small_checkpoint(tmp_path / "checkpoint")
    result = runner.invoke(app, ["certify", str(tmp_path / "checkpoint"), "--quick"])
    assert_one_line_error(result, "784 features each", "(784,)", "expects 16 input features")
    assert not list(tmp_path.glob("certify-*"))


def test_bound_of_a_small_model_starts_from_random_points(tmp_path) -> None:
    """MNIST found by itself does not fit a 16-input model: random starts, with a note."""
    _mnist_or_skip()
    _small_checkpoint(tmp_path / "checkpoint")
    result = runner.invoke(app, ["bound", str(tmp_path / "checkpoint"), "--lower-seconds", "1"])
    assert result.exit_code == 0, result.output
    assert "random points" in result.stderr
    assert "trivial" in result.stdout


def test_bound_with_explicit_data_of_the_wrong_shape(tmp_path) -> None:
    _mnist_or_skip()
    _small_checkpoint(tmp_path / "checkpoint")
    data = resolve_data_dir(None)
    result = runner.invoke(
        app, ["bound", str(tmp_path / "checkpoint"), "--data", str(data), "--lower-seconds", "1"]
    )
    assert_one_line_error(result, "784 features", "expects 16 input features")


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("whole.pt", ["whole pickled model", "state_dict()", "ONNX"]),
        ("garbage.safetensors", ["not a readable safetensors file"]),
        ("truncated.safetensors", ["not a readable safetensors file"]),
    ],
)
def test_bound_of_unreadable_model_files(tmp_path, name, words) -> None:
    from safetensors.torch import save_file

    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    torch.save(model, tmp_path / "whole.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00garbage" * 10)
    save_file(model.state_dict(), str(tmp_path / "full.safetensors"))
    data = (tmp_path / "full.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["bound", str(tmp_path / name), "--data", str(tmp_path)])
    assert_one_line_error(result, *words)


def test_certify_of_an_edited_checkpoint(tmp_path) -> None:
    import json

    _small_checkpoint(tmp_path / "checkpoint")
    path = tmp_path / "checkpoint" / "checkpoint.json"
    config = json.loads(path.read_text())
    config["train"]["norm"] = "inf"
    path.write_text(json.dumps(config))
    result = runner.invoke(app, ["certify", str(tmp_path / "checkpoint")])
    assert_one_line_error(result, "was edited after it was written")


def test_certify_output_dir_is_new_every_time(tmp_path) -> None:
    from tightlip.cli import certify_output_dir

    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.mkdir(parents=True)
    first = certify_output_dir(checkpoint, None, force=False, now=0.0)
    assert first.parent == tmp_path / "run" and first.name.startswith("certify-")
    first.mkdir()
    second = certify_output_dir(checkpoint, None, force=False, now=0.0)
    assert second.name == first.name + "-1"


def _output_path_cases(tmp_path):
    """(args, words) for every output path that cannot be written (issue 21, item 2)."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("the user's notes\n")
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    own = tmp_path / "own"
    own.mkdir()
    (own / "report.md").write_text("the user's own report\n")
    _small_checkpoint(tmp_path / "run" / "checkpoint")
    checkpoint = str(tmp_path / "run" / "checkpoint")
    return [
        (["train", "--quick", "--out", str(a_file)], ["notes.txt", "is a file"]),
        (["run", "--quick", "--out", str(a_file)], ["notes.txt", "is a file"]),
        (["train", "--quick", "--out", str(a_file / "x")], ["notes.txt", "is a file"]),
        (["certify", checkpoint, "--quick", "--out", str(a_file)], ["notes.txt", "is a file"]),
        (["bound", checkpoint, "--method", "trivial", "--json", str(a_dir)], ["a_dir", "directory"]),
        (["export", checkpoint, str(a_dir / "m.onnx"), "--force"], []),
        (["train", "--quick", "--out", str(own)], ["report.md"]),
        (["train", "--nproc", "2", "--nnodes", "x", "--rdzv-endpoint", "localhost:29400",
          "--out", str(tmp_path / "ddp")], ["--nnodes", "'x'"]),
        (["train", "--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "localhost",
          "--out", str(tmp_path / "ddp")], ["--rdzv-endpoint", "HOST:PORT"]),
        (["train", "--nproc", "2", "--out", str(a_file)], ["notes.txt", "is a file"]),
    ]


def test_every_output_path_is_checked_before_any_work(tmp_path) -> None:
    """A file named as an output directory, a directory named as an output file, a user's own
    report, and a malformed launch are each refused in one line, and nothing is touched."""
    cases = _output_path_cases(tmp_path)
    (tmp_path / "a_dir" / "m.onnx").mkdir()  # export --force onto a directory
    for args, words in cases:
        result = runner.invoke(app, args)
        assert_one_line_error(result, *words)
    assert (tmp_path / "notes.txt").read_text() == "the user's notes\n"
    assert (tmp_path / "own" / "report.md").read_text() == "the user's own report\n"
    assert sorted(p.name for p in (tmp_path / "own").iterdir()) == ["report.md"]
    assert not (tmp_path / "ddp").exists()
