"""Sandwich layers: Lipschitz-bounded networks by direct parameterisation.

Wang & Manchester, "Direct parameterization of Lipschitz-bounded deep networks", ICML 2023
(reference code: github acfr/LBDN). Our implementation is written from the paper's equations.

**Cayley transform.** For a free matrix ``X ∈ R^{n×(n+m)}`` write ``Xᵀ = [U; V]`` with
``U ∈ R^{n×n}``, ``V ∈ R^{m×n}`` and ``Z = U − Uᵀ + VᵀV``. ``I + Z`` is invertible (its symmetric
part ``I + VᵀV`` is positive definite) and

    Q = [ (I + Z)⁻¹(I − Z) ; −2 V (I + Z)⁻¹ ]ᵀ ∈ R^{n×(n+m)}

has orthonormal rows, ``QQᵀ = I`` (Trockman & Kolter 2021). Split ``Q = [A | B]`` with
``A ∈ R^{n×n}``, ``B ∈ R^{n×m}``, so ``AAᵀ + BBᵀ = I``. As in LBDN, ``X = α · W / ‖W‖_F`` with a
learnable scale α.

**Sandwich layer** (``m → n``, ``Ψ = diag(e^ψ)``, ReLU σ, bias b)::

    h⁺ = √2 · Aᵀ Ψ σ(√2 · Ψ⁻¹ B h + b).

*Why it is 1-Lipschitz* (ℓ2). Take two inputs, Δh their difference, Δz = √2 Ψ⁻¹ B Δh the
difference of pre-activations, Δv = σ(z) − σ(z') and u = Ψ Δv. ReLU is slope-restricted in
[0, 1], so ``Δv_i (Δz_i − Δv_i) ≥ 0``; weighting by ``ψ_i² ≥ 0`` and summing gives
``‖u‖² ≤ uᵀ Ψ Δz = √2 uᵀ B Δh``. With ``c ≥ ‖Q‖₂²`` (c = 1 in exact arithmetic),
``AAᵀ ⪯ c I − BBᵀ``, hence

    ‖Δh⁺‖² = 2 uᵀ A Aᵀ u ≤ 2c‖u‖² − 2‖Bᵀu‖² ≤ 2√2 c uᵀBΔh − 2‖Bᵀu‖²
           = c²‖Δh‖² − ‖c Δh − √2 Bᵀu‖² ≤ c² ‖Δh‖².

So the layer is ``c``-Lipschitz; with exact orthonormal rows, 1-Lipschitz. (The layer meets the
LipSDP-Neuron condition with multipliers ``2Ψ²`` with equality, which is why the paper calls the
parameterisation complete for that certificate.) Note the *trivial* bound of the same map,
``‖√2AᵀΨ‖·‖√2Ψ⁻¹B‖``, is generally much larger than 1: the structure is what certifies it.

**Network** (``SandwichFc``-style MLP). ``γ`` is split as √γ at the input (first layer scales its
input) and √γ at the output (last layer ``√γ · B h + b``, with ``‖B‖ ≤ ‖Q‖ = 1``), so
``Lip(f) ≤ γ`` by construction. :meth:`SandwichMLP.certified_lipschitz` returns the sound float64
version ``γ · ∏ c_l`` (``c_l`` a certified ``‖Q_l‖₂²``, ≈ 1 + 1e-15) with a rounding allowance.

**Caching.** The Cayley transform costs one ``n×n`` solve per layer. In train mode it is
recomputed at every forward (gradients flow through it); in eval mode it is computed once and
cached (detached), and the cache is dropped whenever the mode changes or a state dict is loaded.

**Training defaults** (LBDN): Adam, lr 1e-2, piecewise-linear lr schedule (0 → lr at 2/5 of the
run, lr/20 at 4/5, 0 at the end), offset cross-entropy (offset √2·1.5, temperature 0.25).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from tightlip.layers import ReLU
from tightlip.model import ActivationStep, AffineStep, Step
from tightlip.models.registry import MODEL_KINDS
from tightlip.norms import SVD_MARGIN, UNIT_ROUNDOFF_F64, certified_operator_norm

#: relative allowance per layer for float64 rounding between the parameters and the chain's
#: matrices (products of O(width) terms: ≈ 1e-13 realistic; 1e-9 is generous)
ROUNDING_ALLOWANCE = 1e-9
#: LBDN's default Lipschitz bound γ
SANDWICH_GAMMA = 1.0


def cayley(x: torch.Tensor) -> torch.Tensor:
    """``Q ∈ R^{n×(n+m)}`` with orthonormal rows from a free ``x`` of the same shape (see module)."""
    n = x.shape[0]
    if x.shape[1] < n:
        raise ValueError(f"cayley needs a wide matrix (n × (n+m)), got {tuple(x.shape)}")
    u, v = x[:, :n].T, x[:, n:].T  # U (n×n), V (m×n)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    z = u - u.T + v.T @ v
    first = torch.linalg.solve(eye + z, eye - z)  # (I + Z)⁻¹(I − Z)
    second = -2.0 * torch.linalg.solve((eye + z).T, v.T).T  # −2 V (I + Z)⁻¹
    return torch.cat([first, second], dim=0).T.contiguous()


class _CayleyParameter(nn.Module):
    """Holds ``W`` (n × (n+m)) and α; returns ``Q = cayley(α W / ‖W‖_F)``, cached in eval mode."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features + out_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.alpha = nn.Parameter(self.weight.detach().norm().reshape(1).clone())
        self._cache: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.clear_cache())

    def clear_cache(self) -> None:
        self._cache = None

    def train(self, mode: bool = True) -> _CayleyParameter:
        self.clear_cache()
        return super().train(mode)

    def free_matrix(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        w = self.weight if dtype is None else self.weight.to(dtype)
        alpha = self.alpha if dtype is None else self.alpha.to(dtype)
        return alpha * w / w.norm()

    def q(self) -> torch.Tensor:
        if self.training:
            self._cache = None
            return cayley(self.free_matrix())
        if self._cache is None:
            with torch.no_grad():
                self._cache = cayley(self.free_matrix()).detach()
        return self._cache

    @torch.no_grad()
    def q64(self) -> torch.Tensor:
        """``Q`` recomputed in float64 on the CPU (for chains and certificates)."""
        return cayley(self.free_matrix(torch.float64).cpu())


class SandwichLinear(nn.Module):
    """One Sandwich layer ``h⁺ = √2 AᵀΨ ReLU(√2 Ψ⁻¹ B (s·h) + b)`` (``s`` the input scale)."""

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, float(scale)
        self.cayley = _CayleyParameter(in_features, out_features)
        self.psi = nn.Parameter(torch.zeros(out_features))
        bound = 1.0 / math.sqrt(in_features + out_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q = self.cayley.q()
        n = self.out_features
        a, b = q[:, :n], q[:, n:]
        z = math.sqrt(2.0) * torch.exp(-self.psi) * F.linear(self.scale * h, b) + self.bias
        return math.sqrt(2.0) * (torch.relu(z) * torch.exp(self.psi)) @ a

    def chain_steps(self) -> list[Step]:
        """``Linear(√2 s Ψ⁻¹B, b) → ReLU → Linear(√2 AᵀΨ)``, in float64."""
        q = self.cayley.q64()
        n = self.out_features
        a, b = q[:, :n], q[:, n:]
        psi = self.psi.detach().to(torch.float64).cpu()
        first = math.sqrt(2.0) * self.scale * torch.exp(-psi)[:, None] * b
        second = math.sqrt(2.0) * a.T * torch.exp(psi)[None, :]
        return [
            AffineStep(first, self.bias.detach(), name="sandwich.in"),
            ActivationStep(ReLU(), name="sandwich.relu"),
            AffineStep(second, name="sandwich.out"),
        ]

    def certified_lipschitz(self) -> float:
        """``s · c`` with ``c`` a certified ``‖Q‖₂²`` (module docstring), plus rounding allowance."""
        sigma = certified_operator_norm(self.cayley.q64(), "2")
        return _inflate(self.scale * sigma * sigma)


class SandwichOutput(nn.Module):
    """The last, linear layer ``h ↦ s · B h + b`` with ``B`` the right block of a Cayley ``Q``."""

    def __init__(self, in_features: int, out_features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, float(scale)
        self.cayley = _CayleyParameter(in_features, out_features)
        bound = 1.0 / math.sqrt(in_features + out_features)
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b = self.cayley.q()[:, self.out_features :]
        return F.linear(self.scale * h, b, self.bias)

    def weight64(self) -> torch.Tensor:
        return self.scale * self.cayley.q64()[:, self.out_features :]

    def chain_steps(self) -> list[Step]:
        return [AffineStep(self.weight64(), self.bias.detach(), name="sandwich.head")]

    def certified_lipschitz(self, tight: bool = False) -> float:
        """``s · ‖Q‖₂`` by construction (``‖B‖ ≤ ‖Q‖``); ``tight`` uses ``s · ‖B‖₂`` itself."""
        if tight:
            return _inflate(certified_operator_norm(self.weight64(), "2"))
        return _inflate(self.scale * certified_operator_norm(self.cayley.q64(), "2"))


class SandwichMLP(nn.Module):
    """``input → widths… → classes`` of Sandwich layers with Lipschitz bound ``γ`` by construction.

    √γ scales the input of the first layer and √γ the last (linear) layer, as in LBDN.
    """

    def __init__(
        self,
        input_dim: int = 784,
        widths: tuple[int, ...] | list[int] = (512, 512),
        num_classes: int = 10,
        gamma: float = 1.0,
    ) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.input_dim, self.widths, self.num_classes = input_dim, tuple(widths), num_classes
        self.gamma = float(gamma)
        root = math.sqrt(self.gamma)
        layers: list[nn.Module] = []
        fan_in = input_dim
        for i, width in enumerate(self.widths):
            layers.append(SandwichLinear(fan_in, width, scale=root if i == 0 else 1.0))
            fan_in = width
        head_scale = root if self.widths else self.gamma
        layers.append(SandwichOutput(fan_in, num_classes, scale=head_scale))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            h = layer(h)
        return h

    def chain_steps(self) -> list[Step]:
        steps: list[Step] = []
        for layer in self.layers:
            steps.extend(layer.chain_steps())
        return steps

    def certified_lipschitz(self, tight: bool = False) -> float:
        """Sound ℓ2 bound ``∏ (layer bounds)`` = γ up to ~1e-9 (module docstring).

        ``tight=True`` replaces the head's by-construction factor ``√γ·‖Q‖`` by ``√γ·‖B‖``
        (still sound, often smaller since B is only part of an orthonormal-row matrix).
        """
        return certified_product(self.layers, tight)

    def last_layer(self) -> tuple[torch.Tensor, float]:
        """``(W_last, L_backbone)`` for the GloRo loss: ``f = W_last h + b``, ``Lip(h) ≤ √γ``."""
        return head_weight(self.layers[-1]), (math.sqrt(self.gamma) if self.widths else 1.0)

    def certified_read_out(self) -> tuple[torch.Tensor, float]:
        """``(W_last, L_backbone)`` for the last-layer certificate, both sound in float64: the
        head's own matrix ``√γ·B`` and the certified product of the layers before it (≈ √γ).

        The chain merges the last layer's output map into the head, and the trivial bound of
        the chain's backbone (everything up to the last ReLU) carries ``‖√2 Ψ⁻¹ B‖``, so the
        last-layer certificate read from the chain was near 0 % (issue 21, item 4)."""
        head = self.layers[-1]
        assert isinstance(head, SandwichOutput)
        return head.weight64(), certified_product(self.layers[:-1])

    def description(self) -> dict[str, Any]:
        return {
            "kind": "sandwich",
            "arguments": {
                "input_dim": self.input_dim,
                "widths": list(self.widths),
                "num_classes": self.num_classes,
                "gamma": self.gamma,
            },
        }


def certified_product(layers: Iterable[nn.Module], tight: bool = False) -> float:
    """``∏`` of the layers' certified bounds, each product rounded up; ``tight`` passed to the
    head (:class:`SandwichOutput`, ``√γ‖B‖`` instead of ``√γ‖Q‖``)."""
    value = 1.0
    for layer in layers:
        if isinstance(layer, SandwichOutput):
            factor = layer.certified_lipschitz(tight=tight)
        else:
            factor = layer.certified_lipschitz()
        value = math.nextafter(value * factor, math.inf)
    return value


def head_weight(head: nn.Module) -> torch.Tensor:
    """The read-out matrix ``W_last`` of a Sandwich head: ``f = W_last h + b``."""
    assert isinstance(head, SandwichOutput)
    return head.scale * head.cayley.q()[:, head.out_features :]


def _inflate(value: float) -> float:
    slack = ROUNDING_ALLOWANCE + SVD_MARGIN * UNIT_ROUNDOFF_F64
    return math.nextafter(value * (1.0 + slack), math.inf)


@MODEL_KINDS.register("sandwich")
def build_sandwich(arguments: dict[str, Any]) -> nn.Module:
    return SandwichMLP(
        int(arguments.get("input_dim", 784)),
        tuple(arguments.get("widths", (512, 512))),
        int(arguments.get("num_classes", 10)),
        gamma=float(arguments.get("gamma", SANDWICH_GAMMA)),
    )
