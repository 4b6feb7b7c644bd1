"""An imported network is checked before it is bounded: it must reproduce its source.

Reading a file is where a verifier can go wrong without noticing (an attribute ignored, a
transpose, a folded normalisation). So every import ends with a check: the float64 chain and
the source are evaluated on the same random inputs of the right shape (half uniform in
``[0, 1)``, like images, half standard normal), and the largest difference, relative to the
largest output, must be at most :data:`RELATIVE_TOLERANCE` (``1e-6``). Otherwise the import is
refused with one line naming both numbers.

* ONNX: the graph is evaluated by ``onnxruntime`` on a float64 copy (every floating-point
  constant, input and output converted to double, which is exact), so the comparison measures
  the import and not float32 rounding; where onnxruntime has no float64 kernel for a node
  (``LeakyRelu``), by the ``onnx`` package's reference evaluator on the same copy.
* torch modules: a float64 copy of the module itself.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tightlip.errors import UnsupportedLayerError
from tightlip.model import LayerChain

if TYPE_CHECKING:  # onnx is imported only to check an ONNX import (it takes a second to load)
    import onnx

#: the largest accepted ``max |source − chain| / max |source|`` (module docstring)
RELATIVE_TOLERANCE = 1e-6
#: random inputs per check
SAMPLES = 16
#: onnx.TensorProto's FLOAT, FLOAT16 and BFLOAT16 (float types converted to DOUBLE, 11)
_FLOATS = frozenset({1, 10, 16})
_DOUBLE = 11


@dataclass(frozen=True)
class CheckResult:
    """How an import was checked: the engine, the inputs and the largest relative difference."""

    engine: str
    samples: int
    difference: float

    def note(self) -> str:
        return (
            f"checked against {self.engine} on {self.samples} random inputs: largest relative "
            f"difference {self.difference:.2e} (tolerance {RELATIVE_TOLERANCE:g})"
        )


def random_inputs(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """``count`` float64 inputs of ``shape``: half uniform in [0, 1), half standard normal."""
    rng = np.random.default_rng(seed)
    half = count // 2
    uniform = rng.random((half, *shape))
    normal = rng.standard_normal((count - half, *shape))
    return np.concatenate([uniform, normal]).astype(np.float64)


def relative_difference(reference: np.ndarray, value: np.ndarray) -> float:
    """``max |reference − value| / max |reference|`` (0 when both are 0)."""
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    value = np.asarray(value, dtype=np.float64).reshape(len(value), -1)
    if reference.shape != value.shape:
        return math.inf
    gap = float(np.max(np.abs(reference - value), initial=0.0))
    scale = float(np.max(np.abs(reference), initial=0.0))
    if gap == 0.0:
        return 0.0
    return gap / scale if scale > 0 else math.inf


def _require(result: CheckResult, source: str) -> CheckResult:
    if not result.difference <= RELATIVE_TOLERANCE:
        raise UnsupportedLayerError(
            f"{source}: the network tightlip read does not reproduce the source's outputs "
            f"(largest relative difference {result.difference:.3g} > {RELATIVE_TOLERANCE:g} "
            f"on {result.samples} random inputs, evaluated by {result.engine}); it would bound "
            "a different network, so it is refused"
        )
    return result


def _chain_outputs(chain: LayerChain, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        flat = torch.from_numpy(x.reshape(x.shape[0], -1))
        return chain(flat).numpy()


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def as_double(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose floating-point tensors and values are float64 (exact)."""
    import onnx

    double = copy.deepcopy(model)
    graph = double.graph
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type in _FLOATS:
            array = onnx.numpy_helper.to_array(tensor).astype(np.float64)
            graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(array, tensor.name))
    for node in graph.node:
        if node.op_type == "Cast":
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i in _FLOATS:
                    attribute.i = _DOUBLE
            continue
        if node.op_type != "Constant":
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type in _FLOATS:
                array = onnx.numpy_helper.to_array(attribute.t).astype(np.float64)
                attribute.t.CopyFrom(onnx.numpy_helper.from_array(array, attribute.t.name))
            elif attribute.name in ("value_float", "value_floats"):
                values = [attribute.f] if attribute.name == "value_float" else list(attribute.floats)
                array = np.asarray(values, dtype=np.float64)
                if attribute.name == "value_float":
                    array = array.reshape(())
                node.ClearField("attribute")
                node.attribute.append(
                    onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(array))
                )
                break
    for info in (*graph.input, *graph.output, *graph.value_info):
        if info.type.tensor_type.elem_type in _FLOATS:
            info.type.tensor_type.elem_type = _DOUBLE
    return double


def _batch_size(model: onnx.ModelProto) -> int | None:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, str]:
    """``model``'s first output on ``x`` (float64), and the engine that computed it."""
    initializers = {t.name for t in model.graph.initializer}
    name = next(i.name for i in model.graph.input if i.name not in initializers)
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return np.asarray(session.run(None, {name: x})[0]), "onnxruntime (float64)"
    except ImportError:
        pass
    except Exception as error:  # noqa: BLE001 - onnxruntime's NotImplemented, Fail, ...
        if "NOT_IMPLEMENTED" not in str(error) and "NotImplemented" not in type(error).__name__:
            raise
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model, new_ops=[_batch_normalization_op()])
    return np.asarray(evaluator.run(None, {name: x})[0]), "onnx.reference (float64)"


def _batch_normalization_op() -> type:
    """Inference-mode ``BatchNormalization`` for the reference evaluator, every opset.

    ``y = (x − mean) / √(var + ε) · scale + B`` per channel (axis 1). onnx 1.23's own kernel
    for opsets 9–13 is wrong, which refused valid Conv → BN files (the audit of issue 21);
    onnxruntime has no float64 ``Conv``, so conv nets are always checked here.
    """
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(  # type: ignore[override]
            self, x, scale, bias, mean, var, epsilon=None, momentum=None, spatial=None,
            training_mode=None,
        ):
            del momentum, spatial
            if training_mode:
                raise NotImplementedError("BatchNormalization in training mode")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else float(epsilon)
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            return ((y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)

    return BatchNormalization


def check_onnx(
    model: onnx.ModelProto, imported: nn.Module, *, samples: int = SAMPLES
) -> CheckResult:
    """Compare ``imported`` (an ImportedModel) with ``model`` (module docstring)."""
    double = as_double(model)
    batch = _batch_size(double) or samples
    count = max(samples, batch) if batch > 1 else samples
    x = random_inputs(tuple(imported.input_shape), count)
    outputs, engine = [], ""
    for start in range(0, count, batch):
        chunk = x[start : start + batch]
        if chunk.shape[0] < batch:
            break
        out, engine = run_onnx(double, chunk)
        outputs.append(out.reshape(chunk.shape[0], -1))
    reference = np.concatenate(outputs)
    ours = _chain_outputs(imported.chain, x[: len(reference)])
    result = CheckResult(engine, len(reference), relative_difference(reference, ours))
    return _require(result, imported.source)


# --------------------------------------------------------------------------------------------
# torch modules
# --------------------------------------------------------------------------------------------


def check_torch(
    module: nn.Module,
    chain: LayerChain,
    input_shape: tuple[int, ...],
    source: str,
    *,
    samples: int = SAMPLES,
) -> CheckResult:
    """Compare ``chain`` with a float64 copy of ``module`` on random inputs of ``input_shape``."""
    reference = copy.deepcopy(module).to(torch.float64).eval()
    x = random_inputs(tuple(input_shape), samples)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).reshape(samples, -1).numpy()
    result = CheckResult("torch (float64)", samples, relative_difference(expected, _chain_outputs(chain, x)))
    return _require(result, source)
