"""The local-Lipschitz baseline as a method (Huang, Zhang, Shi, Kolter & Anandkumar, NeurIPS
2021): GloRo loss with per-input local bounds, an ε ramp and a sparsity loss; certified per
input by :func:`tightlip.models.local_lip.certify_local` (maths in that module; convolutions in
:mod:`tightlip.models.local_lip_conv`). A convolutional ``arch`` builds a
:class:`~tightlip.models.local_lip_conv.LocalLipConvNet`, otherwise a ``LocalLipMLP``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tightlip.methods.registry import METHODS, Method, Options
from tightlip.methods.tightlip import trivial_certificate
from tightlip.model import ModelSpec
from tightlip.models.local_lip import (
    LOCAL_LIP_THRESHOLD_INIT,
    LocalLipMLP,
    LocalLipNetwork,
    certify_local,
    local_bounds,
)
from tightlip.models.local_lip_conv import LocalLipConvNet
from tightlip.train.config import TrainConfig
from tightlip.train.losses import LossContext, gloro_loss
from tightlip.train.objectives import Objective

SPARSITY_WEIGHT = 0.01
RAMP_FRACTION = 0.5
POWER_ITERATIONS = 5


class LocalLipObjective(Objective):
    """GloRo loss with the per-input local bound, ε ramp and sparsity loss (module docstring).

    The ε schedule is per epoch: the training loop calls :meth:`start_epoch` before every
    epoch, which sets the persistent counter ``epochs_started`` (saved in checkpoints; a resumed
    run is told its epoch again, so it continues the same schedule). ε at epoch e (1-based) is
    ``ε_train · min(1, e / ramp_epochs)`` with ``ramp_epochs = ⌈ramp_fraction · epochs⌉``.
    ``start_u{k}`` are persistent start vectors for the masked power iteration, refreshed by one
    unmasked power step per batch (the paper keeps one vector per training example instead).
    """

    def __init__(
        self,
        model: LocalLipNetwork,
        config: TrainConfig,
        *,
        sparsity_weight: float = 0.01,
        ramp_fraction: float = 0.5,
        iterations: int = 5,
    ) -> None:
        super().__init__()
        self.config = config
        self.sparsity_weight = sparsity_weight
        self.ramp_epochs = max(1, math.ceil(ramp_fraction * config.epochs))
        self.iterations = iterations
        self.register_buffer("epochs_started", torch.zeros((), dtype=torch.int64))
        generator = torch.Generator().manual_seed(config.seed)
        for k, layer in enumerate(model.affine_layers()[:-1]):
            start = torch.randn(layer.in_features, generator=generator)
            self.register_buffer(f"start_u{k}", start / start.norm())

    def start_epoch(self, epoch: int) -> None:
        self.epochs_started.fill_(epoch + 1)

    def epsilon(self) -> float:
        epoch = max(1, int(self.epochs_started))
        return self.config.margin_epsilon * min(1.0, epoch / self.ramp_epochs)

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert isinstance(model, LocalLipNetwork)
        layers = model.affine_layers()
        starts = []
        with torch.no_grad():
            for k, layer in enumerate(layers[:-1]):
                u = layer.refresh(getattr(self, f"start_u{k}"))
                getattr(self, f"start_u{k}").copy_(u)
                starts.append(u)
        eps = self.epsilon()
        bounds = local_bounds(
            model,
            x,
            eps,
            self.config.norm,
            certified=False,
            starts=starts,
            iterations=self.iterations,
        )
        logits = bounds.logits
        context = LossContext(
            norm=self.config.norm,
            epsilon=eps,
            last_weight=layers[-1].weight,
            backbone_lipschitz=bounds.backbone,
            input_mask=bounds.last_mask,
        )
        loss = gloro_loss(logits, y, context)
        if bounds.sparsity is not None and self.sparsity_weight > 0:
            loss = loss + self.sparsity_weight * bounds.sparsity
        accuracy = (logits.argmax(dim=-1) == y).float().mean()
        return loss, {
            "acc": float(accuracy),
            "bound": float(bounds.backbone.detach().mean()),
            "epsilon": eps,
        }


def build(spec: ModelSpec, config: TrainConfig, options: Options) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    init = float(options.get("threshold_init", LOCAL_LIP_THRESHOLD_INIT))
    model: LocalLipNetwork
    if spec.convolutional:
        model = LocalLipConvNet(spec.arch, spec.input_shape, spec.num_classes, init=init)
    else:
        model = LocalLipMLP(spec.input_dim, spec.widths, spec.num_classes, init=init)
    return model, model.description()


def objective(model: nn.Module, config: TrainConfig, options: Options) -> Objective:
    assert isinstance(model, LocalLipNetwork)
    return LocalLipObjective(
        model,
        config,
        sparsity_weight=float(options.get("sparsity_weight", SPARSITY_WEIGHT)),
        ramp_fraction=float(options.get("ramp_fraction", RAMP_FRACTION)),
        iterations=config.power_iterations,
    )


METHODS.register(
    "local-lip",
    Method(
        name="local-lip",
        build=build,
        objective=objective,
        certified_bound=trivial_certificate,
        certify_local=certify_local,
        input_normalization=False,
        defaults={
            "lr": 1e-3,
            "loss": "gloro",
            "margin_epsilon": 1.75,
            "temperature": 1.0,
            "penalty": "none",
            "ramp_fraction": RAMP_FRACTION,
            "sparsity_weight": SPARSITY_WEIGHT,
            "power_iterations": POWER_ITERATIONS,
            "threshold_init": LOCAL_LIP_THRESHOLD_INIT,
        },
        description="clipped-ReLU MLP or conv net with local Lipschitz bounds (Huang et al. 2021)",
        deviations=(
            "MLP or conv net (4C3F via --arch; pooling and circular padding refused); conv "
            "layers' certified local l2 bound is Schur's test on the masked |A| capped by the "
            "unmasked certified norm (paper: power iteration); the harness's epochs (paper: "
            "300); cosine lr instead of the "
            "exponential decay; per-epoch ε ramp over the first half (paper: per-batch over 150 "
            "of 300 epochs); masked power iteration warm-started from a shared vector (paper: "
            "one stored vector per training example); sparsity loss min(hi, θ−lo)⁺ with weight "
            "0.01 is our differentiable form; certification uses certified (not "
            "power-iteration) norms."
        ),
    ),
)
