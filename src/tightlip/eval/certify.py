"""Certified robustness from Lipschitz bounds, checked against attacks.

Two certificates at radius ε, for an input with label y that the network classifies correctly
(logits z = f(x), computed in float64):

* **global** (Tsuzuku et al. 2018): with ``L ≥ Lip_p(f)``, every logit difference moves by at
  most ``c_p · L · ε`` where ``c_p = ‖e_i − e_j‖_q`` (q dual to p; √2 for ℓ2, 2 for ℓ∞,
  1 for ℓ1, see :func:`tightlip.norms.margin_constant`). Certified if
  ``z_y − max_{j≠y} z_j > c_p · L · ε``.
* **last layer exact** (as in GloRo, Leino et al. 2021): write ``f = W_L ∘ g`` with ``g`` the
  backbone and ``L_g ≥ Lip_p(g)``. Then ``(z_y − z_j)(x') − (z_y − z_j)(x) =
  (w_y − w_j)ᵀ (g(x') − g(x))``, which Hölder bounds by ``‖w_y − w_j‖_q · L_g · ε``.
  Certified if ``z_y − z_j > ‖w_y − w_j‖_q · L_g · ε`` for every ``j ≠ y``. Because
  ``‖w_y − w_j‖_q ≤ c_p ‖W_L‖_{p→p}`` this is never worse than the global test with the
  trivial bound.

Soundness margin: logits are evaluated in float64; a test passes only if it holds with a
relative slack of 1e-9 plus an absolute 1e-9·max|z|, far above float64 evaluation error.

**float32 inference** (:mod:`tightlip.eval.float32`): the same two tests with every gap
``z_y − z_j`` first lowered by a sound bound on the float32 rounding error of that gap over the
whole ball (and on the float64 error at x), so that the float32 model's decision is ``y`` at
every point of the ball. Reported beside the others as ``float32_certified_accuracy``.

Every certified point, under these and any other certificate a run reports (e.g. local
Lipschitz bounds), is then attacked with PGD; a certified point that the attack breaks raises
:class:`~tightlip.errors.SoundnessError`: the run stops loudly instead of reporting a wrong
certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from tightlip.bounds.trivial import trivial_bound
from tightlip.errors import MethodNotApplicableError, ModelShapeError, SoundnessError
from tightlip.eval.attacks import margin_loss, pgd_attack
from tightlip.eval.float32 import RoundingErrorBound, float32_logits
from tightlip.model import LayerChain
from tightlip.norms import NormName, class_pair_distances, margin_constant

DEFAULT_RADII: dict[NormName, tuple[float, ...]] = {
    "2": (0.3, 1.0, 1.58),
    "inf": (0.1, 0.3),
    "1": (1.0, 3.0, 5.0),
}

RELATIVE_SLACK = 1e-9


@dataclass
class Margins:
    """Per-example quantities from which certificates at any radius follow."""

    correct: torch.Tensor  # (N,) bool
    global_radius: torch.Tensor  # (N,) largest ε certified by the global bound (0 if wrong)
    last_layer_radius: torch.Tensor  # (N,) same for the last-layer-exact certificate
    safe_gaps: torch.Tensor | None = None  # (N, C) z_y − z_j lowered by the slack
    others: torch.Tensor | None = None  # (N, C) bool: j ≠ y
    global_scale: float = 0.0  # c_p · L: how far a gap moves per unit radius (global)
    last_layer_scale: torch.Tensor | None = None  # (N, C) ‖w_y − w_j‖_q · L_g

    def certified(self, eps: float, method: str) -> torch.Tensor:
        radius = self.global_radius if method == "global" else self.last_layer_radius
        return self.correct & (radius > eps)

    def reduced(self, gap_reduction: torch.Tensor) -> Margins:
        """The radii certified when every gap ``z_y − z_j`` is first lowered by
        ``gap_reduction`` ``(N, C)`` (e.g. a rounding-error bound); same rule otherwise."""
        if self.safe_gaps is None or self.others is None or self.last_layer_scale is None:
            raise ValueError("these margins were built without their gaps")
        return _margins_from_gaps(
            self.correct,
            self.safe_gaps - gap_reduction,
            self.others,
            self.global_scale,
            self.last_layer_scale,
        )


def _margins_from_gaps(
    correct: torch.Tensor,
    safe_gaps: torch.Tensor,
    others: torch.Tensor,
    global_scale: float,
    last_layer_scale: torch.Tensor,
) -> Margins:
    """Both certified radii: the smallest gap over ``c_p L``, and over the classes the gap over
    ``‖w_y − w_j‖_q L_g`` (module docstring); 0 for misclassified examples."""
    min_gap = torch.where(others, safe_gaps, torch.inf).min(dim=1).values
    global_radius = (min_gap / global_scale).clamp_min(0)
    per_class = torch.where(others, safe_gaps / last_layer_scale, torch.inf)
    last_layer_radius = per_class.min(dim=1).values.clamp_min(0)
    zero = torch.zeros_like(global_radius)
    return Margins(
        correct=correct,
        global_radius=torch.where(correct, global_radius, zero),
        last_layer_radius=torch.where(correct, last_layer_radius, zero),
        safe_gaps=safe_gaps,
        others=others,
        global_scale=global_scale,
        last_layer_scale=last_layer_scale,
    )


@dataclass
class CertificationResult:
    norm: NormName
    clean_accuracy: float
    certified_accuracy: dict[str, dict[str, float]]  # method -> radius string -> fraction
    pgd_accuracy: dict[str, float] = field(default_factory=dict)
    n_examples: int = 0
    margins: Margins | None = None
    #: method -> radius string -> fraction certified for float32 inference (empty if no
    #: rounding model applies to the network)
    float32_certified_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    #: radius string -> fraction of the *attacked* examples that some certificate certifies:
    #: comparable with ``pgd_accuracy``, which is measured on the same examples (≤ it always)
    certified_on_attacked: dict[str, float] = field(default_factory=dict)


def radius_key(eps: float) -> str:
    return f"{eps:g}"


def logits_float64(chain: LayerChain, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    x = chain.check_input(x.reshape(x.shape[0], -1) if x.ndim > 2 else x)
    with torch.no_grad():
        return torch.cat(
            [
                chain.forward(x[i : i + batch_size].double())
                for i in range(0, x.shape[0], batch_size)
            ]
        )


def certified_radii(
    chain: LayerChain,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName,
    lipschitz_upper: float,
    backbone_upper: float | None = None,
    read_out: tuple[torch.Tensor, float] | None = None,
) -> Margins:
    """Largest certified radius of every example under both certificates.

    ``lipschitz_upper`` must be a sound upper bound on Lip_p(f); ``backbone_upper`` one on the
    backbone (all but the last affine layer). The latter defaults to its trivial bound.
    ``read_out = (W, L_g)`` replaces both for the last-layer certificate by another
    factorisation ``f = W ∘ g + b`` with ``Lip(g) ≤ L_g`` (exact float64 ``W``), one the model
    knows by construction (:attr:`tightlip.methods.Method.read_out`).
    """
    if x.shape[0] != y.shape[0]:
        raise ModelShapeError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
    logits = logits_float64(chain, x)
    correct = logits.argmax(dim=1) == y
    true = logits.gather(1, y[:, None])
    gaps = true - logits  # (N, C): z_y − z_j, zero at j = y
    scale = logits.abs().max(dim=1, keepdim=True).values
    safe_gaps = gaps * (1 - RELATIVE_SLACK) - RELATIVE_SLACK * scale
    others = torch.ones_like(gaps, dtype=torch.bool).scatter(1, y[:, None], False)

    if read_out is not None:
        last, backbone_upper = read_out[0].detach().to(torch.float64), read_out[1]
        error = None
    else:
        if backbone_upper is None:
            backbone = chain.backbone()
            backbone_upper = trivial_bound(backbone, norm).value if backbone is not None else 1.0
        last = chain.affine_steps[-1].weight  # (C, h)
        error = chain.affine_steps[-1].weight_error()  # |last − W| ≤ E (non-zero if merged)
    q_norms = class_pair_distances(last, y, norm, weight_error=error) * (1 + RELATIVE_SLACK)
    global_scale = margin_constant(norm) * lipschitz_upper
    return _margins_from_gaps(correct, safe_gaps, others, global_scale, q_norms * backbone_upper)


def float32_certificates(
    chain: LayerChain,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName,
    margins: Margins,
    radii: Sequence[float],
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-radius masks of the examples certified for float32 inference, by both certificates.

    The margins of :func:`certified_radii` with every gap lowered by
    :meth:`~tightlip.eval.float32.RoundingErrorBound.gap_reduction` at that radius. Empty if
    the network has a layer without a rounding model.
    """
    try:
        bound = RoundingErrorBound(chain, x, norm)
    except MethodNotApplicableError:
        return {}
    masks: dict[str, dict[str, torch.Tensor]] = {"global": {}, "last_layer": {}}
    for eps in radii:
        reduced = margins.reduced(bound.gap_reduction(y, eps))
        for method, by_radius in masks.items():
            by_radius[radius_key(eps)] = reduced.certified(eps, method)
    return masks


def certify(
    chain: LayerChain,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName,
    lipschitz_upper: float,
    radii: Sequence[float] | None = None,
    *,
    backbone_upper: float | None = None,
    read_out: tuple[torch.Tensor, float] | None = None,
    other_certificates: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    attack_model=None,
    pgd_steps: int = 50,
    pgd_restarts: int = 3,
    attack_limit: int | None = None,
    seed: int = 0,
) -> CertificationResult:
    """Clean, certified and PGD accuracy, with the soundness cross-check of every certificate.

    The global and last-layer certificates are computed here; ``other_certificates`` maps the
    name of any further certificate (e.g. ``"local"``) to its per-radius masks of certified
    examples (radius keys as :func:`radius_key`), and those are reported and attacked exactly
    like the built-in ones. ``attack_model`` is the float32 ``nn.Module`` to attack (defaults
    to the float64 chain); ``attack_limit`` attacks only the first examples (PGD dominates the
    cost).
    """
    radii = tuple(radii if radii is not None else DEFAULT_RADII[norm])
    margins = certified_radii(chain, x, y, norm, lipschitz_upper, backbone_upper, read_out)
    n = x.shape[0]
    masks: dict[str, dict[str, torch.Tensor]] = {
        method: {radius_key(e): margins.certified(e, method) for e in radii}
        for method in ("global", "last_layer")
    }
    for name, by_radius in (other_certificates or {}).items():
        masks[name] = {radius_key(e): _checked_mask(by_radius, e, n, name) for e in radii}
    float32_masks = float32_certificates(chain, x, y, norm, margins, radii)
    result = CertificationResult(
        norm=norm,
        clean_accuracy=float(margins.correct.float().mean()),
        certified_accuracy={
            name: {key: float(mask.float().mean()) for key, mask in by_radius.items()}
            for name, by_radius in masks.items()
        },
        n_examples=n,
        margins=margins,
        float32_certified_accuracy={
            name: {key: float(mask.float().mean()) for key, mask in by_radius.items()}
            for name, by_radius in float32_masks.items()
        },
    )
    if pgd_steps <= 0:
        return result
    m = n if attack_limit is None else min(n, attack_limit)
    xa, ya = x[:m].reshape(m, -1), y[:m]
    model = attack_model if attack_model is not None else (lambda t: chain.forward(t.double()))
    for eps in radii:
        _, adversarial = pgd_attack(
            model,
            xa.to(torch.float32 if attack_model is not None else torch.float64),
            ya,
            norm,
            eps,
            steps=pgd_steps,
            restarts=pgd_restarts,
            seed=seed,
        )
        # Judge every adversarial example on the float64 network, the one that was certified.
        broken = margin_loss(logits_float64(chain, adversarial), ya) > 0
        robust = margins.correct[:m] & ~broken
        result.pgd_accuracy[radius_key(eps)] = float(robust.float().mean())
        any_certified = torch.zeros(m, dtype=torch.bool)
        for by_radius in masks.values():
            any_certified |= by_radius[radius_key(eps)][:m]
        result.certified_on_attacked[radius_key(eps)] = float(any_certified.float().mean())
        for name, by_radius in masks.items():
            bad = by_radius[radius_key(eps)][:m] & broken
            if bad.any():
                index = int(bad.nonzero()[0])
                raise SoundnessError(
                    f"example {index} is certified at ε={eps:g} ({name}, norm {norm}) but PGD "
                    "found an adversarial example: the certificate is wrong"
                )
        # float32 certificates are about the chain evaluated in float32: judge them there.
        broken32 = margin_loss(float32_logits(chain, adversarial), ya) > 0
        for name, by_radius in float32_masks.items():
            bad = by_radius[radius_key(eps)][:m] & broken32
            if bad.any():
                index = int(bad.nonzero()[0])
                raise SoundnessError(
                    f"example {index} is certified for float32 inference at ε={eps:g} ({name}, "
                    f"norm {norm}) but PGD found an adversarial example: the certificate is wrong"
                )
    return result


def _checked_mask(
    by_radius: Mapping[str, torch.Tensor], eps: float, n: int, name: str
) -> torch.Tensor:
    key = radius_key(eps)
    if key not in by_radius:
        raise ValueError(f"certificate {name!r} has no mask for radius {key}")
    mask = by_radius[key].to(torch.bool).reshape(-1)
    if mask.shape[0] != n:
        raise ValueError(f"certificate {name!r} has {mask.shape[0]} entries for {n} examples")
    return mask
