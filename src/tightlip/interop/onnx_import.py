"""ONNX graphs as tightlip models: the exchange format of the verification community.

VNN-COMP networks, ERAN, Marabou and α,β-CROWN all read ONNX. The file is read with the
``onnx`` package (protobuf; nothing is unpickled) and walked node by node in its topological
order (:mod:`tightlip.interop.expressions` tracks what each tensor is). Supported nodes:

* affine: ``Gemm`` (``alpha``, ``beta``, ``transB``), ``MatMul`` by a constant matrix, ``Add`` /
  ``Sub`` / ``Mul`` / ``Div`` by constants (input normalisation), ``Neg``, ``BatchNormalization``
  in inference form, ``Flatten`` and ``Reshape`` of a batch-first tensor (also to a shape
  computed by ``Shape``, ``Gather``, ``Unsqueeze``, ``Concat``, as ``x.view(x.size(0), -1)``
  exports), ``Identity``, ``Dropout`` (inference), ``Cast`` to a float type, ``Constant``;
  consecutive affine nodes are folded into one affine step, exactly or with a
  certified rounding error (:mod:`tightlip.interop.affine`), so every bound and every radius is
  in the units of the raw input;
* activations: ``Relu``, ``LeakyRelu``, ``Sigmoid``, ``Tanh``, ``Abs``, ``Clip(z, 0, θ)``, and
  the multi-node forms of tightlip's polyactivations (``Sin``/``Cos``/``Concat`` for SinCos,
  ``Neg``/``Concat`` for CReLU, ``Min`` for the clipped ReLU, ``TopK`` for GroupSort); an
  activation after the last affine layer is kept (an identity read-out follows it).

Convolutional networks (feature maps ``(C, H, W)``, held as flat rows in C order):

* ``Conv`` (2-D kernel; ``pads``, ``strides``, ``dilations``, ``auto_pad`` VALID /
  SAME_UPPER / SAME_LOWER, bias) is a :class:`~tightlip.convolution.operators.Conv2dOperator`
  factor of the pending affine map; a grouped (e.g. depthwise) ``Conv`` is read as the
  group-1 convolution of its block-diagonal kernel
  (:func:`~tightlip.convolution.operators.ungrouped_kernel`, exact);
* ``Pad`` (constant mode, value 0, spatial axes only) is folded into the ``Conv`` that reads it
  (its pads are added to the convolution's); any other mode or value, or a Pad that no Conv
  reads, is refused;
* ``AveragePool`` (floor mode or a ``ceil_mode`` that adds no window; ``count_include_pad=0``
  with padding divides each window by its real pixels:
  :class:`~tightlip.convolution.operators.PaddingExcludedAvgPool2dOperator`), ``GlobalAveragePool`` (the whole map as window) and ``ReduceMean`` over both
  spatial axes (how ``AdaptiveAvgPool2d(1)`` exports) are
  :class:`~tightlip.convolution.operators.AvgPool2dOperator` factors;
* ``MaxPool`` (equal pads on both sides) is a nonlinear step,
  :class:`~tightlip.layers.pooling.MaxPool2dActivation`, whose constants per norm are derived
  from kernel and stride (``√m`` in ℓ2 for a pixel read by ``m`` overlapping windows);
* ``BatchNormalization`` after a ``Conv`` is a per-channel diagonal scale and shift in the same
  affine step (a :class:`~tightlip.operators.Product` with its certified rounding);
* activations act on maps elementwise; ``Concat`` along axis 1 of maps (channels) forms the
  polyactivations on channels (CReLU, SinCos), as :class:`~tightlip.layers.channels.OnChannels`;
  ``Flatten`` / ``Reshape`` turn maps into flat rows.

Every other node is refused with a line naming it, its op type and what is supported. A branch
(a skip or residual connection) is refused.
After reading, the chain is checked against the file (:mod:`tightlip.interop.check`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from tightlip.convolution.operators import (
    AvgPool2dOperator,
    Conv2dOperator,
    PaddingExcludedAvgPool2dOperator,
    ungrouped_kernel,
)
from tightlip.errors import CheckpointError, ModelShapeError, UnsupportedLayerError
from tightlip.interop.affine import batchnorm_scale, reciprocal
from tightlip.interop.builder import ChainBuilder
from tightlip.interop.check import check_onnx
from tightlip.interop.diagonal import Diagonal
from tightlip.interop.expressions import UNARY, Expr, Lin, Op, recognise
from tightlip.interop.imported import ImportedModel
from tightlip.layers.leaky_relu import DEFAULT_NEGATIVE_SLOPE
from tightlip.layers.pooling import MaxPool2dActivation
from tightlip.model import LayerChain
from tightlip.operators import Dense

#: the op types read (module docstring)
SUPPORTED_NODES = (
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "BatchNormalization",
    "Flatten",
    "Reshape",
    "Identity",
    "Constant",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Abs",
    "Clip",
    "Sin",
    "Cos",
    "Concat",
    "Min",
    "TopK",
    "Shape",
    "Gather",
    "Cast",
    "Squeeze",
    "Unsqueeze",
    "Dropout",
    "Conv",
    "AveragePool",
    "MaxPool",
    "GlobalAveragePool",
    "ReduceMean",
    "Pad",
)
#: convolution and pooling nodes tightlip does not read
CONVOLUTION_NODES = frozenset(
    {
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "DeformConv",
        "GlobalMaxPool",
        "LpPool",
        "GlobalLpPool",
        "MaxUnpool",
        "MaxRoiPool",
    }
)
_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}
_NUMPY_UNARY = {
    "relu": lambda x, _: np.maximum(x, 0.0),
    "abs": lambda x, _: np.abs(x),
    "tanh": lambda x, _: np.tanh(x),
    "sigmoid": lambda x, _: 1.0 / (1.0 + np.exp(-x)),
    "leaky": lambda x, a: np.where(x >= 0, x, a * x),
    "sin": lambda x, _: np.sin(x),
    "cos": lambda x, _: np.cos(x),
}


@dataclass(frozen=True)
class Const:
    """A constant tensor (an initializer, a ``Constant`` node, or folded from them)."""

    value: np.ndarray


@dataclass(frozen=True)
class Unusable:
    """An output tightlip does not model (e.g. TopK's indices): an error if it is used."""

    what: str


@dataclass(frozen=True)
class ShapeOf:
    """The shape of a computed tensor; ``None`` marks the batch size, which is not constant."""

    dims: tuple[int | None, ...]

    def value(self) -> Const | ShapeOf:
        if None in self.dims:
            return self
        return Const(np.asarray(self.dims, dtype=np.int64))


@dataclass(frozen=True)
class Padded:
    """A zero-padded feature map (ONNX ``Pad``), read only by the ``Conv`` that follows it."""

    expr: Expr
    padding: tuple[tuple[int, int], tuple[int, int]]
    node: str


Value = Expr | Const | Unusable | ShapeOf | Padded


def load_onnx_file(path: str | Path) -> onnx.ModelProto:
    """The ONNX model in ``path``, or :class:`CheckpointError` in one line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no ONNX file at {path}")
    try:
        return onnx.load(str(path))
    except Exception as error:  # noqa: BLE001 - protobuf raises several types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable ONNX file: {first}") from error


def import_onnx(
    source: str | Path | onnx.ModelProto, *, check: bool = True, name: str | None = None
) -> ImportedModel:
    """An ONNX network as an :class:`~tightlip.interop.imported.ImportedModel` (module doc).

    With ``check`` (the default) its float64 chain must reproduce the file's outputs on random
    inputs (:func:`~tightlip.interop.check.check_onnx`), else ``UnsupportedLayerError``.
    """
    if isinstance(source, onnx.ModelProto):
        model, label = source, name or "<onnx model>"
    else:
        model, label = load_onnx_file(source), name or str(source)
    chain, input_shape = read_graph(model, label)
    imported = ImportedModel(chain, input_shape=input_shape, source=label, kind="onnx")
    if check:
        result = check_onnx(model, imported)
        imported.notes = (*imported.notes, result.note())
    return imported


def read_graph(model: onnx.ModelProto, source: str) -> tuple[LayerChain, tuple[int, ...]]:
    """The chain of ``model``'s graph and the shape of one input (without the batch axis)."""
    return _GraphReader(model, source).read()


def _label(node: onnx.NodeProto, index: int) -> str:
    name = node.name or f"#{index}"
    return f"ONNX node {name!r} ({node.op_type})"


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _to_numpy(tensor: onnx.TensorProto) -> np.ndarray:
    array = numpy_helper.to_array(tensor)
    if tensor.data_type in _FLOAT_TYPES:
        return np.asarray(array, dtype=np.float64)
    return np.asarray(array)


def _reshape_target(shape: tuple[int, ...], target: np.ndarray, allowzero: bool) -> tuple[int, ...]:
    """ONNX ``Reshape``'s output shape for an input of ``shape`` (0 copies, −1 infers)."""
    out = [int(t) for t in target.reshape(-1)]
    for i, t in enumerate(out):
        if t == 0 and not allowzero:
            if i >= len(shape):
                raise ValueError("0 beyond the input's rank")
            out[i] = shape[i]
    if out.count(-1) > 1:
        raise ValueError("more than one -1")
    total = math.prod(shape)
    if -1 in out:
        known = math.prod(t for t in out if t != -1)
        if known == 0 or total % known:
            raise ValueError("cannot infer -1")
        out[out.index(-1)] = total // known
    if math.prod(out) != total or any(t < 0 for t in out):
        raise ValueError(f"{tuple(out)} does not hold {total} entries")
    return tuple(out)


class _GraphReader:
    """Reads one graph (module docstring); one instance per read."""

    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.model = model
        self.graph = model.graph
        self.source = source
        self.values: dict[str, Value] = {}
        self.committed: dict[int, Lin] = {}
        for tensor in self.graph.initializer:
            self.values[tensor.name] = Const(_to_numpy(tensor))
        self.index = 0
        self.node = onnx.NodeProto()

    # --- the graph's boundary ------------------------------------------------------------
    def _input(self) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
        """The input's name, its feature shape and the batch sizes to try for reshapes."""
        inputs = [i for i in self.graph.input if i.name not in self.values]
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs) or "none"
            raise UnsupportedLayerError(
                f"{self.source}: tightlip reads networks with one input, this graph has "
                f"{len(inputs)} ({names})"
            )
        tensor_type = inputs[0].type.tensor_type
        if tensor_type.elem_type not in _FLOAT_TYPES:
            raise UnsupportedLayerError(
                f"{self.source}: input {inputs[0].name!r} is not a floating-point tensor"
            )
        dims = list(tensor_type.shape.dim)
        if len(dims) < 2:
            raise UnsupportedLayerError(
                f"{self.source}: input {inputs[0].name!r} has rank {len(dims)}; tightlip reads "
                "batch-first inputs (batch, features…)"
            )
        features: list[int] = []
        for i, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                raise UnsupportedLayerError(
                    f"{self.source}: input {inputs[0].name!r} has no fixed size in axis {i}; "
                    "only the batch axis may be symbolic"
                )
            features.append(int(dim.dim_value))
        batch = dims[0]
        batches = (int(batch.dim_value),) if batch.HasField("dim_value") else (2, 3)
        return inputs[0].name, tuple(features), batches

    def read(self) -> tuple[LayerChain, tuple[int, ...]]:
        input_name, shape, self.batches = self._input()
        self.builder = ChainBuilder(math.prod(shape))
        self.values[input_name] = Lin(self.builder.start(), 0, shape)
        for index, node in enumerate(self.graph.node):
            self.index, self.node = index, node
            self._read_node(node)
        if len(self.graph.output) != 1:
            raise UnsupportedLayerError(
                f"{self.source}: tightlip reads networks with one output, this graph has "
                f"{len(self.graph.output)}"
            )
        output = self.graph.output[0].name
        value = self.values.get(output)
        if not isinstance(value, Lin | Op):
            raise UnsupportedLayerError(f"{self.source}: the output {output!r} is not computed")
        lin = self.commit(value)
        metadata = {
            "source": self.source,
            "format": "onnx",
            "producer": f"{self.model.producer_name} {self.model.producer_version}".strip(),
            "input_shape": list(shape),
            "output_shape": list(lin.shape),
        }
        chain = self.builder.finish(lin.affine, lin.frontier, f"output {output!r}", metadata)
        return chain, shape

    # --- nodes -----------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return _label(self.node, self.index)

    @property
    def short(self) -> str:
        """The node's name (its op type and index if unnamed): the name of a step it makes."""
        return self.node.name or f"{self.node.op_type}#{self.index}"

    def refuse(self, why: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"{self.source}: {self.label} {why}")

    def _read_node(self, node: onnx.NodeProto) -> None:
        if node.domain not in ("", "ai.onnx"):
            raise self.refuse(f"is from the operator domain {node.domain!r}, not standard ONNX")
        if node.op_type in CONVOLUTION_NODES:
            raise self.refuse(
                "is a convolution or pooling node that tightlip does not read; tightlip reads "
                + ", ".join(SUPPORTED_NODES)
            )
        handler = getattr(self, f"_node_{node.op_type}", None)
        if handler is None:
            raise self.refuse("is not supported; tightlip reads " + ", ".join(SUPPORTED_NODES))
        outputs = handler(list(node.input), _attributes(node))
        if not isinstance(outputs, tuple):
            outputs = (outputs,)
        for name, value in zip(node.output, outputs, strict=False):
            if name:
                self.values[name] = value
        used_extra = [n for n in node.output[len(outputs) :] if n]
        if used_extra:
            raise self.refuse(f"has outputs tightlip does not model ({', '.join(used_extra)})")

    def get(self, name: str) -> Value:
        if name not in self.values:
            raise self.refuse(f"reads {name!r}, which no earlier node computes")
        value = self.values[name]
        if isinstance(value, Unusable):
            raise self.refuse(f"uses {value.what}, which tightlip does not model")
        if isinstance(value, Padded):
            raise self.refuse(
                f"reads the zero-padded output of Pad node {value.node!r}; tightlip reads Pad "
                "only when a Conv follows it (the padding is folded into the convolution)"
            )
        return value

    def constant(self, name: str, what: str) -> np.ndarray:
        value = self.get(name)
        if isinstance(value, ShapeOf):
            raise self.refuse(f"needs a constant {what}; {name!r} depends on the batch size")
        if not isinstance(value, Const):
            raise self.refuse(f"needs a constant {what}; {name!r} is computed from the input")
        return value.value

    def computed(self, name: str) -> Expr:
        value = self.get(name)
        if isinstance(value, Const | ShapeOf):
            raise self.refuse(f"expects a tensor computed from the input as {name!r}")
        return value  # type: ignore[return-value]

    def linear(self, name: str) -> Lin:
        """The input ``name`` as an affine function of the frontier (committing activations)."""
        return self.commit(self.computed(name))

    def broadcast(self, value: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
        """A constant broadcast to one input's features, flattened (no batch expansion)."""
        full = (1, *shape)
        if value.ndim > len(full):
            raise self.refuse(f"combines a constant of shape {value.shape} with features {shape}")
        try:
            spread = np.broadcast_to(value.astype(np.float64), full)
        except ValueError:
            raise self.refuse(
                f"combines a constant of shape {value.shape} with features {shape}, which do "
                "not broadcast per example"
            ) from None
        return torch.from_numpy(np.ascontiguousarray(spread[0]).reshape(-1).copy())

    # --- committing activations ------------------------------------------------------------
    def commit(self, expr: Expr) -> Lin:
        """``expr`` as an affine function of a (possibly new) frontier (module docstring)."""
        if isinstance(expr, Lin):
            return expr
        key = id(expr)
        if key not in self.committed:
            self.committed[key] = self._commit(expr)
        return self.committed[key]

    def _commit(self, expr: Op) -> Lin:
        match = recognise(expr)
        if match is not None:
            activation, z = match
            pending = self.builder.activate(z.affine, z.frontier, activation, expr.node)
            return Lin(pending, self.builder.frontier, expr.shape)
        arg = expr.args[0] if expr.args else None
        if expr.kind in (*UNARY, "topk", "maxpool") and isinstance(arg, Op):
            return self.commit(replace(expr, args=(self.commit(arg),)))
        if expr.kind in ("mul", "div") and arg is not None:
            return self._scaled(self.commit(arg), expr.param, expr.kind, expr.node)
        if expr.kind == "min" and isinstance(arg, Op) and arg.kind == "relu":
            inner = arg.args[0]
            if isinstance(inner, Op):
                relu = replace(arg, args=(self.commit(inner),))
                return self.commit(replace(expr, args=(relu,)))
            raise UnsupportedLayerError(
                f"{self.source}: ONNX node {expr.node!r} clips a ReLU at a negative threshold; tightlip reads "
                "min(relu(z), θ) with θ ≥ 0 on a flat tensor (a clipped ReLU)"
            )
        raise UnsupportedLayerError(f"{self.source}: ONNX node {expr.node!r} {_why_not(expr)}")

    def _scaled(self, lin: Lin, factor: np.ndarray | float, kind: str, name: str) -> Lin:
        vector = self.broadcast(np.asarray(factor, dtype=np.float64), lin.shape)
        diagonal = Diagonal(vector, name=name) if kind == "mul" else reciprocal(vector, name)
        return Lin(lin.affine.then(diagonal, name), lin.frontier, lin.shape)

    # --- affine nodes ----------------------------------------------------------------------
    def _weight_name(self, name: str) -> str:
        return name[: -len(".weight")] if name.endswith(".weight") else (self.node.name or name)

    def _matrix_step(self, lin: Lin, weight: np.ndarray, name: str) -> Lin:
        if len(lin.shape) != 1:
            raise self.refuse(
                f"multiplies a tensor of shape {lin.shape} per example; tightlip reads matrix "
                "products of flat (batch, features) tensors (Flatten first)"
            )
        if weight.ndim != 2 or weight.shape[1] != lin.shape[0]:
            raise self.refuse(
                f"has a weight of shape {weight.shape} for {lin.shape[0]} input features"
            )
        dense = Dense(torch.from_numpy(np.array(weight, dtype=np.float64, order="C")), name=name)
        return Lin(lin.affine.then(dense, name), lin.frontier, (weight.shape[0],))

    def _node_Gemm(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        if attrs.get("transA", 0):
            raise self.refuse("has transA=1, which mixes the batch with the features")
        lin = self.linear(inputs[0])
        b = self.constant(inputs[1], "weight B")
        if b.ndim != 2:
            raise self.refuse(f"has a weight of rank {b.ndim}")
        weight = b if attrs.get("transB", 0) else b.T
        name = self._weight_name(inputs[1])
        out = self._matrix_step(lin, weight, name)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        if alpha != 1.0:
            scale = Diagonal(torch.full((weight.shape[0],), alpha, dtype=torch.float64))
            out = replace(out, affine=out.affine.then(scale, f"{name}.alpha"))
        if len(inputs) > 2 and inputs[2]:
            bias = beta * self.broadcast(self.constant(inputs[2], "bias C"), out.shape)
            out = replace(out, affine=out.affine.shifted(bias, name, label=False))
        return out

    def _node_MatMul(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        if isinstance(self.get(inputs[0]), Const):
            raise self.refuse("multiplies a constant by the input from the left (column layout)")
        lin = self.linear(inputs[0])
        b = self.constant(inputs[1], "matrix")
        if b.ndim != 2:
            raise self.refuse(f"multiplies by a constant of rank {b.ndim}; tightlip reads matrices")
        return self._matrix_step(lin, b.T, self._weight_name(inputs[1]))

    def _both_constant(self, inputs: list[str]) -> tuple[np.ndarray, ...] | None:
        values = [self.get(name) for name in inputs]
        if all(isinstance(v, Const) for v in values):
            return tuple(v.value for v in values)  # type: ignore[union-attr]
        return None

    def _shift(self, name: str, constant: np.ndarray, sign: float, negate: bool) -> Lin:
        lin = self.linear(name)
        if negate:
            lin = self._negated(lin)
        shift = sign * self.broadcast(constant, lin.shape)
        label = self.node.name or self.node.op_type.lower()
        return replace(lin, affine=lin.affine.shifted(shift, label, label=False), negates=None)

    def _add_or_sub(self, inputs: list[str], kind: str) -> Value:
        constants = self._both_constant(inputs)
        if constants is not None:
            a, b = constants
            return Const(a + b if kind == "add" else a - b)
        first, second = self.get(inputs[0]), self.get(inputs[1])
        if isinstance(second, Const):
            return self._shift(inputs[0], second.value, 1.0 if kind == "add" else -1.0, False)
        if isinstance(first, Const):  # c + v, or c − v = −v + c
            return self._shift(inputs[1], first.value, 1.0, negate=kind == "sub")
        a, b = self.computed(inputs[0]), self.computed(inputs[1])
        if a.shape != b.shape:
            raise self.refuse(f"combines tensors of shapes {a.shape} and {b.shape}")
        return Op(kind, (a, b), a.shape, self.short)

    def _node_Add(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._add_or_sub(inputs, "add")

    def _node_Sub(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._add_or_sub(inputs, "sub")

    def _mul_or_div(self, inputs: list[str], kind: str) -> Value:
        constants = self._both_constant(inputs)
        if constants is not None:
            a, b = constants
            return Const(a * b if kind == "mul" else a / b)
        first, second = self.get(inputs[0]), self.get(inputs[1])
        if kind == "div" and isinstance(first, Const):
            raise self.refuse("divides a constant by a computed tensor (not an affine map)")
        if not isinstance(first, Const) and not isinstance(second, Const):
            raise self.refuse(
                "multiplies two computed tensors: neither an affine map nor an activation "
                "tightlip knows"
            )
        name, constant = (inputs[0], second.value) if isinstance(second, Const) else (inputs[1], first.value)  # type: ignore[union-attr]
        value = self.computed(name)
        if isinstance(value, Op) and constant.size == 1:
            return Op(kind, (value,), value.shape, self.short, float(constant.reshape(-1)[0]))
        return self._scaled(self.commit(value), constant, kind, self.node.name or kind)

    def _node_Mul(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._mul_or_div(inputs, "mul")

    def _node_Div(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._mul_or_div(inputs, "div")

    def _negated(self, lin: Lin) -> Lin:
        minus = Diagonal(-torch.ones(math.prod(lin.shape), dtype=torch.float64), name="neg")
        return Lin(lin.affine.then(minus, "neg"), lin.frontier, lin.shape, negates=lin)

    def _node_Neg(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        value = self.get(inputs[0])
        if isinstance(value, Const):
            return Const(-value.value)
        if isinstance(value, Op):
            return Op("mul", (value,), value.shape, self.short, -1.0)
        return self._negated(value)  # type: ignore[arg-type]

    def _node_BatchNormalization(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        if attrs.get("training_mode", 0) or len([o for o in self.node.output if o]) > 1:
            raise self.refuse("is in training mode; export the network in eval() mode")
        lin = self.linear(inputs[0])
        gamma, beta, mean, var = (
            self.constant(name, what)
            for name, what in zip(inputs[1:5], ("scale", "bias", "mean", "variance"), strict=True)
        )
        channels = lin.shape[0] if lin.shape else 0
        per_channel = (channels,) + (1,) * (len(lin.shape) - 1)
        try:
            gamma, beta, mean, var = (v.reshape(per_channel) for v in (gamma, beta, mean, var))
        except ValueError:
            raise self.refuse(f"has parameters that do not match {channels} channels") from None
        name = self.node.name or "batchnorm"
        epsilon = float(attrs.get("epsilon", 1e-5))
        scale = batchnorm_scale(
            self.broadcast(gamma, lin.shape), self.broadcast(var, lin.shape), epsilon, name
        )
        shift = self.broadcast(beta, lin.shape) - scale.values * self.broadcast(mean, lin.shape)
        affine = lin.affine.then(scale, name).shifted(shift, name, label=False)
        return Lin(affine, lin.frontier, lin.shape)

    def _node_Flatten(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        value = self.get(inputs[0])
        if isinstance(value, Const):
            return Const(value.value.reshape(1, -1))
        lin = self.commit(value)  # type: ignore[arg-type]
        rank = 1 + len(lin.shape)
        axis = int(attrs.get("axis", 1))
        if (axis + rank if axis < 0 else axis) != 1:
            raise self.refuse(f"flattens at axis {axis}; tightlip keeps the batch axis (axis 1)")
        return replace(lin, shape=(math.prod(lin.shape),), negates=None)

    def _reshape_targets(self, name: str) -> dict[int, np.ndarray]:
        """The target shape per batch size tried (a computed shape holds the batch size)."""
        target = self.get(name)
        if isinstance(target, ShapeOf):
            return {
                batch: np.asarray([batch if d is None else d for d in target.dims], dtype=np.int64)
                for batch in self.batches
            }
        constant = self.constant(name, "shape").astype(np.int64)
        return dict.fromkeys(self.batches, constant)

    def _node_Reshape(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        targets = self._reshape_targets(inputs[1])
        target = next(iter(targets.values()))
        allowzero = bool(attrs.get("allowzero", 0))
        value = self.get(inputs[0])
        if isinstance(value, Const):
            try:
                return Const(value.value.reshape(_reshape_target(value.value.shape, target, allowzero)))
            except ValueError as error:
                raise self.refuse(f"cannot reshape a constant: {error}") from None
        lin = self.commit(value)  # type: ignore[arg-type]
        shapes = set()
        for batch in self.batches:
            try:
                out = _reshape_target((batch, *lin.shape), targets[batch], allowzero)
            except ValueError as error:
                raise self.refuse(f"cannot reshape {lin.shape}: {error}") from None
            if out[0] != batch:
                raise self.refuse(
                    f"reshapes to {tuple(target.tolist())}, which moves entries across the batch "
                    "axis; tightlip reads batch-first reshapes"
                )
            shapes.add(out[1:])
        if len(shapes) != 1:
            raise self.refuse("reshapes differently for different batch sizes")
        return replace(lin, shape=shapes.pop(), negates=None)

    # --- convolution and pooling -----------------------------------------------------------
    def _maps(self, name: str) -> Lin:
        lin = self.linear(name)
        if len(lin.shape) != 3:
            raise self.refuse(
                f"reads a tensor of shape {lin.shape} per example; tightlip reads 2-D "
                "convolution and pooling of (batch, C, H, W) feature maps"
            )
        return lin

    def _window(
        self, attrs: dict[str, Any], kernel: tuple[int, int], shape: tuple[int, ...]
    ) -> tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], tuple[int, int]]]:
        """Stride, dilation and padding ``((top, bottom), (left, right))`` of a 2-D window."""
        strides = tuple(int(v) for v in attrs.get("strides", (1, 1)))
        dilations = tuple(int(v) for v in attrs.get("dilations", (1, 1)))
        if len(strides) != 2 or len(dilations) != 2 or min(strides + dilations) < 1:
            raise self.refuse(f"has strides {strides} or dilations {dilations} not for 2-D maps")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if auto_pad == "NOTSET":
            pads = tuple(int(v) for v in attrs.get("pads", (0, 0, 0, 0)))
            if len(pads) != 4 or min(pads) < 0:
                raise self.refuse(f"has pads {pads}; tightlip reads four non-negative pads")
            padding = ((pads[0], pads[2]), (pads[1], pads[3]))
        elif auto_pad == "VALID":
            padding = ((0, 0), (0, 0))
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            sides = []
            for i in range(2):
                size, span = shape[1 + i], (kernel[i] - 1) * dilations[i] + 1
                total = max(0, (-(-size // strides[i]) - 1) * strides[i] + span - size)
                small, large = total // 2, total - total // 2
                sides.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
            padding = (sides[0], sides[1])
        else:
            raise self.refuse(f"with auto_pad {auto_pad!r} is not supported")
        return (strides[0], strides[1]), (dilations[0], dilations[1]), padding  # type: ignore[return-value]

    def _node_Conv(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        group = int(attrs.get("group", 1))
        before = ((0, 0), (0, 0))
        source = self.values.get(inputs[0])
        if isinstance(source, Padded):  # Pad folded into this convolution
            before = source.padding
            lin = self.commit(source.expr)
            if len(lin.shape) != 3:
                raise self.refuse(f"reads a tensor of shape {lin.shape}; tightlip reads 2-D maps")
        else:
            lin = self._maps(inputs[0])
        kernel = self.constant(inputs[1], "kernel")
        if group < 1 or kernel.ndim != 4 or kernel.shape[1] * group != lin.shape[0]:
            raise self.refuse(
                f"has a kernel of shape {kernel.shape} and group {group} for "
                f"{lin.shape[0]}-channel 2-D maps"
            )
        if kernel.shape[0] % group:
            raise self.refuse(f"has {kernel.shape[0]} output channels, not a multiple of group {group}")
        weights = torch.from_numpy(np.ascontiguousarray(kernel))
        if group > 1:  # a grouped convolution is the group-1 one of a block-diagonal kernel
            weights = ungrouped_kernel(weights, group)
        size = (int(kernel.shape[2]), int(kernel.shape[3]))
        stride, dilation, own = self._window(attrs, size, lin.shape)
        padding = tuple(  # type: ignore[assignment]
            (a[0] + b[0], a[1] + b[1]) for a, b in zip(before, own, strict=True)
        )
        if before != ((0, 0), (0, 0)) and attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise self.refuse("follows a Pad and pads itself by auto_pad; tightlip reads explicit pads")
        name = self._weight_name(inputs[1])
        try:
            operator = Conv2dOperator(
                weights,
                lin.shape,  # type: ignore[arg-type]
                stride=stride,
                dilation=dilation,
                padding=padding,
                name=name,
            )
        except (ModelShapeError, ValueError) as error:
            raise self.refuse(f"cannot be read: {error}") from None
        out = Lin(lin.affine.then(operator, name), lin.frontier, operator.output_shape)
        if len(inputs) > 2 and inputs[2]:
            bias = self.constant(inputs[2], "bias").reshape(-1)
            pixels = operator.output_shape[1] * operator.output_shape[2]
            shift = torch.from_numpy(np.repeat(bias.astype(np.float64), pixels))
            out = replace(out, affine=out.affine.shifted(shift, name, label=False))
        return out

    def _node_AveragePool(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        lin = self._maps(inputs[0])
        kernel = tuple(int(v) for v in attrs.get("kernel_shape", ()))
        if len(kernel) != 2:
            raise self.refuse(f"has kernel_shape {kernel}; tightlip reads 2-D pooling")
        stride, dilation, padding = self._window(attrs, kernel, lin.shape)  # type: ignore[arg-type]
        if dilation != (1, 1):
            raise self.refuse(f"with dilations {dilation} is not supported (only 1)")
        padded = any(p for side in padding for p in side)
        # count_include_pad=0 (ONNX's default) with padding: each window by its real pixels
        pool = AvgPool2dOperator
        if padded and not attrs.get("count_include_pad", 0):
            pool = PaddingExcludedAvgPool2dOperator
        name = self.short
        try:
            operator = pool(
                lin.shape, kernel, stride=stride, padding=padding, name=name  # type: ignore[arg-type]
            )
        except ModelShapeError as error:
            raise self.refuse(f"cannot be read: {error}") from None
        if attrs.get("ceil_mode", 0):
            for i, axis in enumerate(operator.window.axes):
                padded_size = axis.size + axis.pad_before + axis.pad_after
                ceil = -(-(padded_size - axis.span) // axis.stride) + 1
                if ceil != operator.output_shape[1 + i]:
                    raise self.refuse("with ceil_mode=1 adds a partial window; tightlip reads floor mode")
        return Lin(lin.affine.then(operator, name), lin.frontier, operator.output_shape)

    def _node_GlobalAveragePool(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        """The average over each whole map: an average pool whose window is the map."""
        lin = self._maps(inputs[0])
        hw = (lin.shape[1], lin.shape[2])
        operator = AvgPool2dOperator(lin.shape, hw, stride=hw, name=self.short)  # type: ignore[arg-type]
        return Lin(lin.affine.then(operator, self.short), lin.frontier, operator.output_shape)

    def _node_ReduceMean(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        """The mean over both spatial axes (``x.mean((2, 3))``, ``AdaptiveAvgPool2d(1)``): a
        global average pool, then a flat ``(C,)`` tensor unless ``keepdims``."""
        axes = attrs.get("axes")
        if len(inputs) > 1 and inputs[1]:
            axes = self.constant(inputs[1], "axes").reshape(-1).tolist()
        lin = self._maps(inputs[0])
        if axes is None or sorted(int(a) % 4 for a in axes) != [2, 3]:
            raise self.refuse(
                f"averages over axes {axes}; tightlip reads the mean over both spatial axes "
                "(2, 3) of (batch, C, H, W) maps"
            )
        out = self._node_GlobalAveragePool(inputs[:1], {})
        keep = bool(attrs.get("keepdims", 1))
        return out if keep else replace(out, shape=(lin.shape[0],))  # type: ignore[arg-type]

    def _node_MaxPool(self, inputs: list[str], attrs: dict[str, Any]) -> tuple[Value, Value]:
        value = self.computed(inputs[0])
        if len(value.shape) != 3:
            raise self.refuse(f"pools a tensor of shape {value.shape}; tightlip reads 2-D maps")
        kernel = tuple(int(v) for v in attrs.get("kernel_shape", ()))
        if len(kernel) != 2:
            raise self.refuse(f"has kernel_shape {kernel}; tightlip reads 2-D pooling")
        stride, dilation, padding = self._window(attrs, kernel, value.shape)  # type: ignore[arg-type]
        if any(before != after for before, after in padding):
            raise self.refuse(
                f"pads unequally {padding}; tightlip reads MaxPool with equal pads on both sides"
            )
        try:
            activation = MaxPool2dActivation(
                value.shape,  # type: ignore[arg-type]
                kernel,  # type: ignore[arg-type]
                stride,
                (padding[0][0], padding[1][0]),
                dilation,
            )
        except ModelShapeError as error:
            raise self.refuse(f"cannot be read: {error}") from None
        if attrs.get("ceil_mode", 0):
            for i, axis in enumerate(activation.axes):
                padded_size = axis.size + axis.pad_before + axis.pad_after
                ceil = -(-(padded_size - axis.span) // axis.stride) + 1
                if ceil != activation.output_shape[1 + i]:
                    raise self.refuse("with ceil_mode=1 adds a partial window; tightlip reads floor mode")
        pooled = Op("maxpool", (value,), activation.output_shape, self.short, activation)
        return pooled, Unusable(f"the indices of {self.label}")

    def _node_Pad(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        """Constant zero padding of the two spatial axes, kept for the next ``Conv``."""
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "constant":
            raise self.refuse(
                f"with mode {mode!r} is not supported (only constant zero padding, folded into "
                "the Conv that follows)"
            )
        if len(inputs) > 1 and inputs[1]:
            pads = self.constant(inputs[1], "pads").astype(np.int64).reshape(-1).tolist()
        else:
            pads = list(attrs.get("pads", ()))
        fill = 0.0
        if len(inputs) > 2 and inputs[2]:
            fill = float(self.constant(inputs[2], "constant value").reshape(-1)[0])
        elif "value" in attrs:
            fill = float(attrs["value"])
        if fill != 0.0:
            raise self.refuse(
                f"pads with the value {fill:g}; tightlip reads zero padding (folded into a Conv)"
            )
        value = self.computed(inputs[0])
        rank = 1 + len(value.shape)
        axes = list(range(rank))
        if len(inputs) > 3 and inputs[3]:
            axes = [int(a) % rank for a in self.constant(inputs[3], "axes").reshape(-1)]
        if len(pads) != 2 * len(axes):
            raise self.refuse(f"has {len(pads)} pads for {len(axes)} axes")
        full = [0] * (2 * rank)
        for i, axis in enumerate(axes):
            full[axis], full[rank + axis] = int(pads[i]), int(pads[len(axes) + i])
        if rank != 4 or any(full[a] or full[rank + a] for a in (0, 1)) or min(full) < 0:
            raise self.refuse(
                f"pads {full}; tightlip reads non-negative zero padding of the two spatial axes "
                "of (batch, C, H, W) maps"
            )
        return Padded(value, ((full[2], full[6]), (full[3], full[7])), self.short)

    def _node_Identity(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self.get(inputs[0])

    def _node_Constant(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        if "value" in attrs:
            return Const(_to_numpy(attrs["value"]))
        for key in ("value_float", "value_floats"):
            if key in attrs:
                return Const(np.asarray(attrs[key], dtype=np.float64))
        for key in ("value_int", "value_ints"):
            if key in attrs:
                return Const(np.asarray(attrs[key], dtype=np.int64))
        raise self.refuse("holds a kind of constant tightlip does not read")

    def _node_Cast(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        """To a floating-point type: the identity on real numbers (only the precision of an
        evaluation changes; tightlip's chain is float64); constants are converted."""
        target = int(attrs.get("to", 0))
        value = self.get(inputs[0])
        if isinstance(value, Const):
            floating = target in _FLOAT_TYPES
            return Const(value.value.astype(np.float64 if floating else np.int64))
        if target not in _FLOAT_TYPES:
            raise self.refuse("casts a computed tensor to a non-floating-point type")
        return value

    def _node_Unsqueeze(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._shape_edit(inputs, attrs, squeeze=False)

    def _node_Squeeze(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._shape_edit(inputs, attrs, squeeze=True)

    def _shape_edit(self, inputs: list[str], attrs: dict[str, Any], squeeze: bool) -> Value:
        """(Un)squeeze of a constant or of a shape; a computed tensor is refused."""
        value = self.get(inputs[0])
        if isinstance(value, ShapeOf):
            return value  # shapes are kept as flat lists of sizes
        if not isinstance(value, Const):
            raise self.refuse("changes the rank of a computed tensor; tightlip reads Reshape")
        axes = attrs.get("axes")
        if len(inputs) > 1 and inputs[1]:
            axes = self.constant(inputs[1], "axes").reshape(-1).tolist()
        array = value.value
        if squeeze:
            return Const(np.squeeze(array, axis=None if axes is None else tuple(axes)))
        for axis in sorted(int(a) for a in axes or ()):
            array = np.expand_dims(array, axis if axis >= 0 else axis + array.ndim + 1)
        return Const(array)

    def _node_Dropout(self, inputs: list[str], attrs: dict[str, Any]) -> tuple[Value, Value]:
        """In inference (no ``training_mode`` input, or a constant false one): the identity."""
        if len(inputs) > 2 and inputs[2]:
            if bool(self.constant(inputs[2], "training_mode").reshape(-1)[0]):
                raise self.refuse("is in training mode; export the network in eval() mode")
        return self.get(inputs[0]), Unusable(f"the mask of {self.label}")

    def _node_Shape(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        value = self.get(inputs[0])
        if isinstance(value, Const):
            dims: tuple[int | None, ...] = tuple(value.value.shape)
        elif isinstance(value, ShapeOf):
            dims = (len(value.dims),)
        else:
            dims = (None, *value.shape)  # type: ignore[union-attr]
        start, end = attrs.get("start", 0), attrs.get("end")
        return ShapeOf(dims[start:end]).value()

    def _node_Gather(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        data = self.get(inputs[0])
        indices = self.constant(inputs[1], "index").astype(np.int64)
        axis = int(attrs.get("axis", 0))
        if isinstance(data, Const):
            return Const(np.take(data.value, indices, axis=axis))
        if isinstance(data, ShapeOf) and axis == 0:
            picked = [data.dims[int(i)] for i in indices.reshape(-1)]
            if indices.ndim == 0:
                return ShapeOf((picked[0],)).value() if picked[0] is None else Const(
                    np.asarray(picked[0], dtype=np.int64)
                )
            return ShapeOf(tuple(picked)).value()
        raise self.refuse("gathers entries of a computed tensor; tightlip reads it on shapes only")

    # --- activations -----------------------------------------------------------------------
    def _activation(self, inputs: list[str], kind: str, param: Any = None) -> Value:
        value = self.get(inputs[0])
        if isinstance(value, Const):
            return Const(_NUMPY_UNARY[kind](value.value, param))
        return Op(kind, (value,), value.shape, self.short, param)  # type: ignore[arg-type]

    def _node_Relu(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "relu")

    def _node_Abs(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "abs")

    def _node_Tanh(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "tanh")

    def _node_Sigmoid(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "sigmoid")

    def _node_LeakyRelu(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "leaky", float(attrs.get("alpha", DEFAULT_NEGATIVE_SLOPE)))

    def _node_Sin(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "sin")

    def _node_Cos(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        return self._activation(inputs, "cos")

    def _node_Clip(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        bounds = [self.constant(n, "bound") if n else None for n in inputs[1:3]]
        low = bounds[0] if bounds else attrs.get("min")
        high = bounds[1] if len(bounds) > 1 else attrs.get("max")
        value = self.computed(inputs[0])
        if low is None or np.asarray(low).size != 1 or float(np.asarray(low).reshape(-1)[0]) != 0:
            raise self.refuse("clips below at a value other than 0; tightlip reads Clip(z, 0, θ)")
        relu = Op("relu", (value,), value.shape, self.short)
        if high is None:
            return relu
        threshold = self.broadcast(np.asarray(high, dtype=np.float64), value.shape)
        return Op("min", (relu,), value.shape, self.short, threshold)

    def _node_Min(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        values = [self.get(name) for name in inputs]
        constants = [v.value for v in values if isinstance(v, Const)]
        computed = [v for v in values if not isinstance(v, Const)]
        if not computed:
            return Const(np.minimum.reduce(constants))
        if len(computed) != 1 or not constants:
            raise self.refuse("takes the minimum of computed tensors; tightlip reads min(z, θ)")
        value = computed[0]
        threshold = self.broadcast(np.minimum.reduce(constants), value.shape)  # type: ignore[union-attr]
        return Op("min", (value,), value.shape, self.short, threshold)  # type: ignore[arg-type]

    def _node_Concat(self, inputs: list[str], attrs: dict[str, Any]) -> Value:
        constants = self._both_constant(inputs)
        axis = int(attrs.get("axis", 0))
        if constants is not None:
            return Const(np.concatenate(constants, axis=axis))
        values = [self.get(name) for name in inputs]
        if all(isinstance(v, Const | ShapeOf) for v in values):  # a shape being assembled
            dims: list[int | None] = []
            for v in values:
                dims += list(v.dims) if isinstance(v, ShapeOf) else v.value.reshape(-1).tolist()  # type: ignore[union-attr]
            return ShapeOf(tuple(dims)).value()
        parts = [self.computed(name) for name in inputs]
        rank = 1 + len(parts[0].shape)
        # along axis 1 (the features, or the channels of (C, H, W) maps: in C order the
        # flattened concatenation, as tightlip's polyactivations on channels compute it)
        if (
            axis % rank != 1
            or any(len(p.shape) != rank - 1 or p.shape[1:] != parts[0].shape[1:] for p in parts)
        ):
            raise self.refuse(
                "concatenates other than along axis 1 (the features, or the channels of maps)"
            )
        shape = (sum(p.shape[0] for p in parts), *parts[0].shape[1:])
        return Op("concat", tuple(parts), shape, self.short)

    def _node_TopK(self, inputs: list[str], attrs: dict[str, Any]) -> tuple[Value, Value]:
        lin = self.linear(inputs[0])
        k = int(self.constant(inputs[1], "K").reshape(-1)[0])
        axis = int(attrs.get("axis", -1))
        rank = 1 + len(lin.shape)
        last = (axis + rank if axis < 0 else axis) == rank - 1
        if not (last and k == lin.shape[-1] and attrs.get("largest", 1) and attrs.get("sorted", 1)):
            raise self.refuse(
                "is read only as a sort of groups (GroupSort): all K entries of the last axis, "
                "largest first, sorted"
            )
        values = Op("topk", (lin,), lin.shape, self.short, k)
        return values, Unusable(f"the indices of {self.label}")


def _why_not(expr: Op) -> str:
    """The one-line reason an expression is not an activation tightlip knows."""
    if expr.kind in ("sin", "cos"):
        return "is read only as part of SinCos, Concat(Sin(z), Cos(z)), or SinPair"
    if expr.kind in ("add", "sub"):
        return (
            "combines two computed tensors (a skip or residual connection, or an activation "
            "tightlip does not know); tightlip reads chains of affine layers and activations"
        )
    if expr.kind == "concat":
        return (
            "does not form an activation tightlip knows: Concat(Sin z, Cos z), "
            "Concat(Relu z, Relu(−z)), Concat((z + sin z)/2, (z − sin z)/2)"
        )
    if expr.kind == "min":
        return "is read only as min(relu(z), θ) with θ ≥ 0 (a clipped ReLU)"
    return "is not an activation tightlip knows"
