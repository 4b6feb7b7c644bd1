"""Bring your own network: ONNX import and export, state dicts with their architecture.

* Round trip: a tightlip chain holding every activation tightlip can write (ReLU, Abs, Tanh,
  Sigmoid, LeakyReLU, SinCos, CReLU, SinPair, MaxMin, the clipped ReLU) → ``export_onnx`` →
  ``import_onnx``: the same matrices, biases and activations, hence the same outputs and the
  same bound from every method. A Sandwich model (float64 weights, merged layers) round-trips
  through float64 with its merged steps kept as factors.
* A torch ``nn.Sequential`` with biases, input normalisation, BatchNorm1d, Tanh, Sigmoid,
  LeakyReLU and a trailing ReLU, exported here with ``torch.onnx.export``: the imported
  outputs equal torch's, and the trivial bound equals the one computed densely in this test
  from the folded matrices; the folded division is sound against exact rational arithmetic.
* The check refuses an import that does not reproduce its file; refusals name the node.
* State dicts: the order comes from the architecture (fc1, fc2, …, fc10 are not sorted),
  unused and missing keys are named, shapes are checked, a model spec JSON builds the model.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections import OrderedDict

import numpy as np
import onnx
import pytest
import rational
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import tightlip as tl
from tightlip import lower_bound, upper_bound
from tightlip.errors import (
    BadArgumentError,
    CheckpointError,
    MethodNotApplicableError,
    ModelShapeError,
    UnsupportedLayerError,
)
from tightlip.interop.architecture import from_state_dict, parse_architecture
from tightlip.interop.check import check_onnx
from tightlip.interop.describe import describe
from tightlip.interop.imported import ImportedModel
from tightlip.interop.onnx_export import export_onnx, same_network
from tightlip.interop.onnx_import import import_onnx
from tightlip.layers import (
    Abs,
    ClippedReLU,
    CReLU,
    LeakyReLU,
    MaxMin,
    ReLU,
    Sigmoid,
    SinCos,
    SinPair,
    Tanh,
)
from tightlip.model import ActivationStep, AffineStep, LayerChain, to_chain
from tightlip.models.sandwich import SandwichMLP
from tightlip.norms import NORMS, certified_operator_norm

EVERY_EXPORTABLE = (ReLU, Abs, Tanh, Sigmoid, LeakyReLU, SinCos, CReLU, SinPair, MaxMin)


def _linear(fan_in: int, fan_out: int, generator: torch.Generator) -> AffineStep:
    weight = torch.randn(fan_out, fan_in, generator=generator) / math.sqrt(fan_in)
    bias = torch.randn(fan_out, generator=generator) * 0.1
    return AffineStep(weight.float().double(), bias.float().double(), name=f"fc{fan_in}x{fan_out}")


def _mixed_chain() -> LayerChain:
    """Every exportable activation once, float32 tensors, widths even (for MaxMin)."""
    generator = torch.Generator().manual_seed(0)
    steps: list[AffineStep | ActivationStep] = []
    width = 6
    steps.append(_linear(5, width, generator))
    activations = [cls() if cls is not LeakyReLU else LeakyReLU(0.125) for cls in EVERY_EXPORTABLE]
    clipped = ClippedReLU(width)
    with torch.no_grad():
        clipped.threshold.copy_(torch.tensor([0.5, 1.0, -0.25, 2.0, 0.75, 0.0]))
    activations.append(clipped)
    for i, act in enumerate(activations):
        steps.append(ActivationStep(act, name=f"act{i}"))
        fan_in = act.out_features(width)
        steps.append(_linear(fan_in, width if i < len(activations) - 1 else 3, generator))
    return LayerChain(tuple(steps))


def _export(model: nn.Module, path, **kwargs) -> None:  # type: ignore[no-untyped-def]
    """``torch.onnx.export`` (the TorchScript exporter, which keeps BatchNormalization nodes)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, kwargs.pop("args"), str(path), dynamo=False, **kwargs)


# --------------------------------------------------------------------------------------------
# tightlip → ONNX → tightlip
# --------------------------------------------------------------------------------------------


def test_every_activation_round_trips_exactly(tmp_path) -> None:
    """Through the default (dynamo) exporter; the other tests use the faster TorchScript one."""
    chain = _mixed_chain()
    result = export_onnx(chain, tmp_path / "mixed.onnx")
    assert result.dtype == "float32"  # every tensor is a float32 number: nothing rounded
    assert "checked against onnx" in " ".join(result.notes)
    imported = import_onnx(tmp_path / "mixed.onnx")
    assert same_network(chain, imported.chain) is None
    read = [type(s.activation) for s in imported.chain.activation_steps]
    assert read == [*EVERY_EXPORTABLE, ClippedReLU]
    ops = {node.op_type for node in onnx.load(str(tmp_path / "mixed.onnx")).graph.node}
    assert {"Sin", "Cos", "Concat", "TopK", "LeakyRelu", "Min"} <= ops
    x = torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(imported(x), chain(x))
    for norm in NORMS:
        assert upper_bound(imported, norm, "trivial").value == upper_bound(chain, norm, "trivial").value
    grad = {"steps": 10, "num_random": 4, "screen": 64, "seed": 3}
    assert lower_bound(imported, "2", "gradient", **grad).value == lower_bound(
        chain, "2", "gradient", **grad
    ).value


@pytest.mark.parametrize("activation", ["relu", "leaky-relu", "sigmoid", "abs"])
def test_tightlip_mlp_bounds_are_identical_after_the_round_trip(tmp_path, activation) -> None:
    torch.manual_seed(1)
    model = tl.build_model(
        tl.ModelSpec(input_dim=4, widths=(4, 3), num_classes=3, activation=activation, bias=True)
    )
    export_onnx(model, tmp_path / "mlp.onnx", input_shape=(1, 2, 2), exporter="torchscript")
    imported = tl.load_model(tmp_path / "mlp.onnx")
    assert isinstance(imported, ImportedModel) and imported.input_shape == (1, 2, 2)
    original = to_chain(model)
    assert same_network(original, to_chain(imported)) is None
    methods = ["trivial", "eclipse-fast", "syed-hu", "lipsdp"]
    for method in methods:
        a = upper_bound(model, "2", method).value
        assert upper_bound(imported, "2", method).value == a, method
    if activation in ("relu", "leaky-relu"):
        assert lower_bound(imported, "2", "exact-regions").value == pytest.approx(
            lower_bound(model, "2", "exact-regions").value, rel=1e-12
        )


def test_sandwich_round_trips_in_float64_with_its_merged_layers(tmp_path) -> None:
    torch.manual_seed(2)
    model = SandwichMLP(input_dim=4, widths=(5,), num_classes=3)
    result = export_onnx(model, tmp_path / "sandwich.onnx", exporter="torchscript")
    assert result.dtype == "float64"  # the Cayley weights are computed in float64
    original, imported = to_chain(model), to_chain(import_onnx(tmp_path / "sandwich.onnx"))
    assert same_network(original, imported) is None
    assert not imported.exact  # the merged step is a product again, with its rounding bound
    for norm in NORMS:
        assert upper_bound(imported, norm, "trivial").value == pytest.approx(
            upper_bound(original, norm, "trivial").value, rel=1e-14
        )


def test_export_refuses_what_onnx_cannot_hold_and_says_why(tmp_path) -> None:
    chain = LayerChain(
        (AffineStep(torch.eye(2, dtype=torch.float64)), ActivationStep(LeakyReLU(0.01)),
         AffineStep(torch.eye(2, dtype=torch.float64)))
    )
    with pytest.raises(UnsupportedLayerError, match="not a float32 number"):
        export_onnx(chain, tmp_path / "x.onnx")
    weights = AffineStep(torch.tensor([[0.1, 0.2]], dtype=torch.float64))
    with pytest.raises(UnsupportedLayerError, match="float64"):
        export_onnx(LayerChain((weights,)), tmp_path / "y.onnx", dtype="float32")


# --------------------------------------------------------------------------------------------
# torch.onnx.export of a plain torch model → tightlip
# --------------------------------------------------------------------------------------------


class _Normalise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _torch_model() -> nn.Sequential:
    torch.manual_seed(3)
    mean = torch.tensor([0.1307, 0.5, 0.25]).reshape(3, 1, 1)
    std = torch.tensor([0.3081, 0.5, 2.0]).reshape(3, 1, 1)
    bn = nn.BatchNorm1d(8)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return nn.Sequential(
        _Normalise(mean, std), nn.Flatten(), nn.Linear(12, 8), bn, nn.Tanh(),
        nn.Linear(8, 7), nn.Sigmoid(), nn.Linear(7, 6), nn.LeakyReLU(0.25),
        nn.Linear(6, 3), nn.ReLU(),
    ).eval()


def test_torch_sequential_through_onnx_matches_a_dense_computation(tmp_path) -> None:
    model = _torch_model()
    _export(model, tmp_path / "torch.onnx", args=(torch.randn(2, 3, 2, 2),),
            input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    ops = [n.op_type for n in onnx.load(str(tmp_path / "torch.onnx")).graph.node]
    assert {"Sub", "Div", "BatchNormalization", "LeakyRelu", "Relu"} <= set(ops)
    imported = import_onnx(tmp_path / "torch.onnx")
    assert imported.input_shape == (3, 2, 2)
    x = torch.rand(32, 3, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        expected = model.double()(x)
        np.testing.assert_allclose(imported(x).numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    chain = imported.chain
    kinds = [type(s.activation) for s in chain.activation_steps]
    assert kinds == [Tanh, Sigmoid, LeakyReLU, ReLU]  # the trailing ReLU is kept
    assert chain.steps[-1].name == "identity-readout"
    # the folded first layer: diag(γ/√(v+ε)) W diag(1/σ) (σ per channel, repeated per pixel)
    lin, bn = model[2], model[3]
    inv_std = (1.0 / model[0].std.double()).expand(3, 2, 2).reshape(-1)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    first = scale[:, None] * lin.weight.double() * inv_std[None, :]
    dense = [first, model[5].weight.double(), model[7].weight.double(), model[9].weight.double()]
    lipschitz = [1.0, 0.25, 1.0, 1.0]  # Tanh, Sigmoid, LeakyReLU(0.25), ReLU
    for norm in ("1", "inf"):
        expected_bound = math.prod(certified_operator_norm(w, norm) for w in dense) * math.prod(
            lipschitz
        )
        value = upper_bound(imported, norm, "trivial").value
        assert value == pytest.approx(expected_bound, rel=1e-12)
        order = 1 if norm == "1" else math.inf
        assert value >= math.prod(float(torch.linalg.matrix_norm(w, ord=order)) for w in dense) / 4
    assert not chain.affine_steps[0].exact  # 1/σ and the batch-norm scale are rounded
    with pytest.raises(MethodNotApplicableError):
        lower_bound(imported, "inf", "exact-regions")


@pytest.mark.parametrize("norm", NORMS)
def test_a_folded_division_is_sound_in_exact_arithmetic(tmp_path, norm) -> None:
    """(x − μ)/σ then W: the certified norm is at least ‖W diag(1/σ)‖ computed in rationals."""
    torch.manual_seed(4)
    std = torch.tensor([0.3081, 0.1, 3.0, 0.7])
    model = nn.Sequential(_Normalise(torch.zeros(4), std), nn.Linear(4, 3)).eval()
    _export(model, tmp_path / "n.onnx", args=(torch.randn(2, 4),))
    step = import_onnx(tmp_path / "n.onnx").chain.affine_steps[0]
    weight = rational.to_fractions(model[1].weight)
    exact = [
        [w / rational.Fraction(float(s)) for w, s in zip(row, std.tolist(), strict=True)]
        for row in weight
    ]
    assert rational.norm_at_most(exact, step.certified_norm(norm), norm)


def test_a_power_of_two_scale_folds_exactly(tmp_path) -> None:
    model = nn.Sequential(_Normalise(torch.full((4,), 0.5), torch.full((4,), 0.25)), nn.Linear(4, 2))
    _export(model.eval(), tmp_path / "p.onnx", args=(torch.randn(2, 4),))
    chain = import_onnx(tmp_path / "p.onnx").chain
    assert chain.exact  # W diag(4) is exact in float64: exact methods stay available
    torch.testing.assert_close(chain.affine_steps[0].weight, model[1].weight.double() * 4, rtol=0, atol=0)


def test_describe_prints_one_line_per_layer(tmp_path) -> None:
    model = _torch_model()
    _export(model, tmp_path / "torch.onnx", args=(torch.randn(2, 3, 2, 2),))
    lines = describe(import_onnx(tmp_path / "torch.onnx").chain, "2")
    assert len(lines) == 5
    assert "folded" in lines[0] and "12 → 8" in lines[0] and "Tanh" in lines[0]
    assert "Sigmoid" in lines[1] and "Lip_2 = 0.25" in lines[1]
    assert "ReLU" in lines[3] and lines[4].split()[1] == "identity"


# --------------------------------------------------------------------------------------------
# what the ONNX reader refuses, and the check
# --------------------------------------------------------------------------------------------


def _graph(nodes, initializers, input_shape=("N", 4), output="y") -> onnx.ModelProto:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


W = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


@pytest.mark.parametrize(
    ("nodes", "words"),
    [
        ([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1, name="fc"),
          helper.make_node("Softplus", ["h"], ["y"], name="soft")],
         ["'soft' (Softplus) is not supported", "Gemm"]),
        ([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")],
         ["'conv' (Conv)", "feature maps"]),
        ([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
          helper.make_node("Relu", ["h"], ["r"]),
          helper.make_node("Gemm", ["r", "V"], ["g"], transB=1),
          helper.make_node("Add", ["g", "h"], ["y"], name="skip")],
         ["'skip'", "skip or residual"]),
        ([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
          helper.make_node("Sin", ["h"], ["y"], name="sine")],
         ["'sine'", "SinCos"]),
    ],
    ids=["unknown-node", "conv", "residual", "lonely-sin"],
)
def test_unsupported_graphs_are_refused_naming_the_node(nodes, words) -> None:
    model = _graph(nodes, {"W": W, "V": np.eye(3, dtype=np.float32)})
    with pytest.raises(UnsupportedLayerError) as error:
        import_onnx(model, check=False)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_the_check_refuses_a_chain_that_does_not_reproduce_the_file() -> None:
    model = _graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": W})
    good = import_onnx(model)
    assert "relative difference" in good.notes[0]
    steps = list(good.chain.steps)
    steps[0] = AffineStep(steps[0].weight * (1 + 1e-5), name="tampered")
    tampered = ImportedModel(LayerChain(tuple(steps)), input_shape=(4,), source="t", kind="onnx")
    with pytest.raises(UnsupportedLayerError, match="does not reproduce"):
        check_onnx(model, tampered)


def test_fixed_batch_and_matmul_graphs() -> None:
    """VNN-COMP style: batch fixed to 1, MatMul + Add, Reshape to (1, -1)."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "Wt"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ]
    model = _graph(nodes, {"Wt": W.T, "b": np.ones(3)}, input_shape=(1, 2, 2))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape"))
    imported = import_onnx(model)
    assert imported.input_shape == (2, 2)
    torch.testing.assert_close(imported.chain.affine_steps[0].weight, torch.from_numpy(W).double())


# --------------------------------------------------------------------------------------------
# state dicts with their architecture
# --------------------------------------------------------------------------------------------


class _Named(nn.Module):
    """Layers fc1, fc2, …, fc10 (sorting the keys would put fc10 second)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        for i in range(1, 11):
            setattr(self, f"fc{i}", nn.Linear(4, 4))
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 11):
            x = torch.sigmoid(getattr(self, f"fc{i}")(x))
        return self.out(x)


def test_layer_order_comes_from_the_architecture() -> None:
    model = _Named().eval()
    text = ",".join(f"fc{i}=linear,sigmoid" for i in range(1, 11)) + ",out=linear"
    imported = from_state_dict(model.state_dict(), text)
    assert [s.name for s in imported.chain.affine_steps] == [*(f"fc{i}" for i in range(1, 11)), "out"]
    x = torch.randn(16, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model.double()(x))
    assert upper_bound(imported, "2", "trivial").value <= 4.0**-10 * math.prod(
        certified_operator_norm(s.weight, "2") for s in imported.chain.affine_steps
    ) * (1 + 1e-12)


def test_key_mismatches_are_named() -> None:
    state = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).state_dict()
    state["2.Bias"] = state.pop("2.bias")
    with pytest.raises(CheckpointError, match=r"unused keys 2\.Bias"):
        from_state_dict(state, "linear,relu,linear")
    with pytest.raises(CheckpointError, match=r"missing keys 1\.weight"):
        from_state_dict(state, "flatten,linear,relu,linear")
    with pytest.raises(ModelShapeError, match="expects 4 inputs"):
        from_state_dict(
            {"a.weight": torch.zeros(3, 4), "b.weight": torch.zeros(2, 4)}, "a=linear,relu,b=linear"
        )


def test_architecture_forms() -> None:
    items = parse_architecture("flatten, fc1=linear, leaky_relu(0.1), batchnorm(1e-3), linear")
    assert [(i.name, i.kind, i.args) for i in items] == [
        ("0", "flatten", ()), ("fc1", "linear", ()), ("2", "leaky-relu", (0.1,)),
        ("3", "batchnorm", (1e-3,)), ("4", "linear", ()),
    ]
    for bad in ("linear,gelu,linear", "linear,relu(2),linear", "lin ear", ""):
        with pytest.raises(BadArgumentError):
            parse_architecture(bad)


def test_batchnorm_and_trailing_activation_from_a_state_dict() -> None:
    torch.manual_seed(6)
    model = nn.Sequential(OrderedDict(
        [("fc", nn.Linear(5, 4)), ("bn", nn.BatchNorm1d(4)), ("act", nn.LeakyReLU(0.25)),
         ("head", nn.Linear(4, 2)), ("out", nn.ReLU())]
    )).eval()
    with torch.no_grad():
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.running_mean.normal_()
    imported = from_state_dict(model.state_dict(), "fc=linear,bn=batchnorm,leaky-relu(0.25),head=linear,relu")
    assert "torch (float64)" in imported.notes[0]
    x = torch.randn(8, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model.double()(x))
    assert isinstance(imported.chain.activation_steps[-1].activation, ReLU)


def test_a_model_spec_json_builds_the_tightlip_model() -> None:
    torch.manual_seed(7)
    spec = tl.ModelSpec(input_dim=4, widths=(3,), num_classes=2, activation="abs")
    model = tl.build_model(spec)
    built = from_state_dict(model.state_dict(), '{"input_dim": 4, "widths": [3], "num_classes": 2, "activation": "abs"}')
    assert upper_bound(built, "2", "trivial").value == upper_bound(model, "2", "trivial").value
    with pytest.raises(BadArgumentError, match="unknown model spec fields depth"):
        from_state_dict(model.state_dict(), '{"depth": 3}')
    with pytest.raises(ModelShapeError, match="1.weight"):
        from_state_dict(model.state_dict(), '{"input_dim": 5, "widths": [3], "num_classes": 2, "activation": "abs"}')


def test_load_model_checks_a_module_and_refuses_a_bare_state_dict(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(2, 2))
    assert tl.load_model(model) is model
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="bare state dict.*--architecture.*onnx"):
        tl.load_model(tmp_path / "plain.pt")
    loaded = tl.load_model(tmp_path / "plain.pt", architecture="linear,sigmoid,linear")
    assert isinstance(loaded.chain.activation_steps[0].activation, Sigmoid)


def test_an_inference_dropout_node_is_the_identity() -> None:
    nodes = [helper.make_node("Dropout", ["x"], ["d"]), helper.make_node("Gemm", ["d", "W"], ["y"], transB=1)]
    imported = import_onnx(_graph(nodes, {"W": W}))
    torch.testing.assert_close(imported.chain.affine_steps[0].weight, torch.from_numpy(W).double())


class _ViewNet(nn.Module):
    """``x.view(x.size(0), -1)`` (Shape/Gather/Unsqueeze/Concat/Reshape); Dropout in eval."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.fc = nn.Linear(12, 3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.view(x.size(0), -1)))


def test_a_computed_batch_first_reshape_is_read(tmp_path) -> None:
    model = _ViewNet().eval()
    _export(model, tmp_path / "view.onnx", args=(torch.randn(2, 3, 2, 2),),
            input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    ops = [n.op_type for n in onnx.load(str(tmp_path / "view.onnx")).graph.node]
    assert {"Shape", "Gather", "Unsqueeze", "Concat", "Reshape"} <= set(ops)
    imported = import_onnx(tmp_path / "view.onnx")
    assert imported.input_shape == (3, 2, 2)
    torch.testing.assert_close(imported.chain.affine_steps[0].weight, model.fc.weight.double())


def test_load_model_reads_a_cnn_module_with_its_input_shape_and_batchnorm() -> None:
    """Issue 21, item 5: ``load_model(net, input_shape=(1, 28, 28))`` ignored the shape and a
    module with BatchNorm2d was refused, though its ONNX file was read. Both now load, and the
    module, its ONNX route and the loaded model compute the same function."""
    import tightlip as tl

    torch.manual_seed(0)
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(3 * 8 * 8, 4),
    )
    x = torch.rand(6, 1, 8, 8)
    loaded = tl.load_model(plain, input_shape=(1, 8, 8))
    torch.testing.assert_close(loaded(x), plain(x))
    torch.testing.assert_close(loaded(x.reshape(6, -1)), plain(x))
    assert tl.upper_bound(loaded, "2").value > 0  # later conversions find the input shape

    with_bn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4),
    ).eval()
    with torch.no_grad():
        with_bn[1].running_mean.uniform_(-0.3, 0.3)
        with_bn[1].running_var.uniform_(0.5, 2.0)
        with_bn[1].weight.uniform_(0.5, 1.5)
    folded = tl.load_model(with_bn, input_shape=(1, 8, 8))
    torch.testing.assert_close(
        folded(x.reshape(6, -1)).double(), with_bn(x).double(), atol=1e-5, rtol=1e-5
    )
    bound = tl.upper_bound(folded, "2").value
    jacobian = torch.autograd.functional.jacobian(lambda v: with_bn(v.reshape(1, 1, 8, 8)), x[0].reshape(-1))
    assert bound >= float(torch.linalg.matrix_norm(jacobian.reshape(4, -1).double(), 2)) - 1e-6


def test_a_run_directory_stands_for_its_checkpoint(tmp_path) -> None:
    """Issue 21: ``tightlip bound runs/X`` failed until ``/checkpoint`` was added."""
    import tightlip as tl
    from tightlip.interop.load import load
    from tightlip.train.checkpoint import save_checkpoint

    spec = tl.ModelSpec(input_dim=6, widths=(5,), num_classes=3, activation="abs")
    save_checkpoint(
        tmp_path / "run" / "checkpoint",
        tl.build_model(spec),
        {"method": "tightlip", "model": {"kind": "mlp", "arguments": spec.to_dict()},
         "train": {"norm": "2"}},
    )
    loaded = load(tmp_path / "run")
    assert loaded.kind == "checkpoint" and loaded.source.name == "checkpoint"


def test_conv_batchnorm_onnx_at_opset_13_is_read_and_checked(tmp_path) -> None:
    """Audit (issue 21): Conv → BatchNormalization files at opset ≤ 13 were refused ("does not
    reproduce … 0.143") because onnx.reference's BatchNormalization is wrong there; the check
    now uses a correct kernel and the import is accepted and matches the graph."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import tightlip as tl
    from tightlip.interop.check import run_onnx

    rng = np.random.default_rng(0)
    arrays = {
        "W": rng.normal(size=(3, 1, 3, 3)), "g": rng.uniform(0.5, 2, 3),
        "b": rng.uniform(-1, 1, 3), "mu": rng.uniform(-0.5, 0.5, 3),
        "var": rng.uniform(0.3, 2, 3), "L": rng.normal(size=(4, 3 * 6 * 6)),
    }
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["n"], epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "Lt"], ["y"]),
    ]
    inits.append(numpy_helper.from_array(arrays["L"].T.astype(np.float32), "Lt"))
    graph = helper.make_graph(
        nodes, "conv-bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.uniform(size=(1, 1, 8, 8))
    expected = np.maximum(
        0,
        (torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(arrays["W"])).numpy()
         - arrays["mu"].reshape(1, -1, 1, 1)) / np.sqrt(arrays["var"].reshape(1, -1, 1, 1) + 1e-5)
        * arrays["g"].reshape(1, -1, 1, 1) + arrays["b"].reshape(1, -1, 1, 1),
    ).reshape(1, -1) @ arrays["L"].T
    from tightlip.interop.check import as_double

    got, _ = run_onnx(as_double(model), x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    path = tmp_path / "conv_bn13.onnx"
    onnx.save(model, path)
    imported = tl.load_model(path)
    torch.testing.assert_close(
        imported(torch.from_numpy(x).reshape(1, -1)).double(),
        torch.from_numpy(expected), rtol=1e-5, atol=1e-5,
    )


def test_architecture_listing_has_no_bare_index_tags() -> None:
    """Issue 21: tags such as ``[1] [3] [identity]`` appeared in the architecture listing."""
    from tightlip.interop.describe import describe
    from tightlip.model import to_chain

    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    lines = describe(to_chain(model), "2")
    assert len(lines) == 2 and not any("[" in line for line in lines)
