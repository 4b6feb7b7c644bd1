"""Classification losses shared by every baseline (any method may use any of them).

Notation: logits ``z = f(x) ∈ R^C``, label ``y``, one-hot ``e_y``, temperature ``T``, target
radius ``ε`` and ``c_p = ‖e_i − e_j‖_q`` (:func:`tightlip.norms.margin_constant`, √2 for ℓ2).

* ``ce``: cross-entropy ``CE(z, y)``.
* ``offset``: the offset cross-entropy of Lipschitz-by-construction networks (Prach & Lampert,
  ECCV 2022; used by SLL, Araujo et al. ICLR 2023, and by Sandwich/LBDN, Wang & Manchester ICML
  2023)::

      ℓ(z, y) = T · CE((z − o·e_y) / T, y),   o = c_p · L · ε.

  LBDN's published setting is ``o = √2 · 1.5`` and ``T = 0.25`` for a network with Lipschitz
  bound ``L = γ = 1``, i.e. ``ε = 1.5``; writing ``o = c_p L ε`` keeps the meaning "aim for a
  certified radius ε" for any ``γ`` (identical to the published offset when ``γ = 1``).
* ``gloro``: the GloRo loss (Leino, Wang & Fredrikson, ICML 2021) with the last layer handled
  exactly. Write ``f = W ∘ g`` with ``Lip(g) ≤ L_g`` (a global or a *per-input local* bound).
  Over the ε-ball the logit gap ``z_y − z_j`` can shrink by at most ``‖w_y − w_j‖_q · L_g · ε``,
  so the extra "⊥" logit

      z_⊥ = max_{j≠y} ( z_j + ‖w_y − w_j‖_q · L_g · ε )

  beats ``z_y`` exactly when the point is *not* certified by this test. The loss is
  ``CE([z, z_⊥], y)``: minimising it both classifies and certifies.
* ``margin`` / ``normalized_margin``: tightlip's own Lipschitz-margin losses
  (:func:`tightlip.losses.classification_loss`), so the lead's loss names work for baselines too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from tightlip.losses import classification_loss
from tightlip.norms import NormName, class_pair_distances, margin_constant
from tightlip.training import Objective, TrainConfig

BaselineLossKind = Literal["ce", "offset", "gloro", "margin", "normalized_margin"]
BASELINE_LOSSES: tuple[str, ...] = ("ce", "offset", "gloro", "margin", "normalized_margin")

#: LBDN / SLL published offset-CE settings: offset √2·1.5 at γ = 1, temperature 0.25.
OFFSET_EPSILON = 1.5
OFFSET_TEMPERATURE = 0.25


def offset_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    offset: torch.Tensor | float = 2**0.5 * OFFSET_EPSILON,
    temperature: float = OFFSET_TEMPERATURE,
) -> torch.Tensor:
    """``T · CE((z − o·e_y) / T, y)``: the true logit must win by the offset ``o``."""
    one_hot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    shifted = logits - offset * one_hot
    return temperature * F.cross_entropy(shifted / temperature, labels)


def gloro_bottom_logit(
    logits: torch.Tensor,
    labels: torch.Tensor,
    last_weight: torch.Tensor,
    backbone_lipschitz: torch.Tensor | float,
    epsilon: float,
    norm: NormName = "2",
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z_⊥ = max_{j≠y} z_j + ‖w_y − w_j‖_q · L_g · ε`` for every example, shape ``(B,)``.

    ``backbone_lipschitz`` is a scalar or a per-example ``(B,)`` tensor (local bounds).
    ``input_mask`` (``(B, h)``, 0/1) zeroes features of the backbone output that are provably
    constant over the ball (local bounds): only the varying features can move the logits.
    """
    spread = class_pair_distances(last_weight, labels, norm, input_mask)  # (B, C)
    lip = torch.as_tensor(backbone_lipschitz, dtype=logits.dtype, device=logits.device)
    lip = lip.reshape(-1, 1) if lip.ndim else lip
    raised = logits + spread * lip * epsilon
    own = F.one_hot(labels, logits.shape[-1]).bool()
    return raised.masked_fill(own, float("-inf")).max(dim=1).values


def gloro_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    last_weight: torch.Tensor,
    backbone_lipschitz: torch.Tensor | float,
    epsilon: float,
    norm: NormName = "2",
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``CE([z, z_⊥], y)`` with the ⊥ logit of :func:`gloro_bottom_logit` appended."""
    bottom = gloro_bottom_logit(
        logits, labels, last_weight, backbone_lipschitz, epsilon, norm, input_mask
    )
    return F.cross_entropy(torch.cat([logits, bottom[:, None]], dim=1), labels)


def baseline_loss(
    kind: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    lipschitz: torch.Tensor | float = 1.0,
    epsilon: float = OFFSET_EPSILON,
    temperature: float = OFFSET_TEMPERATURE,
    norm: NormName = "2",
    last_weight: torch.Tensor | None = None,
    backbone_lipschitz: torch.Tensor | float | None = None,
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dispatch on the loss name (see the module docstring for each formula).

    ``lipschitz`` is the (estimated or by-construction) bound ``L`` of the whole network, used
    by ``offset`` and the margin losses; ``gloro`` needs the last weight matrix and a bound on
    the backbone; without them it uses the global form (identity last layer, backbone bound
    ``L``), where every gap may shrink by ``‖e_y − e_j‖_q · L · ε = c_p · L · ε``.
    """
    if kind == "ce":
        return F.cross_entropy(logits, labels)
    if kind == "offset":
        offset = margin_constant(norm) * lipschitz * epsilon
        return offset_cross_entropy(logits, labels, offset=offset, temperature=temperature)
    if kind == "gloro":
        if last_weight is None or backbone_lipschitz is None:
            eye = torch.eye(logits.shape[-1], dtype=logits.dtype, device=logits.device)
            return gloro_loss(logits, labels, eye, lipschitz, epsilon, norm)
        return gloro_loss(
            logits, labels, last_weight, backbone_lipschitz, epsilon, norm, input_mask
        )
    if kind in ("margin", "normalized_margin"):
        return classification_loss(
            logits,
            labels,
            kind,  # type: ignore[arg-type]
            lipschitz=lipschitz,
            epsilon=epsilon,
            norm=norm,
            temperature=temperature,
        )
    raise ValueError(f"unknown loss {kind!r}: choose one of {', '.join(BASELINE_LOSSES)}")


LipschitzFn = Callable[[nn.Module], "torch.Tensor | float"]
LastLayerFn = Callable[[nn.Module], "tuple[torch.Tensor, torch.Tensor | float]"]


class BaselineObjective(Objective):
    """``loss(model, x, y)`` for a baseline: one of the losses above, chosen by ``config.loss``.

    ``lipschitz(model)`` gives the bound ``L`` the loss uses (γ for Sandwich, 1 for the
    norm-constrained nets, a power-iteration estimate of the trivial bound for the plain MLP);
    if it is an ``nn.Module`` its buffers are checkpointed with the objective. ``last_layer``
    returns ``(W_last, L_backbone)`` for the last-layer-exact GloRo loss. ``config.margin_epsilon``
    is the ε of the offset / GloRo / margin losses and ``config.temperature`` their T.
    """

    def __init__(
        self,
        config: TrainConfig,
        lipschitz: LipschitzFn | None = None,
        last_layer: LastLayerFn | None = None,
    ) -> None:
        super().__init__()
        if str(config.loss) not in BASELINE_LOSSES:
            raise ValueError(
                f"unknown loss {config.loss!r}: choose one of {', '.join(BASELINE_LOSSES)}"
            )
        self.config = config
        self.lipschitz = lipschitz
        self.last_layer = last_layer

    def forward(  # type: ignore[override]
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        logits = model(x)
        bound: torch.Tensor | float = 1.0 if self.lipschitz is None else self.lipschitz(model)
        last_weight, backbone = None, None
        if c.loss == "gloro" and self.last_layer is not None:
            last_weight, backbone = self.last_layer(model)
        loss = baseline_loss(
            str(c.loss),
            logits,
            y,
            lipschitz=bound,
            epsilon=c.margin_epsilon,
            temperature=c.temperature,
            norm=c.norm,
            last_weight=last_weight,
            backbone_lipschitz=backbone,
        )
        accuracy = (logits.argmax(dim=-1) == y).float().mean()
        shown = float(bound.detach()) if isinstance(bound, torch.Tensor) else float(bound)
        return loss, {"acc": float(accuracy), "bound": shown}
