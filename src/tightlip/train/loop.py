"""Training: a classification loss plus λ times a penalty on the trivial Lipschitz bound.

    loss(θ) = classification(f_θ(x), y) + λ · penalty(L̂(θ)),

with ``L̂`` the differentiable estimate of :class:`tightlip.train.penalty.TrivialBoundEstimator`.
The loop is method-agnostic: it takes an :class:`Objective` (an ``nn.Module`` whose state is
checkpointed with the model), so the baselines reuse it with their own losses.

Determinism and resuming: the model is initialised from ``seed``, every epoch shuffles with a
generator seeded by ``(seed, epoch)``, and a checkpoint (model, objective state, Adam state)
is written after every epoch. A run resumed from epoch k therefore replays exactly the batches
and updates of an uninterrupted run.

Resuming with other settings. The settings that shape training (the method, the model
description, every :class:`TrainConfig` field) are compared with the checkpoint's
(:func:`settings_changes`). A resumed run with any difference is refused, naming each one,
unless ``override=True``; then training continues with the new settings and the first epoch
trained with them records the changes in its history entry (``"settings_changes"``), so the
checkpoint's history says which settings applied from which epoch on.

Progress. On a terminal each epoch shows a progress bar; when stderr is not a terminal (a log
file, a pipe, CI) each epoch prints one line instead (:func:`epoch_line`), so a log holds one
line per epoch rather than a carriage-return update per step.

Devices and processes. The loop runs where it is told (``device``), and on several processes
under ``torch.distributed`` when given a :class:`~tightlip.distributed.Distributed` context:
each rank trains its slice of every global batch of the same seeded order, DDP averages the
gradients, and only rank 0 prints and checkpoints (the equivalence with one process is
explained in :mod:`tightlip.distributed`). One process on the CPU computes exactly what it
computed before either existed.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tightlip.distributed import SINGLE_PROCESS, Distributed
from tightlip.errors import BadArgumentError, CheckpointError, ModelShapeError
from tightlip.model import check_finite_parameters
from tightlip.threads import uses_library_threads
from tightlip.train.checkpoint import (
    CONFIG_FILE,
    Checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    save_checkpoint,
)
from tightlip.train.config import TrainConfig
from tightlip.train.objectives import Objective
from tightlip.train.optimizers import make_optimizer


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    epochs_run: int = 0
    #: the model description that rebuilds the trained network (what the checkpoint stores)
    description: dict[str, Any] = field(default_factory=dict)


def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.lr_schedule == "constant":
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def epoch_line(summary: Mapping[str, float], epochs: int) -> str:
    """The one line an epoch prints when stderr is not a terminal."""
    return (
        f"epoch {int(summary['epoch'])}/{epochs}  loss {summary['loss']:.4f}  "
        f"train acc {summary['train_accuracy']:.4f}  bound {summary['bound_estimate']:.4g}  "
        f"{summary['seconds']:.1f} s"
    )


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def training_settings(
    method: str, model_description: Mapping[str, Any], config: TrainConfig
) -> dict[str, Any]:
    """The settings that shape a run, flat: ``method``, ``model.<argument>``, ``train.<field>``.

    Values are normalised through JSON (tuples become lists), as a checkpoint stores them; the
    model description's ``arguments`` level is left out of the names (``model.widths``).
    """
    nested = {"method": method, "model": dict(model_description), "train": config.to_dict()}
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                name = prefix if key == "arguments" else f"{prefix}.{key}" if prefix else key
                walk(name, item)
        else:
            flat[prefix] = value

    walk("", json.loads(json.dumps(nested, default=list)))
    return flat


def settings_changes(
    saved: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """``{name: {"from": saved value, "to": current value}}`` for every setting that differs
    between two :func:`training_settings` (a setting present on one side only is a change)."""
    missing = object()
    changes: dict[str, dict[str, Any]] = {}
    for name in sorted(set(saved) | set(current)):
        old, new = saved.get(name, missing), current.get(name, missing)
        if old != new:
            changes[name] = {
                "from": None if old is missing else old,
                "to": None if new is missing else new,
            }
    return changes


def _describe_changes(changes: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{name} {c['from']!r} → {c['to']!r}" for name, c in changes.items())


def _saved_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`training_settings` of a checkpoint's JSON."""
    return training_settings(
        str(config.get("method", "tightlip")),
        config.get("model", {}),
        TrainConfig.from_dict(config.get("train", {})),
    )


class TrainingStep(nn.Module):
    """One step's loss ``objective(model, x, y)`` as a module, so that DDP can wrap it whole.

    The penalty reads the weights outside the model's forward pass; inside this module's
    forward it is part of the one forward that DDP prepares its gradient reduction for, and
    the objective still receives the model itself (methods may ask for its class).
    ``weight`` scales the loss that is differentiated (a rank's share, :mod:`tightlip.distributed`);
    the unscaled loss is returned for the logs.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, y: torch.Tensor, weight: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        loss, stats = self.objective(self.model, x, y)
        scaled = loss if weight is None else loss * weight
        return scaled, loss.detach(), stats


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@uses_library_threads
def train(
    model: nn.Module,
    objective: Objective,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    override: bool = False,
    model_description: dict[str, Any] | None = None,
    method: str = "tightlip",
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    data_description: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train ``model`` with Adam on ``objective``; checkpoint to ``out_dir`` every epoch.

    ``resume=True`` continues from ``out_dir``'s checkpoint; settings that differ from the
    checkpoint's raise :class:`BadArgumentError` naming each, unless ``override=True``, which
    records them in the history (module docstring). ``stop_after_epochs`` ends the run early
    (as if interrupted), which the resume test uses. ``data_description`` (which data set) is
    stored in the checkpoint's JSON under ``data``; it is not a training setting.

    ``device`` (default: where the model is) receives the model, the objective's state and the
    data; the trained model stays there. With ``distributed`` (a
    :class:`~tightlip.distributed.Distributed` of several processes) every rank trains its
    slice of each global batch of ``config.batch_size`` examples under DDP; only rank 0 prints,
    calls ``on_epoch_end`` and writes checkpoints (:mod:`tightlip.distributed`).
    """
    if train_x.shape[0] != train_y.shape[0]:
        raise ModelShapeError(f"{train_x.shape[0]} inputs but {train_y.shape[0]} labels")
    context = distributed or SINGLE_PROCESS
    place = torch.device(device) if device is not None else _model_device(model)
    model.to(place)
    objective.to(place)
    train_x, train_y = train_x.to(place), train_y.to(place)
    optimizer = make_optimizer(model, config.optimizer, config.lr)
    start_epoch, history, train_seconds = 0, [], 0.0
    changes: dict[str, dict[str, Any]] = {}
    if resume:
        if out_dir is None or not (Path(out_dir) / CONFIG_FILE).is_file():
            raise CheckpointError(f"--resume: no checkpoint in {out_dir}")
        saved = load_checkpoint(out_dir)
        current = training_settings(method, model_description or {}, config)
        changes = settings_changes(_saved_settings(saved.config), current)
        if changes and not override:
            raise BadArgumentError(
                f"--resume: the settings differ from those of the checkpoint in {out_dir}: "
                f"{_describe_changes(changes)}; repeat the checkpoint's settings, or pass "
                "--override to continue with the new ones (recorded in its history)"
            )
        _restore(saved, model, objective, optimizer, changes)
        start_epoch = int(saved.config["epoch"])
        history = list(saved.config.get("history", []))
        train_seconds = float(saved.config.get("train_seconds", 0.0))

    step = context.wrap(TrainingStep(model, objective), place)
    writes = context.is_main
    bar_on_terminal = progress and writes and sys.stderr.isatty()
    n = train_x.shape[0]
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    last_epoch = (
        config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    )
    for epoch in range(start_epoch, last_epoch):
        step.train()
        objective.start_epoch(epoch)
        started = time.perf_counter()
        order = _epoch_order(n, config.seed, epoch).to(place)
        totals = {"loss": 0.0, "acc": 0.0, "bound": 0.0}
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=not bar_on_terminal,
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            weight, share = None, 1.0
            if context.enabled:
                index, weight, share = _rank_slice(context, index)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, epoch * steps_per_epoch + batch, total_steps)
            loss, unscaled, stats = step(train_x[index], train_y[index], weight)
            if not torch.isfinite(unscaled):
                raise FloatingPointError(f"loss became {float(unscaled)} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            objective.after_step()
            if context.enabled:
                totals["loss"] += share * float(unscaled)
                totals["acc"] += share * stats.get("acc", 0.0)
            else:
                totals["loss"] += float(unscaled)
                totals["acc"] += stats.get("acc", 0.0)
            totals["bound"] = stats.get("bound", 0.0)
            bar.set_postfix(
                loss=f"{totals['loss'] / (batch + 1):.3f}",
                acc=f"{stats.get('acc', 0):.3f}",
                L=f"{totals['bound']:.3g}",
            )
        check_finite_parameters(model)
        if context.enabled:
            totals["loss"], totals["acc"] = context.all_reduce_sum([totals["loss"], totals["acc"]])
            context.check_identical((model, objective), f"after epoch {epoch + 1}")
        train_seconds += time.perf_counter() - started
        summary = {
            "epoch": epoch + 1,
            "loss": totals["loss"] / steps_per_epoch,
            "train_accuracy": totals["acc"] / steps_per_epoch,
            "bound_estimate": totals["bound"],
            "seconds": time.perf_counter() - started,
        }
        if changes:
            summary["settings_changes"] = changes
            changes = {}
        history.append(summary)
        if not writes:
            continue
        if progress and not bar_on_terminal:
            print(epoch_line(summary, config.epochs), file=sys.stderr, flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, summary)
        if out_dir is not None:
            optimizer_tensors, optimizer_json = optimizer_to_tensors(optimizer)
            extra = {f"objective.{k}": v for k, v in objective.state_dict().items()}
            extra.update(optimizer_tensors)
            save_checkpoint(
                out_dir,
                model,
                {
                    "method": method,
                    "model": model_description or {},
                    "train": config.to_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "train_seconds": train_seconds,
                    "optimizer": optimizer_json,
                    "data": dict(data_description or {}),
                },
                extra_tensors=extra,
            )
    model.eval()
    return TrainResult(
        model, history, train_seconds, epochs_run=len(history), description=model_description or {}
    )


def _rank_slice(
    context: Distributed, index: torch.Tensor
) -> tuple[torch.Tensor, float, float]:
    """This rank's examples of a global batch, its loss weight ``W b_r / b`` and share ``b_r/b``.

    A rank left without examples (a last batch smaller than the number of ranks) still runs
    one forward and backward pass, on the batch's first example with weight 0, so that DDP's
    gradient reduction and the penalty's power iteration see every rank.
    """
    local, share = context.shard(index)
    if local.shape[0] == 0:
        return index[:1], 0.0, 0.0
    return local, context.world_size * share, share


def _restore(
    saved: Checkpoint,
    model: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    changes: Mapping[str, Any],
) -> None:
    """Load the checkpoint's model, objective and optimizer states into the new run's."""
    optimizer_tensors = {
        k[len("optimizer.") :]: v for k, v in saved.tensors.items() if k.startswith("optimizer.")
    }
    try:
        model.load_state_dict(saved.section("model"))
        objective.load_state_dict(saved.section("objective"))
        optimizer_from_tensors(optimizer, optimizer_tensors, saved.config["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"--resume: the checkpoint in {saved.directory} cannot continue as this run"
            + (f" with the changes {_describe_changes(changes)}" if changes else "")
            + f": its tensors do not fit ({first})"
        ) from error
