"""ONNX import of convolutional networks: Conv, pooling, Pad, BatchNorm (issue 12, item 6)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

import tightlip as tl
from tightlip.bounds.trivial import trivial_bound
from tightlip.cli import app
from tightlip.convolution.operators import ungrouped_kernel
from tightlip.errors import UnsupportedLayerError
from tightlip.interop.onnx_export import export_onnx
from tightlip.interop.onnx_import import import_onnx
from tightlip.model import to_chain

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_random_state():  # type: ignore[no-untyped-def]
    """Each test seeds torch for itself and leaves the global generator as it found it."""
    with torch.random.fork_rng():
        yield

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


def _conv_net(conv_attrs=None, pool="AveragePool", pool_attrs=None, group=1, c_in=2, c_out=4):
    rng = _rng()
    kernel = rng.standard_normal((c_out, c_in // group, 3, 3)).astype(np.float32)
    init = {
        "k": kernel,
        "b": rng.standard_normal(c_out).astype(np.float32),
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


@pytest.mark.parametrize(("group", "c_in", "c_out"), [(2, 2, 4), (4, 4, 4), (2, 4, 6)])
def test_grouped_and_depthwise_convs_match_onnxruntime_and_their_dense_matrix(group, c_in, c_out):
    """A grouped Conv is read as the group-1 convolution of its block-diagonal kernel: the
    import matches onnxruntime (checked inside import_onnx at 1e-6) and every norm is sound."""
    model = _conv_net({"pads": [1, 1, 1, 1]}, pool_attrs={"kernel_shape": [2, 2]}, group=group, c_in=c_in, c_out=c_out)
    imported = import_onnx(model)
    assert "difference" in imported.notes[-1]
    step = imported.chain.affine_steps[0]
    dense = step.operator.dense()
    for norm, order in (("1", 1), ("2", 2), ("inf", float("inf"))):
        assert step.certified_norm(norm) >= float(torch.linalg.matrix_norm(dense, ord=order))


def test_ungrouped_kernel_is_torch_s_grouped_convolution():
    generator = torch.Generator().manual_seed(0)
    kernel = torch.randn(6, 2, 3, 3, generator=generator, dtype=torch.float64)
    x = torch.randn(5, 6, 7, 7, generator=generator, dtype=torch.float64)
    full = ungrouped_kernel(kernel, 3)
    assert full.shape == (6, 6, 3, 3) and int((full != 0).sum()) == kernel.numel()
    grouped = F.conv2d(x, kernel, padding=1, groups=3)
    assert torch.allclose(F.conv2d(x, full, padding=1), grouped, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="do not split into 4 groups"):
        ungrouped_kernel(kernel, 4)


def test_conv_with_output_channels_not_a_multiple_of_group_is_refused():
    model = _conv_net(pool_attrs={"kernel_shape": [2, 2]}, group=2, c_in=2, c_out=3)
    with pytest.raises(UnsupportedLayerError, match="'conv_2' \\(Conv\\) has 3 output channels, not a multiple of group 2"):
        import_onnx(model)


def test_max_pool_global_average_pool_and_channel_crelu_match_onnxruntime():
    rng = _rng(1)
    init = {
        "k": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "k2": rng.standard_normal((4, 6, 2, 2)).astype(np.float32),
        "W": rng.standard_normal((5, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r1"]),
        helper.make_node("Neg", ["c"], ["n"]),
        helper.make_node("Relu", ["n"], ["r2"]),
        helper.make_node("Concat", ["r1", "r2"], ["cr"], axis=1),
        helper.make_node("MaxPool", ["cr"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["m", "k2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    imported = import_onnx(_graph(nodes, init, (2, 8, 7)))
    kinds = [type(s.activation).__name__ for s in imported.chain.activation_steps]
    assert kinds == ["CReLU", "MaxPool2dActivation", "ReLU"]


def test_pad_is_folded_into_the_next_conv():
    rng = _rng(2)
    init = {
        "k": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "k"], ["y"], pads=[1, 0, 0, 1]),
    ]
    imported = import_onnx(_graph(nodes, init, (2, 5, 6)))
    assert imported.chain.steps[0].operator.padding == ((2, 2), (2, 2))


@pytest.mark.parametrize(
    ("mode", "words"),
    [("reflect", "mode 'reflect' is not supported"), ("edge", "mode 'edge' is not supported")],
)
def test_unsupported_pad_modes_are_refused(mode, words):
    init = {
        "k": np.ones((1, 2, 3, 3), dtype=np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode=mode, name="pad_1"),
        helper.make_node("Conv", ["p", "k"], ["y"]),
    ]
    with pytest.raises(UnsupportedLayerError) as error:
        import_onnx(_graph(nodes, init, (2, 5, 6)))
    assert "'pad_1' (Pad)" in str(error.value) and words in str(error.value)
    assert "\n" not in str(error.value)


def test_pad_not_followed_by_conv_is_refused():
    init = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)}
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad_1"),
        helper.make_node("Relu", ["p"], ["y"], name="relu"),
    ]
    with pytest.raises(UnsupportedLayerError, match="only when a Conv follows it"):
        import_onnx(_graph(nodes, init, (2, 5, 6)))


# --- torch.onnx.export, bounds, export and the CLI --------------------------------------------


def _torch_conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    return net.eval()


def _export_torch(net: nn.Module, path, shape) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(2, *shape),), str(path), input_names=["x"], output_names=["y"],
            dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )


def _jacobian_norm(chain, x: torch.Tensor) -> float:
    jac = torch.autograd.functional.jacobian(lambda v: chain(v[None])[0], x)
    return float(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], -1), ord=2))


def test_torch_exported_conv_net_imports_and_its_trivial_bound_holds(tmp_path) -> None:
    net = _torch_conv_net()
    _export_torch(net, tmp_path / "net.onnx", (2, 8, 8))
    imported = import_onnx(tmp_path / "net.onnx")
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = net.double()(x)
    assert torch.allclose(imported(x), expected, rtol=1e-10, atol=1e-12)
    bound = trivial_bound(imported.chain, "2").value
    for point in x.reshape(5, -1):
        assert _jacobian_norm(imported.chain, point) <= bound


def test_batch_normalization_after_conv_is_folded_and_bounded() -> None:
    rng = _rng(3)
    init = {
        "k": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "g": rng.uniform(0.5, 2, 3).astype(np.float32),
        "beta": rng.standard_normal(3).astype(np.float32),
        "mu": rng.standard_normal(3).astype(np.float32),
        "var": rng.uniform(0.5, 2, 3).astype(np.float32),
        "W": rng.standard_normal((2, 3 * 5 * 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    imported = import_onnx(_graph(nodes, init, (2, 5, 4)))
    first = imported.chain.steps[0]
    assert first.has_bias and "bn" in first.name
    # folded into the kernel, with its rounding as an error kernel
    assert type(first.operator).__name__ == "RoundedConv" and not first.exact
    kernel = torch.from_numpy(init["k"]).double()
    scale = torch.from_numpy(init["g"]).double() / torch.sqrt(torch.from_numpy(init["var"]).double() + 1e-5)
    assert torch.allclose(first.operator.conv.kernel, kernel * scale[:, None, None, None], rtol=1e-15)
    for norm in ("1", "2", "inf"):
        dense = first.operator.dense(None)
        exact = {"1": 1, "2": 2, "inf": float("inf")}[norm]
        assert first.certified_norm(norm) >= float(torch.linalg.matrix_norm(dense, ord=exact))
    bound = trivial_bound(imported.chain, "2").value
    x = torch.randn(4, 40, dtype=torch.float64)
    for point in x:
        assert _jacobian_norm(imported.chain, point) <= bound


def test_a_tightlip_conv_model_round_trips(tmp_path) -> None:
    torch.manual_seed(1)
    spec = tl.ModelSpec(
        input_dim=2 * 8 * 8, input_shape=(2, 8, 8), arch="c3k3,max2,c4k3s2,avg2,f5",
        num_classes=3, activation="relu",
    )
    model = tl.build_model(spec).eval()
    result = export_onnx(model, tmp_path / "m.onnx", input_shape=(2, 8, 8), exporter="torchscript")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert {"Conv", "MaxPool", "AveragePool"} <= ops
    back = import_onnx(result.path)
    chain = to_chain(model)
    x = torch.randn(4, 2 * 8 * 8, dtype=torch.float64)
    assert torch.equal(back.chain(x), chain(x)) or torch.allclose(back.chain(x), chain(x), rtol=1e-12)
    for norm in ("1", "2", "inf"):
        assert trivial_bound(back.chain, norm).value == trivial_bound(chain, norm).value


def test_cli_bounds_a_tiny_conv_onnx(tmp_path) -> None:
    _export_torch(_torch_conv_net(), tmp_path / "tiny_conv.onnx", (2, 8, 8))
    result = runner.invoke(
        app, ["bound", str(tmp_path / "tiny_conv.onnx"), "--method", "trivial", "--lower-seconds", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "trivial" in result.output


@pytest.mark.parametrize("case", ["group", "reflect"])
def test_cli_refuses_unsupported_conv_settings_in_one_line(tmp_path, case) -> None:
    if case == "group":
        model = _conv_net(pool_attrs={"kernel_shape": [2, 2]}, group=2, c_in=2, c_out=3)
        words = ("'conv_2' (Conv)", "not a multiple of group 2")
    else:
        init = {
            "k": np.ones((1, 2, 3, 3), dtype=np.float32),
            "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
        }
        nodes = [
            helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect", name="pad_1"),
            helper.make_node("Conv", ["p", "k"], ["y"]),
        ]
        model = _graph(nodes, init, (2, 5, 6))
        words = ("'pad_1' (Pad)", "mode 'reflect'")
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    result = runner.invoke(app, ["bound", str(path), "--method", "trivial"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    for word in words:
        assert word in result.output


def test_cli_export_of_a_conv_checkpoint_runs_in_onnxruntime_with_equal_bounds(tmp_path) -> None:
    import json

    import onnxruntime as ort

    from tightlip.train.checkpoint import save_checkpoint

    torch.manual_seed(2)
    spec = tl.ModelSpec(
        input_dim=3 * 8 * 8, input_shape=(3, 8, 8), arch="c4k3,max2,c4k3s2,avg2,f5",
        num_classes=3, activation="sincos",
    )
    model = tl.build_model(spec).eval()
    meta = {"method": "tightlip", "model": {"kind": "mlp", "arguments": spec.to_dict()}, "train": {"norm": "2"}}
    save_checkpoint(tmp_path / "ck", model, meta)
    onnx_path = tmp_path / "conv.onnx"
    result = runner.invoke(app, ["export", str(tmp_path / "ck"), str(onnx_path), "--exporter", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "(batch, 3, 8, 8)" in result.output
    x = torch.randn(4, 3, 8, 8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(out, expected, rtol=1e-5, atol=1e-6)
    values = {}
    for source in (tmp_path / "ck", onnx_path):
        js = tmp_path / f"{source.name}.json"
        bound = runner.invoke(
            app, ["bound", str(source), "--method", "trivial", "--lower-seconds", "0.5", "--json", str(js)]
        )
        assert bound.exit_code == 0, bound.output
        values[source.name] = json.loads(js.read_text())["bounds"][0]["value"]
    assert values["ck"] == values["conv.onnx"]


@pytest.mark.parametrize(("kernel", "stride", "coverage"), [(2, 2, 1), (3, 1, 9), (3, 2, 4)])
def test_imported_max_pool_constants_are_attained(kernel, stride, coverage) -> None:
    """Lip_2 = √m and Lip_1 = m for a pixel read by m windows; a spike there attains both."""
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kernel] * 2, strides=[stride] * 2)]
    imported = import_onnx(_graph(nodes, {}, (1, 7, 7)))
    pool = imported.chain.activation_steps[0].activation
    assert pool.lipschitz("1") == coverage and pool.lipschitz("inf") == 1.0
    assert pool.lipschitz("2") >= coverage**0.5
    x = torch.zeros(49, dtype=torch.float64)
    x[2 * 7 + 2] = 1.0  # pixel (2, 2), read by the most windows in each case
    jac = torch.autograd.functional.jacobian(lambda v: pool(v[None])[0], x)
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(coverage**0.5)


def test_input_normalisation_before_conv_is_folded_into_the_kernel() -> None:
    rng = _rng(4)
    init = {
        "mu": np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1),
        "sigma": np.array([0.247, 0.243, 0.261], dtype=np.float32).reshape(1, 3, 1, 1),
        "k": rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
        "W": rng.standard_normal((2, 2 * 4 * 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Sub", ["x", "mu"], ["s"]),
        helper.make_node("Div", ["s", "sigma"], ["n"]),
        helper.make_node("Conv", ["n", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "W"], ["y"], transB=1),
    ]
    imported = import_onnx(_graph(nodes, init, (3, 4, 4)))
    first = imported.chain.steps[0]
    assert type(first.operator).__name__ == "RoundedConv"
    bound = trivial_bound(imported.chain, "2").value
    for point in torch.rand(4, 48, dtype=torch.float64):
        assert _jacobian_norm(imported.chain, point) <= bound


def test_cli_bounds_a_torch_depthwise_separable_net(tmp_path) -> None:
    """MobileNet's block (depthwise 3×3, then pointwise 1×1) exported by torch: bound reads it."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 2),
    ).eval()
    _export_torch(net, tmp_path / "dw.onnx", (3, 6, 6))
    result = runner.invoke(
        app, ["bound", str(tmp_path / "dw.onnx"), "--method", "trivial", "--lower-seconds", "0.5"]
    )
    assert result.exit_code == 0, result.output
    chain = import_onnx(onnx.load(str(tmp_path / "dw.onnx"))).chain
    x = torch.rand(2, 108, dtype=torch.float64)
    assert torch.allclose(chain.forward(x).float(), net(x.float().reshape(2, 3, 6, 6)), atol=1e-5)


@pytest.mark.parametrize(
    "pool_attrs",
    [
        {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_shape": [2, 2], "strides": [1, 1], "pads": [1, 0, 0, 1]},
        {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [1, 1, 1, 1], "count_include_pad": 0},
    ],
)
def test_average_pool_excluding_padding_matches_onnxruntime_with_sound_norms(pool_attrs):
    """ONNX's default count_include_pad=0: border windows divided by their real pixels."""
    model = _conv_net({"pads": [1, 1, 1, 1]}, "AveragePool", pool_attrs)
    imported = import_onnx(model)  # checked against onnxruntime at 1e-6
    assert "difference" in imported.notes[-1]
    pool = next(
        f for s in imported.chain.affine_steps for f in getattr(s.operator, "factors", (s.operator,))
        if "excl. pad" in (getattr(f, "describe", lambda: "")() or "")
    )
    dense = pool.dense()
    for norm, order in (("1", 1), ("2", 2), ("inf", float("inf"))):
        assert pool.certified_norm(norm) >= float(torch.linalg.matrix_norm(dense, ord=order)) - 1e-15
