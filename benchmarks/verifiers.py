"""Benchmark of the ℓ2 verifiers: trivial, ECLipsE-Fast, Syed–Hu family, ECLipsE, LipSDP.

Networks:

(a) 784-w-w-10 ReLU MLPs (with biases) trained normally on MNIST, w ∈ {100, 200, 300, 400}:
    SGD, lr 0.01, momentum 0.9, batch 64, 10 epochs (``--epochs``, ``--quick``);
(b) random bias-free ReLU nets, weights N(0, 1/fan_in), depth 2–20, width 20–1000;
(c) tightlip-trained checkpoints given by ``--tightlip-ckpt`` (skipped otherwise);
(d) with ``--onnx``: networks tightlip did not train, brought in as a user would. MLPs
    784-w×d-10 (``--onnx-depths`` hidden layers of ``--onnx-width``, ``--onnx-activations``)
    trained normally (as in (a)), written to ONNX by ``torch.onnx.export`` here, read back with
    ``tightlip.load_model`` (checked against onnxruntime) and bounded by every verifier; these
    rows go to their own table (``--onnx-output``, default ``results/verifiers_onnx``).

For every method: value, ratio to the best lower bound (``tightlip.lower_bound(chain, "2",
"gradient")`` with a time limit, and the ``sampled`` bound), seconds. SDP methods run in a
forked subprocess with a time limit (``--sdp-timeout``) so that a slow solve is reported as
"timeout" instead of hanging. Our ECLipsE-Fast and ``eclipse_nn``'s ``ECLipsE_Fast`` are timed
side by side in this process (best of ``--repeats``).

BLAS threads default to 1 (``--threads``): on the shared 2-core machines a multi-threaded
OpenBLAS under contention is up to 100× slower, and one thread keeps timings comparable.

    python benchmarks/verifiers.py --quick          # a few minutes
    python benchmarks/verifiers.py                  # the full grid
    python benchmarks/verifiers.py --onnx-only --quick   # only (d), a few minutes
"""

from __future__ import annotations

import argparse
import os
import sys


def _threads_from_argv(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


_THREADS = _threads_from_argv(sys.argv)
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _THREADS

import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import tightlip  # noqa: E402
from tightlip.bounds import MethodNotApplicableError, lower_bound, upper_bound  # noqa: E402
from tightlip.model import LayerChain, to_chain  # noqa: E402

try:  # registers "gradient" and "sampled" even before bounds/__init__ imports it
    import tightlip.bounds.lower  # noqa: E402,F401
except ImportError:  # pragma: no cover
    pass

torch.set_num_threads(int(_THREADS))

RESULTS = Path(__file__).resolve().parent / "results"
UPPER = ("trivial", "eclipse-fast", "syed-hu", "eclipse", "lipsdp")
SUBPROCESS = {"eclipse", "lipsdp"}


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------


def train_mnist(width: int, epochs: int, limit: int | None, seed: int) -> tuple[nn.Module, float]:
    from tightlip.data import load_mnist

    x, y = load_mnist(split="train", limit=limit)
    xt, yt = load_mnist(split="test")
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return model, accuracy


def train_mlp(
    hidden: list[int], activation: str, epochs: int, limit: int | None, seed: int
) -> tuple[nn.Module, float]:
    """A 784-hidden…-10 MLP with biases trained as in :func:`train_mnist`; returns its accuracy."""
    from tightlip.data import load_mnist

    layers = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "leaky-relu": nn.LeakyReLU}
    x, y = load_mnist(split="train", limit=limit)
    xt, yt = load_mnist(split="test")
    torch.manual_seed(seed)
    modules: list[nn.Module] = [nn.Flatten()]
    fan_in = 784
    for width in hidden:
        modules += [nn.Linear(fan_in, width), layers[activation]()]
        fan_in = width
    modules.append(nn.Linear(fan_in, 10))
    model = nn.Sequential(*modules)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    return model, accuracy


def onnx_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Section (d): trained MLPs written to ONNX here and read back as a user's network would."""
    import tempfile
    import warnings

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for activation in args.onnx_activations:
            for depth in args.onnx_depths:
                hidden = [args.onnx_width] * depth
                t0 = time.perf_counter()
                model, acc = train_mlp(
                    hidden, activation, args.epochs, 10_000 if args.quick else None, seed=depth
                )
                train_s = time.perf_counter() - t0
                path = Path(tmp) / f"mlp-{activation}-{depth}.onnx"
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        model, (torch.rand(2, 1, 28, 28),), str(path), dynamo=True,
                        dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                    )
                imported = tightlip.load_model(path)
                import_s = time.perf_counter() - t0
                name = f"ONNX 784-{'-'.join(map(str, hidden))}-10 {activation}"
                print(f"{name}: test accuracy {acc:.4f} ({train_s:.0f}s); {imported.notes[0]}")
                extra = {
                    "test_accuracy": acc,
                    "train_seconds": train_s,
                    "export_and_import_seconds": import_s,
                    "epochs": args.epochs,
                    "activation": activation,
                    "depth": depth,
                    "import_check": imported.notes[0],
                }
                rows.append(evaluate(name, to_chain(imported), args, extra))
    return rows


def onnx_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What section (d)'s table is, how it was made, and each network's test accuracy."""
    from provenance import command, git_commit, hardware

    accuracies = ", ".join(f"{r['network'][5:]} {r['test_accuracy']:.3f}" for r in rows)
    return [
        "Networks trained here, written by torch.onnx.export (dynamo) and read back with "
        "tightlip.load_model: every bound is of the network in the file, which tightlip checked "
        "against onnxruntime (float64) before bounding it.",
        "nn.Linear with biases, SGD (lr 0.01, momentum 0.9, batch 64); inputs in [0, 1].",
        f"Test accuracy: {accuracies}.",
        f"`{command()}` at commit {git_commit()} on {hardware()}.",
    ]


def random_chain(depth: int, width: int, seed: int, input_dim: int | None = None) -> LayerChain:
    gen = torch.Generator().manual_seed(seed)
    dims = [input_dim or width] + [width] * (depth - 1) + [10]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        lin = nn.Linear(a, b, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen) / math.sqrt(a))
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return to_chain(nn.Sequential(*layers))


# --------------------------------------------------------------------------------------------
# running methods
# --------------------------------------------------------------------------------------------


def _child(queue: Any, chain: LayerChain, method: str, options: dict[str, Any]) -> None:
    try:
        cert = upper_bound(chain, "2", method, **options)
        queue.put({"value": cert.value, "seconds": cert.seconds, "details": _short(cert.details)})
    except MethodNotApplicableError as exc:
        queue.put({"skipped": str(exc)})
    except Exception as exc:  # pragma: no cover - reported in the table
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _short(details: dict[str, Any]) -> dict[str, Any]:
    keep = ("members", "best_member", "solver", "status", "solver_value", "mix_theta", "sdp_size")
    return {k: details[k] for k in keep if k in details}


def run_upper(chain: LayerChain, method: str, timeout: float) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if method == "lipsdp":
        options = {"max_size": 100_000, "time_limit": timeout}
    if method == "eclipse":
        options = {"max_width": 100_000, "time_limit": timeout}
    if method == "syed-hu" and max(w.shape[0] for w in chain.weights[:-1]) >= 500:
        options = {"members": ("fast", "greedy")}  # the others cost ~3× more at this width
    if method not in SUBPROCESS:
        try:
            cert = upper_bound(chain, "2", method, **options)
        except MethodNotApplicableError as exc:
            return {"skipped": str(exc)}
        return {"value": cert.value, "seconds": cert.seconds, "details": _short(cert.details)}
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, chain, method, options))
    start = time.perf_counter()
    proc.start()
    proc.join(timeout + 30)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"timeout": timeout + 30, "seconds": time.perf_counter() - start}
    if proc.exitcode != 0 or queue.empty():
        return {"error": f"exit code {proc.exitcode} (out of memory?)"}
    return queue.get()


def run_lower(chain: LayerChain, time_limit: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start = time.perf_counter()
    grad = lower_bound(chain, "2", "gradient", time_limit=time_limit)
    out["gradient"] = {"value": grad.value, "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    sampled = lower_bound(chain, "2", "sampled", num_random=256)
    out["sampled"] = {"value": sampled.value, "seconds": time.perf_counter() - start}
    out["best"] = max(grad.value, sampled.value)
    return out


def time_fast_vs_reference(chain: LayerChain, repeats: int) -> dict[str, Any]:
    try:
        import eclipse_nn
    except ImportError:
        return {"reference": "eclipse_nn not installed"}
    weights = [w.clone() for w in chain.weights]
    n = len(weights) - 1
    ours, ref = [], []
    value_ref = value_ours = math.nan
    for _ in range(repeats):
        start = time.perf_counter()
        value_ours = upper_bound(chain, "2", "eclipse-fast").value
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        value_ref = float(eclipse_nn.ECLipsE_Fast(weights, [0.0] * n, [1.0] * n))
        ref.append(time.perf_counter() - start)
    return {
        "ours_seconds": min(ours),
        "eclipse_nn_seconds": min(ref),
        "speedup": min(ref) / min(ours),
        "ours_value": value_ours,
        "eclipse_nn_value": value_ref,
        "relative_difference": value_ours / value_ref - 1,
    }


def evaluate(
    name: str, chain: LayerChain, args: argparse.Namespace, extra: dict[str, Any]
) -> dict[str, Any]:
    print(f"\n== {name}  (hidden widths {[w.shape[0] for w in chain.weights[:-1]]})", flush=True)
    row: dict[str, Any] = {"network": name, **extra, "methods": {}}
    row["lower"] = run_lower(chain, args.lower_time)
    best = row["lower"]["best"]
    print(f"   lower bound {best:.5g} (gradient {row['lower']['gradient']['value']:.5g})")
    for method in args.methods:
        size = sum(w.shape[0] for w in chain.weights[:-1]) + min(chain.weights[0].shape)
        if method == "lipsdp" and size > args.lipsdp_max_size:
            result: dict[str, Any] = {"skipped": f"SDP size {size} > {args.lipsdp_max_size}"}
        elif (
            method == "eclipse"
            and max(w.shape[0] for w in chain.weights[:-1]) > args.eclipse_max_width
        ):
            result = {"skipped": f"width > {args.eclipse_max_width}"}
        else:
            result = run_upper(chain, method, args.sdp_timeout)
        if "value" in result:
            result["ratio_to_lower"] = result["value"] / best if best > 0 else math.inf
            print(
                f"   {method:13s} {result['value']:12.6g}  ratio {result['ratio_to_lower']:7.4f}"
                f"  {result['seconds']:8.2f}s",
                flush=True,
            )
        else:
            print(f"   {method:13s} {json.dumps(result)[:110]}", flush=True)
        row["methods"][method] = result
    row["fast_vs_eclipse_nn"] = time_fast_vs_reference(chain, args.repeats)
    ref = row["fast_vs_eclipse_nn"]
    if "speedup" in ref:
        print(
            f"   Fast: ours {ref['ours_seconds']:.4f}s vs eclipse_nn {ref['eclipse_nn_seconds']:.4f}s"
            f" (×{ref['speedup']:.1f}), rel. diff {ref['relative_difference']:.1e}"
        )
    return row


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# ℓ2 verifier benchmark",
        "",
        f"Generated by `benchmarks/verifiers.py` ({meta['mode']}) on {meta['date']}, "
        f"{meta['threads']} BLAS thread(s), total run time {meta['total_seconds']:.0f} s.",
        f"Command: `{meta.get('command', 'not recorded')}` at commit "
        f"{meta.get('commit', 'not recorded')} on {meta.get('hardware', 'not recorded')}.",
        "Ratios are value / best lower bound (max of the gradient-ascent and sampled lower "
        "bounds): 1.0 would be tight. `—` = not applicable / skipped, `t/o` = timed out.",
        "",
    ]
    methods = meta["methods"]
    header = "| network | lower | " + " | ".join(methods) + " | Fast speed-up vs eclipse_nn |"
    lines += [header, "|" + "---|" * (len(methods) + 3)]
    for row in rows:
        cells = [row["network"], f"{row['lower']['best']:.4g}"]
        for m in methods:
            r = row["methods"].get(m, {})
            if "value" in r:
                cells.append(f"{r['ratio_to_lower']:.3f} ({r['seconds']:.2f}s)")
            elif "timeout" in r:
                cells.append(f"t/o (>{r['timeout']:.0f}s)")
            else:
                cells.append("—")
        ref = row.get("fast_vs_eclipse_nn", {})
        cells.append(f"×{ref['speedup']:.1f}" if "speedup" in ref else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Values relative to the trivial bound (value / trivial):", ""]
    lines += ["| network | " + " | ".join(methods) + " |", "|" + "---|" * (len(methods) + 1)]
    for row in rows:
        trivial = row["methods"].get("trivial", {}).get("value")
        cells = [row["network"]]
        for m in methods:
            r = row["methods"].get(m, {})
            cells.append(f"{r['value'] / trivial:.3f}" if "value" in r and trivial else "—")
        lines.append("| " + " | ".join(cells) + " |")
    notes = meta.get("notes", [])
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def run_meta(args: argparse.Namespace, total: float) -> dict[str, Any]:
    from provenance import command, git_commit, hardware

    return {
        "command": command(),
        "commit": git_commit(),
        "hardware": hardware(),
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads,
        "total_seconds": total,
        "methods": args.methods,
        "args": vars(args),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tightlip": tightlip.__version__,
    }


def write_results(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1, default=str)
    )
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(f"\nwrote {out.with_suffix('.md')} and .json; total {meta['total_seconds']:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small grid, 1 epoch on 10k images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--widths", type=int, nargs="*", default=[100, 200, 300, 400])
    parser.add_argument("--depths", type=int, nargs="*", default=[2, 5, 10, 20])
    parser.add_argument("--random-widths", type=int, nargs="*", default=[20, 100, 500, 1000])
    parser.add_argument("--tightlip-ckpt", nargs="*", default=[])
    parser.add_argument("--methods", nargs="*", default=list(UPPER))
    parser.add_argument("--sdp-timeout", type=float, default=240.0)
    parser.add_argument("--lipsdp-max-size", type=int, default=1000)
    parser.add_argument("--eclipse-max-width", type=int, default=400)
    parser.add_argument("--lower-time", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--no-mnist", action="store_true")
    parser.add_argument("--no-random", action="store_true")
    parser.add_argument("--output", default=str(RESULTS / "verifiers"))
    parser.add_argument("--onnx", action="store_true", help="add section (d), ONNX imports")
    parser.add_argument("--onnx-only", action="store_true", help="only section (d)")
    parser.add_argument("--onnx-depths", type=int, nargs="*", default=[1, 2, 3, 4])
    parser.add_argument("--onnx-width", type=int, default=100)
    parser.add_argument("--onnx-activations", nargs="*", default=["relu", "tanh"])
    parser.add_argument("--onnx-output", default=str(RESULTS / "verifiers_onnx"))
    args = parser.parse_args()
    if args.onnx_only:
        args.onnx = args.no_mnist = args.no_random = True
    if args.quick:
        args.epochs = min(args.epochs, 1)
        args.widths = args.widths[:2] if args.widths == [100, 200, 300, 400] else args.widths
        args.depths = [2, 5]
        args.random_widths = [20, 100]
        args.sdp_timeout = min(args.sdp_timeout, 60.0)
        args.lower_time = min(args.lower_time, 5.0)
        args.onnx_depths = args.onnx_depths[:3] if args.onnx_depths == [1, 2, 3, 4] else args.onnx_depths
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if not args.no_mnist:
        for width in args.widths:
            t0 = time.perf_counter()
            model, acc = train_mnist(width, args.epochs, 10_000 if args.quick else None, seed=width)
            train_s = time.perf_counter() - t0
            print(f"trained 784-{width}-{width}-10: test accuracy {acc:.4f} ({train_s:.0f}s)")
            rows.append(
                evaluate(
                    f"MNIST 784-{width}-{width}-10",
                    to_chain(model),
                    args,
                    {"test_accuracy": acc, "train_seconds": train_s, "epochs": args.epochs},
                )
            )
    if not args.no_random:
        for depth in args.depths:
            for width in args.random_widths:
                chain = random_chain(depth, width, seed=depth * 10_000 + width)
                rows.append(evaluate(f"random d={depth} w={width}", chain, args, {"depth": depth}))
    for path in args.tightlip_ckpt:
        from tightlip.train.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        rows.append(evaluate(f"tightlip {Path(path).name}", to_chain(ckpt.model), args, {}))
    if args.onnx:
        onnx_start = time.perf_counter()
        onnx_table = onnx_rows(args)
        write_results(
            Path(args.onnx_output),
            onnx_table,
            {
                **run_meta(args, time.perf_counter() - onnx_start),
                "notes": onnx_notes(onnx_table),
            },
        )
    if args.onnx_only:
        return
    total = time.perf_counter() - start
    meta = {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads,
        "total_seconds": total,
        "methods": args.methods,
        "args": vars(args),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tightlip": tightlip.__version__,
        "notes": [
            "MNIST nets: nn.Linear with biases (biases do not change global ℓ2 bounds).",
            "Random nets: bias-free, N(0, 1/fan_in) weights, input width = hidden width, 10 outputs.",
            "All upper bounds are certified in float64 (see tightlip.bounds.eclipse); LipSDP and "
            "ECLipsE re-check the solver's multipliers.",
            "syed-hu = min over members fast/lookahead/gershgorin/sll/greedy (our derivation, "
            "see tightlip.bounds.syed_hu); for widths ≥ 500 only fast and greedy are run.",
        ],
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1, default=str)
    )
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(f"\nwrote {out.with_suffix('.md')} and .json; total {total:.0f}s")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
