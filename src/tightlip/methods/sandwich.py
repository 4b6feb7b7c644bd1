"""The Sandwich baseline (Wang & Manchester, "Direct parameterization of Lipschitz-bounded deep
networks", ICML 2023): Lip ≤ γ by construction, offset cross-entropy (LBDN's settings).

LBDN's default γ = 1: with the offset √2·1.5 the loss aims at certified radius 1.5, just below
the 1.58 reported on MNIST.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tightlip.certificate import Certificate
from tightlip.methods.registry import METHODS, Method, Options, by_construction
from tightlip.methods.tightlip import trivial_certificate
from tightlip.model import ModelSpec
from tightlip.models.sandwich import SANDWICH_GAMMA, SandwichMLP
from tightlip.models.sandwich_conv import SandwichConvNet
from tightlip.norms import NormName
from tightlip.train.config import TrainConfig
from tightlip.train.objectives import BoundedObjective, Objective


def build(spec: ModelSpec, config: TrainConfig, options: Options) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    gamma = float(options.get("gamma", SANDWICH_GAMMA))
    if spec.convolutional:
        conv = SandwichConvNet(spec, gamma=gamma)
        return conv, conv.description()
    model = SandwichMLP(spec.input_dim, spec.widths, spec.num_classes, gamma=gamma)
    return model, model.description()


def _gamma(model: nn.Module) -> float:
    assert isinstance(model, SandwichMLP | SandwichConvNet)
    return model.gamma


def _last_layer(model: nn.Module) -> tuple[torch.Tensor, float]:
    assert isinstance(model, SandwichMLP | SandwichConvNet)
    return model.last_layer()


def objective(model: nn.Module, config: TrainConfig, options: Options) -> Objective:
    return BoundedObjective(config, lipschitz=_gamma, last_layer=_last_layer)


def certified_bound(model: nn.Module, norm: NormName) -> Certificate:
    """ℓ2: γ by construction (sound float64 version, ≈ γ·(1 + 1e-9)); other norms: trivial."""
    if not isinstance(model, SandwichMLP | SandwichConvNet):
        raise TypeError("the sandwich certificate needs a SandwichMLP or SandwichConvNet")
    model.eval()
    if norm == "2":
        return by_construction(model.certified_lipschitz(), "sandwich", norm)
    return trivial_certificate(model, norm)


def read_out(model: nn.Module, norm: NormName) -> tuple[torch.Tensor, float] | None:
    """ℓ2: the head's matrix and the by-construction backbone bound (≈ √γ); else the chain's."""
    if norm != "2" or not isinstance(model, SandwichMLP | SandwichConvNet):
        return None
    return model.certified_read_out()


METHODS.register(
    "sandwich",
    Method(
        name="sandwich",
        build=build,
        objective=objective,
        certified_bound=certified_bound,
        read_out=read_out,
        defaults={
            "lr": 1e-2,
            "loss": "offset",
            "margin_epsilon": 1.5,
            "temperature": 0.25,
            "penalty": "none",
            "gamma": SANDWICH_GAMMA,
        },
        description="Sandwich layers (Wang & Manchester 2023), Lip ≤ γ by construction",
        input_normalization=False,
        deviations=(
            "conv archs: LBDN's Fourier-domain Sandwich convolutions with circular padding "
            "(the arch's zero padding is not used; map sizes must agree), the k×k kernel "
            "parameterises a full-map circular convolution, stride 2 as space-to-depth + a "
            "⌊k/2⌋ kernel on 4·c_in channels (as LBDN), no pooling; dense-only archs: an MLP "
            "of matched widths; lr schedule cosine (TrainConfig "
            "has cosine/constant only) instead of the piecewise-linear 0→lr→lr/20→0; offset "
            "written as √2·γ·ε so it equals the published √2·1.5 at γ = 1 and keeps its meaning "
            "for other γ."
        ),
    ),
)
