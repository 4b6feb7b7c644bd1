"""The standard alternatives as convolutional networks: ``plain``, ``specnorm``, ``orthogonal``.

Each network has exactly the layers of a convolutional :class:`~tightlip.model.ModelSpec`
``arch`` (:mod:`tightlip.arch`: same channels, kernels, strides, padding, dilation, pooling and
dense widths), with biases, and reads flat ``(N, C·H·W)`` or image ``(N, C, H, W)`` inputs
(``Flatten → Unflatten(C, H, W) → …``, as :func:`tightlip.model.build_model`):

* ``plain``: ``nn.Conv2d`` / ``nn.Linear`` + ReLU, trained with cross-entropy.
* ``specnorm``: every convolution and dense layer through
  ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato, Kataoka, Koyama & Yoshida, ICLR
  2018): the weight is divided by a power-iteration estimate of the spectral norm of the kernel
  *reshaped* to ``c_out × (c_in k_h k_w)`` (as in the paper), ReLU. The reshaped norm is
  neither the convolution's operator norm nor a bound on it (a ``k × k`` stride-1 convolution
  can reach ``k`` times it), so nothing here is trusted.
* ``orthogonal``: orthogonal convolutions of ``orthogonium`` (Boissin et al., "An Adaptive
  Orthogonal Convolution Scheme", 2025: ``AdaptiveOrthoConv2d``; BCOP × RKO for strided
  kernels, block convolutions of orthogonal factors for stride 1), torch's orthogonal
  parametrisation (Cayley) for the dense layers, MaxMin on channels / neighbouring units
  (Anil, Lucas & Grosse, ICML 2019). With zero padding the convolutions are orthogonal away from
  the border only; their norm is still ≤ 1 in exact arithmetic.

All three are certified by the *sound trivial bound of their actual weights*: ``to_chain`` reads
every convolution's current kernel (``module.weight`` is the parametrised kernel) as a
:class:`~tightlip.convolution.operators.Conv2dOperator`, whose certified ℓ2 norm
(:mod:`tightlip.convolution`) is a float64 upper bound; neither the "1" of spectral
normalisation nor orthogonality is trusted. Call ``eval()`` before reading the chain, so that
spectral normalisation does not advance its power iteration.

Model kinds ``plain-conv``, ``specnorm-conv`` and ``orthogonal-conv`` with the spec's
``to_dict()`` as arguments rebuild the networks from checkpoints.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrizations

from tightlip.arch import ConvLayer, DenseLayer
from tightlip.layers import make_activation
from tightlip.layers.channels import OnChannels
from tightlip.model import ModelSpec, Step, to_chain
from tightlip.models.registry import MODEL_KINDS
from tightlip.models.standard import VARIANTS, _make_linear

#: the activation of each variant (tightlip names)
ACTIVATIONS = {"plain": "relu", "specnorm": "relu", "orthogonal": "maxmin"}


class BaselineConvNet(nn.Sequential):
    """``Flatten → Unflatten → (conv → σ | pool)… → Flatten → (Linear → σ)… → Linear``."""

    def __init__(self, variant: str, spec: ModelSpec) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        if not spec.convolutional:
            raise ValueError("BaselineConvNet needs a convolutional arch")
        activation = ACTIVATIONS[variant]
        spec = replace(spec, activation=activation, bias=True)
        layers: list[nn.Module] = [nn.Flatten(), nn.Unflatten(1, spec.input_shape)]
        shape = spec.input_shape
        for layer, out_shape in zip(spec.layers, spec.feature_shapes(), strict=False):
            if isinstance(layer, DenseLayer):
                break
            if isinstance(layer, ConvLayer):
                layers.append(_make_conv(variant, shape[0], layer))
                act = OnChannels(make_activation(activation))
                act.chain_activation(out_shape)  # validates the channel count (MaxMin: even)
                layers.append(act)
            elif layer.kind == "avg":
                layers.append(nn.AvgPool2d(layer.kernel, layer.step))
            else:
                layers.append(nn.MaxPool2d(layer.kernel, layer.step))
            shape = out_shape
        layers.append(nn.Flatten())
        fan_in = shape[0] * shape[1] * shape[2]
        for width in (*spec.widths, spec.num_classes):
            layers.append(_make_linear(variant, fan_in, width))
            layers.append(make_activation(activation))
            fan_in = width
        super().__init__(*layers[:-1])  # no activation after the classifier
        self.variant = variant
        self.spec = spec
        self.clear_cache()
        self.register_load_state_dict_post_hook(lambda module, keys: module.clear_cache())

    def description(self) -> dict[str, Any]:
        return {"kind": f"{self.variant}-conv", "arguments": self.spec.to_dict()}

    # --- frozen weights in eval mode ------------------------------------------------------
    def clear_cache(self) -> None:
        self._frozen: tuple[nn.Sequential, ...] = ()

    def train(self, mode: bool = True) -> BaselineConvNet:
        self.clear_cache()
        return super().train(mode)

    def frozen(self) -> nn.Sequential:
        """The network with its current weights as plain ``nn.Conv2d`` / ``nn.Linear`` layers.

        Computed once per eval period (dropped by ``train()`` and by loading a state dict):
        orthogonium's parametrisations advance a power iteration at *every* weight access, even
        in eval mode, so without this the function would change from one forward to the next.
        """
        if not self._frozen:
            with torch.no_grad():
                self._frozen = (nn.Sequential(*(_plain_copy(m) for m in self)).eval(),)
        return self._frozen[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.variant != "orthogonal":  # the others are fixed in eval mode
            return super().forward(x)
        return self.frozen()(x)

    def chain_steps(self) -> list[Step]:
        """The chain of the frozen weights (see :meth:`frozen`)."""
        return list(to_chain(self.frozen()))


def _plain_copy(module: nn.Module) -> nn.Module:
    """``module`` itself, or for a (parametrised) conv / linear layer a plain copy of its
    current weight and bias."""
    if isinstance(module, nn.Linear):
        copy: nn.Module = nn.Linear(
            module.in_features, module.out_features, bias=module.bias is not None
        )
    elif isinstance(module, nn.Conv2d):
        copy = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,  # type: ignore[arg-type]
            stride=module.stride,  # type: ignore[arg-type]
            padding=module.padding,  # type: ignore[arg-type]
            dilation=module.dilation,  # type: ignore[arg-type]
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
    else:
        return module
    copy.weight = nn.Parameter(module.weight.detach().clone(), requires_grad=False)
    if module.bias is not None:
        copy.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
    return copy


def _make_conv(variant: str, in_channels: int, layer: ConvLayer) -> nn.Conv2d:
    geometry = {
        "stride": layer.stride,
        "padding": layer.pad,
        "dilation": layer.dilation,
        "padding_mode": "circular" if layer.circular else "zeros",
    }
    if variant == "orthogonal":
        from orthogonium.layers.conv.AOC import AdaptiveOrthoConv2d

        conv = AdaptiveOrthoConv2d(in_channels, layer.channels, layer.kernel, bias=True, **geometry)
        with torch.no_grad():
            assert conv.bias is not None
            conv.bias.zero_()
        return conv
    conv = nn.Conv2d(in_channels, layer.channels, layer.kernel, **geometry)
    if variant == "specnorm":
        return parametrizations.spectral_norm(conv, n_power_iterations=1)
    return conv


def _register(variant: str) -> None:
    def build(arguments: dict[str, Any]) -> nn.Module:
        return BaselineConvNet(variant, ModelSpec.from_dict(arguments))

    MODEL_KINDS.register(f"{variant}-conv", build)


for _variant in VARIANTS:
    _register(_variant)
