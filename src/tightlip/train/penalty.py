"""Differentiable estimates of the trivial bound, and the penalties built on them.

Training needs ``log ∏ ‖W_i‖`` with a gradient at every step, so it cannot afford an SVD per
step. :class:`TrivialBoundEstimator` keeps one persistent pair of power-iteration vectors per
linear layer (as ``torch.nn.utils.parametrizations.spectral_norm`` does), runs a few iterations
without gradient each step, and returns ``σ̂_i = u_iᵀ W_i v_i``, whose gradient w.r.t. ``W_i`` is
``u_i v_iᵀ``, the gradient of ``σ_max`` at convergence. For ℓ1 and ℓ∞ the operator norms are
cheap and exact (max column / row abs-sum) and are differentiated directly.

Smooth maximum (ℓ1 / ℓ∞, optional). The gradient of ``max_k s_k`` (``s_k`` the row or column
abs-sums) reaches one row only, so the penalty lowers one row at a time while the loss is free
to grow all the others up to it. With ``smooth_max = τ > 0`` the estimator uses instead the
log-sum-exp at a temperature *relative* to the largest sum ``m`` (treated as a constant):

    smax_τ(s) = m + τ m · log Σ_k exp((s_k − m) / (τ m)),
    max_k s_k ≤ smax_τ(s) ≤ max_k s_k · (1 + τ log K),

whose gradient is the softmax weights ``softmax(s / (τ m))``: every row near the maximum is
pushed down together, which equalises the sums (one of the two conditions for
``‖W_{i+1} D W_i‖ = ‖W_{i+1}‖ ‖W_i‖`` in ℓ1 / ℓ∞). It is never below the exact norm, so a loss
that divides by ``L̂`` stays conservative.

These estimates may *under*-estimate ℓ2 norms; they steer training only. Certification always
recomputes the sound bound (:mod:`tightlip.bounds.trivial`).

Penalties on the estimate ``L̂`` (the paper leaves the form open; both are offered and measured):

* ``log``:   ``λ · log L̂``  (scale-free: a 1 % cut in the bound is worth the same at any scale);
* ``hinge``: ``λ · max(0, log L̂ − log L_target)``  (no pressure once below the target);
* ``none``:  no penalty (the ablation).

Conditioning control (the third obstruction, ill-conditioned weights) is a separate,
scale-free term: for ℓ2, ``Σ_i log(σ_max(W_i) / σ_rms(W_i))`` with
``σ_rms = ‖W_i‖_F / √rank_max``; it is ≥ 0 and vanishes exactly when every singular value
equals the largest one (a scaled partial isometry), so the top singular directions of
consecutive layers can always line up. For ℓ1 / ℓ∞ the same shape with column / row
abs-sums: ``log(max_j c_j / mean_j c_j)``, zero when all column (row) sums are equal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from tightlip.errors import ModelShapeError
from tightlip.norms import NormName

PenaltyForm = Literal["log", "hinge", "none"]
PENALTY_FORMS: tuple[str, ...] = ("log", "hinge", "none")


def _linear_layers(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _activation_log_lipschitz(model: nn.Module, norm: NormName) -> float:
    total = 0.0
    for module in model.modules():
        lipschitz = getattr(module, "lipschitz", None)
        if callable(lipschitz) and not isinstance(module, nn.Linear):
            total += math.log(lipschitz(norm))
    return total


class TrivialBoundEstimator(nn.Module):
    """``log L̂ = Σ log ‖W_i‖_{p→p} + Σ log Lip_p(σ_j)`` with persistent power-iteration vectors.

    The vectors are buffers, so they are saved in checkpoints and a resumed run continues with
    exactly the same estimates.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: NormName,
        iterations: int = 1,
        seed: int = 0,
        smooth_max: float = 0.0,
    ) -> None:
        super().__init__()
        if smooth_max < 0:
            raise ValueError(f"smooth_max must be ≥ 0, got {smooth_max}")
        self.norm = norm
        self.iterations = iterations
        self.smooth_max = smooth_max
        self._layers = _linear_layers(model)
        if not self._layers:
            raise ModelShapeError("the model has no nn.Linear layer to penalise")
        self._activation_log_lip = _activation_log_lipschitz(model, norm)
        generator = torch.Generator().manual_seed(seed)
        for i, layer in enumerate(self._layers):
            out_features, in_features = layer.weight.shape
            u = torch.randn(out_features, generator=generator, dtype=torch.float64)
            v = torch.randn(in_features, generator=generator, dtype=torch.float64)
            self.register_buffer(f"u{i}", (u / u.norm()).to(layer.weight.dtype))
            self.register_buffer(f"v{i}", (v / v.norm()).to(layer.weight.dtype))
        self._warm_up(30)

    @torch.no_grad()
    def _power_step(self, i: int, weight: torch.Tensor, iterations: int) -> None:
        u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
        for _ in range(iterations):
            v = weight.T @ u
            v = v / v.norm().clamp_min(1e-12)
            u = weight @ v
            u = u / u.norm().clamp_min(1e-12)
        getattr(self, f"u{i}").copy_(u)
        getattr(self, f"v{i}").copy_(v)

    def _warm_up(self, iterations: int) -> None:
        if self.norm == "2":
            for i, layer in enumerate(self._layers):
                self._power_step(i, layer.weight.detach(), iterations)

    def layer_norms(self, update: bool = True) -> list[torch.Tensor]:
        """Differentiable estimates of ``‖W_i‖_{p→p}`` for every linear layer."""
        norms = []
        for i, layer in enumerate(self._layers):
            weight = layer.weight
            if self.norm in ("1", "inf"):
                sums = weight.abs().sum(dim=0 if self.norm == "1" else 1)
                norms.append(smooth_maximum(sums, self.smooth_max))
            else:
                if update and self.training:
                    self._power_step(i, weight.detach(), self.iterations)
                u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
                norms.append(torch.dot(u, weight @ v).abs())
        return norms

    def last_weight(self) -> torch.Tensor:
        """The weight of the final linear layer (the read-out ``W_L``)."""
        return self._layers[-1].weight

    def forward(self, update: bool = True) -> torch.Tensor:
        """``log L̂``, differentiable w.r.t. the model's weights."""
        return self.log_bound_and_conditioning(update)[0]

    def log_bound_and_conditioning(self, update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log L̂, Σ_i log(‖W_i‖_{p→p} / typical_i))``, both differentiable.

        ``typical_i`` is the RMS singular value for ℓ2 and the mean column / row abs-sum for
        ℓ1 / ℓ∞, so the second term measures how far each layer is from perfectly conditioned.
        """
        norms = self.layer_norms(update)
        logs = torch.stack([n.clamp_min(1e-30).log() for n in norms])
        typical = torch.stack([self._typical_scale(layer.weight) for layer in self._layers])
        conditioning = (logs - typical.clamp_min(1e-30).log()).sum()
        return logs.sum() + self._activation_log_lip, conditioning

    def _typical_scale(self, weight: torch.Tensor) -> torch.Tensor:
        if self.norm == "1":
            return weight.abs().sum(dim=0).mean()
        if self.norm == "inf":
            return weight.abs().sum(dim=1).mean()
        return weight.norm() / math.sqrt(min(weight.shape))


def smooth_maximum(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """``smax_τ(s) = m + τ m log Σ_k exp((s_k − m)/(τ m))`` with ``m = max s`` (no gradient).

    ``τ = 0`` gives the exact maximum. For ``τ > 0`` and ``s ≥ 0``:
    ``max s ≤ smax_τ(s) ≤ (1 + τ log K) max s`` (the sum has one term equal to 1 and K terms
    ≤ 1), so it is an upper estimate of the operator norm, differentiable in every ``s_k``.
    """
    top = values.max()
    if temperature <= 0:
        return top
    scale = (temperature * top.detach()).clamp_min(1e-30)
    return top.detach() + scale * torch.logsumexp((values - top.detach()) / scale, dim=0)


def bound_penalty(log_bound: torch.Tensor, form: PenaltyForm, target: float = 1.0) -> torch.Tensor:
    """The penalty term (before the weight λ) on the estimated bound ``L̂ = exp(log_bound)``."""
    if form == "log":
        return log_bound
    if form == "hinge":
        return torch.relu(log_bound - math.log(target))
    if form == "none":
        return torch.zeros((), dtype=log_bound.dtype)
    raise ValueError(f"unknown penalty form {form!r}: choose log, hinge or none")
