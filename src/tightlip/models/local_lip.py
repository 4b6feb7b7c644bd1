"""Local Lipschitz bounds with clipped activations (Huang, Zhang, Shi, Kolter & Anandkumar,
"Training certifiably robust neural networks with efficient local Lipschitz bounds",
NeurIPS 2021; reference code github yjhuangcd/local-lipschitz). Written from the paper's maths.

**Network.** ``f = W_L ∘ σ_θ ∘ W_{L−1} ∘ … ∘ σ_θ ∘ W_1`` (affine layers with biases) and the
clipped ReLU with a learnable per-unit threshold, ``σ_θ(z) = min(max(z, 0), θ)`` (θ is used as
``max(θ, 0)``; the reference code projects θ onto θ ≥ 0 after each step).

**Fixed units.** For an input x and radius ε, bound every pre-activation over the ball
``B_p(x, ε)``:

* first layer: ``z_1(x') ∈ z_1(x) ± ε ‖w_i‖_q`` (Hölder, q dual to p);
* later layers: interval arithmetic ``W c + b ± |W| r`` on the post-activation box
  ``[σ(lo), σ(hi)]``, intersected with the ball bound ``z_k(x) ± ‖w_i ⊙ m_{k−1}‖_q · L_{k−1} ε``
  (below). Both hold for every x' in the ball, so their intersection does too.

A unit is *fixed* when it cannot change over the ball: off (``hi ≤ 0``) or clipped
(``lo > θ``). Let ``m_k`` be the 0/1 mask of the *varying* units and ``M_k = diag(m_k)``.

**Local bound.** Fixed units have ``Δh = 0`` and ``σ_θ`` is 1-Lipschitz, so for x' in the ball
``‖Δh_k‖ ≤ ‖M_k Δz_k‖ = ‖M_k W_k M_{k−1} Δh_{k−1}‖ ≤ ‖M_k W_k M_{k−1}‖ ‖Δh_{k−1}‖`` and

    L_{k}(x, ε) = ∏_{i ≤ k} ‖M_i W_i M_{i−1}‖_{p→p},   M_0 = I,

bounds ``‖h_k(x') − h_k(x)‖ ≤ L_k ε``: dropping rows and columns of fixed units never increases
a norm, so it is never worse than the trivial bound ``∏ ‖W_i‖``.

**Certificate** (GloRo form, last layer exact): x is certified at ε if it is classified
correctly and, for every j ≠ y,

    z_y − z_j > ‖(w_y − w_j) ⊙ m_{L−1}‖_q · L_{L−1}(x, ε) · ε,

or if the interval of the last hidden layer already proves ``z_y − z_j > 0`` (both sound; we
certify when either holds). **Soundness in floating point:** for certification everything is
in float64; interval radii get a relative slack of 1e-9 (so a unit is declared fixed only with
room to spare), and every masked norm is a *certified upper bound*: exact ℓ1 / ℓ∞ sums, and for
ℓ2 the largest eigenvalue of the masked Gram matrix plus explicit rounding terms (never power
iteration, which under-estimates). Training uses a cheap masked power iteration instead.

**Convolutions** (:mod:`tightlip.models.local_lip_conv`): every layer is read through an
:class:`AffineLayer` view that computes its own images of points, boxes and masks, so the same
propagation runs on conv nets (intervals through the convolution and its ``|K|``).

**Training** (paper; the objective is in :mod:`tightlip.methods.local_lip`): GloRo loss with the per-input local bound for the ⊥ logit, ε ramped up
linearly over the first half of training (published MNIST: 300 epochs, ramp 150, Adam lr 1e-3,
``ε_train = 1.75`` for evaluation at 1.58, θ initialised to 1), plus a *sparsity loss* that
pushes varying units towards the fixed regions: for each varying unit the distance to the nearest
fixed region, ``min(hi, θ − lo)⁺``, averaged (our differentiable form; weight 0.01 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tightlip.errors import ModelShapeError
from tightlip.layers import ClippedReLU
from tightlip.models.registry import MODEL_KINDS
from tightlip.norms import (
    SVD_MARGIN,
    UNIT_ROUNDOFF_F64,
    NormName,
    certified_operator_norm,
    dual_norm,
    parse_norm,
    vector_norm,
)

INTERVAL_SLACK = 1e-9
LOCAL_LIP_THRESHOLD_INIT = 1.0


class LocalLipNetwork(nn.Sequential):
    """A network for local bounds: affine layers, each but the last followed by a clipped ReLU.

    Subclasses answer :meth:`affine_layers`, one :class:`AffineLayer` view per affine layer in
    order (:class:`DenseAffine` here, the convolution's in :mod:`tightlip.models.local_lip_conv`),
    each of which computes its own images of points, boxes and masks, so :func:`local_bounds`
    never asks which kind of layer it holds.
    """

    arguments: dict[str, Any]
    kind = "local-lip"

    def affine_layers(self) -> list[AffineLayer]:
        raise NotImplementedError

    def clipped(self) -> list[ClippedReLU]:
        return [m for m in self.modules() if isinstance(m, ClippedReLU)]

    def description(self) -> dict[str, Any]:
        return {"kind": self.kind, "arguments": dict(self.arguments)}

    def full_norm(self, index: int, layer: AffineLayer, norm: NormName) -> float:
        """The certified norm of the unmasked layer ``index``, cached while its weight is
        unchanged (the cache key is the weight's storage and in-place version)."""
        cache: dict[tuple[int, str], tuple[tuple[int, int], float]] = self.__dict__.setdefault(
            "_full_norms", {}
        )
        key = (layer.weight.data_ptr(), layer.weight._version)
        hit = cache.get((index, norm))
        if hit is None or hit[0] != key:
            hit = (key, layer.certified_full_norm(norm))
            cache[(index, norm)] = hit
        return hit[1]


class LocalLipMLP(LocalLipNetwork):
    """``Flatten → Linear → ClippedReLU → … → Linear`` (biases on, θ initialised to ``init``)."""

    def __init__(
        self,
        input_dim: int = 784,
        widths: tuple[int, ...] | list[int] = (512, 512),
        num_classes: int = 10,
        init: float = 1.0,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_dim
        for width in widths:
            layers += [nn.Linear(fan_in, width), ClippedReLU(width, init)]
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        super().__init__(*layers)
        self.arguments = {
            "input_dim": input_dim,
            "widths": [int(w) for w in widths],
            "num_classes": num_classes,
            "init": init,
        }

    def linears(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    def affine_layers(self) -> list[AffineLayer]:
        return [DenseAffine(m) for m in self.linears()]


# --------------------------------------------------------------------------------------------
# masked operator norms
# --------------------------------------------------------------------------------------------


def masked_norms_certified(
    weight: torch.Tensor,
    row_mask: torch.Tensor,
    col_mask: torch.Tensor | None,
    norm: NormName,
    chunk: int = 128,
) -> torch.Tensor:
    """Certified upper bounds on ``‖diag(r_b) W diag(c_b)‖_{p→p}`` for every example b (float64).

    ℓ1 / ℓ∞: exact abs sums, inflated by the summation error bound. ℓ2: ``σ² = λ_max(A Aᵀ)``
    (or ``AᵀA``, the smaller side) of the masked Gram matrix ``Ĝ`` computed in float64, plus
    ``(γ_k + 64·n·u(1 + γ_k))·‖W‖_F²`` covering the Gram rounding (``|Ĝ − G| ≤ γ_k |W||W|ᵀ``,
    ``γ_k = k·u/(1 − k·u)``, Higham §3.5) and the eigen-solver's backward error. Each value is
    also capped by the certified norm of the unmasked W (masking never increases a norm).
    """
    w = weight.detach().to(torch.float64).cpu()
    rows, cols = w.shape
    batch = row_mask.shape[0]
    r = row_mask.to(torch.float64)
    c = torch.ones(batch, cols, dtype=torch.float64) if col_mask is None else col_mask.double()
    full = certified_operator_norm(w, norm)
    if norm in ("1", "inf"):
        a = w.abs()[None] * r[:, :, None] * c[:, None, :]
        sums = a.sum(dim=1) if norm == "1" else a.sum(dim=2)
        length = rows if norm == "1" else cols
        slack = length * UNIT_ROUNDOFF_F64
        values = sums.max(dim=1).values * (1 + slack / (1 - slack)) * (1 + 4 * UNIT_ROUNDOFF_F64)
        return values.clamp_max(full)
    transpose = rows > cols
    if transpose:  # work with AᵀA (cols × cols)
        w, r, c = w.T, c, r
        rows, cols = cols, rows
    inner = cols
    gamma = inner * UNIT_ROUNDOFF_F64 / (1 - inner * UNIT_ROUNDOFF_F64)
    frob2 = float((w * w).sum())
    slack = (gamma + SVD_MARGIN * rows * UNIT_ROUNDOFF_F64 * (1 + gamma)) * frob2 * 1.01
    shared = w @ w.T if col_mask is None and not transpose else None
    out = []
    for start in range(0, batch, chunk):
        rb, cb = r[start : start + chunk], c[start : start + chunk]
        if shared is not None:
            gram = shared[None].expand(rb.shape[0], -1, -1)
        else:
            gram = torch.einsum("oi,bi,pi->bop", w, cb, w)
        gram = gram * rb[:, :, None] * rb[:, None, :]
        top = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(0)
        out.append(torch.sqrt(top + slack) * (1 + 4 * UNIT_ROUNDOFF_F64))
    return torch.cat(out).clamp_max(full)


def masked_norms_power(
    weight: torch.Tensor,
    row_mask: torch.Tensor,
    col_mask: torch.Tensor | None,
    start: torch.Tensor,
    iterations: int,
    norm: NormName,
) -> torch.Tensor:
    """Differentiable estimates of the masked norms for training (power iteration for ℓ2).

    The iteration runs without gradient; the returned ``‖A û‖`` with the final unit vector û
    carries the gradient ``∂σ/∂W`` (an under-estimate, fine for training, never a certificate).
    """
    if norm in ("1", "inf"):
        a = weight.abs()[None] * row_mask[:, :, None]
        if col_mask is not None:
            a = a * col_mask[:, None, :]
        return (a.sum(dim=1) if norm == "1" else a.sum(dim=2)).max(dim=1).values
    c = torch.ones_like(start) if col_mask is None else col_mask
    with torch.no_grad():
        u = start.expand(row_mask.shape[0], -1) * c
        w = weight.detach()
        for _ in range(iterations):
            u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
            v = (u @ w.T) * row_mask
            u = (v @ w) * c
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return ((u @ weight.T) * row_mask).norm(dim=1)


def _masked_row_norms(w: torch.Tensor, mask: torch.Tensor | None, q: NormName) -> torch.Tensor:
    """``‖w_i ⊙ m_b‖_q`` for every example b and row i, shape ``(B, out)`` (or ``(1, out)``)."""
    if mask is None:
        return vector_norm(w, q)[None]
    if q == "2":
        return torch.sqrt((mask @ (w * w).T).clamp_min(0))
    if q == "1":
        return mask @ w.abs().T
    return (w.abs()[None] * mask[:, None, :]).amax(dim=-1)


# --------------------------------------------------------------------------------------------
# affine layers as the local bound reads them
# --------------------------------------------------------------------------------------------


class AffineLayer:
    """One affine layer ``z = A h + b`` on flat rows, as :func:`local_bounds` reads it.

    Every method works on batches of flat rows ``(B, n)`` in the dtype given (float64 for
    certification). Masks are 0/1 rows; ``None`` means all ones.
    """

    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight  # type: ignore[return-value]

    @property
    def bias(self) -> torch.Tensor:
        return self.module.bias  # type: ignore[return-value]

    @property
    def in_features(self) -> int:
        raise NotImplementedError

    def apply(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``A h + b``."""
        raise NotImplementedError

    def abs_apply(self, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``|A| r`` (entrywise absolute values of A, no bias)."""
        raise NotImplementedError

    def abs_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """``|b|``, one entry per output unit."""
        raise NotImplementedError

    def ball_radii(
        self, prev_mask: torch.Tensor | None, q: NormName, dtype: torch.dtype
    ) -> torch.Tensor:
        """Upper bounds on ``‖a_i ⊙ m‖_q`` for every output unit i, shape ``(B, out)`` or
        ``(1, out)`` (``a_i`` the i-th row of A)."""
        raise NotImplementedError

    def certified_norms(
        self, row_mask: torch.Tensor, col_mask: torch.Tensor | None, norm: NormName
    ) -> torch.Tensor:
        """Certified float64 upper bounds on ``‖diag(r_b) A diag(c_b)‖_{p→p}``, shape ``(B,)``."""
        raise NotImplementedError

    def power_norms(
        self,
        row_mask: torch.Tensor,
        col_mask: torch.Tensor | None,
        start: torch.Tensor,
        iterations: int,
        norm: NormName,
    ) -> torch.Tensor:
        """Differentiable training estimates of the same masked norms (power iteration)."""
        raise NotImplementedError

    def refresh(self, u: torch.Tensor) -> torch.Tensor:
        """One unmasked power step ``u ← AᵀA u / ‖AᵀA u‖`` (no gradient), for warm starts."""
        raise NotImplementedError

    def certified_full_norm(self, norm: NormName) -> float:
        """A certified upper bound on ``‖A‖_{p→p}`` (float64)."""
        raise NotImplementedError


class DenseAffine(AffineLayer):
    """An ``nn.Linear`` layer: the matrix formulas of the module docstring."""

    def __init__(self, module: nn.Linear) -> None:
        self.module = module

    @property
    def in_features(self) -> int:
        return int(self.module.weight.shape[1])

    def apply(self, h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return h @ self.weight.to(dtype).T + self.bias.to(dtype)

    def abs_apply(self, r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return r @ self.weight.to(dtype).abs().T

    def abs_bias(self, dtype: torch.dtype) -> torch.Tensor:
        return self.bias.to(dtype).abs()

    def ball_radii(
        self, prev_mask: torch.Tensor | None, q: NormName, dtype: torch.dtype
    ) -> torch.Tensor:
        return _masked_row_norms(self.weight.to(dtype), prev_mask, q)

    def certified_norms(
        self, row_mask: torch.Tensor, col_mask: torch.Tensor | None, norm: NormName
    ) -> torch.Tensor:
        return masked_norms_certified(self.weight, row_mask, col_mask, norm)

    def power_norms(
        self,
        row_mask: torch.Tensor,
        col_mask: torch.Tensor | None,
        start: torch.Tensor,
        iterations: int,
        norm: NormName,
    ) -> torch.Tensor:
        weight = self.weight.to(row_mask.dtype)
        return masked_norms_power(weight, row_mask, col_mask, start, iterations, norm)

    @torch.no_grad()
    def refresh(self, u: torch.Tensor) -> torch.Tensor:
        v = self.weight @ u
        u = self.weight.T @ (v / v.norm().clamp_min(1e-12))
        return u / u.norm().clamp_min(1e-12)

    def certified_full_norm(self, norm: NormName) -> float:
        return certified_operator_norm(self.weight.detach().to(torch.float64).cpu(), norm)


# --------------------------------------------------------------------------------------------
# interval propagation and the local bound
# --------------------------------------------------------------------------------------------


@dataclass
class LocalBounds:
    """Per-example quantities over the ball ``B_p(x, ε)``."""

    logits: torch.Tensor  # (B, C) at the centre
    backbone: torch.Tensor  # (B,) L_{L−1}: local bound of everything but the last layer
    last_mask: torch.Tensor  # (B, h) varying units of the last hidden layer
    hidden_box: tuple[torch.Tensor, torch.Tensor]  # (lo, hi) of the last hidden post-activations
    layer_norms: list[torch.Tensor] = field(default_factory=list)  # (B,) per hidden layer
    masks: list[torch.Tensor] = field(default_factory=list)
    sparsity: torch.Tensor | None = None


def local_bounds(
    model: LocalLipNetwork,
    x: torch.Tensor,
    epsilon: float,
    norm: NormName = "2",
    *,
    certified: bool = True,
    starts: list[torch.Tensor] | None = None,
    iterations: int = 5,
) -> LocalBounds:
    """Interval bounds, fixed-unit masks and the local Lipschitz bound of every hidden layer.

    ``certified=True``: float64, no gradient, sound slacks and certified masked norms (for
    certification). ``certified=False``: the model's dtype, differentiable, masked power
    iteration from ``starts`` (one start vector per affine layer) for training. Works for any
    :class:`LocalLipNetwork`: each affine layer computes its own images (:class:`AffineLayer`).
    """
    layers, acts = model.affine_layers(), model.clipped()
    if len(layers) != len(acts) + 1:
        raise ModelShapeError("a local-Lipschitz network alternates affine layers and ClippedReLU")
    dtype = torch.float64 if certified else x.dtype
    q = dual_norm(norm)
    context = torch.no_grad() if certified else torch.enable_grad()
    with context:
        h = x.reshape(x.shape[0], -1).to(dtype)
        lo_post = hi_post = None
        backbone = torch.ones(h.shape[0], dtype=dtype, device=h.device)
        prev_mask: torch.Tensor | None = None
        norms, masks, sparsity_terms = [], [], []
        for k, act in enumerate(acts):
            layer = layers[k]
            z = layer.apply(h, dtype)
            ball = layer.ball_radii(prev_mask, q, dtype) * (backbone * epsilon)[:, None]
            if lo_post is None or hi_post is None:
                radius, centre = ball, z
            else:
                centre_box = layer.apply((hi_post + lo_post) / 2, dtype)
                radius_box = layer.abs_apply((hi_post - lo_post) / 2, dtype)
                lo_i = torch.maximum(z - ball, centre_box - radius_box)
                hi_i = torch.minimum(z + ball, centre_box + radius_box)
                centre, radius = (hi_i + lo_i) / 2, (hi_i - lo_i) / 2
            if certified:
                scale = layer.abs_apply(h.abs(), dtype) + layer.abs_bias(dtype) + radius
                radius = radius * (1 + INTERVAL_SLACK) + INTERVAL_SLACK * scale + 1e-300
            lo, hi = centre - radius, centre + radius
            theta = act.positive_threshold(dtype)
            with torch.no_grad():
                mask = ~((hi <= 0) | (lo > theta))
                mask = mask.to(dtype)
            if not certified:
                distance = torch.minimum(hi, theta - lo).clamp_min(0)
                sparsity_terms.append((distance * mask).mean())
            if certified:
                layer_norm = layer.certified_norms(mask, prev_mask, norm)
                layer_norm = layer_norm.clamp_max(model.full_norm(k, layer, norm))
            else:
                if starts is not None:
                    start = starts[k]
                else:
                    start = torch.randn(layer.in_features, dtype=dtype, device=h.device)
                layer_norm = layer.power_norms(mask, prev_mask, start, iterations, norm)
            backbone = backbone * layer_norm
            if certified:
                backbone = backbone * (1 + 4 * UNIT_ROUNDOFF_F64)
            norms.append(layer_norm)
            masks.append(mask)
            h = act(z)
            lo_post, hi_post = act(lo), act(hi)
            prev_mask = mask
        logits = layers[-1].apply(h, dtype)
        if prev_mask is None:  # no hidden layer: the backbone is the identity
            prev_mask = torch.ones_like(h)
            lo_post = h - epsilon
            hi_post = h + epsilon
        sparsity = torch.stack(sparsity_terms).mean() if sparsity_terms else None
    assert lo_post is not None and hi_post is not None
    return LocalBounds(
        logits=logits,
        backbone=backbone,
        last_mask=prev_mask,
        hidden_box=(lo_post, hi_post),
        layer_norms=norms,
        masks=masks,
        sparsity=sparsity,
    )


def local_lipschitz(
    model: LocalLipNetwork, x: torch.Tensor, epsilon: float, norm: NormName = "2"
) -> torch.Tensor:
    """Certified local Lipschitz bound of the *whole* network on each ball, shape ``(B,)``.

    ``‖W_L M_{L−1}‖ · L_{L−1}(x, ε)``: never above the trivial bound ``∏ ‖W_i‖`` (each factor is
    capped by the certified norm of the unmasked matrix).
    """
    bounds = local_bounds(model, x, epsilon, norm, certified=True)
    last = model.affine_layers()[-1]
    ones = torch.ones(bounds.logits.shape[0], last.weight.shape[0], dtype=torch.float64)
    head = last.certified_norms(ones, bounds.last_mask, norm)
    return head * bounds.backbone * (1 + 4 * UNIT_ROUNDOFF_F64)


def local_certified_mask(
    model: LocalLipNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    norm: NormName = "2",
    bounds: LocalBounds | None = None,
) -> torch.Tensor:
    """Which examples are certified at radius ε (module docstring: GloRo test ∨ interval test).

    ``bounds``: the certified :func:`local_bounds` of ``x`` at ε, if already computed."""
    model.eval()
    if bounds is None:
        bounds = local_bounds(model, x, epsilon, norm, certified=True)
    logits = bounds.logits
    correct = logits.argmax(dim=1) == y
    if epsilon <= 0:
        return correct
    w = model.affine_layers()[-1].weight.detach().to(torch.float64)
    b = model.affine_layers()[-1].bias.detach().to(torch.float64)
    others = torch.ones_like(logits, dtype=torch.bool).scatter(1, y[:, None], False)
    gaps = logits.gather(1, y[:, None]) - logits  # (B, C): z_y − z_j
    scale = logits.abs().max(dim=1, keepdim=True).values
    safe_gaps = gaps * (1 - INTERVAL_SLACK) - INTERVAL_SLACK * scale
    rows = (w[y][:, None, :] - w[None]) * bounds.last_mask[:, None, :]  # (B, C, h)
    spread = vector_norm(rows, dual_norm(norm)) * (1 + INTERVAL_SLACK)
    needed = spread * (bounds.backbone * epsilon)[:, None]
    lipschitz_ok = torch.where(others, safe_gaps > needed, True).all(dim=1)
    lo, hi = bounds.hidden_box
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    diff = w[y][:, None, :] - w[None]  # (B, C, h)
    lower = (diff * centre[:, None, :]).sum(-1) - (diff.abs() * radius[:, None, :]).sum(-1)
    lower = lower + (b[y][:, None] - b[None])
    magnitude = (diff.abs() * (centre.abs() + radius)[:, None, :]).sum(-1) + b.abs().max()
    interval_ok = torch.where(others, lower > INTERVAL_SLACK * magnitude, True).all(dim=1)
    return correct & (lipschitz_ok | interval_ok)


def certify_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName | str = "2",
    radii: tuple[float, ...] | list[float] = (0.3, 1.0, 1.58),
    batch_size: int = 500,
) -> dict[str, Any]:
    """Per-input certification at each radius with the local bound.

    Returns ``{"certified_accuracy": {radius: fraction}, "certified_mask": {radius: BoolTensor},
    "mean_local_backbone": {radius: float}}`` (radius keys as ``f"{r:g}"``).
    """
    if not isinstance(model, LocalLipNetwork):
        raise TypeError("certify_local needs a LocalLipNetwork (LocalLipMLP or LocalLipConvNet)")
    norm = parse_norm(norm)
    x = x.reshape(x.shape[0], -1)
    accuracy, masks, means = {}, {}, {}
    for eps in radii:
        parts, backbones = [], []
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            model.eval()
            bounds = local_bounds(model, xb, float(eps), norm, certified=True)
            parts.append(local_certified_mask(model, xb, yb, float(eps), norm, bounds))
            backbones.append(bounds.backbone)
        key = f"{eps:g}"
        masks[key] = torch.cat(parts)
        accuracy[key] = float(masks[key].float().mean())
        means[key] = float(torch.cat(backbones).mean())
    return {"certified_accuracy": accuracy, "certified_mask": masks, "mean_local_backbone": means}


@MODEL_KINDS.register("local-lip")
def build_local_lip(arguments: dict[str, Any]) -> nn.Module:
    return LocalLipMLP(
        int(arguments.get("input_dim", 784)),
        tuple(arguments.get("widths", (512, 512))),
        int(arguments.get("num_classes", 10)),
        init=float(arguments.get("init", LOCAL_LIP_THRESHOLD_INIT)),
    )
