"""``tightlip compare``: runs side by side, from their ``metrics.json``.

One row per run: its name, method, architecture, clean accuracy, certified accuracy at every
radius (the best certificate the run has), PGD accuracy, the sound upper and certified lower
bound with their ratio, and the seconds spent; one figure overlays the runs' certified curves
(best certificate per radius), each labelled with its run and method. Runs of different norms
are refused: their radii are not comparable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tightlip.errors import BadArgumentError
from tightlip.eval.report import NORM_SYMBOL


@dataclass(frozen=True)
class RunRecord:
    """One run: where it is, a short name, and its metrics."""

    name: str
    path: Path
    metrics: dict[str, Any]


def read_run(path: Path) -> RunRecord:
    """A run directory (holding ``metrics.json``) or a ``metrics.json`` file."""
    file = path / "metrics.json" if path.is_dir() else path
    if not file.is_file():
        raise BadArgumentError(f"{path}: no metrics.json (give a run directory or its metrics.json)")
    try:
        metrics = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadArgumentError(f"{file}: not a readable metrics.json ({error})") from error
    needed = ("method", "norm", "clean_accuracy", "certified_accuracy", "lipschitz_upper")
    missing = [key for key in needed if not isinstance(metrics, dict) or key not in metrics]
    if missing:
        raise BadArgumentError(f"{file}: not a tightlip metrics.json (no {', '.join(missing)})")
    name = file.parent.name if file.name == "metrics.json" else file.stem
    return RunRecord(name=name, path=file, metrics=metrics)


def read_runs(paths: list[Path]) -> list[RunRecord]:
    """Every run, checked before anything is written: at least one, one norm, unique names."""
    if not paths:
        raise BadArgumentError("compare needs at least one run directory")
    runs = [read_run(path) for path in paths]
    norms = sorted({str(run.metrics["norm"]) for run in runs})
    if len(norms) > 1:
        raise BadArgumentError(
            f"the runs certify different norms ({', '.join(norms)}): their radii do not compare"
        )
    seen: dict[str, int] = {}
    named = []
    for run in runs:
        count = seen.get(run.name, 0)
        seen[run.name] = count + 1
        label = run.name if count == 0 else f"{run.name} ({count + 1})"
        named.append(RunRecord(label, run.path, run.metrics))
    return named


def best_certified(metrics: dict[str, Any]) -> dict[str, float]:
    """Certified accuracy per radius, the best certificate the run has."""
    best = metrics.get("certified_accuracy_best")
    if isinstance(best, dict) and best:
        return {str(k): float(v) for k, v in best.items()}
    radii: dict[str, float] = {}
    for by_radius in metrics["certified_accuracy"].values():
        for key, value in by_radius.items():
            radii[key] = max(radii.get(key, 0.0), float(value))
    return radii


def architecture(metrics: dict[str, Any]) -> str:
    """A short description: the arch string, or the widths, with the activation."""
    model = metrics.get("config", {}).get("model", {})
    shape = model.get("arch") or "-".join(str(w) for w in model.get("widths", [])) or "?"
    activation = model.get("activation")
    return f"{shape} {activation}" if activation else str(shape)


def radius_keys(runs: list[RunRecord]) -> list[str]:
    keys = {key for run in runs for key in best_certified(run.metrics)}
    return sorted(keys, key=float)


def table_rows(runs: list[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """The header and one row of text cells per run."""
    keys = radius_keys(runs)
    header = ["run", "method", "architecture", "clean %"]
    header += [f"cert. {k} %" for k in keys] + [f"PGD {k} %" for k in keys]
    header += ["upper", "lower", "upper/lower", "train s", "certify s"]
    rows = []
    for run in runs:
        m = run.metrics
        certified, pgd = best_certified(m), m.get("pgd_accuracy", {})
        cells = [run.name, str(m["method"]), architecture(m), _percent(m["clean_accuracy"])]
        cells += [_percent(certified.get(k)) for k in keys]
        cells += [_percent(pgd.get(k)) for k in keys]
        cells += [
            f"{m['lipschitz_upper']:.5g}",
            _number(m.get("lipschitz_lower"), ".5g"),
            _number(m.get("tightness"), ".4f"),
            _number(m.get("train_seconds"), ".1f") if m.get("train_seconds") else "-",
            _number(m.get("certify_seconds"), ".1f"),
        ]
        rows.append(cells)
    return header, rows


def markdown_table(runs: list[RunRecord]) -> str:
    header, rows = table_rows(runs)
    norm = NORM_SYMBOL.get(str(runs[0].metrics["norm"]), str(runs[0].metrics["norm"]))
    lines = [
        f"Certified accuracy: the best certificate of each run, at {norm} radii in input units "
        "(pixels in [0, 1]); PGD on each run's attacked subset.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def comparison_figure(runs: list[RunRecord]) -> Figure:
    """The runs' certified curves (best certificate at each radius) on one plot."""
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for run in runs:
        curve = run.metrics.get("radius_curve", {})
        radii = curve.get("radii", [])
        series = [curve[name] for name in ("global", "last_layer", "local") if name in curve]
        if radii and series:
            best = [max(values) for values in zip(*series, strict=True)]
        else:  # no curve recorded: the table's points
            points = sorted(best_certified(run.metrics).items(), key=lambda kv: float(kv[0]))
            radii, best = [float(k) for k, _ in points], [v for _, v in points]
        ax.plot(radii, best, "-o" if len(radii) < 10 else "-",
                label=f"{run.name} ({run.metrics['method']})")
    norm = NORM_SYMBOL.get(str(runs[0].metrics["norm"]), str(runs[0].metrics["norm"]))
    ax.set_xlabel(f"{norm} radius (input in [0, 1])")
    ax.set_ylabel("certified accuracy (best certificate)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    methods = ", ".join(dict.fromkeys(str(run.metrics["method"]) for run in runs))
    ax.set_title(f"certified accuracy: {methods}")
    fig.tight_layout()
    return fig


def write_comparison(runs: list[RunRecord], out: Path) -> list[Path]:
    """``out/compare.md``, ``out/compare.json`` and ``out/compare.png``."""
    out.mkdir(parents=True, exist_ok=True)
    header, rows = table_rows(runs)
    paths = [out / "compare.md", out / "compare.json", out / "compare.png"]
    paths[0].write_text(markdown_table(runs))
    paths[1].write_text(
        json.dumps(
            {
                "runs": [str(run.path) for run in runs],
                "header": header,
                "rows": rows,
            },
            indent=2,
        )
    )
    comparison_figure(runs).savefig(paths[2], dpi=120)
    return paths


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}"


def _number(value: Any, spec: str) -> str:
    return "-" if value is None else format(float(value), spec)
