"""Training objectives: ``objective(model, x, y) -> (loss, stats)``, one ``nn.Module`` each.

An objective's buffers (e.g. persistent power-iteration vectors) are saved in checkpoints
with the model, so a resumed run continues with exactly the same state. The training loop
calls :meth:`Objective.start_epoch` before each epoch; schedules (ε ramps) read it there.

* :class:`PenalizedObjective` is tightlip's method (Kuang, Xu, Sivaranjani & Lin 2026):
  ``loss(θ) = classification(f_θ(x), y) + λ · penalty(L̂(θ))`` with ``L̂`` the differentiable
  trivial-bound estimate of :class:`~tightlip.train.penalty.TrivialBoundEstimator`.
* :class:`BoundedObjective` trains a network whose bound ``L`` comes from elsewhere (γ by
  construction for Sandwich layers, 1 for norm-constrained nets, an estimate for a plain MLP).

Both compute the classification term by one dispatcher,
:func:`tightlip.train.losses.classification_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tightlip.train.config import TrainConfig
from tightlip.train.losses import LossContext, classification_loss
from tightlip.train.penalty import TrivialBoundEstimator, bound_penalty, check_rescalable

Stats = dict[str, float]


class Objective(nn.Module):
    """``objective(model, x, y) -> (loss, stats)``; its buffers are saved in checkpoints."""

    def start_epoch(self, epoch: int) -> None:
        """Called by the loop before epoch ``epoch`` (0-based), also after a resume."""

    def after_step(self) -> None:
        """Called by the loop after every optimiser step (e.g. to rescale the layers)."""

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        raise NotImplementedError


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=-1) == y).float().mean())


class PenalizedObjective(Objective):
    """Classification loss + λ · penalty(L̂), the method of Kuang et al. (2026)."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.estimator = TrivialBoundEstimator(
            model,
            config.norm,
            iterations=config.power_iterations,
            seed=config.seed,
            smooth_max=config.smooth_max,
        )
        if config.projection == "rescale":
            check_rescalable(model)

    def after_step(self) -> None:
        if self.config.projection == "rescale":
            self.estimator.rescale_layers_()
        elif self.config.projection == "clip":
            self.estimator.clip_layers_()

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        c = self.config
        log_bound, conditioning = self.estimator.log_bound_and_conditioning()
        logits = model(x)
        last_weight, backbone = None, None
        if c.loss == "last-layer":
            last_norm = self.estimator.layer_norms(update=False)[-1]
            last_weight = self.estimator.last_weight()
            backbone = (log_bound - last_norm.clamp_min(1e-30).log()).exp()
        context = LossContext(
            norm=c.norm,
            epsilon=c.margin_epsilon,
            temperature=c.temperature,
            lipschitz=log_bound.exp(),
            last_weight=last_weight,
            backbone_lipschitz=backbone,
        )
        loss = classification_loss(c.loss, logits, y, context)
        if c.penalty != "none":
            loss = loss + c.penalty_weight * bound_penalty(log_bound, c.penalty, c.penalty_target)
        if c.conditioning_weight > 0:
            loss = loss + c.conditioning_weight * conditioning
        return loss, {
            "acc": _accuracy(logits, y),
            "bound": float(log_bound.detach().exp()),
            "conditioning": float(conditioning.detach()),
        }


LipschitzFn = Callable[[nn.Module], "torch.Tensor | float"]
LastLayerFn = Callable[[nn.Module], "tuple[torch.Tensor, torch.Tensor | float]"]


class EstimatedBound(nn.Module):
    """``L̂ = exp(log L̂)`` from :class:`TrivialBoundEstimator`, as a ``LipschitzFn`` (buffers
    saved); how an unconstrained network (the plain MLP) feeds a margin loss."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.estimator = TrivialBoundEstimator(
            model, config.norm, iterations=config.power_iterations, seed=config.seed
        )

    def forward(self, model: nn.Module) -> torch.Tensor:
        return self.estimator().exp()


class BoundedObjective(Objective):
    """A registered loss with a bound ``L = lipschitz(model)`` that training does not penalise.

    ``lipschitz`` gives the bound the loss uses; if it is an ``nn.Module`` its buffers are
    checkpointed with the objective. ``last_layer(model)`` returns ``(W_last, L_backbone)``
    for the last-layer losses (``gloro``, ``last-layer``).
    """

    def __init__(
        self,
        config: TrainConfig,
        lipschitz: LipschitzFn | None = None,
        last_layer: LastLayerFn | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.lipschitz = lipschitz
        self.last_layer = last_layer

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Stats]:
        c = self.config
        logits = model(x)
        bound: torch.Tensor | float = 1.0 if self.lipschitz is None else self.lipschitz(model)
        last_weight, backbone = None, None
        if c.loss in ("gloro", "last-layer") and self.last_layer is not None:
            last_weight, backbone = self.last_layer(model)
        context = LossContext(
            norm=c.norm,
            epsilon=c.margin_epsilon,
            temperature=c.temperature,
            lipschitz=bound,
            last_weight=last_weight,
            backbone_lipschitz=backbone,
        )
        loss = classification_loss(c.loss, logits, y, context)
        shown = float(bound.detach()) if isinstance(bound, torch.Tensor) else float(bound)
        return loss, {"acc": _accuracy(logits, y), "bound": shown}
