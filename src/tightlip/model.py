"""One model representation for every part of tightlip.

Users train ordinary ``torch.nn`` modules. Everything that *reasons* about a network (bounds,
verifiers, certification) first turns it into a :class:`LayerChain`, an immutable alternation of
affine maps and activations held in float64 on the CPU:

    f(x) = A_L ∘ σ_{L−1} ∘ A_{L−1} ∘ … ∘ σ_1 ∘ A_1 (x),   A_i(h) = W_i h + b_i.

``to_chain`` accepts ``nn.Sequential`` trees of ``nn.Linear``, ``nn.Flatten``/``nn.Identity``,
tightlip activations and ``nn.ReLU``/``nn.Tanh``, plus any module that implements
``chain_steps() -> list[AffineStep | ActivationStep]`` (how the baselines, e.g. Sandwich layers,
plug in). Convolutional networks add ``nn.Conv2d`` (groups 1, zero or circular padding),
``nn.AvgPool2d``/``nn.AdaptiveAvgPool2d`` (linear operators of
:mod:`tightlip.convolution.operators`), ``nn.MaxPool2d`` (a nonlinear step,
:class:`~tightlip.layers.pooling.MaxPool2dActivation`), ``nn.Unflatten`` (which gives the
shape ``(C, H, W)`` of the maps, tracked through the layers) and activations wrapped in
:class:`~tightlip.layers.channels.OnChannels`; the chain still holds flat rows, the maps
flattened in C order. Anything else raises :class:`UnsupportedLayerError` naming the layer.

The linear part of each affine step is a :class:`~tightlip.operators.LinearOperator`
(:class:`~tightlip.operators.Dense` for an ``nn.Linear``). Consecutive affine maps are merged
into one step, ``A₂(A₁h + b₁) + b₂ = (A₂A₁) h + (A₂b₁ + b₂)``, whose operator is the
:class:`~tightlip.operators.Product` of the two: it is *evaluated* through its factors, and its
dense matrix ``fl(W₂W₁)`` comes with a certified entrywise error bound (the float64 product can
be far from the true one under cancellation, even 0 when it is not). A merged step is therefore
not ``exact``: verifiers that read its matrix must add :meth:`LayerChain.jacobian_error_bound`
or refuse (the bounds runner does this per method), and the trivial bound uses the operator's
certified norm ``min(‖W₂‖‖W₁‖, ‖fl(W₂W₁)‖ + ‖E‖)``, which never loosens the bound by more than
the rounding error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from tightlip.arch import (
    ConvLayer,
    DenseLayer,
    Layer,
    dense_widths,
    format_arch,
    infer_image_shape,
    is_convolutional,
    parse_arch,
)
from tightlip.convolution.geometry import conv_axes
from tightlip.convolution.modules import avg_pool_operator, conv_operator
from tightlip.errors import MethodNotApplicableError, ModelShapeError, UnsupportedLayerError
from tightlip.layers import Activation, Linear, as_activation, make_activation
from tightlip.layers.channels import OnChannels
from tightlip.layers.conv import Conv2d
from tightlip.layers.pooling import AvgPool2d, MaxPool2d, max_pool_activation, pool_axes
from tightlip.norms import (
    NormName,
    certified_nonnegative_norm,
    parse_norm,
    product_rounded_up,
    round_up,
)
from tightlip.operators import Dense, Identity, LinearOperator, Product

# --------------------------------------------------------------------------------------------
# Building models from a short description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A network described in a few fields: an MLP by ``widths``, any network by ``arch``.

    ``widths`` gives the hidden widths of an MLP ``input_dim → widths… → num_classes``;
    ``arch`` describes convolutional networks in one string (:mod:`tightlip.arch`, e.g.
    ``"c32k3,c32k4s2,c64k3,c64k4s2,f512,f512"``), read on inputs of ``input_shape``
    ``(C, H, W)`` (inferred from ``input_dim`` when empty: 784 → ``(1, 28, 28)``, 3072 →
    ``(3, 32, 32)``). Both map to one list of layer descriptions, :attr:`layers`: an ``arch``
    of dense layers only *is* ``widths`` (it is stored as such), and with a convolutional
    ``arch``, ``widths`` holds its dense widths. An MLP keeps no ``input_shape`` (only its flat
    size matters), so its description is what it always was.

    ``norm`` is the norm the network is trained and certified in; ``bias`` turns bias terms on
    (an ablation: biases are an obstruction to tightness).
    """

    input_dim: int = 784
    widths: tuple[int, ...] = (512, 512)
    num_classes: int = 10
    activation: str = "sincos"
    norm: NormName = "2"
    bias: bool = False
    arch: str = ""
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "norm", parse_norm(self.norm))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        make_activation(self.activation)  # validates the name
        if self.input_dim < 1 or self.num_classes < 1 or any(w < 1 for w in self.widths):
            raise ModelShapeError(f"all layer sizes must be positive, got {self}")
        if self.input_shape and math.prod(self.input_shape) != self.input_dim:
            raise ModelShapeError(
                f"input_shape {self.input_shape} has {math.prod(self.input_shape)} entries, "
                f"but input_dim is {self.input_dim}"
            )
        layers = parse_arch(self.arch) if self.arch.strip() else None
        if layers is not None:
            object.__setattr__(self, "widths", dense_widths(layers))
        if layers is None or not is_convolutional(layers):
            object.__setattr__(self, "arch", "")
            object.__setattr__(self, "input_shape", ())
            return
        object.__setattr__(self, "arch", format_arch(layers))
        if not self.input_shape:
            object.__setattr__(self, "input_shape", infer_image_shape(self.input_dim))
        if len(self.input_shape) != 3:
            raise ModelShapeError(
                f"a convolutional network needs input_shape (C, H, W), got {self.input_shape}"
            )
        self.feature_shapes()  # validates every layer's geometry

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The layer descriptions (:mod:`tightlip.arch`), the classifier not included."""
        return parse_arch(self.arch) if self.arch else tuple(DenseLayer(w) for w in self.widths)

    @property
    def convolutional(self) -> bool:
        return bool(self.arch)

    def require_mlp(self, method: str) -> None:
        """Refuse a convolutional ``arch`` for a method that builds MLPs only."""
        if self.convolutional:
            raise MethodNotApplicableError(
                f"{method} builds MLPs only; the convolutional architecture {self.arch!r} "
                "needs the tightlip method"
            )

    def feature_shapes(self) -> tuple[tuple[int, ...], ...]:
        """The shape after each convolution (with its activation) or pooling, in order."""
        shape = self.input_shape
        expansion = make_activation(self.activation).expansion
        shapes = []
        for layer in self.layers:
            if isinstance(layer, DenseLayer):
                break
            if isinstance(layer, ConvLayer):
                out = _conv_output(layer, shape)
                shape = (expansion * layer.channels, *out)
            else:
                axes = pool_axes(shape[1:], layer.kernel, layer.step, 0)
                shape = (shape[0], axes[0].output, axes[1].output)
            shapes.append(shape)
        return tuple(shapes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["input_shape"] = list(self.input_shape)
        for key in ("arch", "input_shape"):  # an MLP's description stays what it always was
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def _conv_output(layer: ConvLayer, shape: tuple[int, ...]) -> tuple[int, int]:
    axes = conv_axes(
        (shape[1], shape[2]),
        (layer.kernel, layer.kernel),
        (layer.stride, layer.stride),
        (layer.dilation, layer.dilation),
        ((layer.pad, layer.pad), (layer.pad, layer.pad)),
        layer.circular,
    )
    return (axes[0].output, axes[1].output)


def build_model(spec: ModelSpec) -> nn.Sequential:
    """``nn.Sequential`` from a :class:`ModelSpec`.

    An MLP is ``(Flatten, Linear, σ, Linear, σ, …, Linear)``; a convolutional network is
    ``(Flatten, Unflatten(C, H, W), Conv2d, OnChannels(σ), [pooling], …, Flatten, Linear, σ, …,
    Linear)``: it reads flat or image-shaped inputs, and ``to_chain`` reads its input shape from
    the ``Unflatten``.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = spec.input_dim
    if spec.convolutional:
        layers.append(nn.Unflatten(1, spec.input_shape))
        fan_in = _build_feature_layers(spec, layers)
        layers.append(nn.Flatten())
    for width in spec.widths:
        activation = make_activation(spec.activation)
        layers += [Linear(fan_in, width, bias=spec.bias), activation]
        fan_in = activation.out_features(width)
    layers.append(Linear(fan_in, spec.num_classes, bias=spec.bias))
    return nn.Sequential(*layers)


def _build_feature_layers(spec: ModelSpec, layers: list[nn.Module]) -> int:
    """Append the convolutions and pooling of ``spec``; returns the flat size they produce."""
    shape = spec.input_shape
    for layer, out_shape in zip(spec.layers, spec.feature_shapes(), strict=False):
        if isinstance(layer, ConvLayer):
            layers.append(
                Conv2d(
                    shape[0],
                    layer.channels,
                    layer.kernel,
                    stride=layer.stride,
                    padding=layer.pad,
                    dilation=layer.dilation,
                    bias=spec.bias,
                    padding_mode="circular" if layer.circular else "zeros",
                )
            )
            activation = OnChannels(make_activation(spec.activation))
            activation.chain_activation((layer.channels, *out_shape[1:]))  # validates channels
            layers.append(activation)
        elif layer.kind == "avg":
            layers.append(AvgPool2d(layer.kernel, layer.step))
        else:
            layers.append(MaxPool2d(layer.kernel, layer.step))
        shape = out_shape
    return math.prod(shape)


# --------------------------------------------------------------------------------------------
# The chain representation
# --------------------------------------------------------------------------------------------

#: verifiers that read dense matrices (ECLipsE, LipSDP, Syed–Hu, exact regions, MILP) lower a
#: layer to its matrix only up to this many entries (32 MiB in float64): a convolution on a few
#: hundred pixels, not 4C3F's 25 088 × 784 first layer
VERIFIER_DENSE_ENTRIES = 2**22


@dataclass(frozen=True, eq=False)
class AffineStep:
    """``h ↦ A h + b``: a :class:`~tightlip.operators.LinearOperator` ``A`` and a float64 bias.

    ``operator`` may be given as a 2-D tensor (the weight ``W`` of shape ``(out, in)``), which
    becomes a :class:`~tightlip.operators.Dense`. ``weight`` is the dense matrix; it is exact
    unless the step is a merge of several linear layers (``exact`` is then ``False`` and
    :meth:`weight_error` bounds its rounding error entrywise).
    """

    operator: LinearOperator
    bias: torch.Tensor | None = None
    name: str = "linear"

    def __post_init__(self) -> None:
        operator = self.operator
        if isinstance(operator, torch.Tensor):
            operator = Dense(operator, name=self.name)
        elif not isinstance(operator, LinearOperator):
            raise TypeError(f"{self.name}: expected a weight tensor or a LinearOperator")
        object.__setattr__(self, "operator", operator)
        if self.bias is not None:
            b = self.bias.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
            if b.shape[0] != operator.out_features:
                raise ModelShapeError(
                    f"{self.name}: bias has {b.shape[0]} entries for {operator.out_features} rows"
                )
            if not torch.isfinite(b).all():
                raise ValueError(f"{self.name}: bias contains NaN or infinite entries")
            object.__setattr__(self, "bias", b)

    @property
    def weight(self) -> torch.Tensor:
        """The dense matrix ``(out, in)`` in float64 (rounded when not :attr:`exact`)."""
        return self.operator.dense()

    @property
    def exact(self) -> bool:
        """Whether :attr:`weight` is exactly the step's linear map."""
        return self.operator.exact_dense

    @property
    def in_features(self) -> int:
        return self.operator.in_features

    @property
    def out_features(self) -> int:
        return self.operator.out_features

    @property
    def has_bias(self) -> bool:
        return self.bias is not None and bool(self.bias.abs().max() > 0)

    def certified_norm(self, norm: NormName) -> float:
        """A float ``≥ ‖A‖_{p→p}`` (the operator's certified norm)."""
        return self.operator.certified_norm(norm)

    def dense_weight(
        self, method: str, max_entries: int | None = VERIFIER_DENSE_ENTRIES
    ) -> torch.Tensor:
        """:attr:`weight` for a verifier that reads dense matrices, lowered only up to
        ``max_entries`` entries (:data:`VERIFIER_DENSE_ENTRIES`); above it
        :class:`MethodNotApplicableError` says the layer is too large for ``method``."""
        try:
            return self.operator.dense(max_entries)
        except MethodNotApplicableError:
            size = f"{max(self.in_features, self.out_features):,}".replace(",", " ")
            raise MethodNotApplicableError(
                f"{method} is not applicable: {self.name} is a {size}-dimensional layer (its "
                f"{self.out_features} × {self.in_features} matrix has more than {max_entries} "
                "entries to lower); the trivial bound reads it as an operator"
            ) from None

    def weight_error(self) -> torch.Tensor:
        """A non-negative matrix ``E`` with ``|weight − A| ≤ E`` entrywise (zeros if exact)."""
        return self.operator.dense_error()

    def error_bound(self, norm: NormName) -> float:
        """A float ``≥ ‖weight − A‖_{p→p}`` (0 when :attr:`exact`)."""
        return 0.0 if self.exact else certified_nonnegative_norm(self.weight_error(), norm)

    def exact_weight(self, method: str) -> torch.Tensor:
        """:attr:`weight`, or ``MethodNotApplicableError`` if it is only a rounded product."""
        if not self.exact:
            raise MethodNotApplicableError(
                f"{method} needs the exact matrix of every layer, but {self.name} is a merge of "
                f"consecutive linear layers whose float64 product is rounded (entrywise error up "
                f"to {float(self.weight_error().max()):.3g}); use a method that accounts for it "
                "(trivial, eclipse-fast, eclipse, syed-hu, lipsdp, gradient, sampled) or keep an "
                "activation between the layers"
            )
        return self.weight

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        out = self.operator.apply(h)
        return out if self.bias is None else out + self.bias.to(dtype=h.dtype, device=h.device)

    def then(self, other: AffineStep) -> AffineStep:
        """The composition ``other ∘ self`` as one step (a :class:`Product` operator)."""
        bias = None
        if self.bias is not None:
            bias = other.operator.apply(self.bias)
        if other.bias is not None:
            bias = other.bias if bias is None else bias + other.bias
        operator = Product((self.operator, other.operator), name=f"{self.name}+{other.name}")
        return AffineStep(operator, bias, name=f"{self.name}+{other.name}")


@dataclass(frozen=True, eq=False)
class ActivationStep:
    """An activation (a :class:`tightlip.layers.Activation`) between two affine steps."""

    activation: Activation
    name: str = "activation"

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return self.activation(h)


Step = AffineStep | ActivationStep


@dataclass(frozen=True, eq=False)
class LayerChain:
    """A validated alternation ``A_1, σ_1, A_2, …, σ_{L−1}, A_L`` (first and last are affine)."""

    steps: tuple[Step, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        if (
            not steps
            or not isinstance(steps[0], AffineStep)
            or not isinstance(steps[-1], AffineStep)
        ):
            raise ModelShapeError("a network must start and end with a linear layer")
        width = steps[0].in_features
        previous_was_affine = False
        for step in steps:
            if isinstance(step, AffineStep):
                if previous_was_affine:
                    raise ModelShapeError("consecutive affine steps must be merged (use to_chain)")
                if step.in_features != width:
                    raise ModelShapeError(
                        f"{step.name} expects {step.in_features} inputs but receives {width}"
                    )
                width = step.out_features
                previous_was_affine = True
            else:
                if not previous_was_affine:
                    raise ModelShapeError(f"two activations in a row at {step.name}")
                width = step.activation.out_features(width)
                previous_was_affine = False
        object.__setattr__(self, "steps", steps)

    # --- structure ---------------------------------------------------------------------------
    @property
    def affine_steps(self) -> tuple[AffineStep, ...]:
        return tuple(s for s in self.steps if isinstance(s, AffineStep))

    @property
    def activation_steps(self) -> tuple[ActivationStep, ...]:
        return tuple(s for s in self.steps if isinstance(s, ActivationStep))

    @property
    def weights(self) -> tuple[torch.Tensor, ...]:
        """The dense matrices (rounded for merged steps; see :attr:`exact`)."""
        return tuple(s.weight for s in self.affine_steps)

    @property
    def exact(self) -> bool:
        """Whether every affine step's dense matrix is exact (no rounded merged product)."""
        return all(s.exact for s in self.affine_steps)

    def jacobian_error_bound(
        self, norm: NormName, through_factors: Callable[[AffineStep], bool] | None = None
    ) -> float:
        """A float ``≥ ‖J(x) − Ĵ(x)‖_{p→p}`` for every ``x``; 0 when the chain is :attr:`exact`.

        ``J(x) = W_L D_{L−1} W_{L−1} ⋯ D_1 W_1`` is the Jacobian of the network, with ``D_j``
        the activation Jacobians (``‖D_j‖_p ≤ Lip_p(σ_j)``), and ``Ĵ(x)`` the same product with
        the dense matrices ``Ŵ_i = weight`` in place of ``W_i`` and the *same* ``D_j``.
        Telescoping, ``J − Ĵ = Σ_k Ŵ_L D ⋯ (W_k − Ŵ_k) ⋯ D W_1``, so with ``e_i ≥ ‖W_i − Ŵ_i‖``
        and ``c_i = ‖W_i‖_cert + e_i ≥ max(‖W_i‖, ‖Ŵ_i‖)``

            ‖J − Ĵ‖ ≤ Σ_k e_k ∏_{i≠k} c_i ∏_j Lip_p(σ_j).

        A verifier whose bound holds for every ``Ŵ_L Λ ⋯ Λ Ŵ_1`` with ``Λ`` in its class of
        activation Jacobians (the trivial bound, the slope-restricted SDP methods) stays sound
        for the true network when this is added to its value.

        ``through_factors(step)``: the steps that the caller applies through their exact factors
        (a matrix-free merged step), so that ``Ŵ_k = W_k`` and ``e_k = 0`` for them (their
        dense product is never formed).
        """
        if self.exact:
            return 0.0
        errors = [
            0.0 if through_factors is not None and through_factors(s) else s.error_bound(norm)
            for s in self.affine_steps
        ]
        steps = zip(self.affine_steps, errors, strict=True)
        sizes = [round_up(s.certified_norm(norm) + e) for s, e in steps]
        lipschitz = product_rounded_up(s.activation.lipschitz(norm) for s in self.activation_steps)
        total = 0.0
        for k, error in enumerate(errors):
            if error > 0:
                others = product_rounded_up(c for i, c in enumerate(sizes) if i != k)
                total = round_up(total + round_up(error * others))
        return round_up(total * lipschitz)

    @property
    def input_dim(self) -> int:
        return self.steps[0].in_features

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input: the first operator's ``input_shape`` (``(C, H, W)`` for a
        convolutional network), else ``(input_dim,)``."""
        shape = self.steps[0].operator.input_shape
        return tuple(shape) if shape is not None else (self.input_dim,)

    @property
    def output_dim(self) -> int:
        return self.steps[-1].out_features

    @property
    def depth(self) -> int:
        """Number of affine layers."""
        return len(self.affine_steps)

    @property
    def has_bias(self) -> bool:
        return any(s.has_bias for s in self.affine_steps)

    @property
    def piecewise_linear(self) -> bool:
        return all(s.activation.piecewise_linear for s in self.activation_steps)

    def backbone(self) -> LayerChain | None:
        """Everything but the last affine step followed by an identity read-out, or ``None``.

        Used by the last-layer-exact certificate: f = W_L ∘ g, with g the backbone. Returned as
        a chain whose final affine step is the identity so that it stays a valid chain. The
        identity is matrix-free (:class:`~tightlip.operators.Identity`): a backbone that ends in
        a convolution has tens of thousands of features, and ``torch.eye`` of 25 088 is 5 GB.
        """
        if self.depth < 2:
            return None
        head = self.steps[:-1]
        width = self.steps[-1].in_features
        identity = AffineStep(Identity(width), name="identity")
        return LayerChain(head + (identity,), self.metadata)

    # --- evaluation --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the network on a batch ``(B, input_dim)`` (any float dtype, autograd-able)."""
        x = self.check_input(x)
        for step in self.steps:
            x = step(x)
        return x

    __call__ = forward

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim >= 2 and x.shape[-1] != self.input_dim and x[0].numel() == self.input_dim:
            x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.input_dim:
            raise ModelShapeError(
                f"input has shape {tuple(x.shape)} but the network expects {self.input_dim} features"
            )
        return x

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


# --------------------------------------------------------------------------------------------
# torch.nn.Module → LayerChain
# --------------------------------------------------------------------------------------------


def to_chain(
    model: nn.Module | LayerChain, input_shape: tuple[int, ...] | None = None
) -> LayerChain:
    """Convert a model to a :class:`LayerChain`, merging consecutive affine maps.

    Convolutions and pooling need the shape ``(C, H, W)`` of the maps they receive: it is
    read from an ``nn.Unflatten`` in the model (as :func:`build_model` writes) or given as
    ``input_shape``, and tracked through the layers. Raises :class:`UnsupportedLayerError` for
    layers it cannot reason about (normalisation, dropout in training mode, grouped
    convolutions, unknown activations, ...).
    """
    if isinstance(model, LayerChain):
        return model
    converter = _Converter(None if input_shape is None else tuple(input_shape))
    converter.visit(model, prefix="")
    if not any(isinstance(s, AffineStep) for s in converter.steps):
        raise UnsupportedLayerError("the model has no linear layer")
    return LayerChain(tuple(_alternate(converter.steps, converter.first_width)))


def _alternate(steps: Sequence[Step], first_width: int | None) -> list[Step]:
    """Merge consecutive affine steps (a :class:`Product`) and put an exact identity between
    consecutive nonlinear steps (an activation followed by max pooling) and before a leading
    one, so that the chain alternates."""
    merged: list[Step] = []
    width = first_width
    for step in steps:
        if isinstance(step, AffineStep) and merged and isinstance(merged[-1], AffineStep):
            merged[-1] = merged[-1].then(step)
        else:
            if isinstance(step, ActivationStep) and (not merged or not _is_affine(merged[-1])):
                if width is None:
                    raise ModelShapeError(f"{step.name}: the model must start with a linear layer")
                merged.append(AffineStep(Identity(width), name=f"{step.name}.identity"))
            merged.append(step)
        if isinstance(step, AffineStep):
            width = step.out_features
        elif width is not None:
            width = step.activation.out_features(width)
    return merged


def _is_affine(step: Step) -> bool:
    return isinstance(step, AffineStep)


class _Converter:
    """Walks a module tree, collecting steps and tracking the shape of what flows through.

    ``shape`` is ``(C, H, W)`` for feature maps, ``(n,)`` for flat rows, ``None`` when unknown.
    """

    def __init__(self, input_shape: tuple[int, ...] | None) -> None:
        self.shape = input_shape
        self.first_width = None if input_shape is None else math.prod(input_shape)
        self.steps: list[Step] = []

    @property
    def _maps(self) -> bool:
        return self.shape is not None and len(self.shape) == 3

    def _add(self, step: Step, shape: tuple[int, ...] | None) -> None:
        if self.first_width is None and not self.steps and isinstance(step, AffineStep):
            self.first_width = step.in_features
        self.steps.append(step)
        self.shape = shape

    def visit(self, module: nn.Module, prefix: str) -> None:
        name = prefix or type(module).__name__
        if hasattr(module, "chain_steps"):
            for step in module.chain_steps():
                self._add(step, None)
            self.shape = _flat_width_after(self.steps)
            return
        if isinstance(module, nn.Sequential):
            for child_name, child in module.named_children():
                self.visit(child, f"{prefix}.{child_name}" if prefix else child_name)
            return
        if isinstance(module, nn.Identity) or (
            isinstance(module, nn.Dropout) and not module.training
        ):
            return
        if isinstance(module, nn.Flatten):
            self.shape = None if self.shape is None else (math.prod(self.shape),)
            return
        if isinstance(module, nn.Unflatten):
            self._unflatten(module, name)
            return
        if type(module) in (nn.Linear, Linear):
            if self._maps:
                raise UnsupportedLayerError(
                    f"{name}: a Linear layer applied to {self.shape} feature maps acts on their "
                    "last axis; put nn.Flatten() before it"
                )
            self._add(AffineStep(module.weight, module.bias, name=name), (module.out_features,))
            return
        if isinstance(module, nn.Conv2d | nn.AvgPool2d | nn.AdaptiveAvgPool2d | nn.MaxPool2d):
            self._feature_map_layer(module, name)
            return
        if isinstance(module, OnChannels):
            shape = self._require_maps(module, name)
            activation = module.chain_activation(shape)
            out = (module.out_channels(shape[0]), shape[1], shape[2])
            self._add(ActivationStep(activation, name=name), out)
            return
        activation = as_activation(module)
        if activation is not None:
            self._activation(activation, name)
            return
        raise UnsupportedLayerError(
            f"unsupported layer {name!r} of type {type(module).__name__}: tightlip handles "
            "nn.Sequential models of Linear and Conv2d layers, average and max pooling, and "
            "the activations in tightlip.layers (plus nn.ReLU, nn.Tanh, nn.Flatten, "
            "nn.Unflatten), or modules that define chain_steps()"
        )

    def _unflatten(self, module: nn.Unflatten, name: str) -> None:
        sizes = tuple(int(s) for s in module.unflattened_size)
        if module.dim not in (1, -1) or (self.shape is not None and len(self.shape) != 1):
            raise UnsupportedLayerError(
                f"{name}: tightlip reads nn.Unflatten(1, (C, H, W)) applied to flat rows only"
            )
        if self.shape is not None and math.prod(sizes) != self.shape[0]:
            raise ModelShapeError(f"{name}: cannot unflatten {self.shape[0]} features to {sizes}")
        if self.first_width is None and not self.steps:
            self.first_width = math.prod(sizes)
        self.shape = sizes

    def _require_maps(self, module: nn.Module, name: str) -> tuple[int, int, int]:
        if not self._maps:
            raise UnsupportedLayerError(
                f"{name}: {type(module).__name__} needs the (C, H, W) shape of its input; start "
                "the model with nn.Unflatten(1, (C, H, W)) or pass input_shape to to_chain"
            )
        return self.shape  # type: ignore[return-value]

    def _feature_map_layer(self, module: nn.Module, name: str) -> None:
        shape = self._require_maps(module, name)
        if isinstance(module, nn.Conv2d):
            operator, bias = conv_operator(module, shape, name)
            self._add(AffineStep(operator, bias, name=name), operator.output_shape)
        elif isinstance(module, nn.MaxPool2d):
            activation = max_pool_activation(module, shape, name)
            self._add(ActivationStep(activation, name=name), activation.output_shape)
        else:
            operator = avg_pool_operator(module, shape, name)  # type: ignore[arg-type]
            self._add(AffineStep(operator, name=name), operator.output_shape)

    def _activation(self, activation: Activation, name: str) -> None:
        if self._maps and activation.expansion != 1:
            raise UnsupportedLayerError(
                f"{name}: {type(activation).__name__} on {self.shape} feature maps concatenates "
                f"along their last axis; wrap it as tightlip.layers.OnChannels("
                f"{type(activation).__name__}()) to act on channels"
            )
        shape = self.shape
        if shape is not None and len(shape) == 1:
            shape = (activation.out_features(shape[0]),)
        self._add(ActivationStep(activation, name=name), shape)


def _flat_width_after(steps: Sequence[Step]) -> tuple[int, ...] | None:
    """The flat width after ``steps`` (``None`` when it cannot be told)."""
    width: int | None = None
    for step in steps:
        if isinstance(step, AffineStep):
            width = step.out_features
        elif width is not None:
            width = step.activation.out_features(width)
    return None if width is None else (width,)


def check_finite_parameters(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first parameter that holds NaN or ±inf."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise ValueError(f"parameter {name!r} contains NaN or infinite values")
