"""``tightlip compare``: one table and one plot from several runs' metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tightlip.cli import app

runner = CliRunner()


def _metrics(method: str, certified: float, norm: str = "2") -> dict:
    radii = [0.0, 0.5, 1.0, 1.5]
    return {
        "method": method,
        "norm": norm,
        "clean_accuracy": 0.97,
        "certified_accuracy": {"global": {"0.3": certified + 0.1, "1.58": certified},
                               "last_layer": {"0.3": certified + 0.12, "1.58": certified - 0.01}},
        "certified_accuracy_best": {"0.3": certified + 0.12, "1.58": certified},
        "pgd_accuracy": {"0.3": 0.95, "1.58": certified + 0.05},
        "lipschitz_upper": 1.0,
        "lipschitz_lower": 0.98,
        "tightness": 1.0204,
        "train_seconds": 12.5,
        "certify_seconds": 3.0,
        "radius_curve": {"radii": radii, "global": [0.97, 0.8, 0.7, 0.6],
                         "last_layer": [0.97, 0.82, 0.69, 0.58]},
        "config": {"model": {"widths": [256, 256], "activation": "abs"}},
    }


def _run(directory: Path, metrics: dict) -> Path:
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps(metrics))
    return directory


def test_compare_writes_one_table_and_one_plot(tmp_path) -> None:
    a = _run(tmp_path / "tl", _metrics("tightlip", 0.62))
    b = _run(tmp_path / "sw", _metrics("sandwich", 0.60))
    result = runner.invoke(app, ["compare", str(a), str(b / "metrics.json"), "--out",
                                 str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "tightlip" in result.stdout and "sandwich" in result.stdout
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| tl | tightlip | 256-256 abs | 97.00 | 74.00 | 62.00 |" in table
    assert "| sw | sandwich |" in table and "1.0204" in table
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    again = runner.invoke(app, ["compare", str(a), "--out", str(tmp_path / "cmp")])
    assert again.exit_code == 2 and "--force" in again.stderr


def test_compare_refuses_bad_runs_in_one_line(tmp_path) -> None:
    a = _run(tmp_path / "a", _metrics("tightlip", 0.6))
    inf = _run(tmp_path / "inf", _metrics("tightlip", 0.6, norm="inf"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.json").write_text("{not json")
    cases = [
        ([str(tmp_path / "missing")], "no metrics.json"),
        ([str(a), str(inf)], "different norms"),
        ([str(bad)], "not a readable metrics.json"),
        ([str(a), "--out", str(a / "metrics.json")], "is a file"),
    ]
    for args, words in cases:
        result = runner.invoke(app, ["compare", *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
