"""MNIST leaderboard: tightlip against the baselines, matched MLPs, one harness.

Every method trains an MLP with the same hidden widths on the same data and is measured by the
same code (:func:`tightlip.eval.experiment.evaluate`): clean accuracy, certified accuracy at ℓ2 radii
0.3, 1.0 and 1.58 (the global certificate ``top1 − top2 > √2 L ε``, and the best certificate
the method has: global, last-layer-exact, or per-input local bounds for local-lip), PGD accuracy
at the same radii, the sound Lipschitz upper bound used for certification, a lower bound (a
Jacobian-norm witness), their ratio, and seconds per epoch. Every certified point that was
attacked is checked against PGD; a certified-and-broken point aborts the run
(``SoundnessError``), for the local certificates too.

    python benchmarks/leaderboard.py                       # default short run (see --help)
    python benchmarks/leaderboard.py --epochs 20           # longer
    python benchmarks/leaderboard.py --quick               # smoke run on a subset
    python benchmarks/leaderboard.py --merge a.json b.json # one table from separate runs
    python benchmarks/leaderboard.py --epochs 20 --methods tightlip --seeds 0,1,2 \
        --tightlip-batch-size 256 --optimizer muon --projection clip --lr 0.01 --test-limit 0
                                                           # issue 19's rows: mean ± std

Budget: one epoch over the 60k MNIST images takes about 3 to 60 s per method on one thread
of the shared 2-core machine (orthogonal is the slowest, see the table); the default run
(3 epochs, widths 256,256, 1000 test images) takes roughly 15 minutes, and the committed
``--epochs 20 --test-limit 2000`` table about 60 minutes (baselines 50, tightlip 10).

Baselines train with their published settings (``tightlip.methods.METHODS.get(name).defaults``,
batch ``--batch-size`` = 256 as in the LBDN reference code); the tightlip row has its own
tuned flags (``--tightlip-batch-size``, ``--penalty-weight`` ...). Widths, depth, epochs,
data and the whole evaluation are shared.

Writes ``benchmarks/results/leaderboard.{md,json}`` (``--out`` to change), including the exact
command.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import torch
from provenance import git_commit

from tightlip.data import load_mnist_splits
from tightlip.data.datasets import stratified_subset
from tightlip.eval.certify import radius_key
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.methods import METHODS, fit
from tightlip.model import ModelSpec
from tightlip.settings import Settings, merge_settings

try:  # registers the "gradient" and "sampled" lower bounds when that module is present
    import tightlip.bounds.lower  # noqa: F401
except ImportError:
    pass

RESULTS = Path(__file__).resolve().parent / "results"
RADII = (0.3, 1.0, 1.58)
ALL_METHODS = ("tightlip", "sandwich", "local-lip", "plain", "specnorm", "orthogonal")
CONV_METHODS = (*ALL_METHODS, "gloro")
#: ``--arch conv``: the 4C3F network of GloRo (Leino et al. 2021) and of the local-Lipschitz
#: paper (Huang et al. 2021) on MNIST; ``--arch`` takes any other arch string too
CONV_ARCH = "c32k3,c32k4s2,c64k3,c64k4s2,f512,f512"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs for every method")
    parser.add_argument("--widths", default="256,256", help="hidden widths, shared by all")
    parser.add_argument(
        "--arch",
        default="",
        help=f"a conv arch string shared by all (tightlip.arch); 'conv' is 4C3F, {CONV_ARCH}; "
        "results go to leaderboard_conv.{md,json}",
    )
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        help="hold out N training images (class-stratified) and evaluate on them instead of "
        "the test set: the split to tune on (results go to *_validation.{md,json})",
    )
    parser.add_argument("--train-limit", type=int, default=None, help="subset of train split")
    parser.add_argument(
        "--test-limit", type=int, default=1000, help="class-stratified test subset (0: all)"
    )
    parser.add_argument("--attack-limit", type=int, default=500)
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--pgd-restarts", type=int, default=2)
    parser.add_argument("--lower-seconds", type=float, default=20.0)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="batch size of every baseline (256: the LBDN reference code's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="data split and training seed")
    parser.add_argument(
        "--seeds",
        default=None,
        help="comma-separated training seeds (e.g. 0,1,2): every method is trained once per "
        "seed on the same data, and the table shows mean ± std over them (default: --seed)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for these sizes on the shared 2-core machine)",
    )
    parser.add_argument("--data", type=Path, default=None, help="MNIST directory")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="2000/300 examples, 1 epoch")
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the rows of --methods in an existing leaderboard.json (same settings)",
    )
    parser.add_argument(
        "--save-models",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep each trained model as a checkpoint in DIR/METHOD (for tightlip bound or "
        "certify later)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="write one table to --out from the rows of separate runs (the same arch, epochs, "
        "data and evaluation; each row keeps its own command and commit); trains nothing",
    )
    tl = parser.add_argument_group("tightlip row (the lead tunes these)")
    tl.add_argument(
        "--tightlip-batch-size",
        type=int,
        default=8,
        help="tightlip's own batch size (0: use --batch-size)",
    )
    tl.add_argument("--activation", default="abs")
    tl.add_argument("--loss", default="normalized_margin")
    tl.add_argument("--margin-epsilon", type=float, default=2.0)
    tl.add_argument("--temperature", type=float, default=0.1)
    tl.add_argument("--penalty", default="log")
    tl.add_argument("--penalty-weight", type=float, default=0.1)
    tl.add_argument(
        "--no-bias", dest="bias", action="store_false", help="bias-free tightlip layers"
    )
    tl.add_argument("--lr", type=float, default=None, help="tightlip lr (TrainConfig default)")
    tl.add_argument("--optimizer", default=None, help="tightlip optimizer: adam or muon")
    tl.add_argument(
        "--projection", default=None, help="tightlip: none, rescale or clip after each step"
    )
    tl.add_argument(
        "--tightlip-epochs", type=int, default=0, help="tightlip's own epochs (0: use --epochs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.train_limit = args.train_limit or 2000
        args.test_limit = min(args.test_limit, 300)
        args.attack_limit = min(args.attack_limit, 100)
        args.epochs = 1
        args.lower_seconds = min(args.lower_seconds, 5.0)
    if args.test_limit == 0:
        args.test_limit = None
    args.seed_list = (
        [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [args.seed]
    )
    if args.arch == "conv":
        args.arch = CONV_ARCH
    if args.methods is None:
        args.methods = ",".join(CONV_METHODS if args.arch else ALL_METHODS)
    return args


def results_stem(args: argparse.Namespace) -> str:
    """``leaderboard``, ``leaderboard_conv``, with ``_validation`` when tuning."""
    return "leaderboard" + ("_conv" if args.arch else "") + (
        "_validation" if args.validation else ""
    )


def hold_out_validation(data: Any, size: int, seed: int) -> Any:
    """The training split cut in two: train on the rest, "test" on ``size`` held-out images.

    The held-out images are a class-stratified subset of the training split
    (:func:`tightlip.data.datasets.stratified_subset`, seeded), so tuning never sees the test
    set.
    """
    index = torch.from_numpy(stratified_subset(data.train_y, size, seed=1000 + seed))
    held = torch.zeros(data.train_y.shape[0], dtype=torch.bool)
    held[index] = True
    return replace(
        data,
        train_x=data.train_x[~held],
        train_y=data.train_y[~held],
        test_x=data.train_x[held],
        test_y=data.train_y[held],
    )


def deviations() -> dict[str, str]:
    """How each baseline departs from its paper (``Method.deviations``)."""
    return {name: m.deviations for name, m in METHODS.items() if name != "tightlip"}


def method_settings(name: str, spec: ModelSpec, args: argparse.Namespace) -> Settings:
    """tightlip's row from the CLI flags; each baseline from its published defaults.

    One merge (:func:`tightlip.settings.merge_settings`): the harness's shared settings
    (epochs, batch size, seed, sizes) are explicit for every method.
    """
    explicit: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "norm": "2",
        "widths": spec.widths,
        "arch": spec.arch,
    }
    if name == "tightlip":
        explicit.update(
            batch_size=args.tightlip_batch_size or args.batch_size,
            activation=args.activation,
            bias=args.bias,
            loss=args.loss,
            margin_epsilon=args.margin_epsilon,
            temperature=args.temperature,
            penalty=args.penalty,
            penalty_weight=args.penalty_weight,
            lr=args.lr,
            optimizer=args.optimizer,
            projection=args.projection,
            epochs=args.tightlip_epochs or args.epochs,
        )
    return merge_settings(name, explicit=explicit)


def _model_folder(name: str, args: argparse.Namespace) -> str:
    """``METHOD``, or ``METHOD-seedN`` when several seeds are trained."""
    return name if len(getattr(args, "seed_list", [])) <= 1 else f"{name}-seed{args.seed}"


def replace_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """``args`` with another training seed (the data split stays that of ``--seed``)."""
    return argparse.Namespace(**{**vars(args), "seed": seed})


def run_method(
    name: str, spec: ModelSpec, args: argparse.Namespace, data: Any, evaluation: EvalConfig
) -> dict[str, Any]:
    settings = method_settings(name, spec, args)
    config = settings.train
    started = time.perf_counter()
    result = fit(
        name,
        settings.spec,
        config,
        data.train_x,
        data.train_y,
        options=settings.options,
        out_dir=None if args.save_models is None else args.save_models / _model_folder(name, args),
        progress=False,
    )
    model = result.model
    model_spec = settings.spec.to_dict() if name == "tightlip" else None
    train_seconds = time.perf_counter() - started
    model.eval()
    metrics = evaluate(
        model, "2", data, evaluation, method=name, train_seconds=result.train_seconds
    )
    return {
        "method": name,
        "train_config": config.to_dict(),
        "model_spec": model_spec,
        "clean_accuracy": metrics["clean_accuracy"],
        "certified_global": metrics["certified_accuracy"]["global"],
        "certified_by_certificate": metrics["certified_accuracy"],
        "certified_best": metrics["certified_accuracy_best"],
        "pgd_accuracy": metrics["pgd_accuracy"],
        "lipschitz_upper": metrics["lipschitz_upper"],
        "upper_method": metrics["upper_certificate"]["method"],
        "lipschitz_lower": metrics["lipschitz_lower"],
        "lower_method": metrics["lower_certificate"]["method"],
        "tightness": metrics["tightness"],
        "seconds_per_epoch": result.train_seconds / max(1, result.epochs_run),
        "train_seconds_total": train_seconds,
        "certify_seconds": metrics["certify_seconds"],
        "n_test": metrics["n_test"],
        "n_attacked": metrics["n_attacked"],
        "final_train_accuracy": result.history[-1]["train_accuracy"] if result.history else None,
    }


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def group_by_method(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows of each method together (several seeds), in the order methods first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["method"], []).append(row)
    return list(groups.values())


def _spread(
    group: list[dict[str, Any]],
    value: Any,
    scale: float = 100.0,
    spec: str = ".1f",
) -> str:
    """``mean`` of ``value(row)`` over the group, ``mean ± std`` (sample std) for several."""
    values = [scale * float(value(row)) for row in group]
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, spec)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    std_spec = spec if spec.endswith("f") else ".2g"
    return f"{format(mean, spec)} ± {format(std, std_spec)}"


def write_markdown(path: Path, rows: list[dict[str, Any]], header: dict[str, Any]) -> None:
    keys = [radius_key(r) for r in RADII]
    network = f"conv nets `{header['arch']}`" if header.get("arch") else "MLPs"
    where = (
        f"a class-stratified validation split of {header['n_test']} training images (held "
        "out of training; the test set is not used)"
        if header.get("evaluated_on") == "validation"
        else f"{header['n_test']} test images"
        + (" (the full test set)" if header["n_test"] == 10000 else ", a class-stratified subset")
    )
    lines = [
        f"# MNIST leaderboard (ℓ2, matched {network})",
        "",
        f"Command: `{header['command']}`",
        "",
        f"Commit {header['commit']}, {header['date']}; torch {header['torch']}, "
        f"{header['threads']} thread(s) on a shared 2-core CPU machine (no GPU). "
        f"Dense widths {header['widths']}, {header['epochs']} epoch(s) on "
        f"{header['n_train']} training images; evaluated on {where}, PGD ({header['pgd_steps']} steps, {header['pgd_restarts']} restarts) on the "
        f"first {header['n_attacked']} of them. Certified and PGD accuracy in %.",
        "",
        "| method | clean | cert. global "
        + " / ".join(keys)
        + " | cert. best "
        + " / ".join(keys)
        + " | PGD "
        + " / ".join(keys)
        + " | upper L | lower L | upper/lower | batch | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in group_by_method(rows):
        row = group[0]
        seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
        lines.append(
            f"| {row['method']}{seeds} | {_spread(group, lambda r: r['clean_accuracy'])} | "
            + " / ".join(_spread(group, lambda r, k=k: r["certified_global"][k]) for k in keys)
            + " | "
            + " / ".join(_spread(group, lambda r, k=k: r["certified_best"][k]) for k in keys)
            + " | "
            + " / ".join(
                _spread(group, lambda r, k=k: r["pgd_accuracy"].get(k, float("nan")))
                for k in keys
            )
            + f" | {_spread(group, lambda r: r['lipschitz_upper'], 1, '.4g')} | "
            f"{_spread(group, lambda r: r['lipschitz_lower'], 1, '.4g')} | "
            f"{_spread(group, lambda r: r['tightness'], 1, '.3f')} | "
            f"{row['train_config']['batch_size']} | "
            f"{_spread(group, lambda r: r['seconds_per_epoch'], 1, '.1f')} |"
        )
    lines += [
        "",
        "*cert. global*: `top1 − top2 > √2·L·ε` with the method's sound bound L (tightlip and "
        "specnorm/orthogonal: trivial bound of the actual weights; sandwich: γ by construction; "
        "plain: best available verifier; local-lip: trivial bound). *cert. best*: the best of the "
        "global, last-layer-exact (GloRo) and, for local-lip, per-input local certificates. "
        "*lower L*: a Jacobian-norm witness (gradient ascent), so upper/lower bounds how loose "
        "the certificate can be.",
        "",
        "Changes from the published baseline settings:",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in deviations().items()]
    lines.append("")
    path.write_text("\n".join(lines))


#: header fields that must agree for rows of separate runs to share one table
SHARED_SETTINGS = (
    "arch", "widths", "epochs", "evaluated_on", "n_train", "n_test", "n_attacked",
    "pgd_steps", "pgd_restarts", "radii", "threads",
)


def merge_runs(paths: list[Path], out: Path) -> Path:
    """One leaderboard from the JSON files of separate runs (e.g. one method per process).

    Refuses (one ``error:`` line, exit code 2) runs whose :data:`SHARED_SETTINGS` differ and a
    method that appears twice; the header's command lists every run's own command, commit
    and date. Returns the path of the JSON written (the Markdown goes beside it).
    """
    docs = []
    for path in paths:
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            _refuse(f"cannot read leaderboard {path}: {error}")
    first = docs[0]["header"]
    for path, doc in zip(paths[1:], docs[1:], strict=True):
        for key in SHARED_SETTINGS:
            if doc["header"].get(key) != first.get(key):
                _refuse(
                    f"{path} has {key}={doc['header'].get(key)!r} but {paths[0]} has "
                    f"{first.get(key)!r}: rows of different settings do not share a table"
                )
    rows: dict[str, list[dict[str, Any]]] = {}
    for path, doc in zip(paths, docs, strict=True):
        for method, group in ((g[0]["method"], g) for g in group_by_method(doc["rows"])):
            if method in rows:
                _refuse(f"method {method!r} appears twice ({path})")
            rows[method] = group
    order = [m for m in CONV_METHODS if m in rows] + [m for m in rows if m not in CONV_METHODS]
    header = dict(first)
    header["command"] = "; ".join(
        f"{d['header']['command']}  # at {d['header']['commit']}, {d['header']['date']}"
        for d in docs
    )
    header["commit"] = ", ".join(dict.fromkeys(d["header"]["commit"] for d in docs))
    header["date"] = max(d["header"]["date"] for d in docs)
    stem = "leaderboard" + ("_conv" if first.get("arch") else "")
    stem += "_validation" if first.get("evaluated_on") == "validation" else ""
    out.mkdir(parents=True, exist_ok=True)
    merged = [row for m in order for row in rows[m]]
    target = out / f"{stem}.json"
    target.write_text(
        json.dumps({"header": header, "deviations": deviations(), "rows": merged}, indent=2)
    )
    write_markdown(out / f"{stem}.md", merged, header)
    return target


def _refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.merge:
        print(f"wrote {merge_runs(args.merge, args.out)} and its .md")
        return
    commit = git_commit()  # the code that runs: read before training, not after
    torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.widths.split(","))
    spec = ModelSpec(widths=widths, norm="2", arch=args.arch)
    widths = spec.widths
    if args.validation:
        data = load_mnist_splits(args.data, None, None, seed=args.seed)
        data = hold_out_validation(data, args.validation, args.seed)
        if args.train_limit:
            keep = torch.from_numpy(stratified_subset(data.train_y, args.train_limit, args.seed))
            data = replace(data, train_x=data.train_x[keep], train_y=data.train_y[keep])
        if args.test_limit and args.test_limit < args.validation:
            keep = torch.from_numpy(stratified_subset(data.test_y, args.test_limit, args.seed))
            data = replace(data, test_x=data.test_x[keep], test_y=data.test_y[keep])
    else:
        data = load_mnist_splits(args.data, args.train_limit, args.test_limit, seed=args.seed)
    evaluation = EvalConfig(
        radii=RADII,
        pgd_steps=args.pgd_steps,
        pgd_restarts=args.pgd_restarts,
        attack_limit=args.attack_limit,
        lower_seconds=args.lower_seconds,
        seed=args.seed,
    )
    rows = []
    runs = [(name, seed) for name in args.methods.split(",") for seed in args.seed_list]
    for name, seed in runs:
        print(f"== {name} (seed {seed})", flush=True)
        row = run_method(name, spec, replace_seed(args, seed), data, evaluation)
        row["seed"] = seed
        print(
            json.dumps(
                {
                    k: row[k]
                    for k in (
                        "clean_accuracy",
                        "certified_best",
                        "lipschitz_upper",
                        "seconds_per_epoch",
                    )
                }
            ),
            flush=True,
        )
        rows.append(row)
    header = {
        "command": "python benchmarks/leaderboard.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "widths": list(widths),
        "arch": spec.arch,
        "evaluated_on": "validation" if args.validation else "test",
        "epochs": args.epochs,
        "n_train": int(data.train_x.shape[0]),
        "n_test": int(data.test_x.shape[0]),
        "n_attacked": min(int(data.test_x.shape[0]), args.attack_limit),
        "pgd_steps": args.pgd_steps,
        "pgd_restarts": args.pgd_restarts,
        "radii": list(RADII),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(args)
    previous = args.out / f"{stem}.json"
    if args.update and previous.is_file():
        old = json.loads(previous.read_text())
        fresh = {row["method"] for row in rows}
        kept = [row for row in old["rows"] if row["method"] not in fresh]
        order = [m for m in CONV_METHODS if m in fresh or any(r["method"] == m for r in kept)]
        order += [m for m in dict.fromkeys(r["method"] for r in kept + rows) if m not in order]
        rows = [row for m in order for row in (*kept, *rows) if row["method"] == m]
        header["command"] = f"{old['header']['command']}; then {header['command']}"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"header": header, "deviations": deviations(), "rows": rows}, indent=2)
    )
    write_markdown(args.out / f"{stem}.md", rows, header)
    print(f"wrote {args.out / stem}.md and .json")


if __name__ == "__main__":
    main()
