"""Optimisers: Adam, and Muon (steepest descent in the spectral norm) for tightlip's layers.

The trivial bound is a product of spectral norms, ``L̂ = ∏ ‖W_i‖₂`` (ℓ2), so the natural
geometry for training it is the spectral norm itself. The steepest-descent step of size η in
that norm, for a gradient ``G = U Σ Vᵀ``, is ``−η U Vᵀ``: every singular direction of the
gradient moves by the same amount, and

    ‖W − η U Vᵀ‖₂ ≤ ‖W‖₂ + η,

so one step changes each factor of the bound by at most η (Bernstein & Newhouse, "Old optimizer,
new norm", 2024). Adam, in contrast, normalises each *entry*: on tightlip's scale-invariant
normalised loss (the logits divided by ``L̂``) its step in the spectral norm depends on the
weights' size, the weights grow until the step is small, and training needs ~10⁵ small steps
(issue 19: batch 8). The spectral step makes the same progress at batch 256.

:class:`Muon` is that step with momentum (Jordan et al. 2024, "Muon"): Nesterov momentum on the
gradient, then ``U Vᵀ`` of the momentum by a quintic Newton–Schulz iteration (five products,
no SVD), scaled by ``√max(1, rows/cols)`` so that tall and wide matrices move alike. A
convolution kernel ``(c_out, c_in, k, k)`` is read as the matrix ``(c_out, c_in·k·k)``, as in
Muon's reference use on convolutional nets. Vectors (biases) and scalars take Adam steps at
``lr · ADAM_LR_FACTOR`` in the same optimiser, so one object holds the whole state (and one
checkpoint entry saves it).

Newton–Schulz returns ``U S' Vᵀ`` with ``S'`` near, not at, 1; it steers training only.
Certification never reads it: the bound is recomputed from the actual weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tightlip.errors import BadArgumentError

OPTIMIZERS: tuple[str, ...] = ("adam", "muon")
#: Adam's learning rate for the vectors (biases) under Muon, relative to Muon's ``lr``
ADAM_LR_FACTOR = 0.1
#: the quintic Newton–Schulz coefficients of Muon's reference implementation
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
NEWTON_SCHULZ_STEPS = 5


def orthogonalize(matrix: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """Approximately ``U Vᵀ`` for ``matrix = U Σ Vᵀ`` (2-D), by quintic Newton–Schulz.

    ``X₀ = M / ‖M‖_F`` (all singular values ≤ 1), then ``X ← a X + (b A + c A²) X`` with
    ``A = X Xᵀ``, which maps every singular value s ↦ a s + b s³ + c s⁵ and pushes it toward
    [0.7, 1.2] in five steps. Computed in bfloat16 on the wide side, as Muon's reference does
    (2.3× faster than float32 on this CPU; the result only steers training).
    """
    a, b, c = NEWTON_SCHULZ
    x = matrix.bfloat16()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.T
    return x.to(matrix.dtype)


class Muon(torch.optim.Optimizer):
    """Muon on matrices and kernels (``ndim ≥ 2``), Adam on the rest (module docstring).

    Each parameter group has ``lr`` (the loop's schedule sets it) and ``kind``
    (``"spectral"`` or ``"adam"``); Adam groups step at ``lr · lr_factor``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        params = list(params)
        groups: list[dict[str, Any]] = []
        matrices = [p for p in params if p.ndim >= 2]
        vectors = [p for p in params if p.ndim < 2]
        if matrices:
            groups.append({"params": matrices, "kind": "spectral", "lr_factor": 1.0})
        if vectors:
            groups.append({"params": vectors, "kind": "adam", "lr_factor": ADAM_LR_FACTOR})
        defaults = {"lr": lr, "momentum": momentum, "betas": betas, "eps": eps}
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr = group["lr"] * group["lr_factor"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["kind"] == "spectral":
                    self._spectral_step(p, lr, group["momentum"])
                else:
                    self._adam_step(p, lr, group["betas"], group["eps"])

    def _spectral_step(self, p: torch.Tensor, lr: float, momentum: float) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(p.grad)
        nesterov = p.grad + momentum * buffer
        matrix = nesterov.reshape(p.shape[0], -1)
        update = orthogonalize(matrix) * math.sqrt(max(1.0, matrix.shape[0] / matrix.shape[1]))
        p.add_(update.reshape(p.shape), alpha=-lr)

    def _adam_step(
        self, p: torch.Tensor, lr: float, betas: tuple[float, float], eps: float
    ) -> None:
        state = self.state[p]
        if "step" not in state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        beta1, beta2 = betas
        state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denominator = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt().add_(eps)
        p.addcdiv_(state["exp_avg"], denominator, value=-lr / (1 - beta1**t))


def make_optimizer(model: nn.Module, name: str, lr: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (:data:`OPTIMIZERS`) over ``model``'s parameters."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    if name == "muon":
        return Muon(model.parameters(), lr=lr)
    raise BadArgumentError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")
