"""The command line end to end: run --quick, certify, bound, data fetch, and clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import mnist_dir_or_skip
from typer.testing import CliRunner

from tightlip.cli import app

runner = CliRunner()

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    mnist_dir_or_skip()
    out = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["run", "--quick", "--out", str(out), "--widths", "64,64"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_run_quick_writes_metrics_report_and_plot(quick_run) -> None:
    out, output = quick_run
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "norm",
        "clean_accuracy",
        "lipschitz_upper",
        "lipschitz_lower",
        "tightness",
        "certified_accuracy",
        "pgd_accuracy",
        "train_seconds",
        "config",
        "float32_certified_accuracy",
    ):
        assert key in metrics
    assert metrics["norm"] == "2"
    assert set(metrics["certified_accuracy"]) >= {"global", "last_layer"}
    assert set(metrics["certified_accuracy"]["global"]) == {"0.3", "1", "1.58"}
    assert 0 < metrics["lipschitz_lower"] <= metrics["lipschitz_upper"]
    assert math.isclose(
        metrics["tightness"], metrics["lipschitz_upper"] / metrics["lipschitz_lower"]
    )
    assert metrics["clean_accuracy"] > 0.5
    for radius, pgd in metrics["pgd_accuracy"].items():
        assert metrics["certified_accuracy"]["last_layer"][radius] <= pgd + 1e-9 or (
            metrics["n_attacked"] < metrics["n_test"]
        )
    assert (out / "report.md").read_text().startswith("# tightlip report")
    assert (out / "certified.png").read_bytes()[:4] == b"\x89PNG"
    assert "tightness" in output
    # piped output is never wrapped: the paths written stay on one line
    wrote = [line for line in output.splitlines() if line.startswith("wrote ")]
    assert wrote == [f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'certified.png'}"]
    report = (out / "report.md").read_text()
    assert '"origin"' not in report and len(report.splitlines()) < 120


CHEAP_CERTIFY = ["--quick", "--lower-seconds", "1", "--attack-limit", "20"]


def _outputs(directory) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in ("metrics.json", "report.md", "certified.png")}


def test_certify_writes_a_folder_of_its_own(quick_run) -> None:
    out, _ = quick_run
    before = _outputs(out)
    result = runner.invoke(app, ["certify", str(out / "checkpoint"), *CHEAP_CERTIFY])
    assert result.exit_code == 0, result.output
    assert _outputs(out) == before
    (folder,) = [p for p in out.iterdir() if p.name.startswith("certify-")]
    assert f"wrote {folder / 'metrics.json'}" in result.output
    metrics = json.loads((folder / "metrics.json").read_text())
    config = metrics["config"]
    assert config["checkpoint"] == str(out / "checkpoint")
    assert config["evaluation"]["attack_limit"] == 20
    assert not {"optimizer", "history", "tensors_sha256"} & set(config)
    report = (folder / "report.md").read_text()
    for word in ("param_groups", "optimizer", "history", "scalars"):
        assert word not in report
    assert len(report.splitlines()) < 120


def test_certify_refuses_to_replace_results(quick_run, tmp_path) -> None:
    out, _ = quick_run
    before = _outputs(out)
    into_run = runner.invoke(app, ["certify", str(out / "checkpoint"), "--out", str(out), "--force"])
    assert into_run.exit_code == 2 and "the run that made the checkpoint" in into_run.stderr
    assert _outputs(out) == before
    target = tmp_path / "certified"
    first = runner.invoke(app, ["certify", str(out / "checkpoint"), "--out", str(target), *CHEAP_CERTIFY])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["certify", str(out / "checkpoint"), "--out", str(target), *CHEAP_CERTIFY])
    assert again.exit_code == 2 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    forced = runner.invoke(
        app, ["certify", str(out / "checkpoint"), "--out", str(target), "--force", *CHEAP_CERTIFY]
    )
    assert forced.exit_code == 0, forced.output


def test_certify_and_bound_commands(quick_run) -> None:
    out, _ = quick_run
    certified = runner.invoke(
        app,
        [
            "certify",
            str(out / "checkpoint"),
            "--quick",
            "--out",
            str(out / "again"),
            "--lower-seconds",
            "3",
            "--attack-limit",
            "50",
        ],
    )
    assert certified.exit_code == 0, certified.output
    again = json.loads((out / "again" / "metrics.json").read_text())
    first = json.loads((out / "metrics.json").read_text())
    assert again["lipschitz_upper"] == first["lipschitz_upper"]
    assert again["clean_accuracy"] == first["clean_accuracy"]
    for norm in ("1", "2", "inf"):
        bound = runner.invoke(
            app, ["bound", str(out / "checkpoint"), "--norm", norm, "--lower-seconds", "2"]
        )
        assert bound.exit_code == 0, bound.output
        assert "trivial" in bound.output


def test_bound_accepts_plain_state_dict(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    result = runner.invoke(
        app,
        [
            "bound",
            str(path),
            "--architecture",
            "linear,relu,linear",
            "--lower-seconds",
            "1",
            "--data",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "trivial" in result.output


def test_clear_errors(tmp_path) -> None:
    missing = runner.invoke(app, ["certify", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert "missing" in missing.output
    bad_data = runner.invoke(
        app, ["run", "--quick", "--data", str(tmp_path / "no-mnist"), "--out", str(tmp_path / "o")]
    )
    assert bad_data.exit_code == 2
    assert "no-mnist" in bad_data.output
    bad_norm = runner.invoke(app, ["run", "--quick", "--norm", "3", "--out", str(tmp_path / "o")])
    assert bad_norm.exit_code == 2
    assert "unsupported norm" in bad_norm.output


def test_data_fetch_from_file_url(tmp_path) -> None:
    source = mnist_dir_or_skip()
    result = runner.invoke(
        app, ["data", "fetch", "mnist", "--url", source.as_uri() + "/", "--dest", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.gz"))) == 4


def test_help_lists_every_activation_and_certify_quick_is_about_certifying() -> None:
    """Issue 21: --activation listed 7 of the 9 activations; certify --quick described training."""
    from tightlip.layers.activation import ACTIVATIONS

    train_help = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=200).output.split())
    for name in ACTIVATIONS.names():
        assert name in train_help, name
    certify_help = runner.invoke(app, ["certify", "--help"], terminal_width=200).output
    assert "training examples" not in certify_help and "test images" in certify_help


def test_data_fetch_offers_only_what_it_can_download() -> None:
    text = " ".join(runner.invoke(app, ["data", "fetch", "--help"], terminal_width=200).output.split())
    listed = text[text.index("dataset name (") :].split(")")[0]
    assert "mnist" in listed and "cifar10" in listed and "files" not in listed


def test_certification_reports_each_stage_off_a_terminal(quick_run) -> None:
    """Issue 21, item 7: certification ran for minutes with no output; each stage now prints
    one line on stderr with the elapsed time."""
    out, output = quick_run
    result = runner.invoke(app, ["certify", str(out / "checkpoint"), "--quick", "--out",
                                 str(out.parent / "again"), "--lower-seconds", "1"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("certify: ")]
    assert [line.split()[1] for line in lines][:3] == ["sound", "lower", "certificates"]
