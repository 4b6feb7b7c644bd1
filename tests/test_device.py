"""--device: resolution, one-line refusals, training and attacks on a device, certification on
the CPU. The GPU tests run where torch sees a GPU and are skipped with the reason elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tightlip as t
from tightlip.cli import app
from tightlip.data import DatasetSplits
from tightlip.device import OnDevice, resolve_device
from tightlip.errors import BadArgumentError
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import evaluate
from tightlip.methods import fit
from tightlip.train.config import TrainConfig

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(
    not GPU, reason=f"no CUDA GPU visible to torch {torch.__version__} (the CPU path is tested)"
)

SPEC = t.ModelSpec(input_dim=12, widths=(16,), num_classes=3, activation="abs", bias=True)
CONFIG = TrainConfig(epochs=2, batch_size=16, lr=5e-3, penalty_weight=0.1)
FAST = EvalConfig(radii=(0.05, 0.1), pgd_steps=10, attack_limit=40, lower_seconds=0.5,
                  lower_starts=8)


def splits(n: int = 120) -> DatasetSplits:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(n, 12, generator=generator)
    y = (x[:, :4].sum(1) > x[:, 4:8].sum(1)).long() + (x[:, 8:].sum(1) > 2).long()
    return DatasetSplits(x, y, x[:40], y[:40], num_classes=3)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if GPU else "cpu")
    for bad in ("tpu", "cpu:1", "cuda:x", "gpu"):
        with pytest.raises(BadArgumentError, match="unknown device"):
            resolve_device(bad)


@pytest.mark.skipif(GPU, reason="checks the refusal where there is no GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(BadArgumentError, match="no CUDA GPU is available.*--device cpu"):
        resolve_device("cuda")
    result = CliRunner().invoke(app, ["train", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "no CUDA GPU is available" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_on_device_cpu_uses_the_model_itself() -> None:
    model = t.build_model(SPEC)
    wrapped = OnDevice(model, "cpu")
    assert wrapped.model is model
    x = torch.rand(3, 12)
    torch.testing.assert_close(wrapped(x), model(x), rtol=0, atol=0)


def test_explicit_cpu_device_trains_bit_identically() -> None:
    data = splits()
    default = fit("tightlip", SPEC, CONFIG, data.train_x, data.train_y, progress=False)
    on_cpu = fit("tightlip", SPEC, CONFIG, data.train_x, data.train_y, progress=False,
                 device="cpu")
    for (name, a), (_, b) in zip(default.model.state_dict().items(),
                                 on_cpu.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().double() for k, v in model.state_dict().items()}


@needs_gpu
def test_gpu_training_matches_cpu_up_to_float32_noise() -> None:
    data = splits()
    cpu = fit("tightlip", SPEC, CONFIG, data.train_x, data.train_y, progress=False)
    gpu = fit("tightlip", SPEC, CONFIG, data.train_x, data.train_y, progress=False,
              device="cuda")
    assert next(gpu.model.parameters()).device.type == "cuda"
    for name, value in _weights(cpu.model).items():
        other = _weights(gpu.model)[name]
        assert float((other - value).norm() / value.norm()) < 1e-3, name
    upper_cpu = t.upper_bound(cpu.model, "2", "trivial").value
    upper_gpu = t.upper_bound(gpu.model, "2", "trivial").value  # read on the CPU in float64
    assert upper_gpu == pytest.approx(upper_cpu, rel=1e-3)


@needs_gpu
def test_attacks_on_the_gpu_certify_the_same_points() -> None:
    data = splits()
    model = fit("tightlip", SPEC, CONFIG, data.train_x, data.train_y, progress=False).model
    on_cpu = evaluate(model, "2", data, FAST)
    on_gpu = evaluate(model, "2", data, FAST, device="cuda")
    assert on_gpu["lipschitz_upper"] == on_cpu["lipschitz_upper"]  # float64 on the CPU
    assert on_gpu["certified_accuracy"] == on_cpu["certified_accuracy"]
    for radius, accuracy in on_cpu["pgd_accuracy"].items():
        assert on_gpu["pgd_accuracy"][radius] == pytest.approx(accuracy, abs=0.05)


@needs_gpu
def test_cli_train_on_the_gpu(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("train", "test"):
        y = np.arange(60) % 2
        x = rng.uniform(0, 0.5, size=(60, 8)) + 0.5 * y[:, None]
        np.savez(tmp_path / f"{name}.npz", x=x.astype(np.float32), y=y)
    result = CliRunner().invoke(app, [
        "train", "--device", "cuda", "--dataset", "files", "--data", str(tmp_path), "--widths",
        "8", "--epochs", "2", "--out", str(tmp_path / "run"), "--attack-limit", "20",
        "--lower-seconds", "0.5", "--radii", "0.05"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "metrics.json").exists()
