"""Any tightlip model as ONNX, checked to read back as exactly the same network.

``tightlip export CKPT model.onnx`` (and :func:`export_onnx`) writes the model's
:class:`~tightlip.model.LayerChain`, not its training-time module: Sandwich, orthogonal or
local-Lipschitz layers become the plain affine maps and activations every verifier reads
(``Gemm``; ``Relu``, ``Abs``, ``Tanh``, ``Sigmoid``, ``LeakyRelu``; SinCos as
``Sin``/``Cos``/``Concat``, CReLU as ``Relu``/``Neg``/``Concat``, SinPair as ``Sin``, ``Add``,
``Sub``, ``Div`` and ``Concat``, GroupSort as ``Reshape``/``TopK``, the clipped ReLU as
``Relu``/``Min``; convolutions as ``Conv`` with zero pads, average pooling as ``AveragePool``
with ``count_include_pad=1``, max pooling as ``MaxPool``, each between ``Reshape`` nodes, since
the chain holds flat rows). A merged step (a product of layers, kept as its factors) is written as its
factors, so that its certified rounding bound survives the round trip. The graph is written by
``torch.onnx.export`` (the ``torch.export`` exporter, which needs ``onnxscript``) with a
symbolic batch axis.

The tensors are written in float32 when every one of them is a float32 number (then nothing
is rounded), else in float64. A network that cannot be written exactly is refused with the
reason: a rounded scale folded in at import (``1/σ`` has no exact float), a LeakyReLU slope
that is not a float32 number (ONNX stores ``alpha`` as float32), an operator or activation
without an ONNX form tightlip reads back.

After writing, the file is imported again (:func:`~tightlip.interop.onnx_import.import_onnx`,
which checks it against onnxruntime) and the two chains are compared step by step: equal
matrices, biases and activations, so the bounds are the same numbers.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from tightlip.convolution.operators import AvgPool2dOperator, Conv2dOperator
from tightlip.errors import UnsupportedLayerError
from tightlip.interop.builder import IDENTITY_READOUT
from tightlip.interop.diagonal import Diagonal
from tightlip.interop.onnx_import import import_onnx
from tightlip.interop.scaled_conv import RoundedConv
from tightlip.layers import (
    Abs,
    Activation,
    ClippedReLU,
    CReLU,
    GroupSort,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SinCos,
    SinPair,
    Tanh,
)
from tightlip.layers.pooling import MaxPool2dActivation
from tightlip.model import ActivationStep, AffineStep, LayerChain, to_chain
from tightlip.operators import Dense, Identity, LinearOperator, Product


class _Scale(nn.Module):
    """``z ↦ d ⊙ z (+ b)``: an exact diagonal factor (ONNX ``Mul``, ``Add``)."""

    def __init__(self, values: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("values", values)
        self.register_buffer("bias", bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = z * self.values
        return out if self.bias is None else out + self.bias


class _Clipped(nn.Module):
    """``min(relu(z), θ⁺)`` with ``θ⁺`` a constant (ONNX ``Relu``, ``Min``)."""

    def __init__(self, threshold: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(z), self.threshold)


class _Conv(nn.Module):
    """A :class:`~tightlip.convolution.operators.Conv2dOperator` on flat rows (ONNX
    ``Reshape``, ``Conv`` with its zero pads, ``Reshape``)."""

    def __init__(self, operator: Conv2dOperator, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("kernel", operator.kernel.to(dtype))
        self.input_shape = operator.input_shape
        self.stride, self.dilation = operator.stride, operator.dilation
        (top, bottom), (left, right) = operator.padding
        self.symmetric = top == bottom and left == right
        self.padding = (top, left) if self.symmetric else (0, 0)
        self.pads = (left, right, top, bottom)
        self.out_features = operator.out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.reshape(-1, *self.input_shape)
        if not self.symmetric:
            x = F.pad(x, self.pads)
        y = F.conv2d(x, self.kernel, stride=self.stride, dilation=self.dilation, padding=self.padding)
        return y.reshape(-1, self.out_features)


class _AvgPool(nn.Module):
    """An :class:`~tightlip.convolution.operators.AvgPool2dOperator` on flat rows (ONNX
    ``Reshape``, ``AveragePool`` with ``count_include_pad=1``, ``Reshape``)."""

    def __init__(self, operator: AvgPool2dOperator) -> None:
        super().__init__()
        axes = operator.window.axes
        self.input_shape = operator.input_shape
        self.kernel = (axes[0].kernel, axes[1].kernel)
        self.stride = (axes[0].stride, axes[1].stride)
        self.padding = (axes[0].pad_before, axes[1].pad_before)
        self.out_features = operator.out_features

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.reshape(-1, *self.input_shape)
        y = F.avg_pool2d(x, self.kernel, self.stride, self.padding, count_include_pad=True)
        return y.reshape(-1, self.out_features)


class _MaxPool(nn.Module):
    """:class:`~tightlip.layers.pooling.MaxPool2dActivation` (ONNX ``Reshape``, ``MaxPool``,
    ``Reshape``)."""

    def __init__(self, activation: MaxPool2dActivation) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.activation(h)


class _Shift(nn.Module):
    """``z ↦ z + b`` (ONNX ``Add``): the bias after a structured operator."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.bias


class _Flatten(nn.Module):
    """``x ↦ x.reshape(-1, features)``: written as one ``Reshape`` by a constant shape."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.features)


class _GroupSort(nn.Module):
    """Each group of ``group`` units sorted, largest first (ONNX ``Reshape``, ``TopK``)."""

    def __init__(self, group: int, width: int) -> None:
        super().__init__()
        self.group, self.width = group, width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        groups = z.reshape(-1, self.width // self.group, self.group)
        return torch.topk(groups, self.group, dim=-1).values.reshape(-1, self.width)


@dataclass(frozen=True)
class ExportResult:
    """What was written: the file, its float type, its nodes, and how it was checked."""

    path: Path
    dtype: str
    nodes: int
    notes: tuple[str, ...]


def _float32_exact(tensor: torch.Tensor) -> bool:
    t = tensor.detach().to(torch.float64)
    return bool(torch.equal(t.to(torch.float32).to(torch.float64), t))


def _linear(matrix: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype) -> nn.Linear:
    layer = nn.Linear(matrix.shape[1], matrix.shape[0], bias=bias is not None)
    layer = layer.to(dtype)
    with torch.no_grad():
        layer.weight.copy_(matrix)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _factors(operator: LinearOperator, name: str) -> list[LinearOperator]:
    factors = list(operator.factors) if isinstance(operator, Product) else [operator]
    for factor in factors:
        if isinstance(factor, Diagonal) and not factor.exact_dense:
            raise UnsupportedLayerError(
                f"{name} holds a rounded scale ({factor.name}: a division or batch "
                "normalisation folded in at import), whose exact value is not a float number, "
                "so no ONNX file holds this network exactly; export the original network"
            )
        if isinstance(factor, RoundedConv):
            raise UnsupportedLayerError(
                f"{name} holds a convolution with a rounded per-channel scale folded in at "
                f"import ({factor.name}: a batch or input normalisation), whose exact kernel is "
                "not a float number, so no ONNX file holds this network exactly; export the "
                "original network"
            )
        if isinstance(factor, Conv2dOperator) and factor.circular:
            raise UnsupportedLayerError(
                f"{name}: a convolution with circular padding has no ONNX form tightlip reads "
                "back (ONNX Conv pads with zeros)"
            )
        if isinstance(factor, AvgPool2dOperator) and (
            factor.divisor != factor.window.kernel.shape[2] * factor.window.kernel.shape[3]
        ):
            raise UnsupportedLayerError(
                f"{name}: average pooling with divisor {factor.divisor} other than its window "
                "size has no ONNX AveragePool form"
            )
        if not isinstance(factor, Dense | Diagonal | Conv2dOperator | AvgPool2dOperator | Identity):
            raise UnsupportedLayerError(
                f"{name}: its {type(factor).__name__} operator has no ONNX form tightlip writes"
            )
    return factors


def _affine_modules(step: AffineStep, dtype: torch.dtype) -> list[nn.Module]:
    factors = _factors(step.operator, step.name)
    modules: list[nn.Module] = []
    for i, factor in enumerate(factors):
        bias = step.bias.to(dtype) if step.bias is not None and i == len(factors) - 1 else None
        if isinstance(factor, Dense):
            modules.append(_linear(factor.matrix.to(dtype), bias, dtype))
        elif isinstance(factor, Diagonal):
            modules.append(_Scale(factor.values.to(dtype), bias))
        else:
            if isinstance(factor, Conv2dOperator):
                modules.append(_Conv(factor, dtype))
            elif isinstance(factor, AvgPool2dOperator):
                modules.append(_AvgPool(factor))
            if bias is not None:
                modules.append(_Shift(bias))
    return modules


def _activation_module(step: ActivationStep, width: int, dtype: torch.dtype) -> nn.Module:
    act = step.activation
    if isinstance(act, LeakyReLU):
        slope = act.negative_slope
        if float(np.float32(slope)) != slope:
            raise UnsupportedLayerError(
                f"{step.name}: LeakyReLU's slope {slope!r} is not a float32 number, and ONNX "
                f"stores LeakyRelu's alpha as float32 (nearest {float(np.float32(slope))!r}), so "
                "the file would hold another network; use a float32 slope"
            )
        return nn.LeakyReLU(slope)
    if isinstance(act, ClippedReLU):
        return _Clipped(act.positive_threshold(torch.float64).detach().to(dtype))
    if isinstance(act, GroupSort):
        return _GroupSort(act.group_size, width)
    if isinstance(act, MaxPool2dActivation):
        return _MaxPool(act)
    if isinstance(act, ReLU | Abs | Tanh | Sigmoid | SinCos | CReLU | SinPair):
        return type(act)()
    raise UnsupportedLayerError(
        f"{step.name}: {type(act).__name__} has no ONNX form that tightlip reads back"
    )


def _tensors(chain: LayerChain) -> list[torch.Tensor]:
    """Every number the file will hold (to choose float32 or float64)."""
    out: list[torch.Tensor] = []
    for step in chain.steps:
        if isinstance(step, AffineStep):
            for factor in _factors(step.operator, step.name):
                if isinstance(factor, Dense):
                    out.append(factor.matrix)
                elif isinstance(factor, Diagonal):
                    out.append(factor.values)
                elif isinstance(factor, Conv2dOperator):
                    out.append(factor.kernel)
            if step.bias is not None:
                out.append(step.bias)
        elif isinstance(step.activation, ClippedReLU):
            out.append(step.activation.positive_threshold(torch.float64).detach())
    return out


def _is_readout(chain: LayerChain, step: AffineStep) -> bool:
    """A final identity after an activation: not written (the import adds it back)."""
    if step is not chain.steps[-1] or len(chain.steps) < 2 or step.bias is not None:
        return False
    if step.name == IDENTITY_READOUT:
        return True
    operator = step.operator
    return isinstance(operator, Dense) and torch.equal(
        operator.matrix, torch.eye(operator.in_features, dtype=torch.float64)
    )


def export_module(
    chain: LayerChain, dtype: torch.dtype, input_shape: tuple[int, ...]
) -> nn.Sequential:
    """The plain torch module that ``torch.onnx.export`` writes (module docstring)."""
    modules: list[nn.Module] = []
    if input_shape != (chain.input_dim,):
        modules.append(_Flatten(chain.input_dim))
    width = chain.input_dim
    for step in chain.steps:
        if isinstance(step, AffineStep):
            if not _is_readout(chain, step):
                modules += _affine_modules(step, dtype)
            width = step.out_features
        else:
            modules.append(_activation_module(step, width, dtype))
            width = step.activation.out_features(width)
    return nn.Sequential(*modules).eval()


def same_network(original: LayerChain, read: LayerChain) -> str | None:
    """``None`` if the chains hold the same numbers step by step, else what differs."""
    if len(original.steps) != len(read.steps):
        return f"{len(original.steps)} steps were written, {len(read.steps)} read back"
    for a, b in zip(original.steps, read.steps, strict=True):
        if isinstance(a, AffineStep) and isinstance(b, AffineStep):
            if not _same_operator(a.operator, b.operator):
                return f"{a.name}: the matrix differs"
            if not torch.equal(_bias(a), _bias(b)):
                return f"{a.name}: the bias differs"
            if a.exact and not b.exact:
                return f"{a.name}: the matrix is no longer exact"
        elif isinstance(a, ActivationStep) and isinstance(b, ActivationStep):
            if _activation_key(a.activation) != _activation_key(b.activation):
                return f"{a.name}: {a.activation!r} was read back as {b.activation!r}"
        else:
            return f"{a.name}: the order of layers differs"
    return None


def _bias(step: AffineStep) -> torch.Tensor:
    """The bias, zeros for none (the exporter's optimiser drops an all-zero bias)."""
    if step.bias is None:
        return torch.zeros(step.out_features, dtype=torch.float64)
    return step.bias


def _same_operator(a: LinearOperator, b: LinearOperator) -> bool:
    """Equal factor by factor (a product is compared through its factors: the float64 product
    of equal factors may differ in the last bits with their memory layout)."""
    fa = [f for f in (a.factors if isinstance(a, Product) else (a,)) if not isinstance(f, Identity)]
    fb = [f for f in (b.factors if isinstance(b, Product) else (b,)) if not isinstance(f, Identity)]
    if not fa or not fb:  # identities (a dense eye on one side, an Identity on the other)
        return a.in_features == b.in_features and all(_is_identity(f) for f in (*fa, *fb))
    if len(fa) != len(fb):
        return len(fa) > 1 and bool(torch.equal(a.dense(None), b.dense(None)))
    return all(_same_factor(x, y) for x, y in zip(fa, fb, strict=True))


def _is_identity(operator: LinearOperator) -> bool:
    return isinstance(operator, Identity) or (
        isinstance(operator, Dense)
        and torch.equal(operator.matrix, torch.eye(operator.in_features, dtype=torch.float64))
    )


def _same_factor(a: LinearOperator, b: LinearOperator) -> bool:
    """Equal maps; convolutions and pooling are compared by kernel and geometry (their dense
    matrices may be too large to build)."""
    if isinstance(a, Conv2dOperator) and isinstance(b, Conv2dOperator):
        return (
            torch.equal(a.kernel, b.kernel)
            and (a.input_shape, a.stride, a.dilation, a.padding, a.circular)
            == (b.input_shape, b.stride, b.dilation, b.padding, b.circular)
        )
    if isinstance(a, AvgPool2dOperator) and isinstance(b, AvgPool2dOperator):
        return (a.input_shape, a.divisor) == (b.input_shape, b.divisor) and _same_factor(
            a.window, b.window
        )
    if _is_identity(a) and _is_identity(b):
        return a.in_features == b.in_features
    if type(a) is not type(b) and not (isinstance(a, Dense | Diagonal) and isinstance(b, Dense | Diagonal)):
        return False
    return bool(torch.equal(a.dense(None), b.dense(None)))


def _activation_key(act: Activation) -> tuple:
    if isinstance(act, ClippedReLU):
        return ("clipped", tuple(act.positive_threshold(torch.float64).detach().tolist()))
    if isinstance(act, GroupSort):
        return ("groupsort", act.group_size)
    if isinstance(act, LeakyReLU):
        return ("leaky", act.negative_slope)
    if isinstance(act, MaxPool2dActivation):
        return ("maxpool", act.input_shape, repr(act.axes))
    return (type(act).__name__,)


#: the exporters ``torch.onnx.export`` offers: ``dynamo`` (``torch.export``, the default and
#: maintained one, which needs ``onnxscript``) and ``torchscript`` (deprecated since torch 2.9,
#: about a hundred times faster)
EXPORTERS = ("dynamo", "torchscript")


def _write(module: nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    names = {"input_names": ["input"], "output_names": ["output"], "verbose": False}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if exporter == "torchscript":
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    dynamo=False,
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    **names,
                )
                return
            program = torch.onnx.export(
                module,
                (example,),
                None,
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                optimize=True,
                **names,
            )
        program.save(str(path))
    finally:
        logger.setLevel(level)


def export_onnx(
    model: nn.Module | LayerChain,
    path: str | Path,
    *,
    dtype: str = "auto",
    input_shape: tuple[int, ...] | None = None,
    source: str = "",
    exporter: str = "dynamo",
) -> ExportResult:
    """Write ``model`` to ``path`` as ONNX and check it reads back exactly (module docstring).

    ``dtype``: ``"auto"`` (float32 when lossless, else float64), ``"float32"`` (refused
    unless lossless) or ``"float64"``. ``input_shape`` is one input's shape (default: flat).
    ``exporter`` is one of :data:`EXPORTERS`.
    """
    chain = to_chain(model)
    path = Path(path)
    shape = tuple(input_shape) if input_shape is not None else (chain.input_dim,)
    lossless32 = all(_float32_exact(t) for t in _tensors(chain))
    if dtype == "auto":
        dtype = "float32" if lossless32 else "float64"
    if dtype not in ("float32", "float64"):
        raise UnsupportedLayerError(f"dtype must be auto, float32 or float64, got {dtype!r}")
    if dtype == "float32" and not lossless32:
        raise UnsupportedLayerError(
            "the network's tensors are not all float32 numbers (e.g. weights computed in "
            "float64 by a Lipschitz parametrisation): float32 would round them; use float64"
        )
    if exporter not in EXPORTERS:
        raise UnsupportedLayerError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    module = export_module(chain, torch_dtype, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(module, torch.zeros(2, *shape, dtype=torch_dtype), path, exporter)
    proto = onnx.load(str(path))
    proto.doc_string = f"exported by tightlip from {source or 'a tightlip model'}"
    onnx.save(proto, str(path))
    imported = import_onnx(path)
    difference = same_network(chain, imported.chain)
    if difference is not None:
        raise RuntimeError(f"{path} does not read back as the exported network: {difference}")
    return ExportResult(path, dtype, len(proto.graph.node), imported.notes)
