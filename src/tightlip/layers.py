"""Layers: bias-free linear maps and (poly)activations with *derived* Lipschitz constants.

Every activation here is a ``torch.nn.Module`` that a user can drop into their own model. Each
one also describes itself to the verifiers:

* ``expansion`` – how many outputs each input unit produces (a *polyactivation* σ⃗: R^d → R^{Kd}
  has ``K = expansion``; outputs are stacked block-wise ``[σ₁(z), σ₂(z), …]``);
* ``lipschitz(norm)`` – the activation's Lipschitz constant in ``‖·‖_p → ‖·‖_p``, derived in the
  class docstring from the sup of its Jacobian's operator norm (mean-value theorem; the maps
  are locally Lipschitz and the p-balls convex, so Lip = sup_z ‖J(z)‖_{p→p});
* ``saturates(norm)`` – whether ‖J(z)‖ equals that constant at *every* z, the property that
  removes the activation from the obstructions to a tight trivial bound (Kuang & Lin,
  arXiv 2604.00490);
* ``piecewise_linear`` and ``smoothed(τ)`` – used by the lower-bound search, which needs a
  non-zero gradient of the Jacobian norm (a piecewise-linear net has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from tightlip.norms import NormName, parse_norm

Surrogate = Callable[[torch.Tensor], torch.Tensor]


class Linear(nn.Linear):
    """``nn.Linear`` that is bias-free unless asked, with orthogonal initialisation.

    Bias terms shift the activation pattern so that the top singular directions cannot pass
    through the nonlinearity, one of the three obstructions to a tight trivial bound
    (Kuang et al. 2026, §1 of BRIEF). Orthogonal initialisation starts every layer perfectly
    conditioned (all singular values equal), the other obstruction.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class Activation(nn.Module):
    """Base class: an activation that can state its own Lipschitz constant."""

    expansion: int = 1
    piecewise_linear: bool = False
    #: norms in which the Jacobian's operator norm equals ``lipschitz(norm)`` everywhere
    saturating_norms: frozenset[NormName] = frozenset()

    def lipschitz(self, norm: NormName | str) -> float:
        raise NotImplementedError

    def saturates(self, norm: NormName | str) -> bool:
        return parse_norm(norm) in self.saturating_norms

    def smoothed(self, temperature: float) -> Surrogate:
        """A smooth surrogate that tends to ``forward`` as ``temperature → 0``."""
        return self.forward

    def out_features(self, in_features: int) -> int:
        return self.expansion * in_features

    def extra_repr(self) -> str:
        return ""


def _smooth_abs(z: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.sqrt(z * z + temperature * temperature)


def _smooth_relu(z: torch.Tensor, temperature: float) -> torch.Tensor:
    return nn.functional.softplus(z, beta=1.0 / max(temperature, 1e-12))


class Abs(Activation):
    """``σ(z) = |z|``. Jacobian ``diag(sign z)``: a signed permutation-free diagonal of ±1.

    For every p, ``‖diag(±1)‖_{p→p} = 1``, so Lip = 1 and the activation *saturates* every
    p-norm: ``‖J v‖_p = ‖v‖_p`` for all v.
    """

    piecewise_linear = True
    saturating_norms = frozenset({"1", "2", "inf"})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.abs()

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0

    def smoothed(self, temperature: float) -> Surrogate:
        return lambda z: _smooth_abs(z, temperature)


class CReLU(Activation):
    """Concatenated ReLU ``z ↦ (max(0, z), max(0, −z))`` (Shang et al. 2016).

    Jacobian: the ``2d × d`` matrix ``[diag(1[z>0]); −diag(1[z<0])]``. Each column has exactly
    one entry ±1 (for z ≠ 0), so the max column abs-sum is 1 (p = 1); ``JᵀJ = I`` (p = 2);
    each row has at most one ±1 (p = ∞). Hence Lip = 1 in every p. The output
    ``(relu z, relu −z)`` has ``‖·‖_p^p = Σ |z_i|^p``, so ``‖J v‖_p = ‖v‖_p`` for p ∈ [1, ∞):
    the map saturates those norms (it also preserves ℓ∞, but we only claim what the paper does).
    """

    expansion = 2
    piecewise_linear = True
    saturating_norms = frozenset({"1", "2"})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(z), torch.relu(-z)], dim=-1)

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0

    def smoothed(self, temperature: float) -> Surrogate:
        return lambda z: torch.cat(
            [_smooth_relu(z, temperature), _smooth_relu(-z, temperature)], dim=-1
        )


class SinCos(Activation):
    """The bias-free sinusoidal pair ``z ↦ (sin z, cos z)``.

    Jacobian ``J = [diag(cos z); −diag(sin z)]``; column i is ``(cos zᵢ, −sin zᵢ)`` placed in two
    distinct rows, so the columns are orthonormal: ``JᵀJ = I`` and ‖J‖₂ = 1 at every z. It
    saturates ℓ2 and needs no biases for universal approximation, because
    ``sin(wᵀx + b) = cos b · sin(wᵀx) + sin b · cos(wᵀx)`` is a linear read-out of the pair.

    Other norms (derived, not saturated): column abs-sum ``|cos| + |sin| ≤ √2`` with equality at
    z = π/4, so Lip₁ = √2; every row holds a single entry of modulus ≤ 1, so Lip_∞ = 1.
    """

    expansion = 2
    saturating_norms = frozenset({"2"})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sin(z), torch.cos(z)], dim=-1)

    def lipschitz(self, norm: NormName | str) -> float:
        return math.sqrt(2.0) if parse_norm(norm) == "1" else 1.0


class SinPair(Activation):
    """The ℓ1 polyactivation ``z ↦ ((z + sin z)/2, (z − sin z)/2)``.

    Jacobian column i is ``((1 + cos zᵢ)/2, (1 − cos zᵢ)/2)`` in two distinct rows: both
    entries are ≥ 0 and they sum to 1, so every column has abs-sum exactly 1: ‖J‖₁ = 1 at
    every z (saturates ℓ1). Each row has one entry in [0, 1], so Lip_∞ = 1. Column ℓ2 norms are
    ``√((1 + cos² z)/2) ≤ 1`` with orthogonal columns, so Lip₂ = 1 (reached at z = kπ).
    """

    expansion = 2
    saturating_norms = frozenset({"1"})

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = torch.sin(z)
        return torch.cat([(z + s) / 2, (z - s) / 2], dim=-1)

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0


class ReLU(Activation):
    """``max(0, z)``: Jacobian ``diag(1[z>0])``, Lip = 1 in every p, saturating none.

    Kept for comparison and ablation: dead units (zero Jacobian rows) are one of the three
    obstructions to a tight trivial bound.
    """

    piecewise_linear = True

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(z)

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0

    def smoothed(self, temperature: float) -> Surrogate:
        return lambda z: _smooth_relu(z, temperature)


class Tanh(Activation):
    """``tanh z``: Jacobian ``diag(1 − tanh² z)`` with entries in (0, 1], Lip = 1 in every p."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0


class GroupSort(Activation):
    """Sort each consecutive group of ``group_size`` units (Anil et al. 2019); MaxMin is size 2.

    On each linear piece the Jacobian is a permutation matrix, an isometry of every p-norm,
    so Lip = 1 and the map saturates every p-norm.
    """

    piecewise_linear = True
    saturating_norms = frozenset({"1", "2", "inf"})

    def __init__(self, group_size: int = 2) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {group_size}")
        self.group_size = group_size

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] % self.group_size:
            raise ValueError(
                f"GroupSort({self.group_size}) needs a width divisible by {self.group_size}, "
                f"got {z.shape[-1]}"
            )
        groups = z.unflatten(-1, (-1, self.group_size))
        return groups.sort(dim=-1, descending=True).values.flatten(-2)

    def lipschitz(self, norm: NormName | str) -> float:
        parse_norm(norm)
        return 1.0

    def smoothed(self, temperature: float) -> Surrogate:
        if self.group_size != 2:
            return self.forward

        def smooth_maxmin(z: torch.Tensor) -> torch.Tensor:
            a, b = z.unflatten(-1, (-1, 2)).unbind(-1)
            mid, half_gap = (a + b) / 2, _smooth_abs(a - b, temperature) / 2
            return torch.stack([mid + half_gap, mid - half_gap], dim=-1).flatten(-2)

        return smooth_maxmin

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(GroupSort):
    """``(a, b) ↦ (max(a, b), min(a, b))`` on consecutive pairs: GroupSort with groups of 2."""

    def __init__(self) -> None:
        super().__init__(group_size=2)

    def extra_repr(self) -> str:
        return ""


ACTIVATIONS: dict[str, type[Activation]] = {
    "abs": Abs,
    "crelu": CReLU,
    "sincos": SinCos,
    "sinpair": SinPair,
    "relu": ReLU,
    "tanh": Tanh,
    "maxmin": MaxMin,
}


def make_activation(name: str) -> Activation:
    """Build an activation by its short name (see ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}: choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def as_activation(module: nn.Module) -> Activation | None:
    """Translate a plain ``torch.nn`` activation into its tightlip description, else ``None``."""
    if isinstance(module, Activation):
        return module
    if isinstance(module, nn.ReLU):
        return ReLU()
    if isinstance(module, nn.Tanh):
        return Tanh()
    return None
