"""Projected gradient descent (Madry et al. 2018) in ℓ1, ℓ2 and ℓ∞, with random restarts.

The attack maximises the margin loss ``max_{j≠y} f_j(x') − f_y(x')`` (Carlini & Wagner 2017)
over the ball ``‖x' − x‖_p ≤ ε`` intersected with the pixel box [0, 1]. It is the empirical
check on every certificate: a point that is certified *and* broken by the attack is a bug.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tightlip.norms import NormName

Model = Callable[[torch.Tensor], torch.Tensor]


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``max_{j≠y} z_j − z_y`` per example (positive means misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, labels[:, None], float("-inf"))
    return others.max(dim=1).values - true


def _project_l1_ball(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each row onto the ℓ1 ball of radius ε (Duchi et al. 2008)."""
    abs_delta = delta.abs()
    inside = abs_delta.sum(dim=1) <= eps
    sorted_abs = abs_delta.sort(dim=1, descending=True).values
    cumsum = sorted_abs.cumsum(dim=1)
    ks = torch.arange(1, delta.shape[1] + 1, device=delta.device, dtype=delta.dtype)
    condition = sorted_abs - (cumsum - eps) / ks > 0
    rho = condition.to(delta.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)
    theta = ((cumsum.gather(1, rho) - eps) / (rho + 1).to(delta.dtype)).clamp_min(0)
    projected = delta.sign() * (abs_delta - theta).clamp_min(0)
    return torch.where(inside[:, None], delta, projected)


def _project(delta: torch.Tensor, norm: NormName, eps: float) -> torch.Tensor:
    if norm == "inf":
        return delta.clamp(-eps, eps)
    if norm == "2":
        norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return delta * (eps / norms).clamp(max=1.0)
    return _project_l1_ball(delta, eps)


def _steepest_step(grad: torch.Tensor, norm: NormName, step: float) -> torch.Tensor:
    """The steepest-ascent step of length ``step`` in the given norm."""
    if norm == "inf":
        return step * grad.sign()
    if norm == "2":
        return step * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # ℓ1: move the coordinates with the largest gradients (a sparse steepest step).
    k = max(1, grad.shape[1] // 100)
    top = grad.abs().topk(k, dim=1)
    direction = torch.zeros_like(grad).scatter(1, top.indices, grad.gather(1, top.indices).sign())
    return step * direction / k


def _random_start(x: torch.Tensor, norm: NormName, eps: float, generator: torch.Generator):
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    if norm == "inf":
        noise = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps
        return noise
    noise = noise / noise.norm(p=1 if norm == "1" else 2, dim=1, keepdim=True).clamp_min(1e-12)
    radius = torch.rand(x.shape[0], 1, generator=generator, dtype=x.dtype) * eps
    return noise * radius


def pgd_attack(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: NormName,
    eps: float,
    *,
    steps: int = 50,
    restarts: int = 5,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(broken, x_adv)``: which points PGD misclassifies inside the ε-ball ∩ [0,1]ⁿ.

    The first restart starts at ``x`` itself, the others at random points of the ball. The step
    size defaults to ``2.5 ε / steps`` (Madry et al.), a quarter of ε for ℓ1.
    """
    if eps <= 0:
        with torch.no_grad():
            broken = torch.cat(
                [
                    margin_loss(model(x[i : i + batch_size]), y[i : i + batch_size]) > 0
                    for i in range(0, x.shape[0], batch_size)
                ]
            )
        return broken, x.clone()
    step = step_size if step_size is not None else (eps / 4 if norm == "1" else 2.5 * eps / steps)
    generator = torch.Generator().manual_seed(seed)
    broken_all, adv_all = [], []
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        broken = torch.zeros(xb.shape[0], dtype=torch.bool)
        best_adv = xb.clone()
        for restart in range(restarts):
            delta = (
                torch.zeros_like(xb) if restart == 0 else _random_start(xb, norm, eps, generator)
            )
            delta = (xb + delta).clamp(0, 1) - xb
            for _ in range(steps):
                delta.requires_grad_(True)
                loss = margin_loss(model(xb + delta), yb)
                (grad,) = torch.autograd.grad(loss.sum(), delta)
                with torch.no_grad():
                    newly = (loss.detach() > 0) & ~broken
                    best_adv[newly] = (xb + delta.detach())[newly]
                    broken |= loss.detach() > 0
                    delta = _project(delta.detach() + _steepest_step(grad, norm, step), norm, eps)
                    delta = (xb + delta).clamp(0, 1) - xb
            with torch.no_grad():
                final = margin_loss(model(xb + delta), yb) > 0
                best_adv[final & ~broken] = (xb + delta)[final & ~broken]
                broken |= final
        broken_all.append(broken)
        adv_all.append(best_adv)
    return torch.cat(broken_all), torch.cat(adv_all)
