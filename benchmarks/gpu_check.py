"""The GPU check: train on the GPU, certify on the CPU, attack on the GPU, compare with the CPU.

For the machine with a GPU, when one is lent (CI has none). One small convolutional network
(an MLP if this tree has no convolutional models), a few epochs of tightlip's method on
synthetic 3 × 16 × 16 images of two classes, then:

1. the same training on the CPU, same seed: the weights and the sound trivial bound must agree
   up to float32 noise (reported; the bound within 1 %);
2. the GPU-trained model certified twice, attacks on the GPU and on the CPU: every bound and
   certificate is computed in float64 on the CPU, so they must be identical; every certified
   point is attacked (a broken certificate stops the check with ``SoundnessError``);
3. training throughput on each device.

``python benchmarks/gpu_check.py --out DIR`` writes ``DIR/gpu_check.json`` and exits non-zero
if a check fails; ``--device cpu`` runs the same script without a GPU (both sides on the CPU),
which is how it is tested where no GPU is lent. Run ``pytest tests/test_device.py`` on the
GPU machine too: its GPU tests are skipped elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import git_commit, hardware  # noqa: E402

import tightlip as t  # noqa: E402
from tightlip.data import DatasetSplits  # noqa: E402
from tightlip.device import resolve_device  # noqa: E402
from tightlip.eval.config import EvalConfig  # noqa: E402
from tightlip.eval.experiment import evaluate  # noqa: E402
from tightlip.methods import fit  # noqa: E402
from tightlip.train.config import TrainConfig  # noqa: E402

SHAPE = (3, 16, 16)


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: the left or the right half of the red channel is brighter."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=generator) * 0.6
    y = torch.arange(n) % 2
    x[y == 0, 0, :, :8] += 0.4
    x[y == 1, 0, :, 8:] += 0.4
    return x.reshape(n, -1), y


def model_spec() -> tuple[t.ModelSpec, str]:
    fields = {f.name for f in dataclasses.fields(t.ModelSpec)}
    common = {"input_dim": 768, "num_classes": 2, "activation": "abs", "norm": "2"}
    if "arch" in fields:
        arch = "c16k3,c16k4s2,f64"
        return t.ModelSpec(arch=arch, input_shape=SHAPE, **common), f"conv {arch}"
    return t.ModelSpec(widths=(128, 64), **common), "MLP 768-128-64-2 (no conv models here)"


def relative(a: torch.nn.Module, b: torch.nn.Module) -> float:
    worst = 0.0
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        x, y = x.detach().cpu().double(), y.detach().cpu().double()
        worst = max(worst, float((x - y).norm() / y.norm().clamp_min(1e-30)))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    spec, described = model_spec()
    config = TrainConfig(epochs=args.epochs, batch_size=64, lr=2e-3, penalty_weight=0.1)
    x, y = synthetic(args.examples, 0)
    tx, ty = synthetic(500, 1)
    data = DatasetSplits(x, y, tx, ty, num_classes=2, input_shape=SHAPE)
    report: dict = {
        "commit": git_commit(),
        "hardware": hardware(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": described,
        "checks": {},
    }
    timings = {}
    trained = {}
    for where in (device, torch.device("cpu")):
        started = time.perf_counter()
        result = fit("tightlip", spec, config, x, y, progress=False, device=where)
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        seconds = [h["seconds"] for h in result.history[1:]] or [result.history[0]["seconds"]]
        timings[str(where)] = {
            "train_seconds": time.perf_counter() - started,
            "examples_per_second": x.shape[0] / (sum(seconds) / len(seconds)),
        }
        trained[str(where)] = result.model.cpu()
    report["throughput"] = timings
    gpu_model, cpu_model = trained[str(device)], trained["cpu"]
    upper_gpu = t.upper_bound(gpu_model, "2", "trivial").value
    upper_cpu = t.upper_bound(cpu_model, "2", "trivial").value
    report["weights_relative_difference"] = relative(gpu_model, cpu_model)
    report["upper_bound"] = {"trained_on_device": upper_gpu, "trained_on_cpu": upper_cpu}
    report["checks"]["bounds agree within 1 %"] = abs(upper_gpu / upper_cpu - 1) < 0.01

    evaluation = EvalConfig(radii=(0.1, 0.3), pgd_steps=20, attack_limit=200, lower_seconds=5)
    attacked_on_device = evaluate(gpu_model, "2", data, evaluation, device=device)
    attacked_on_cpu = evaluate(gpu_model, "2", data, evaluation, device="cpu")
    keys = ("clean_accuracy", "lipschitz_upper", "lipschitz_lower", "tightness",
            "certified_accuracy", "pgd_accuracy", "certify_seconds")
    report["evaluation"] = {
        "attacks_on_device": {k: attacked_on_device[k] for k in keys},
        "attacks_on_cpu": {k: attacked_on_cpu[k] for k in keys},
    }
    report["checks"]["certificates identical (float64 on the CPU)"] = (
        attacked_on_device["lipschitz_upper"] == attacked_on_cpu["lipschitz_upper"]
        and attacked_on_device["certified_accuracy"] == attacked_on_cpu["certified_accuracy"]
    )
    report["checks"]["learned something"] = attacked_on_device["clean_accuracy"] > 0.8
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    failed = [name for name, ok in report["checks"].items() if not ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all GPU checks passed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
