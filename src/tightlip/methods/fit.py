"""``fit``: build a registered method's model and objective, then run the training loop."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from tightlip.errors import BadArgumentError
from tightlip.methods.registry import METHODS, Method
from tightlip.model import ModelSpec
from tightlip.train.config import TrainConfig
from tightlip.train.loop import TrainResult, train


def fit(
    method: str | Method,
    spec: ModelSpec,
    config: TrainConfig,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    options: Mapping[str, Any] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    override: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``method`` (a name or a :class:`Method`) on ``(train_x, train_y)``.

    The model is built from ``spec`` seeded by ``config.seed``; ``options`` are the method's
    own parameters (e.g. Sandwich's ``gamma``). Checkpoints go to ``out_dir`` every epoch;
    ``resume``/``override`` as in :func:`tightlip.train.loop.train`.
    """
    chosen = METHODS.get(method) if isinstance(method, str) else method
    if spec.norm != config.norm:
        raise BadArgumentError(f"model norm {spec.norm} differs from training norm {config.norm}")
    options = dict(options or {})
    model, description = chosen.build(spec, config, options)
    objective = chosen.objective(model, config, options)
    return train(
        model,
        objective,
        train_x,
        train_y,
        config,
        out_dir=out_dir,
        resume=resume,
        override=override,
        model_description=description,
        method=chosen.name,
        progress=progress,
        stop_after_epochs=stop_after_epochs,
        on_epoch_end=on_epoch_end,
    )
