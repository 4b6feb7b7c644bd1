"""One model representation for every part of tightlip.

Users train ordinary ``torch.nn`` modules. Everything that *reasons* about a network (bounds,
verifiers, certification) first turns it into a :class:`LayerChain`, an immutable alternation of
affine maps and activations held in float64 on the CPU:

    f(x) = A_L ∘ σ_{L−1} ∘ A_{L−1} ∘ … ∘ σ_1 ∘ A_1 (x),   A_i(h) = W_i h + b_i.

``to_chain`` accepts ``nn.Sequential`` trees of ``nn.Linear``, ``nn.Flatten``/``nn.Identity``,
tightlip activations and ``nn.ReLU``/``nn.Tanh``, plus any module that implements
``chain_steps() -> list[AffineStep | ActivationStep]`` (how the baselines, e.g. Sandwich layers,
plug in). Anything else raises :class:`UnsupportedLayerError` naming the layer.

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

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from tightlip.errors import MethodNotApplicableError, ModelShapeError, UnsupportedLayerError
from tightlip.layers import Activation, Linear, as_activation, make_activation
from tightlip.norms import (
    NormName,
    certified_nonnegative_norm,
    parse_norm,
    product_rounded_up,
    round_up,
)
from tightlip.operators import Dense, LinearOperator, Product

# --------------------------------------------------------------------------------------------
# Building models from a short description
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A fully connected network: ``input_dim → widths… → num_classes``.

    ``norm`` is the norm the network is trained and certified in; ``bias`` turns bias terms on
    (an ablation: biases are an obstruction to tightness).
    """

    input_dim: int = 784
    widths: tuple[int, ...] = (512, 512)
    num_classes: int = 10
    activation: str = "sincos"
    norm: NormName = "2"
    bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "norm", parse_norm(self.norm))
        make_activation(self.activation)  # validates the name
        if self.input_dim < 1 or self.num_classes < 1 or any(w < 1 for w in self.widths):
            raise ModelShapeError(f"all layer sizes must be positive, got {self}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def build_model(spec: ModelSpec) -> nn.Sequential:
    """``nn.Sequential(Flatten, Linear, σ, Linear, σ, …, Linear)`` from a :class:`ModelSpec`."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = spec.input_dim
    for width in spec.widths:
        activation = make_activation(spec.activation)
        layers += [Linear(fan_in, width, bias=spec.bias), activation]
        fan_in = activation.out_features(width)
    layers.append(Linear(fan_in, spec.num_classes, bias=spec.bias))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# The chain representation
# --------------------------------------------------------------------------------------------


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

    def jacobian_error_bound(self, norm: NormName) -> float:
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
        """
        if self.exact:
            return 0.0
        errors = [s.error_bound(norm) for s in self.affine_steps]
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
        a chain whose final affine step is the identity so that it stays a valid chain.
        """
        if self.depth < 2:
            return None
        head = self.steps[:-1]
        width = self.steps[-1].in_features
        identity = AffineStep(torch.eye(width, dtype=torch.float64), name="identity")
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

_TRANSPARENT = (nn.Flatten, nn.Identity)


def to_chain(model: nn.Module | LayerChain) -> LayerChain:
    """Convert a model to a :class:`LayerChain`, merging consecutive affine maps.

    Raises :class:`UnsupportedLayerError` for layers it cannot reason about (convolutions,
    normalisation, dropout in training mode, unknown activations, ...).
    """
    if isinstance(model, LayerChain):
        return model
    steps = list(_flatten_steps(model, prefix=""))
    merged: list[Step] = []
    for step in steps:
        if isinstance(step, AffineStep) and merged and isinstance(merged[-1], AffineStep):
            merged[-1] = merged[-1].then(step)
        else:
            merged.append(step)
    if not any(isinstance(s, AffineStep) for s in merged):
        raise UnsupportedLayerError("the model has no linear layer")
    return LayerChain(tuple(merged))


def _flatten_steps(module: nn.Module, prefix: str) -> Iterator[Step]:
    name = prefix or type(module).__name__
    if hasattr(module, "chain_steps"):
        yield from module.chain_steps()
        return
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            yield from _flatten_steps(child, f"{prefix}.{child_name}" if prefix else child_name)
        return
    if isinstance(module, _TRANSPARENT):
        return
    if isinstance(module, nn.Dropout) and not module.training:
        return
    if type(module) in (nn.Linear, Linear):
        yield AffineStep(module.weight, module.bias, name=name)
        return
    activation = as_activation(module)
    if activation is not None:
        yield ActivationStep(activation, name=name)
        return
    raise UnsupportedLayerError(
        f"unsupported layer {name!r} of type {type(module).__name__}: tightlip handles "
        "nn.Sequential models of Linear layers and the activations in tightlip.layers "
        "(plus nn.ReLU, nn.Tanh, nn.Flatten), or modules that define chain_steps()"
    )


def state_dict_to_chain(
    state_dict: dict[str, torch.Tensor], activations: Sequence[str] | str = "relu"
) -> LayerChain:
    """Build a chain from a plain ``nn.Sequential`` state dict of Linear layers.

    ``state_dict`` holds ``<i>.weight`` (and optionally ``<i>.bias``) entries, ordered by their
    index; ``activations`` names the activation between consecutive Linear layers (one name for
    all, or one per gap). This is how networks trained elsewhere are brought to tightlip.
    """
    weight_keys = sorted(
        (k for k in state_dict if k.endswith("weight")), key=lambda k: _natural_key(k)
    )
    if not weight_keys:
        raise UnsupportedLayerError("state dict has no '*.weight' entries")
    for key in weight_keys:
        if state_dict[key].ndim != 2:
            raise UnsupportedLayerError(
                f"state dict entry {key!r} has shape {tuple(state_dict[key].shape)}: only Linear "
                "layers (2-D weights) are supported"
            )
    gaps = len(weight_keys) - 1
    names = [activations] * gaps if isinstance(activations, str) else list(activations)
    if len(names) != gaps:
        raise ValueError(f"need {gaps} activation names for {len(weight_keys)} Linear layers")
    steps: list[Step] = []
    for i, key in enumerate(weight_keys):
        bias_key = key[: -len("weight")] + "bias"
        steps.append(AffineStep(state_dict[key], state_dict.get(bias_key), name=key[:-7]))
        if i < gaps:
            steps.append(ActivationStep(make_activation(names[i]), name=f"{names[i]}{i}"))
    return LayerChain(tuple(steps))


def _natural_key(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in key.split(".")]


def check_finite_parameters(model: nn.Module) -> None:
    """Raise ``ValueError`` naming the first parameter that holds NaN or ±inf."""
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise ValueError(f"parameter {name!r} contains NaN or infinite values")
