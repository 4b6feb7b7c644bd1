"""Outputs of a run: ``metrics.json`` (one schema for every method), ``report.md`` and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors.torch import save_file

METRICS_SCHEMA = "tightlip-metrics/1"
REQUIRED_KEYS = (
    "norm",
    "clean_accuracy",
    "lipschitz_upper",
    "lipschitz_lower",
    "tightness",
    "certified_accuracy",
    "pgd_accuracy",
    "train_seconds",
    "config",
)

NORM_SYMBOL = {"1": "ℓ1", "2": "ℓ2", "inf": "ℓ∞"}
#: the file beside ``metrics.json`` that holds the lower certificate's witness tensors
LOWER_WITNESS_FILE = "lower_witness.safetensors"

#: configuration entries that ``report.md`` leaves to ``metrics.json`` / the checkpoint: the
#: optimizer's state, per-epoch or per-step history, and where each setting came from
REPORT_OMITS = frozenset({"optimizer", "history", "origin", "network"})


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json``. The lower certificate's witness tensors
    (``metrics["lower_witness"]``: witnesses of more than 1024 coordinates) go to
    :data:`LOWER_WITNESS_FILE` beside it, named by ``lower_certificate["tensor_file"]`` (read
    back with ``Certificate.from_dict(data, tensors)``)."""
    missing = [key for key in REQUIRED_KEYS if key not in metrics]
    if missing:
        raise KeyError(f"metrics lack required keys: {', '.join(missing)}")
    body = {key: value for key, value in metrics.items() if key != "lower_witness"}
    tensors = metrics.get("lower_witness") or {}
    if tensors:
        contiguous = {key: tensor.contiguous() for key, tensor in tensors.items()}
        save_file(contiguous, str(Path(out_dir) / LOWER_WITNESS_FILE))
        body["lower_certificate"] = {**body["lower_certificate"], "tensor_file": LOWER_WITNESS_FILE}
    path = Path(out_dir) / "metrics.json"
    path.write_text(json.dumps({"schema": METRICS_SCHEMA, **body}, indent=2, default=str))
    return path


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def results_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the console table and the report."""
    rows = [
        ("method", str(metrics.get("method", "tightlip"))),
        ("norm", NORM_SYMBOL.get(metrics["norm"], metrics["norm"])),
        ("clean accuracy", _percent(metrics["clean_accuracy"])),
        (
            "Lipschitz upper (sound"
            + (f", {metrics['upper_certificate']['method']})" if "upper_certificate" in metrics else ")"),
            f"{metrics['lipschitz_upper']:.6g}",
        ),
        ("Lipschitz lower (witness)", f"{metrics['lipschitz_lower']:.6g}"),
        ("tightness upper/lower", f"{metrics['tightness']:.4f}"),
    ]
    certified = metrics["certified_accuracy"]
    unit = "radius in input units, pixels in [0, 1]"
    for radius, value in metrics.get("certified_accuracy_best", {}).items():
        used = max(certified, key=lambda name: certified[name].get(radius, 0.0))
        rows.append((f"certified @ {radius}, best certificate ({used}; {unit})", _percent(value)))
    for method, by_radius in certified.items():
        for radius, value in by_radius.items():
            rows.append((f"certified @ {radius} ({method})", _percent(value)))
    for method, by_radius in metrics.get("float32_certified_accuracy", {}).items():
        for radius, value in by_radius.items():
            rows.append((f"float32 certified @ {radius} ({method})", _percent(value)))
    attacked = metrics.get("n_attacked")
    on_attacked = metrics.get("certified_on_attacked", {})
    for radius, value in metrics["pgd_accuracy"].items():
        count = f", {attacked} attacked images" if attacked is not None else ""
        if radius in on_attacked:
            rows.append(
                (f"certified @ {radius} (best, the attacked images)", _percent(on_attacked[radius]))
            )
        rows.append((f"PGD accuracy @ {radius}{count}", _percent(value)))
    if metrics.get("train_seconds"):  # an imported network was not trained here
        rows.append(("train seconds", f"{metrics['train_seconds']:.1f}"))
    if "certify_seconds" in metrics:
        rows.append(("certify seconds", f"{metrics['certify_seconds']:.1f}"))
    return rows


def write_report(out_dir: Path, metrics: dict[str, Any], plot_name: str = "certified.png") -> Path:
    lines = [
        f"# tightlip report: {metrics.get('method', 'tightlip')}, "
        f"{NORM_SYMBOL.get(metrics['norm'], metrics['norm'])}",
        "",
        "| quantity | value |",
        "|---|---|",
        *[f"| {label} | {value} |" for label, value in results_rows(metrics)],
        "",
        f"Test examples: {metrics.get('n_test', '?')} certified, "
        f"{metrics.get('n_attacked', '?')} attacked with PGD "
        f"({metrics.get('pgd', {}).get('steps', '?')} steps, "
        f"{metrics.get('pgd', {}).get('restarts', '?')} restarts). "
        "No certified point was broken by the attack (the run fails otherwise).",
        "",
        f"The upper bound is {_describe_upper(metrics)}; the lower bound is "
        f"{_describe_lower(metrics)}, so the true Lipschitz constant lies between them.",
        "",
        f"![certified accuracy against radius]({plot_name})",
        "",
        "Settings (the full configuration, with where each value came from, is in "
        "`metrics.json`):",
        "",
        "```json",
        json.dumps(report_config(metrics.get("config", {})), indent=2, default=str),
        "```",
    ]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_config(config: Any) -> Any:
    """``config`` without the entries named in :data:`REPORT_OMITS`, at any depth."""
    if isinstance(config, dict):
        return {k: report_config(v) for k, v in config.items() if k not in REPORT_OMITS}
    if isinstance(config, list):
        return [report_config(v) for v in config]
    return config


def _describe_upper(metrics: dict[str, Any]) -> str:
    method = metrics.get("upper_certificate", {}).get("method", "trivial")
    if method == "trivial":
        return "the sound trivial bound (float64, certified operator norms)"
    if method.endswith("-bound"):
        return f"the {method[: -len('-bound')]} network's bound by construction (certified in float64)"
    return f"the sound {method} bound (float64)"


def _describe_lower(metrics: dict[str, Any]) -> str:
    method = metrics.get("lower_certificate", {}).get("method", "gradient")
    if method == "gradient":
        return "the largest Jacobian norm ‖J_f(x)‖ found by gradient ascent (a witness)"
    return f"the {method} lower bound"


def plot_certified_curve(
    out_dir: Path, metrics: dict[str, Any], name: str = "certified.png"
) -> Path:
    """Write :func:`certified_figure` to ``out_dir/name``."""
    path = Path(out_dir) / name
    certified_figure(metrics).savefig(path, dpi=120)
    return path


def certified_figure(metrics: dict[str, Any]) -> Figure:
    """Certified accuracy against radius, both certificates, with PGD accuracy as points.

    The radius is in the units of the input, pixels scaled to [0, 1]; the PGD points say how
    many test images they were measured on (``n_attacked``, fewer than the certified curve's
    ``n_test`` by default).
    """
    curve = metrics.get("radius_curve", {})
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)  # render off-screen, without touching pyplot's global backend
    ax = fig.subplots()
    radii = curve.get("radii", [])
    for method, style in (("global", "--"), ("last_layer", "-"), ("local", ":")):
        if method in curve:
            ax.plot(radii, curve[method], style, label=f"certified ({method.replace('_', ' ')})")
    pgd = metrics.get("pgd_accuracy", {})
    if pgd:
        attacked = metrics.get("n_attacked")
        images = f", {attacked} images" if attacked is not None else ""
        ax.plot(
            [float(r) for r in pgd], list(pgd.values()), "o", label=f"PGD (empirical{images})"
        )
    norm = NORM_SYMBOL.get(metrics["norm"], metrics["norm"])
    ax.set_xlabel(f"{norm} radius (input in [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    upper, lower = metrics["lipschitz_upper"], metrics["lipschitz_lower"]
    ratio = metrics["tightness"]
    ax.set_title(
        f"L ≤ {upper:.4g}, L ≥ {lower:.4g}, ratio {ratio:.3f}"
        if math.isfinite(ratio)
        else f"L ≤ {upper:.4g}"
    )
    fig.tight_layout()
    return fig
