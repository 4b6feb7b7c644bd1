"""A state dict together with its architecture: the layer order is written, never guessed.

A state dict maps names to tensors; it does not say which layer follows which, nor what
activations sit between them (sorting its keys puts ``fc10`` before ``fc2``; an activation is
invisible). So tightlip reads a state dict only with an architecture, in one of two forms:

* the short written form, comma-separated layers in order, e.g. ``flatten,linear,relu,linear``
  or ``fc1=linear,relu,fc2=linear,leaky-relu(0.1),out=linear``. A layer's tensors are
  ``NAME.weight`` / ``NAME.bias`` where ``NAME`` is the name before ``=``, else its position
  (counting from 0, as ``nn.Sequential`` numbers its children). Kinds: ``linear`` (weight, bias
  optional), ``batchnorm`` / ``batchnorm(eps)`` (weight, bias, running_mean, running_var,
  inference form, folded into the neighbouring affine map), ``flatten``, ``identity``,
  ``dropout`` (inference: the identity), and every registered activation
  (``relu``, ``leaky-relu(a)``, ``sigmoid``, ``tanh``, ``abs``, ``sincos``, …);
* a tightlip model spec JSON (``{"widths": [512, 512], "activation": "sincos", …}``) or a
  checkpoint's model description (``{"kind": "mlp", "arguments": {…}}``), inline or as a file.

Every key of the state dict must be used and every tensor the architecture needs must be there:
otherwise the error names the keys. Every shape must fit (the error names the layer and both
shapes). The result is checked against a float64 torch module built from the same tensors
(:func:`~tightlip.interop.check.check_torch`).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tightlip.errors import BadArgumentError, CheckpointError, ModelShapeError, UnknownNameError
from tightlip.interop.affine import PendingAffine, batchnorm_scale
from tightlip.interop.builder import ChainBuilder
from tightlip.interop.check import check_torch
from tightlip.interop.imported import ImportedModel
from tightlip.layers import ACTIVATIONS, Activation, LeakyReLU
from tightlip.model import ModelSpec, build_model, to_chain
from tightlip.models import build_from_description
from tightlip.operators import Dense

#: layer kinds without tensors
_PLAIN = ("flatten", "identity", "dropout")
_ITEM = re.compile(
    r"^(?:(?P<name>[A-Za-z0-9_.]+)\s*=\s*)?(?P<kind>[A-Za-z][A-Za-z0-9_-]*)\s*"
    r"(?:\(\s*(?P<args>[^()]*?)\s*\))?$"
)


@dataclass(frozen=True)
class LayerItem:
    """One layer of the written form: its key prefix, its kind and its numeric arguments."""

    name: str
    kind: str
    args: tuple[float, ...] = ()

    def keys(self) -> tuple[tuple[str, bool], ...]:
        """The tensors this layer reads, each with whether it is required."""
        if self.kind == "linear":
            return ((f"{self.name}.weight", True), (f"{self.name}.bias", False))
        if self.kind == "batchnorm":
            required = ("weight", "bias", "running_mean", "running_var")
            return (
                *((f"{self.name}.{k}", True) for k in required),
                (f"{self.name}.num_batches_tracked", False),
            )
        return ()


def _kind(text: str) -> str:
    kind = text.strip().lower().replace("_", "-")
    if kind in ("linear", "batchnorm", *_PLAIN):
        return kind
    try:
        return ACTIVATIONS.resolve(kind)
    except UnknownNameError:
        choices = ", ".join(("linear", "batchnorm", *_PLAIN, *ACTIVATIONS.names()))
        raise BadArgumentError(
            f"unknown layer kind {text!r} in the architecture; choose from {choices}"
        ) from None


def parse_architecture(text: str) -> list[LayerItem]:
    """The layers of the short written form (module docstring), in order."""
    items: list[LayerItem] = []
    parts = [p.strip() for p in text.split(",")]
    if not any(parts):
        raise BadArgumentError("the architecture is empty")
    for position, part in enumerate(parts):
        match = _ITEM.match(part)
        if match is None:
            raise BadArgumentError(
                f"cannot read layer {position} of the architecture, {part!r}: write KIND, "
                "NAME=KIND or KIND(ARGUMENT), e.g. fc1=linear, relu, leaky-relu(0.1)"
            )
        kind = _kind(match["kind"])
        try:
            args = tuple(float(a) for a in match["args"].split(";")) if match["args"] else ()
        except ValueError:
            raise BadArgumentError(f"layer {part!r}: arguments must be numbers") from None
        allowed = 1 if kind in ("leaky-relu", "batchnorm") else 0
        if len(args) > allowed:
            raise BadArgumentError(f"layer {part!r} takes {allowed or 'no'} argument(s)")
        items.append(LayerItem(match["name"] or str(position), kind, args))
    names = [item.name for item in items]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadArgumentError(f"layer names must differ; {', '.join(repeated)} appear twice")
    return items


def _activation(item: LayerItem) -> Activation:
    if item.kind == "leaky-relu" and item.args:
        return LeakyReLU(item.args[0])
    return ACTIVATIONS.get(item.kind)()


def _key_mismatch(
    source: str, architecture: str, missing: list[str], unused: list[str]
) -> CheckpointError:
    parts = []
    if missing:
        parts.append(f"missing keys {', '.join(missing)}")
    if unused:
        parts.append(f"unused keys {', '.join(unused)}")
    hint = (
        "; unnamed layers read the keys of their position (0, 1, 2, … as nn.Sequential numbers "
        "its children, so a leading nn.Flatten is 'flatten,'), named ones NAME.weight "
        "(fc1=linear)"
        if missing
        else ""
    )
    return CheckpointError(
        f"{source} does not fit the architecture {architecture!r}: {'; '.join(parts)}{hint}"
    )


def _check_keys(
    items: list[LayerItem], state: Mapping[str, torch.Tensor], source: str, text: str
) -> None:
    wanted = {key: required for item in items for key, required in item.keys()}
    missing = [k for k, required in wanted.items() if required and k not in state]
    unused = sorted(k for k in state if k not in wanted)
    if missing or unused:
        raise _key_mismatch(source, text, missing, unused)


class _Layers:
    """The chain and the reference torch module, built layer by layer from the tensors."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.builder: ChainBuilder | None = None
        self.pending: PendingAffine | None = None
        self.width: int | None = None
        self.modules: list[nn.Module] = []

    def _begin(self, width: int) -> PendingAffine:
        if self.pending is None:
            self.builder = ChainBuilder(width)
            self.pending = self.builder.start()
            self.width = width
        return self.pending

    def linear(self, item: LayerItem, state: Mapping[str, torch.Tensor]) -> None:
        weight = state[f"{item.name}.weight"].detach().to(torch.float64)
        bias = state.get(f"{item.name}.bias")
        if weight.ndim != 2:
            raise ModelShapeError(
                f"{self.source}: {item.name}.weight has shape {tuple(weight.shape)}; a linear "
                "layer's weight is 2-D (out, in)"
            )
        out_features, in_features = weight.shape
        pending = self._begin(in_features)
        if self.width != in_features:
            raise ModelShapeError(
                f"{self.source}: layer {item.name} ({item.name}.weight is {out_features}×"
                f"{in_features}) expects {in_features} inputs but the layer before it gives "
                f"{self.width}"
            )
        pending = pending.then(Dense(weight, name=item.name), item.name)
        module = nn.Linear(in_features, out_features, bias=bias is not None)
        with torch.no_grad():
            module.weight.copy_(weight)
            if bias is not None:
                if bias.shape != (out_features,):
                    raise ModelShapeError(
                        f"{self.source}: {item.name}.bias has shape {tuple(bias.shape)} for "
                        f"{out_features} outputs"
                    )
                module.bias.copy_(bias)
                pending = pending.shifted(bias.detach().to(torch.float64), item.name, label=False)
        self.pending, self.width = pending, out_features
        self.modules.append(module)

    def batchnorm(self, item: LayerItem, state: Mapping[str, torch.Tensor]) -> None:
        tensors = {k: state[f"{item.name}.{k}"].detach().to(torch.float64) for k in
                   ("weight", "bias", "running_mean", "running_var")}
        channels = tensors["running_mean"].numel()
        pending = self._begin(channels)
        for key, tensor in tensors.items():
            if tensor.shape != (self.width,):
                raise ModelShapeError(
                    f"{self.source}: {item.name}.{key} has shape {tuple(tensor.shape)} after a "
                    f"layer of width {self.width}"
                )
        epsilon = item.args[0] if item.args else 1e-5
        scale = batchnorm_scale(tensors["weight"], tensors["running_var"], epsilon, item.name)
        shift = tensors["bias"] - scale.values * tensors["running_mean"]
        self.pending = pending.then(scale, item.name).shifted(shift, item.name, label=False)
        module = nn.BatchNorm1d(channels, eps=epsilon)
        with torch.no_grad():
            for key, tensor in tensors.items():
                getattr(module, key).copy_(tensor)
        self.modules.append(module.eval())

    def activation(self, item: LayerItem) -> None:
        if self.pending is None or self.builder is None or self.width is None:
            raise BadArgumentError(
                f"the architecture starts with {item.kind}: it must begin with a linear or "
                "batchnorm layer, whose tensors give the input width"
            )
        activation = _activation(item)
        self.pending = self.builder.activate(
            self.pending, self.builder.frontier, activation, item.name
        )
        self.width = activation.out_features(self.width)
        self.modules.append(copy.deepcopy(activation))

    def plain(self, item: LayerItem) -> None:
        self.modules.append(nn.Flatten() if item.kind == "flatten" else nn.Identity())


def _from_items(
    state: Mapping[str, torch.Tensor],
    text: str,
    source: str,
    input_shape: tuple[int, ...] | None,
    check: bool,
) -> ImportedModel:
    items = parse_architecture(text)
    _check_keys(items, state, source, text)
    layers = _Layers(source)
    for item in items:
        if item.kind == "linear":
            layers.linear(item, state)
        elif item.kind == "batchnorm":
            layers.batchnorm(item, state)
        elif item.kind in _PLAIN:
            layers.plain(item)
        else:
            layers.activation(item)
    if layers.builder is None or layers.pending is None:
        raise BadArgumentError(f"the architecture {text!r} has no linear layer")
    metadata = {"source": source, "format": "state-dict", "architecture": text}
    chain = layers.builder.finish(
        layers.pending, layers.builder.frontier, "the last layer", metadata
    )
    shape = tuple(input_shape) if input_shape is not None else (chain.input_dim,)
    imported = ImportedModel(chain, input_shape=shape, source=source, kind="state-dict")
    if check:
        reference = nn.Sequential(*layers.modules).eval()
        imported.notes = (check_torch(reference, chain, shape, source).note(),)
    return imported


def _spec_module(description: dict[str, Any]) -> nn.Module:
    if "kind" in description:
        return build_from_description(description)
    known = {f.name for f in fields(ModelSpec)}
    unknown = sorted(set(description) - known)
    if unknown:
        raise BadArgumentError(
            f"unknown model spec fields {', '.join(unknown)}; a spec has {', '.join(sorted(known))}"
        )
    return build_model(ModelSpec.from_dict(description))


def _from_spec(
    state: Mapping[str, torch.Tensor],
    description: dict[str, Any],
    source: str,
    check: bool,
) -> nn.Module:
    module = _spec_module(description)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unused = sorted(k for k in state if k not in expected)
    if missing or unused:
        raise _key_mismatch(source, json.dumps(description), missing, unused)
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelShapeError(
                f"{source}: {key} has shape {tuple(state[key].shape)} but the model spec needs "
                f"{tuple(tensor.shape)}"
            )
    module.load_state_dict(dict(state), strict=True)
    module.eval()
    if check:
        chain = to_chain(module)
        check_torch(module, chain, (chain.input_dim,), source)
    return module


def read_architecture(architecture: str) -> str | dict[str, Any]:
    """The architecture's text, or its JSON object (inline, or from a ``.json`` file)."""
    text = architecture
    path = Path(architecture)
    if architecture.endswith(".json") or (len(architecture) < 4096 and path.is_file()):
        try:
            text = path.read_text()
        except OSError as error:
            raise BadArgumentError(f"cannot read the architecture file {path}: {error}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BadArgumentError(f"the architecture is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise BadArgumentError("a JSON architecture must be an object")
        return data
    return text


def from_state_dict(
    state: Mapping[str, torch.Tensor],
    architecture: str,
    *,
    source: str = "the state dict",
    input_shape: tuple[int, ...] | None = None,
    check: bool = True,
) -> nn.Module:
    """A model from a state dict and its architecture (module docstring).

    The written form gives an :class:`~tightlip.interop.imported.ImportedModel`; a model spec
    or description gives the tightlip module it describes, with the tensors loaded.
    """
    spec = read_architecture(architecture)
    if isinstance(spec, dict):
        return _from_spec(state, spec, source, check)
    return _from_items(state, spec, source, input_shape, check)
