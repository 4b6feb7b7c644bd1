"""GloRo as a method (Leino, Wang & Fredrikson, "Globally-robust neural networks", ICML 2021).

**Network.** A MinMax network with biases (:mod:`tightlip.models.gloro`); the paper's MNIST
network at ε = 1.58 is 4C3F, ``c32k3,c32k4s2,c64k3,c64k4s2,f512,f512``.

**Loss.** Write ``f = W ∘ g`` (``W`` the read-out, ``g`` the backbone). GloRo estimates
``K_g = ∏_i ‖A_i‖₂`` (MinMax is 1-Lipschitz) by power iteration with persistent vectors (one
pair per layer, a few steps per batch: :class:`~tightlip.train.penalty.TrivialBoundEstimator`,
through the convolution and its transpose for conv layers), appends the ⊥ logit

    z_⊥ = max_{j≠y} z_j + ‖w_y − w_j‖₂ · K_g · ε_train,

and minimises ``CE([z, z_⊥], y)`` (:func:`tightlip.train.losses.gloro_loss`). z_⊥ loses to
z_y exactly when the last-layer-exact test certifies the point at ε_train, so the loss trains for
GloRo's certificate.

**ε schedule.** GloRo ramps ε up during training ("logarithmic" schedule); here ε at epoch e
(1-based) is ``ε_train · log(1 + 9 t) / log 10`` with ``t = min(1, e / ramp_epochs)``,
``ramp_epochs = ⌈ramp_fraction · epochs⌉`` (half the run by default): concave, starting near
ε_train/4 after the first epoch of a 10-epoch ramp, and constant at ε_train after the ramp.

**Certificate.** The power-iteration estimate under-estimates ``‖A_i‖₂`` and is never used to
certify: ``certified_bound`` is the sound float64 trivial bound of the actual weights, and
:mod:`tightlip.eval.certify`'s last-layer-exact certificate (``z_y − z_j > ‖w_y − w_j‖ L_g ε``,
``L_g`` the sound trivial bound of the backbone) *is* GloRo's certificate.

**Published MNIST settings** (ε = 1.58): ε_train = 1.74, Adam, lr 1e-3, batch 256, 500 epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tightlip.methods.registry import METHODS, Method, Options
from tightlip.methods.tightlip import trivial_certificate
from tightlip.model import ModelSpec, build_model
from tightlip.models.gloro import gloro_description, gloro_spec
from tightlip.train.config import TrainConfig
from tightlip.train.losses import LossContext, classification_loss
from tightlip.train.objectives import Objective
from tightlip.train.penalty import TrivialBoundEstimator

EPSILON_TRAIN = 1.74
RAMP_FRACTION = 0.5
POWER_ITERATIONS = 5


class GloroObjective(Objective):
    """The GloRo loss with the backbone's power-iteration Lipschitz estimate (module docstring).

    ``epochs_started`` is a persistent counter (saved in checkpoints) set by
    :meth:`start_epoch`, so a resumed run continues the same ε schedule.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, ramp_fraction: float) -> None:
        super().__init__()
        self.config = config
        ramp = math.ceil(ramp_fraction * config.epochs)
        self.ramp_epochs = max(1, ramp) if ramp_fraction > 0 else 0
        self.estimator = TrivialBoundEstimator(
            model, config.norm, iterations=config.power_iterations, seed=config.seed
        )
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.int64))

    def start_epoch(self, epoch: int) -> None:
        self.epochs_started.fill_(epoch + 1)

    def epsilon(self) -> float:
        if self.ramp_epochs == 0:
            return self.config.margin_epsilon
        t = min(1.0, max(1, int(self.epochs_started)) / self.ramp_epochs)
        return self.config.margin_epsilon * math.log1p(9.0 * t) / math.log(10.0)

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        log_bound = self.estimator(update=True)
        last_norm = self.estimator.layer_norms(update=False)[-1]
        backbone = (log_bound - last_norm.clamp_min(1e-30).log()).exp()
        logits = model(x)
        eps = self.epsilon()
        context = LossContext(
            norm=c.norm,
            epsilon=eps,
            temperature=c.temperature,
            lipschitz=log_bound.exp(),
            last_weight=self.estimator.last_weight(),
            backbone_lipschitz=backbone,
        )
        loss = classification_loss(c.loss, logits, y, context)
        accuracy = float((logits.argmax(dim=-1) == y).float().mean())
        return loss, {"acc": accuracy, "bound": float(log_bound.detach().exp()), "epsilon": eps}


def build(
    spec: ModelSpec, config: TrainConfig, options: Options
) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    return build_model(gloro_spec(spec)), gloro_description(spec)


def objective(model: nn.Module, config: TrainConfig, options: Options) -> Objective:
    return GloroObjective(model, config, float(options.get("ramp_fraction", RAMP_FRACTION)))


METHODS.register(
    "gloro",
    Method(
        name="gloro",
        build=build,
        objective=objective,
        certified_bound=trivial_certificate,
        defaults={
            "lr": 1e-3,
            "batch_size": 256,
            "loss": "gloro",
            "margin_epsilon": EPSILON_TRAIN,
            "temperature": 1.0,
            "penalty": "none",
            "power_iterations": POWER_ITERATIONS,
            "ramp_fraction": RAMP_FRACTION,
        },
        description="MinMax net with biases, GloRo loss (Leino, Wang & Fredrikson, ICML 2021)",
        deviations=(
            "the harness's epochs (paper: 500) and cosine lr (paper: decay to ~1e-6); ε ramp "
            "log(1 + 9t)/log 10 over the first half of the epochs (our form of their "
            "logarithmic schedule); tightlip's orthogonal / delta-orthogonal initialisation "
            "(paper: Keras Glorot); no data augmentation; certification by the sound float64 "
            "trivial bound of the actual weights (the paper re-estimates by power iteration)."
        ),
    ),
)
