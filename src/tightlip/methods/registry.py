"""``Method``: a training method as one object, and the registry of all of them.

A method answers everything the harness needs to train and certify it:

* ``build(spec, config, options) -> (model, description)``: an untrained model of the sizes
  in ``spec`` (seeded by ``config.seed``) and the model description that rebuilds it from a
  checkpoint (:mod:`tightlip.models`);
* ``objective(model, config, options) -> Objective``: what :func:`tightlip.train.loop.train`
  minimises;
* ``certified_bound(model, norm) -> Certificate``: the sound global Lipschitz upper bound used
  for certification (the trivial bound, γ by construction, the best cheap verifier, ...);
* ``certify_local`` (optional): per-input certification,
  ``(model, x, y, norm, radii) -> {"certified_accuracy": {radius: fraction},
  "certified_mask": {radius: BoolTensor}}``; every such mask is attacked like the global ones;
* ``read_out`` (optional): ``(model, norm) -> (W_last, L_backbone)`` or ``None``, the
  factorisation ``f = W_last ∘ g + b`` with a sound ``Lip(g) ≤ L_backbone`` that the
  last-layer certificate uses when the network knows a better one than its chain's trivial
  bound (a by-construction backbone, e.g. Sandwich's ≈ √γ);
* ``defaults``: the method's published settings, as overrides of the built-in defaults
  (:func:`tightlip.config.merge_settings`); keys that are not configuration fields (e.g.
  Sandwich's ``gamma``) are method options passed to ``build`` and ``objective``;
* ``input_normalization``: whether its model may sit behind a fixed per-channel input
  normalisation (:mod:`tightlip.models.normalized`): true when its objective and certified
  bound read the network only through its forward pass, its chain and its layers' Lipschitz
  constants, false when they need the model's own class (e.g. Sandwich's γ).

tightlip itself is one method among the others (:mod:`tightlip.methods.tightlip`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tightlip.certificate import Certificate
from tightlip.model import ModelSpec
from tightlip.norms import NormName
from tightlip.registry import Registry
from tightlip.train.config import TrainConfig
from tightlip.train.objectives import Objective

Options = Mapping[str, Any]
Build = Callable[[ModelSpec, TrainConfig, Options], tuple[nn.Module, dict[str, Any]]]
MakeObjective = Callable[[nn.Module, TrainConfig, Options], Objective]
CertifiedBound = Callable[[nn.Module, NormName], Certificate]
CertifyLocal = Callable[..., dict[str, Any]]
#: ``(W_last, L_backbone)`` for the last-layer certificate, or ``None`` to read both from the chain
ReadOut = Callable[[nn.Module, NormName], "tuple[torch.Tensor, float] | None"]


@dataclass(frozen=True)
class Method:
    """One training method (module docstring)."""

    name: str
    build: Build
    objective: MakeObjective
    certified_bound: CertifiedBound
    certify_local: CertifyLocal | None = None
    read_out: ReadOut | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: how this implementation departs from the published method, and why
    deviations: str = "none"
    #: whether the model may be wrapped in a fixed input normalisation (module docstring)
    input_normalization: bool = True


METHODS: Registry[Method] = Registry("training method")


def by_construction(value: float, name: str, norm: NormName) -> Certificate:
    """A sound upper bound that holds by construction (e.g. Sandwich's certified γ)."""
    return Certificate(
        value=value, method=f"{name}-bound", norm=norm, side="upper", sound=True
    )
