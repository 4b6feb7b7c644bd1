"""Distributed training on 2 CPU processes (gloo, 127.0.0.1) equals one process.

The ranks are started by torch's own launcher, ``torch.distributed.run``, as ``torchrun``
starts them: the library through ``tests/distributed_worker.py``, the command line through
``tightlip train --nproc 2``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tightlip.cli import app, forwarded_arguments
from tightlip.distributed import SINGLE_PROCESS, Distributed, launcher_command, state_digest
from tightlip.errors import BadArgumentError

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def environment(**extra: str) -> dict[str, str]:
    """One thread per process, loopback sockets, no inherited launcher variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(TIGHTLIP_THREADS="1", OMP_NUM_THREADS="1", **extra)
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
            str(nproc), "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
            "--max-restarts", "0", *args]


# --------------------------------------------------------------------------------------------
# pieces, in one process
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 16, 17])
def test_shards_cover_each_global_batch_once(n: int) -> None:
    batch = torch.arange(n)
    for world in (1, 2, 3):
        parts = [Distributed(rank=r, world_size=world).shard(batch) for r in range(world)]
        assert torch.cat([p for p, _ in parts]).tolist() == list(range(n))
        assert sum(share for _, share in parts) == pytest.approx(1.0)
        assert max(len(p) for p, _ in parts) - min(len(p) for p, _ in parts) <= 1


def test_single_process_needs_no_process_group() -> None:
    assert not SINGLE_PROCESS.enabled and SINGLE_PROCESS.is_main
    assert SINGLE_PROCESS.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    module = torch.nn.Linear(2, 2)
    assert SINGLE_PROCESS.wrap(module, torch.device("cpu")) is module
    SINGLE_PROCESS.check_identical([module], "x")  # nothing to compare
    other = torch.nn.Linear(2, 2)
    assert state_digest([module]) != state_digest([other])
    other.load_state_dict(module.state_dict())
    assert state_digest([module]) == state_digest([other])


def test_launcher_command_is_torchruns() -> None:
    local = launcher_command(["train", "--epochs", "1"], 2, python="python")
    assert local == ["python", "-m", "torch.distributed.run", "--nproc-per-node", "2",
                     "--max-restarts", "0", "--standalone", "-m", "tightlip", "train",
                     "--epochs", "1"]
    nodes = launcher_command(["train"], 4, nnodes="2", rdzv_endpoint="host:29400", python="p")
    assert nodes[nodes.index("--nnodes") + 1] == "2" and "--standalone" not in nodes
    assert nodes[nodes.index("--rdzv-endpoint") + 1] == "host:29400"
    with pytest.raises(BadArgumentError, match="needs --rdzv-endpoint"):
        launcher_command(["train"], 2, nnodes="2")
    with pytest.raises(BadArgumentError, match="at least 1"):
        launcher_command(["train"], 0)


def test_train_forwards_exactly_the_given_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def fake_run(command, check):  # noqa: ANN001
        seen.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    result = CliRunner().invoke(app, ["train", "--nproc", "3", "--no-bias", "--lambda", "0.1",
                                      "--out", str(tmp_path), "--resume", "--no-certify"])
    assert result.exit_code == 0, result.output
    (command,) = seen
    program = command[command.index("tightlip") + 1 :]
    assert program[0] == "train" and "--nproc" not in program
    assert set(program[1:]) == {"--no-bias", "--lambda", "0.1", "--out", str(tmp_path),
                                "--resume", "--no-certify"}
    assert program[program.index("--lambda") + 1] == "0.1"
    assert command[command.index("--nproc-per-node") + 1] == "3"
    assert forwarded_arguments  # the function under test is public


def test_nproc_inside_a_launched_process_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["train", "--nproc", "2"])
    assert result.exit_code == 2 and "already started by torchrun" in result.output


# --------------------------------------------------------------------------------------------
# two processes (each start of torch's launcher and its workers costs seconds: slow)
# --------------------------------------------------------------------------------------------

two_processes = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("distributed")
    done = subprocess.run(torchrun(str(WORKER), str(out)), capture_output=True, text=True,
                          timeout=240, env=environment(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)], out


def relative_difference(a: list, b: list) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((x - y).norm() / y.norm().clamp_min(1e-30))


@two_processes
@pytest.mark.parametrize("name", ["tightlip", "specnorm", "muon-clip"])
def test_two_ranks_train_the_weights_of_one_process(ranks, name: str) -> None:
    import distributed_worker

    reports, _ = ranks
    single = distributed_worker.run(name)
    assert [r["world_size"] for r in reports] == [2, 2]
    for key, value in single["weights"].items():
        assert relative_difference(reports[0][name]["weights"][key], value) <= 1e-4, key
    for ours, theirs in zip(reports[0][name]["history"], single["history"], strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert ours["train_accuracy"] == pytest.approx(theirs["train_accuracy"], abs=1e-6)


@two_processes
@pytest.mark.parametrize("name", ["tightlip", "specnorm", "muon-clip", "resumed"])
def test_ranks_hold_identical_state_after_every_step(ranks, name: str) -> None:
    reports, _ = ranks
    steps = 2 * 14 if name != "resumed" else 14
    assert len(reports[0][name]["digests"]) == steps
    assert reports[0][name]["digests"] == reports[1][name]["digests"]
    assert reports[0][name]["weights"] == reports[1][name]["weights"]


@two_processes
def test_only_rank_0_writes(ranks) -> None:
    reports, out = ranks
    for name in ("tightlip", "specnorm"):
        assert "checkpoint.json" in reports[0][name]["wrote"]
        assert reports[1][name]["wrote"] == []


@two_processes
def test_distributed_resume_continues_exactly(ranks) -> None:
    reports, _ = ranks
    assert reports[0]["resumed"]["weights"] == reports[0]["tightlip"]["weights"]
    assert reports[0]["resumed"]["history"][-1]["loss"] == reports[0]["tightlip"]["history"][-1]["loss"]


def own_data(directory: Path, n: int = 240) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        y = np.arange(n) % 3
        x = rng.uniform(0, 0.5, size=(n, 20)) + 0.4 * (y[:, None] == (np.arange(20) % 3))
        np.savez(directory / f"{name}.npz", x=x.astype(np.float32), y=y)
    return directory


@pytest.mark.slow
def test_cli_nproc_2_trains_and_certifies_once(tmp_path: Path) -> None:
    """The command line end to end (resuming is tested on the library, above)."""
    data = own_data(tmp_path / "data")
    out = tmp_path / "run"
    base = [sys.executable, "-m", "tightlip", "train", "--nproc", "2", "--dataset", "files",
            "--data", str(data), "--widths", "16", "--batch-size", "32", "--out", str(out),
            "--dist-timeout", "300"]
    first = subprocess.run([*base, "--epochs", "2", "--attack-limit", "20", "--lower-seconds",
                            "0.5"], capture_output=True, text=True, timeout=300,
                           env=environment(), cwd=ROOT)
    assert first.returncode == 0, first.stderr[-4000:]
    assert first.stdout.count("tightlip results") == 1  # certified once, on rank 0
    assert first.stderr.count("epoch 2/2") == 1  # one log line per epoch, from rank 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["processes"] == 2
    saved = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert saved["epoch"] == 2 and saved["data"] == {"dataset": "files", "verify": True}


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_an_error(tmp_path: Path) -> None:
    data = own_data(tmp_path / "data", n=400)
    mark = uuid.uuid4().hex
    command = [sys.executable, "-m", "tightlip", "train", "--nproc", "2", "--dataset", "files",
               "--data", str(data), "--widths", "16", "--batch-size", "4", "--epochs", "500",
               "--no-certify", "--out", str(tmp_path / "run"), "--dist-timeout", "20"]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment(TIGHTLIP_TEST_MARK=mark), cwd=ROOT)
    lines: list[str] = []
    first_epoch = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "epoch 1/500" in line:
                first_epoch.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_epoch.wait(120), "".join(lines)[-3000:]
        victim = worker_pid(mark, rank=1)
        os.kill(victim, 9)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    text = "".join(lines)
    assert code != 0
    assert time.monotonic() - started < 200
    assert "distributed training failed" in text
    assert "rank" in text.lower() and ("SIGKILL" in text or "Signal 9" in text or "-9" in text)


def worker_pid(mark: str, rank: int) -> int:
    """The process of this test's run (marked in its environment) that has ``RANK=rank``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(
                item.split("=", 1)
                for item in (entry / "environ").read_bytes().decode(errors="replace").split("\0")
                if "=" in item
            )
        except OSError:
            continue
        if env.get("TIGHTLIP_TEST_MARK") == mark and env.get("RANK") == str(rank):
            return int(entry.name)
    raise AssertionError(f"no worker with RANK={rank} found")
