"""Training throughput (examples per second) on 1 and more processes, on the CPU or a GPU.

Each row trains tightlip's default method (ℓ2, Abs 784-256-256-10 with biases, λ 0.1 log
penalty) on MNIST-sized data for a few epochs, launched by torch's own launcher exactly as
``tightlip train --nproc N`` launches it (``python -m torch.distributed.run --standalone
--nproc-per-node N``; one process runs without DDP). Throughput is training examples divided
by the mean wall time of the epochs after the first (which includes warm-up), as measured by
the training loop on rank 0; launcher start-up and data loading are not counted. Every row
says which hardware made it, and the table the commit.

The data are the MNIST training images when a copy is found (``tightlip data where``), else
random images of the same size (throughput does not depend on the pixel values). One torch
thread per process, as tightlip's CLI uses.

    python benchmarks/scaling.py                          # CPU: 1 and 2 processes, ~2 min here
    python benchmarks/scaling.py --device cuda            # the GPU machine: add GPU rows
    python benchmarks/scaling.py --processes 1,2,4 --batch-sizes 64,256
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worker(args: argparse.Namespace) -> None:
    """One rank: train, and on rank 0 write the measured throughput to ``args.json``."""
    import torch

    sys.path.insert(0, str(HERE))
    from provenance import hardware

    from tightlip.data import DatasetError, load_mnist
    from tightlip.device import resolve_device
    from tightlip.distributed import from_environment, shutdown
    from tightlip.methods import fit
    from tightlip.model import ModelSpec
    from tightlip.train.config import TrainConfig

    torch.set_num_threads(1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(args.device, local_rank)
    context = from_environment(device, timeout=120)
    try:
        x, y = load_mnist(split="train", limit=args.examples)
        source = "MNIST"
    except DatasetError:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(args.examples, 784, generator=generator)
        y = torch.randint(0, 10, (args.examples,), generator=generator)
        source = "random 784-pixel images"
    widths = tuple(int(w) for w in args.widths.split(","))
    spec = ModelSpec(input_dim=784, widths=widths, num_classes=10, activation="abs", bias=True)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, penalty_weight=0.1)
    result = fit("tightlip", spec, config, x, y, progress=False, device=device,
                 distributed=context)
    if context.is_main:
        seconds = [h["seconds"] for h in result.history[1:]] or [result.history[0]["seconds"]]
        mean = sum(seconds) / len(seconds)
        row = {
            "processes": context.world_size,
            "device": str(device),
            "batch_size": args.batch_size,
            "examples": int(x.shape[0]),
            "epochs_timed": len(seconds),
            "seconds_per_epoch": mean,
            "examples_per_second": x.shape[0] / mean,
            "data": source,
            "hardware": hardware() if device.type == "cpu" else
            f"{torch.cuda.get_device_name(device)} ({os.cpu_count()} CPUs)",
        }
        Path(args.json).write_text(json.dumps(row))
    shutdown(context)


def launch(processes: int, batch_size: int, args: argparse.Namespace) -> dict:
    """One row: the worker on ``processes`` processes through torch.distributed.run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(processes), "--max-restarts", "0", str(Path(__file__).resolve()), "--worker",
            "--json", str(out), "--device", args.device, "--examples", str(args.examples),
            "--epochs", str(args.epochs), "--batch-size", str(batch_size), "--widths",
            args.widths,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TIGHTLIP_THREADS": "1"}
        load = os.getloadavg()[0]  # other jobs on the machine, before this row started
        started = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
        row = json.loads(out.read_text())
        row["wall_seconds_with_startup"] = time.perf_counter() - started
        row["commit"] = args.commit
        row["load_before"] = load
        return row


def _load(row: dict) -> str:
    load = row.get("load_before")
    return "?" if load is None else f"{load:.2f}"


def table(rows: list[dict], command: str) -> str:
    lines = [
        "# Training throughput on 1 and more processes",
        "",
        f"`{command}`: tightlip's method (ℓ2, Abs 784-256-256-10, biases, λ 0.1), launched by "
        "torch.distributed.run; throughput over the epochs after the first; one torch thread "
        "per process. Rows made on other machines are kept, each with its hardware and commit; "
        "\"load before\" is the 1-minute load average when the row started (other jobs share "
        "the machine).",
        "",
        "| processes | device | global batch | examples/s | speed-up | s/epoch | data | hardware "
        "| load before | commit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {
        (r["device"], r["batch_size"]): r["examples_per_second"]
        for r in rows
        if r["processes"] == 1
    }
    for r in rows:
        reference = base.get((r["device"], r["batch_size"]))
        speedup = f"{r['examples_per_second'] / reference:.2f}×" if reference else "—"
        lines.append(
            f"| {r['processes']} | {r['device']} | {r['batch_size']} | "
            f"{r['examples_per_second']:,.0f} | {speedup} | {r['seconds_per_epoch']:.2f} | "
            f"{r['data']} ({r['examples']}) | {r['hardware']} | {_load(r)} | "
            f"{r.get('commit', '?')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--processes", default="1,2", help="process counts, e.g. 1,2")
    parser.add_argument("--batch-sizes", default="32,256", help="global batch sizes")
    parser.add_argument("--batch-size", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--widths", default="256,256")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scaling.md")
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(HERE))
    from provenance import command, git_commit

    args.commit = git_commit()
    rows = []
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        for processes in (int(p) for p in args.processes.split(",")):
            row = launch(processes, batch_size, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    previous = args.out.with_suffix(".json")
    kept = []
    if previous.exists():  # rows of other devices (e.g. the GPU machine) are kept
        kept = [
            r for r in json.loads(previous.read_text())["rows"] if r["device"] != rows[0]["device"]
        ]
    everything = kept + rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table(everything, command()))
    previous.write_text(json.dumps({"rows": everything}, indent=2))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
