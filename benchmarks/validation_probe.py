"""Validation probe: train one configuration on MNIST minus a held-out split, certify on it.

The split is the leaderboard's (:func:`leaderboard.hold_out_validation`: a class-stratified
subset of the *training* images, seeded), so tuning never sees the test set. Every setting is
given as ``--set name=value`` (JSON values) and merged as the CLI merges flags
(:func:`tightlip.settings.merge_settings`); the certificate is the harness's own
(:func:`tightlip.eval.experiment.evaluate`: sound float64 bounds, PGD cross-check on the first
``--attack-limit`` points). One JSON line per run is appended to ``--out``, with the command,
commit and hardware.

    python benchmarks/validation_probe.py --tag muon-clip --out probes.jsonl \\
        --set batch_size=256 epochs=20 lr=0.01 optimizer='"muon"' projection='"clip"'
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from leaderboard import hold_out_validation
from provenance import git_commit

from tightlip.data import load_mnist_splits
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.settings import fit_settings, merge_settings


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs; values are JSON (``0.01``, ``true``, ``"muon"``) or plain strings;
    ``widths`` takes ``256,256``."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if name == "widths":
            value = tuple(int(w) for w in str(value).split(","))
        settings[name] = value
    return settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="tightlip")
    parser.add_argument("--preset", default=None, help="default: robust for tightlip")
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE")
    parser.add_argument("--validation", type=int, default=5000, help="held-out training images")
    parser.add_argument("--attack-limit", type=int, default=200)
    parser.add_argument("--lower-seconds", type=float, default=5.0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file (appended)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    commit = git_commit()
    preset = args.preset or ("robust" if args.method == "tightlip" else None)
    explicit = parse_settings(args.set)
    settings = merge_settings(args.method, preset, explicit)
    data = hold_out_validation(load_mnist_splits(seed=0), args.validation, 0)
    started = time.perf_counter()
    result = fit_settings(settings, data.train_x, data.train_y, progress=False)
    evaluation = EvalConfig(
        radii=(0.3, 1.0, 1.58),
        attack_limit=args.attack_limit,
        lower_seconds=args.lower_seconds,
    )
    metrics = evaluate(result.model.eval(), settings.spec.norm, data, evaluation,
                       method=settings.method, train_seconds=result.train_seconds)
    row = {
        "tag": args.tag,
        "command": "python benchmarks/validation_probe.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "commit": commit,
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        "1 thread, shared 2-core CPU",
        "settings": {k: str(v) for k, v in explicit.items()},
        "train": settings.train.to_dict(),
        "n_validation": int(data.test_x.shape[0]),
        "clean": metrics["clean_accuracy"],
        "certified_best": metrics["certified_accuracy_best"],
        "upper": metrics["lipschitz_upper"],
        "lower": metrics["lipschitz_lower"],
        "tightness": metrics["tightness"],
        "seconds_per_epoch": result.train_seconds / max(1, result.epochs_run),
        "total_seconds": time.perf_counter() - started,
    }
    with args.out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
