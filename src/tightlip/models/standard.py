"""Standard alternatives, measured in the same harness as tightlip.

* ``plain``: a ReLU MLP with biases trained with cross-entropy. Nothing controls its Lipschitz
  constant; it is certified by the best verifier available
  (``tightlip.bounds.portfolio.upper_bound_or_trivial`` when present, else the trivial bound).
* ``specnorm``: spectral normalisation (Miyato et al., ICLR 2018) through
  ``torch.nn.utils.parametrizations.spectral_norm``: every weight is divided by a power-iteration
  estimate σ̂ of its spectral norm, so ``‖W/σ̂‖₂ ≈ 1``. Power iteration under-estimates σ
  (it converges from below), so the certificate never trusts "1": it is the trivial bound recomputed soundly
  (float64 SVD with margin) from the *actual* normalised weights.
* ``orthogonal``: ``torch.nn.utils.parametrizations.orthogonal`` weights (orthonormal rows or
  columns, ‖W‖₂ = 1) with MaxMin / GroupSort-2 activations (Anil, Lucas & Grosse, ICML 2019),
  the "FC 3-layer" orthogonal MLP of Li et al. (LConvNet / BCOP, NeurIPS 2019).
  Certified by the trivial bound of the actual weights (≈ 1 up to rounding).

All three expose ``chain_steps()`` so every verifier applies, and are rebuilt from checkpoints
through :func:`tightlip.train.checkpoint.register_model_kind`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

from tightlip.errors import UnsupportedLayerError
from tightlip.layers import MaxMin, as_activation
from tightlip.model import ActivationStep, AffineStep, Step
from tightlip.models.registry import MODEL_KINDS

VARIANTS = ("plain", "specnorm", "orthogonal")


class BaselineMLP(nn.Sequential):
    """``Flatten → Linear → σ → … → Linear``, possibly with parametrised weights.

    ``chain_steps`` reads each layer's *current* ``weight`` (the normalised / orthogonal matrix
    for parametrised layers; call ``eval()`` first so spectral normalisation does not advance).
    Parametrised weights cost a matrix solve per access, so in eval mode they are computed once
    and cached (dropped when the mode changes or a state dict is loaded), as for Sandwich layers.
    """

    def __init__(
        self,
        variant: str = "plain",
        input_dim: int = 784,
        widths: tuple[int, ...] | list[int] = (512, 512),
        num_classes: int = 10,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        widths = tuple(int(w) for w in widths)
        if variant == "orthogonal" and any(w % 2 for w in widths):
            raise ValueError(f"MaxMin needs even widths, got {widths}")
        layers: list[nn.Module] = [nn.Flatten()]
        fan_in = input_dim
        for width in (*widths, num_classes):
            layers.append(_make_linear(variant, fan_in, width))
            layers.append(MaxMin() if variant == "orthogonal" else nn.ReLU())
            fan_in = width
        super().__init__(*layers[:-1])  # no activation after the last layer
        self.variant = variant
        self.arguments = {
            "input_dim": input_dim,
            "widths": list(widths),
            "num_classes": num_classes,
        }
        self._frozen: dict[str, tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self.register_load_state_dict_post_hook(lambda module, keys: module.clear_cache())

    def clear_cache(self) -> None:
        self._frozen = None

    def train(self, mode: bool = True) -> BaselineMLP:
        self.clear_cache()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.variant == "plain":
            return super().forward(x)
        if self._frozen is None:
            with torch.no_grad():
                self._frozen = {
                    name: (
                        module.weight.detach().clone(),
                        None if module.bias is None else module.bias.detach().clone(),
                    )
                    for name, module in self.named_children()
                    if isinstance(module, nn.Linear)
                }
        for name, module in self.named_children():
            if name in self._frozen:
                weight, bias = self._frozen[name]
                x = F.linear(x, weight, bias)
            else:
                x = module(x)
        return x

    def chain_steps(self) -> list[Step]:
        steps: list[Step] = []
        for name, module in self.named_children():
            if isinstance(module, nn.Flatten | nn.Identity):
                continue
            if isinstance(module, nn.Linear):
                steps.append(AffineStep(module.weight, module.bias, name=f"{self.variant}.{name}"))
                continue
            activation = as_activation(module)
            if activation is None:
                raise UnsupportedLayerError(f"unsupported layer {name}: {type(module).__name__}")
            steps.append(ActivationStep(activation, name=f"{self.variant}.{name}"))
        return steps

    def description(self) -> dict[str, Any]:
        return {"kind": self.variant, "arguments": dict(self.arguments)}


def _make_linear(variant: str, fan_in: int, fan_out: int) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    if variant == "specnorm":
        return parametrizations.spectral_norm(layer, n_power_iterations=1)
    if variant == "orthogonal":
        nn.init.zeros_(layer.bias)
        return parametrizations.orthogonal(layer, orthogonal_map="cayley")
    return layer


def _register(variant: str) -> None:
    def build(arguments: dict[str, Any]) -> nn.Module:
        return BaselineMLP(
            variant,
            int(arguments.get("input_dim", 784)),
            tuple(arguments.get("widths", (512, 512))),
            int(arguments.get("num_classes", 10)),
        )

    MODEL_KINDS.register(variant, build)


for _variant in VARIANTS:
    _register(_variant)
