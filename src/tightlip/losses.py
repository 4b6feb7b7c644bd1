"""Classification losses shared by every training method.

* ``ce``: plain cross-entropy.
* ``margin``: Lipschitz-margin cross-entropy (Tsuzuku, Sato & Sugiyama 2018). Every wrong
  logit is raised by ``c_p · L̂ · ε`` before the cross-entropy, where ``c_p`` is
  :func:`tightlip.norms.margin_constant` and ``L̂`` the current bound estimate: a point that
  wins under the raised logits is certified at radius ε by the global bound. The loss is
  ``T · CE((z + c_p L̂ ε (1 − e_y)) / T)`` with temperature ``T``.
* ``normalized_margin``: the same on the normalised logits ``z / L̂`` (a network that is
  1-Lipschitz by its bound), ``T · CE((z / L̂ + c_p ε (1 − e_y)) / T)``. It is invariant to the
  logit scale, so the temperature keeps its meaning however the weights grow or shrink, as in
  the offset cross-entropy of Lipschitz-by-construction networks (Prach & Lampert 2022).
* ``last_layer_margin``: trains for the last-layer-exact certificate (GloRo-style, Leino et al.
  2021). With ``f = W_L ∘ g`` and backbone bound ``L̂_g``, wrong logit j is raised by
  ``ε · L̂_g · ‖w_y − w_j‖_q``, never more than the global ``c_p · L̂ · ε``; logits are then
  normalised by ``L̂ = L̂_g · ‖W_L‖`` as in ``normalized_margin``
  (see :func:`last_layer_margin_loss`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from tightlip.norms import NormName, class_pair_distances, margin_constant

LossKind = Literal["ce", "margin", "normalized_margin", "last_layer_margin"]


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    kind: LossKind = "ce",
    *,
    lipschitz: torch.Tensor | float = 1.0,
    epsilon: float = 0.0,
    norm: NormName = "2",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean classification loss of ``logits (B, C)`` against integer ``labels (B,)``."""
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    if kind == "margin":
        wrong = 1.0 - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        raised = logits + margin_constant(norm) * lipschitz * epsilon * wrong
        return temperature * F.cross_entropy(raised / temperature, labels)
    if kind == "normalized_margin":
        wrong = 1.0 - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        raised = logits / lipschitz + margin_constant(norm) * epsilon * wrong
        return temperature * F.cross_entropy(raised / temperature, labels)
    raise ValueError(f"unknown loss {kind!r}: choose ce, margin or normalized_margin")


def last_layer_margin_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    last_weight: torch.Tensor,
    backbone_lipschitz: torch.Tensor,
    lipschitz: torch.Tensor,
    *,
    epsilon: float,
    norm: NormName = "2",
    temperature: float = 0.25,
) -> torch.Tensor:
    """``T · CE((z + ε L̂_g ‖w_y − w_j‖_q (1 − e_y)) / (L̂ T))``: the certificate of certify.py.

    A point whose raised, normalised logits still rank ``y`` first is certified at radius ε by
    the last-layer-exact test ``z_y − z_j > ‖w_y − w_j‖_q · L_g · ε``.
    """
    offsets = epsilon * backbone_lipschitz * class_pair_distances(last_weight, labels, norm)
    raised = (logits + offsets) / lipschitz
    return temperature * F.cross_entropy(raised / temperature, labels)
