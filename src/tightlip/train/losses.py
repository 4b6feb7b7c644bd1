"""Classification losses, one registry for every training method.

Notation: logits ``z = f(x) ∈ R^C``, label ``y``, one-hot ``e_y``, temperature ``T``, target
radius ``ε``, ``c_p = ‖e_i − e_j‖_q`` (:func:`tightlip.norms.margin_constant`, √2 for ℓ2) and
``L`` the (estimated or by-construction) Lipschitz bound of the network.

* ``ce``: cross-entropy ``CE(z, y)``.
* ``margin``: Lipschitz-margin cross-entropy (Tsuzuku, Sato & Sugiyama, NeurIPS 2018). Every
  wrong logit is raised by ``c_p · L · ε``: a point that wins under the raised logits is
  certified at radius ε by the global bound. ``T · CE((z + c_p L ε (1 − e_y)) / T)``.
* ``normalized-margin``: the same on the normalised logits ``z / L`` (a network that is
  1-Lipschitz by its bound), ``T · CE((z / L + c_p ε (1 − e_y)) / T)``, invariant to the logit
  scale, as in the offset cross-entropy of Prach & Lampert (ECCV 2022).
* ``offset``: the offset cross-entropy of Lipschitz-by-construction networks (Prach & Lampert
  2022; SLL, Araujo et al. ICLR 2023; Sandwich/LBDN, Wang & Manchester ICML 2023),
  ``T · CE((z − o e_y) / T)`` with ``o = c_p · L · ε``. LBDN's published setting ``o = √2·1.5``,
  ``T = 0.25`` at ``L = γ = 1`` is ``ε = 1.5``.
* ``gloro``: the GloRo loss (Leino, Wang & Fredrikson, ICML 2021) with the last layer exact.
  With ``f = W ∘ g`` and ``Lip(g) ≤ L_g`` (global, or per-input local), the gap ``z_y − z_j``
  shrinks over the ε-ball by at most ``‖w_y − w_j‖_q · L_g · ε``; the extra logit
  ``z_⊥ = max_{j≠y} z_j + ‖w_y − w_j‖_q L_g ε`` beats ``z_y`` exactly when the point is not
  certified by this test, and the loss is ``CE([z, z_⊥], y)``. Without the last layer the
  global form applies (identity read-out, ``L_g = L``, every gap shrinks by ``c_p L ε``).
* ``last-layer``: trains for the last-layer-exact certificate of
  :mod:`tightlip.eval.certify`: the same raised logits as ``gloro``, normalised by ``L`` as in
  ``normalized-margin``: ``T · CE((z + ε L_g ‖w_y − w_j‖_q (1 − e_y)) / (L T))``.

``gloro`` and ``last-layer`` share :func:`last_layer_raised_logits`, the one implementation
of ``z_j + ε L_g ‖w_y − w_j‖_q``.

Every loss has the signature ``loss(logits, labels, context) -> scalar`` and is looked up by
name in :data:`LOSSES` (``normalized_margin`` and ``last_layer_margin`` are accepted spellings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from tightlip.norms import NormName, class_pair_distances, margin_constant
from tightlip.registry import Registry


@dataclass(frozen=True)
class LossContext:
    """What a loss may use besides logits and labels.

    ``lipschitz`` is the bound ``L`` of the whole network; ``last_weight`` and
    ``backbone_lipschitz`` (scalar or per-example ``(B,)``) describe ``f = W ∘ g`` for the
    last-layer losses; ``input_mask`` (``(B, h)``, 0/1) marks backbone features that can vary
    over the ball (local bounds).
    """

    norm: NormName = "2"
    epsilon: float = 0.0
    temperature: float = 1.0
    lipschitz: torch.Tensor | float = 1.0
    last_weight: torch.Tensor | None = None
    backbone_lipschitz: torch.Tensor | float | None = None
    input_mask: torch.Tensor | None = None


Loss = Callable[[torch.Tensor, torch.Tensor, LossContext], torch.Tensor]

LOSSES: Registry[Loss] = Registry("loss")


def _wrong(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.one_hot(labels, logits.shape[-1]).to(logits.dtype)


def _tempered_ce(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    return temperature * F.cross_entropy(logits / temperature, labels)


@LOSSES.register("ce")
def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


@LOSSES.register("margin")
def margin_loss(logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext) -> torch.Tensor:
    raised = logits + margin_constant(ctx.norm) * ctx.lipschitz * ctx.epsilon * _wrong(logits, labels)
    return _tempered_ce(raised, labels, ctx.temperature)


@LOSSES.register("normalized-margin")
def normalized_margin_loss(
    logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext
) -> torch.Tensor:
    raised = logits / ctx.lipschitz + margin_constant(ctx.norm) * ctx.epsilon * _wrong(
        logits, labels
    )
    return _tempered_ce(raised, labels, ctx.temperature)


@LOSSES.register("offset")
def offset_loss(logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext) -> torch.Tensor:
    offset = margin_constant(ctx.norm) * ctx.lipschitz * ctx.epsilon
    return offset_cross_entropy(logits, labels, offset=offset, temperature=ctx.temperature)


def offset_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    offset: torch.Tensor | float,
    temperature: float,
) -> torch.Tensor:
    """``T · CE((z − o·e_y) / T, y)``: the true logit must win by the offset ``o``."""
    shifted = logits - offset * F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return _tempered_ce(shifted, labels, temperature)


def last_layer_raised_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    last_weight: torch.Tensor,
    backbone_lipschitz: torch.Tensor | float,
    epsilon: float,
    norm: NormName,
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z_j + ε · L_g · ‖w_y − w_j‖_q`` for every class (``z_y`` itself is unchanged).

    ``backbone_lipschitz`` is a scalar or a per-example ``(B,)`` tensor (local bounds);
    ``input_mask`` zeroes backbone features that are provably constant over the ball.
    """
    spread = class_pair_distances(last_weight, labels, norm, input_mask)  # (B, C), 0 at y
    lip = torch.as_tensor(backbone_lipschitz, dtype=logits.dtype, device=logits.device)
    lip = lip.reshape(-1, 1) if lip.ndim else lip
    return logits + spread * lip * epsilon


def gloro_bottom_logit(
    logits: torch.Tensor,
    labels: torch.Tensor,
    last_weight: torch.Tensor,
    backbone_lipschitz: torch.Tensor | float,
    epsilon: float,
    norm: NormName = "2",
    input_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``z_⊥ = max_{j≠y} z_j + ‖w_y − w_j‖_q · L_g · ε`` for every example, shape ``(B,)``."""
    raised = last_layer_raised_logits(
        logits, labels, last_weight, backbone_lipschitz, epsilon, norm, input_mask
    )
    own = F.one_hot(labels, logits.shape[-1]).bool()
    return raised.masked_fill(own, float("-inf")).max(dim=1).values


def _read_out(logits: torch.Tensor, ctx: LossContext) -> tuple[torch.Tensor, torch.Tensor | float]:
    """``(W, L_g)``, or the global form (identity read-out, ``L_g = L``) without them."""
    if ctx.last_weight is None or ctx.backbone_lipschitz is None:
        eye = torch.eye(logits.shape[-1], dtype=logits.dtype, device=logits.device)
        return eye, ctx.lipschitz
    return ctx.last_weight, ctx.backbone_lipschitz


@LOSSES.register("gloro")
def gloro_loss(logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext) -> torch.Tensor:
    """``CE([z, z_⊥], y)`` with the ⊥ logit of :func:`gloro_bottom_logit` appended."""
    weight, backbone = _read_out(logits, ctx)
    mask = ctx.input_mask if ctx.last_weight is not None else None
    bottom = gloro_bottom_logit(logits, labels, weight, backbone, ctx.epsilon, ctx.norm, mask)
    return F.cross_entropy(torch.cat([logits, bottom[:, None]], dim=1), labels)


@LOSSES.register("last-layer", aliases=("last-layer-margin",))
def last_layer_loss(logits: torch.Tensor, labels: torch.Tensor, ctx: LossContext) -> torch.Tensor:
    """``T · CE((z + ε L_g ‖w_y − w_j‖_q (1 − e_y)) / (L T))``: the certificate of certify.py."""
    weight, backbone = _read_out(logits, ctx)
    raised = last_layer_raised_logits(logits, labels, weight, backbone, ctx.epsilon, ctx.norm)
    return _tempered_ce(raised / ctx.lipschitz, labels, ctx.temperature)


def classification_loss(
    name: str, logits: torch.Tensor, labels: torch.Tensor, context: LossContext
) -> torch.Tensor:
    """The one dispatcher: the registered loss ``name`` on ``(logits, labels, context)``."""
    return LOSSES.get(name)(logits, labels, context)
