"""``fit``: build a registered method's model and objective, then run the training loop.

With a :class:`~tightlip.data.normalize.Normalization` the built model is wrapped in
:class:`~tightlip.models.normalized.Normalized` before its objective is made, so the penalty,
the checkpoint and the certificate all see the normalisation as the network's first layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tightlip.data.normalize import Normalization
from tightlip.distributed import Distributed
from tightlip.errors import BadArgumentError, MethodNotApplicableError
from tightlip.methods.registry import METHODS, Method
from tightlip.model import ModelSpec
from tightlip.models.normalized import Normalized
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
    normalization: Normalization | None = None,
    input_shape: tuple[int, ...] | None = None,
    data_description: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train ``method`` (a name or a :class:`Method`) on ``(train_x, train_y)``.

    The model is built from ``spec`` seeded by ``config.seed``; ``options`` are the method's
    own parameters (e.g. Sandwich's ``gamma``). Checkpoints go to ``out_dir`` every epoch;
    ``resume``/``override`` as in :func:`tightlip.train.loop.train`. ``normalization`` puts a
    fixed per-channel normalisation of inputs of ``input_shape`` (default: flat) in front of
    the model (module docstring). ``data_description`` (e.g. ``{"dataset": "cifar10"}``) is
    saved in the checkpoint, so ``certify`` knows which data the model was trained on.
    ``device`` and ``distributed`` choose where and on how many processes training runs
    (:func:`tightlip.train.loop.train`); the model is built identically on every rank.
    """
    chosen = METHODS.get(method) if isinstance(method, str) else method
    if spec.norm != config.norm:
        raise BadArgumentError(f"model norm {spec.norm} differs from training norm {config.norm}")
    options = dict(options or {})
    model, description = chosen.build(spec, config, options)
    if normalization is not None:
        model, description = normalized(
            chosen, model, description, normalization, input_shape or (spec.input_dim,)
        )
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
        data_description=data_description,
        device=device,
        distributed=distributed,
    )


def normalized(
    method: Method,
    model: nn.Module,
    description: dict[str, Any],
    normalization: Normalization,
    input_shape: tuple[int, ...],
) -> tuple[Normalized, dict[str, Any]]:
    """``model`` behind the fixed input normalisation, with the description that rebuilds it.

    Raises:
        MethodNotApplicableError: the method reads its model's own class (Sandwich's γ, the
            local-Lipschitz layers), so it cannot sit behind another layer.
    """
    if not method.input_normalization:
        accepted = ", ".join(name for name, m in METHODS.items() if m.input_normalization)
        raise MethodNotApplicableError(
            f"{method.name} does not accept an input normalisation (its objective or certificate "
            f"reads its own model class); train it without --normalize, or use one of {accepted}"
        )
    wrapped = Normalized(model, normalization, input_shape, description)
    return wrapped, wrapped.description()
