"""Training logs: one line per epoch when stderr is not a terminal, a bar on a terminal."""

from __future__ import annotations

import io
import sys

import torch

import tightlip as t
from tightlip.methods import fit
from tightlip.train.config import TrainConfig
from tightlip.train.loop import epoch_line

SPEC = t.ModelSpec(input_dim=10, widths=(8,), num_classes=3, activation="abs")
CONFIG = TrainConfig(epochs=3, batch_size=10, loss="ce")


def _data(n: int = 200):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 10, generator=generator), torch.randint(0, 3, (n,), generator=generator)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_line_per_epoch_when_not_a_terminal(capsys) -> None:
    x, y = _data()
    fit("tightlip", SPEC, CONFIG, x, y, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(line.startswith("epoch ") and "loss" in line for line in lines)


def test_progress_bar_on_a_terminal(monkeypatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    x, y = _data()
    fit("tightlip", SPEC, CONFIG, x, y, progress=True)
    assert "\r" in terminal.getvalue()  # tqdm's updates


def test_no_output_without_progress(capsys) -> None:
    x, y = _data()
    fit("tightlip", SPEC, CONFIG, x, y, progress=False)
    assert capsys.readouterr().err == ""


def test_epoch_line() -> None:
    summary = {"epoch": 2, "loss": 0.5, "train_accuracy": 0.875, "bound_estimate": 3.25, "seconds": 1.5}
    assert epoch_line(summary, 30) == (
        "epoch 2/30  loss 0.5000  train acc 0.8750  bound 3.25  1.5 s"
    )
