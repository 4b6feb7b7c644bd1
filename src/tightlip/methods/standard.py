"""The standard alternatives as methods: ``plain``, ``specnorm`` and ``orthogonal``.

Models are in :mod:`tightlip.models.standard` (papers there). ``plain`` trains with
cross-entropy and is certified by the best cheap sound verifier (ECLipsE-Fast, Syed–Hu, the
trivial bound); ``specnorm`` and ``orthogonal`` train with the offset cross-entropy shared with
the other 1-Lipschitz baselines and are certified by the trivial bound of their actual weights
(never by the "1" that their power iteration or parametrisation promises).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tightlip.bounds.portfolio import upper_bound_or_trivial
from tightlip.certificate import Certificate
from tightlip.methods.registry import METHODS, CertifiedBound, Method, Options
from tightlip.methods.tightlip import trivial_certificate
from tightlip.model import ModelSpec
from tightlip.models.standard import BaselineMLP
from tightlip.models.standard_conv import BaselineConvNet
from tightlip.norms import NormName
from tightlip.train.config import TrainConfig
from tightlip.train.objectives import BoundedObjective, EstimatedBound, Objective

#: closed-form verifiers tried for the plain MLP (LipSDP is too slow at these widths)
PLAIN_VERIFIERS = ("eclipse-fast", "syed-hu")


def best_certificate(model: nn.Module, norm: NormName) -> Certificate:
    """The smallest *sound* upper bound among the cheap verifiers and the trivial bound."""
    best = trivial_certificate(model, norm)
    for method in PLAIN_VERIFIERS:
        certificate = upper_bound_or_trivial(model, norm, method)
        if certificate.sound and certificate.value < best.value:
            best = certificate
    return best


def _unit_bound(model: nn.Module) -> float:
    """Norm-constrained nets are 1-Lipschitz by construction (≈; used by the loss only)."""
    return 1.0


def _standard_method(
    variant: str,
    certified_bound: CertifiedBound,
    defaults: dict[str, Any],
    description: str,
    deviations: str,
) -> Method:
    def build(
        spec: ModelSpec, config: TrainConfig, options: Options
    ) -> tuple[nn.Module, dict[str, Any]]:
        torch.manual_seed(config.seed)
        if spec.convolutional:
            conv = BaselineConvNet(variant, spec)
            return conv, conv.description()
        model = BaselineMLP(variant, spec.input_dim, spec.widths, spec.num_classes)
        return model, model.description()

    def objective(model: nn.Module, config: TrainConfig, options: Options) -> Objective:
        lipschitz = EstimatedBound(model, config) if variant == "plain" else _unit_bound
        return BoundedObjective(config, lipschitz=lipschitz)

    return Method(
        name=variant,
        build=build,
        objective=objective,
        certified_bound=certified_bound,
        defaults=defaults,
        description=description,
        deviations=deviations,
    )


_OFFSET = {"loss": "offset", "margin_epsilon": 1.5, "temperature": 0.25, "penalty": "none"}

METHODS.register(
    "plain",
    _standard_method(
        "plain",
        best_certificate,
        {"lr": 1e-3, "loss": "ce", "penalty": "none"},
        "ReLU MLP or conv net, cross-entropy",
        "none (standard CE training); conv nets: nn.Conv2d with biases, ReLU.",
    ),
)
METHODS.register(
    "specnorm",
    _standard_method(
        "specnorm",
        trivial_certificate,
        {"lr": 1e-3, **_OFFSET},
        "spectral normalisation (Miyato et al. 2018), ReLU",
        "offset CE (the loss shared with the other 1-Lipschitz baselines) instead of plain CE, "
        "so that it is trained for margins; ReLU activations; conv layers normalised by the "
        "norm of the reshaped c_out × (c_in k k) kernel as in the paper (not the operator "
        "norm); certified by the sound trivial bound, never by the power-iteration 1.",
    ),
)
METHODS.register(
    "orthogonal",
    _standard_method(
        "orthogonal",
        trivial_certificate,
        {"lr": 1e-3, **_OFFSET},
        "orthogonal weights + MaxMin (Anil et al. 2019)",
        "torch's orthogonal parametrisation (Cayley map) instead of Björck "
        "orthonormalisation for dense layers; conv layers are orthogonium's "
        "AdaptiveOrthoConv2d (AOC, Boissin et al. 2025; BCOP x RKO when strided) with the "
        "arch's zero padding (orthogonal away from the border only); offset CE instead of the "
        "multi-class hinge loss; certified by the sound trivial bound of the actual weights.",
    ),
)
