"""tightlip's own method (Kuang, Xu, Sivaranjani & Lin 2026): penalise the trivial bound.

Bias-free layers and norm-saturating polyactivations (Kuang & Lin 2026) built from a
:class:`~tightlip.model.ModelSpec`; the objective is classification loss + λ · penalty(L̂)
(:class:`~tightlip.train.objectives.PenalizedObjective`); certification uses the sound trivial
bound, which training has made tight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tightlip.bounds import upper_bound
from tightlip.certificate import Certificate
from tightlip.methods.registry import METHODS, Method, Options
from tightlip.model import ModelSpec, build_model
from tightlip.models.mlp import mlp_description
from tightlip.norms import NormName
from tightlip.train.config import TrainConfig
from tightlip.train.objectives import Objective, PenalizedObjective


def build(spec: ModelSpec, config: TrainConfig, options: Options) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    return build_model(spec), mlp_description(spec)


def objective(model: nn.Module, config: TrainConfig, options: Options) -> Objective:
    return PenalizedObjective(model, config)


def trivial_certificate(model: nn.Module, norm: NormName) -> Certificate:
    """The sound trivial bound of the model's actual weights (float64, rounding included)."""
    model.eval()
    return upper_bound(model, norm, "trivial")


METHODS.register(
    "tightlip",
    Method(
        name="tightlip",
        build=build,
        objective=objective,
        certified_bound=trivial_certificate,
        description="penalised trivial bound, bias-free layers, polyactivations (Kuang et al. 2026)",
    ),
)
