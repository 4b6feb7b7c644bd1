"""ONNX import of convolutional networks: Conv, pooling, Pad, BatchNorm (issue 12, item 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tightlip.errors import UnsupportedLayerError
from tightlip.interop.onnx_import import import_onnx

torch.set_num_threads(1)


def _graph(nodes, initializers, shape, out_name="y"):
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)
    graph = helper.make_graph(
        nodes, "g", [inp], [out], [numpy_helper.from_array(v, k) for k, v in initializers.items()]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _rng(seed=0):
    return np.random.default_rng(seed)


def _conv_net(conv_attrs=None, pool="AveragePool", pool_attrs=None, group=1):
    rng = _rng()
    c_in = 2
    kernel = rng.standard_normal((4, c_in // group, 3, 3)).astype(np.float32)
    init = {
        "k": kernel,
        "b": rng.standard_normal(4).astype(np.float32),
        "shape": np.array([0, -1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "k", "b"], ["c"], name="conv_2", group=group, **(conv_attrs or {})),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node(pool, ["r"], ["p"], name="pool", **(pool_attrs or {})),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
    ]
    model = _graph(nodes, init, (c_in, 7, 6), out_name="f")
    return model


@pytest.mark.parametrize(
    "conv_attrs",
    [
        {},
        {"pads": [1, 1, 1, 1]},
        {"pads": [1, 0, 2, 1], "strides": [2, 1]},
        {"dilations": [2, 1], "pads": [2, 1, 2, 1]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ],
)
def test_conv_and_average_pool_match_onnxruntime(conv_attrs):
    model = _conv_net(conv_attrs, "AveragePool", {"kernel_shape": [2, 2], "strides": [2, 2]})
    imported = import_onnx(model)  # checked against onnxruntime at 1e-6
    assert "difference" in imported.notes[-1]


def test_group_conv_is_refused():
    model = _conv_net(group=2, pool_attrs={"kernel_shape": [2, 2]})
    with pytest.raises(UnsupportedLayerError, match="'conv_2' \\(Conv\\) with group 2 is not supported \\(only group 1\\)"):
        import_onnx(model)
