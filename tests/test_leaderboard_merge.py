"""``benchmarks/leaderboard.py --merge``: one table from separate runs, refusing mismatches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import leaderboard  # noqa: E402


def _run(path: Path, methods: list[str], commit: str, **header) -> Path:  # type: ignore[no-untyped-def]
    keys = ("0.3", "1", "1.58")
    rows = [
        {
            "method": m, "clean_accuracy": 0.9, "certified_global": dict.fromkeys(keys, 0.5),
            "certified_best": dict.fromkeys(keys, 0.5), "pgd_accuracy": dict.fromkeys(keys, 0.6),
            "lipschitz_upper": 1.0, "lipschitz_lower": 0.9, "tightness": 1.1,
            "train_config": {"batch_size": 256}, "seconds_per_epoch": 1.0,
        }
        for m in methods
    ]
    base = {
        "command": f"python benchmarks/leaderboard.py --methods {','.join(methods)}",
        "commit": commit, "date": "2026-12-02 12:00", "torch": "2.13.0", "threads": 1,
        "widths": [256], "arch": "c4k3,f8", "evaluated_on": "test", "epochs": 10,
        "n_train": 60000, "n_test": 10000, "n_attacked": 1000, "pgd_steps": 50,
        "pgd_restarts": 2, "radii": [0.3, 1.0, 1.58],
    }
    path.write_text(json.dumps({"header": {**base, **header}, "rows": rows}))
    return path


def test_merge_keeps_every_run_s_command_and_orders_the_methods(tmp_path: Path) -> None:
    a = _run(tmp_path / "a.json", ["gloro"], "aaaa")
    b = _run(tmp_path / "b.json", ["sandwich", "tightlip"], "bbbb")
    target = leaderboard.merge_runs([a, b], tmp_path / "out")
    merged = json.loads(target.read_text())
    assert target.name == "leaderboard_conv.json"
    assert [r["method"] for r in merged["rows"]] == ["tightlip", "sandwich", "gloro"]
    assert "# at aaaa" in merged["header"]["command"] and "# at bbbb" in merged["header"]["command"]
    assert merged["header"]["commit"] == "aaaa, bbbb"
    assert "| sandwich |" in (tmp_path / "out" / "leaderboard_conv.md").read_text()


@pytest.mark.parametrize(
    ("second", "words"),
    [({"epochs": 5}, "epochs=5"), ({}, "appears twice")],
)
def test_merge_refuses_mismatched_settings_and_duplicate_methods(
    tmp_path: Path, capsys, second, words: str  # type: ignore[no-untyped-def]
) -> None:
    a = _run(tmp_path / "a.json", ["gloro"], "aaaa")
    b = _run(tmp_path / "b.json", ["gloro" if not second else "plain"], "bbbb", **second)
    with pytest.raises(SystemExit) as stop:
        leaderboard.main(["--merge", str(a), str(b), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert not (tmp_path / "out").exists()
