"""The command line on networks tightlip did not train: bound, certify and export.

* ``bound`` reads ONNX files and state dicts with ``--architecture`` and prints the
  architecture it read (one line per layer, with each activation's Lipschitz constant);
* ``bound --method all`` prints a progress line per method, reports a method that exceeds
  ``--timeout`` as timed out, an SDP refused for its size as "skipped: too large for an SDP
  (N variables …)", and writes JSON rows with method, side, value, seconds, sound, status;
* every refusal (bare state dict, unknown node, convolution node, key mismatch, shape
  mismatch, whole pickled module) exits with code 2 and one line, no traceback;
* ``export`` writes a checkpoint as ONNX whose bounds are the checkpoint's, to the last bit;
* ``certify`` certifies an ONNX network on MNIST, and names both shapes when they differ.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import mnist_dir_or_skip
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from typer.testing import CliRunner

import tightlip as tl
from tightlip.bounds.deadline import TimedOut, run_with_deadline
from tightlip.cli import app
from tightlip.errors import MethodNotApplicableError
from tightlip.train.checkpoint import save_checkpoint

runner = CliRunner()


def assert_one_line_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    """Exit 2 through ``typer.Exit``, one stderr line starting with ``error:``, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


def _export(model: nn.Module, path, example: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (example,), str(path), dynamo=False, input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )


def _sigmoid_net(inputs: int = 6) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 5), nn.Sigmoid(), nn.Linear(5, 3), nn.ReLU())


def test_bound_reads_onnx_and_prints_the_architecture(tmp_path) -> None:
    _export(_sigmoid_net(), tmp_path / "net.onnx", torch.randn(2, 6))
    result = runner.invoke(
        app, ["bound", str(tmp_path / "net.onnx"), "--lower-seconds", "1", "--data", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "architecture read from" in out and "(onnx, input (6,))" in out
    assert "6 → 5" in out and "Sigmoid (Lip_2 = 0.25)" in out
    assert "ReLU (Lip_2 = 1)" in out and " identity " in out  # the trailing ReLU, then I
    assert out.index("architecture read") < out.index("trivial")
    assert "onnxruntime" in result.stderr  # how the import was checked


def test_bound_all_progress_timeout_sdp_size_and_json(tmp_path) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 450), nn.ReLU(), nn.Linear(450, 3))
    torch.save(model.state_dict(), tmp_path / "wide.pt")
    started = time.perf_counter()
    result = runner.invoke(
        app,
        ["bound", str(tmp_path / "wide.pt"), "--architecture", "linear,relu,linear",
         "--method", "all", "--timeout", "2", "--lower-seconds", "1", "--data", str(tmp_path),
         "--json", str(tmp_path / "bounds.json")],
    )
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - started < 60
    assert "[1/4]" in result.stderr and "[4/4]" in result.stderr and "time limit 2 s" in result.stderr
    # ECLipsE's per-layer SDP would be 450 wide (> its limit, 400): skipped before it runs
    assert "eclipse: skipped: too large for an SDP (101475 variables in a 450 × 450 matrix" in result.stdout
    assert "lipsdp: timed out after 2 s" in result.stdout  # a 460-row SDP takes longer
    rows = json.loads((tmp_path / "bounds.json").read_text())
    by_method = {row["method"]: row for row in rows["bounds"]}
    assert set(by_method) == {"eclipse-fast", "eclipse", "lipsdp", "syed-hu", "trivial", "gradient"}
    for row in rows["bounds"]:
        assert {"method", "side", "value", "seconds", "sound", "status"} <= set(row)
        assert row["status"] in ("ok", "skipped", "timed out")
    assert by_method["trivial"]["status"] == "ok" and by_method["trivial"]["sound"] is True
    assert by_method["trivial"]["value"] >= by_method["gradient"]["value"] > 0
    assert by_method["lipsdp"]["status"] == "timed out" and by_method["lipsdp"]["value"] is None
    assert by_method["eclipse"]["status"] == "skipped"
    assert by_method["gradient"]["side"] == "lower"
    assert len(rows["architecture"]) == 2


def test_run_with_deadline_returns_raises_and_stops() -> None:
    assert run_with_deadline(lambda: 3, 5.0) == 3
    started = time.perf_counter()
    result = run_with_deadline(lambda: time.sleep(30), 0.5)
    assert isinstance(result, TimedOut) and time.perf_counter() - started < 10

    def not_applicable() -> None:
        raise MethodNotApplicableError("no form")

    with pytest.raises(MethodNotApplicableError, match="no form"):
        run_with_deadline(not_applicable, 5.0)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_with_deadline(lambda: 1 / 0, 5.0)


def _onnx_with(node: onnx.NodeProto, path) -> None:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1, name="fc"), node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "W"),
         numpy_helper.from_array(np.ones((1, 4, 1), dtype=np.float32), "K")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _refusal_files(tmp_path) -> dict[str, tuple[list[str], list[str]]]:  # type: ignore[no-untyped-def]
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.save(model, tmp_path / "whole.pt")
    misspelled = model.state_dict()
    misspelled["2.Bias"] = misspelled.pop("2.bias")
    torch.save(misspelled, tmp_path / "misspelled.pt")
    torch.save({"a.weight": torch.zeros(3, 4), "b.weight": torch.zeros(2, 4)}, tmp_path / "ab.pt")
    _onnx_with(helper.make_node("Erf", ["h"], ["y"], name="erf"), tmp_path / "erf.onnx")
    _onnx_with(helper.make_node("Conv", ["h", "K"], ["y"], name="conv"), tmp_path / "conv.onnx")
    plain, arch = str(tmp_path / "plain.pt"), ["--architecture", "linear,relu,linear"]
    return {
        "bare-state-dict": ([plain], ["bare state dict", "--architecture", ".onnx"]),
        "unknown-node": ([str(tmp_path / "erf.onnx")], ["'erf' (Erf) is not supported", "Gemm"]),
        "conv-node": ([str(tmp_path / "conv.onnx")], ["'conv' (Conv)", "convolution"]),
        "key-mismatch": ([str(tmp_path / "misspelled.pt"), *arch], ["unused keys 2.Bias"]),
        "missing-key": ([plain, "--architecture", "linear,relu,linear,relu,linear"],
                        ["missing keys 4.weight"]),
        "shape-mismatch": ([str(tmp_path / "ab.pt"), "--architecture", "a=linear,relu,b=linear"],
                           ["layer b", "expects 4 inputs but the layer before it gives 3"]),
        "spec-shape": ([plain, "--architecture", '{"input_dim": 5, "widths": [3], "num_classes": 2}'],
                       ["missing keys", "unused keys"]),
        "whole-pickled-module": ([str(tmp_path / "whole.pt")], ["whole pickled model", "ONNX"]),
    }


REFUSALS = ["bare-state-dict", "unknown-node", "conv-node", "key-mismatch", "missing-key",
            "shape-mismatch", "spec-shape", "whole-pickled-module"]


@pytest.mark.parametrize("command", ["bound", "certify", "export"])
@pytest.mark.parametrize("case", REFUSALS)
def test_every_refusal_is_one_line_with_exit_code_2(tmp_path, command, case) -> None:
    args, words = _refusal_files(tmp_path)[case]
    if command == "export":
        args = [args[0], str(tmp_path / "out.onnx"), *args[1:]]
    result = runner.invoke(app, [command, *args])
    assert_one_line_error(result, *words)
    assert not (tmp_path / "out.onnx").exists()


def _tightlip_checkpoint(directory, activation: str = "sincos") -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    spec = tl.ModelSpec(input_dim=6, widths=(5, 4), num_classes=3, activation=activation)
    save_checkpoint(
        directory,
        tl.build_model(spec),
        {"method": "tightlip", "model": {"kind": "mlp", "arguments": spec.to_dict()}, "train": {"norm": "2"}},
    )


def test_export_a_checkpoint_whose_bounds_read_back_identical(tmp_path) -> None:
    _tightlip_checkpoint(tmp_path / "checkpoint")
    onnx_path = tmp_path / "model.onnx"
    result = runner.invoke(
        app, ["export", str(tmp_path / "checkpoint"), str(onnx_path), "--exporter", "torchscript"]
    )
    assert result.exit_code == 0, result.output
    assert "reads back as the same network" in result.stdout and "float32" in result.stdout
    ops = {node.op_type for node in onnx.load(str(onnx_path)).graph.node}
    assert {"Sin", "Cos", "Concat"} <= ops and ops & {"Gemm", "MatMul"}
    values = {}
    for source in (tmp_path / "checkpoint", onnx_path):
        out = tmp_path / f"{source.name}.json"
        bound = runner.invoke(
            app,
            ["bound", str(source), "--method", "trivial", "--lower-seconds", "0.5", "--data",
             str(tmp_path), "--json", str(out)],
        )
        assert bound.exit_code == 0, bound.output
        rows = json.loads(out.read_text())["bounds"]
        values[source.name] = rows[0]["value"]
    assert values["checkpoint"] == values["model.onnx"]
    again = runner.invoke(app, ["export", str(tmp_path / "checkpoint"), str(onnx_path)])
    assert_one_line_error(again, "exists", "--force")


def _mnist_or_skip() -> None:
    mnist_dir_or_skip()


def test_certify_an_onnx_network(tmp_path) -> None:
    _mnist_or_skip()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.LeakyReLU(0.125), nn.Linear(16, 10))
    _export(model, tmp_path / "mnist.onnx", torch.rand(2, 1, 28, 28))
    result = runner.invoke(
        app,
        ["certify", str(tmp_path / "mnist.onnx"), "--quick", "--attack-limit", "20",
         "--lower-seconds", "1", "--out", str(tmp_path / "cert")],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "cert" / "metrics.json").read_text())
    assert metrics["method"] == "imported"
    assert metrics["config"]["model_format"] == "onnx"
    assert metrics["config"]["input_shape"] == [1, 28, 28]
    assert metrics["lipschitz_upper"] >= metrics["lipschitz_lower"] > 0


def test_certify_names_both_shapes_when_the_data_does_not_fit(tmp_path) -> None:
    _mnist_or_skip()
    _export(_sigmoid_net(), tmp_path / "small.onnx", torch.randn(2, 6))
    result = runner.invoke(app, ["certify", str(tmp_path / "small.onnx"), "--quick"])
    assert_one_line_error(result, "reads inputs of shape (6,)", "(784,)", "--dataset")
    assert not list(tmp_path.glob("certify-*"))


def test_bound_json_writes_a_large_witness_that_check_lower_re_certifies(tmp_path) -> None:
    """Audit (issue 21): for a 3072-input network ``bound --json`` recorded only the
    witness's shape; the tensors now go to a safetensors file beside the JSON."""
    import json

    from safetensors.torch import load_file

    from tightlip.bounds.check import check_lower
    from tightlip.certificate import Certificate

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3072, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    torch.save(model.state_dict(), tmp_path / "net.pt")
    out = tmp_path / "bounds.json"
    result = runner.invoke(app, ["bound", str(tmp_path / "net.pt"), "--architecture",
                                 "linear,relu,linear", "--method", "trivial", "--lower-seconds",
                                 "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["bounds"]
    lower = next(row for row in rows if row["side"] == "lower")
    assert lower["tensor_file"] == "bounds.safetensors"
    tensors = load_file(str(tmp_path / lower["tensor_file"]))
    certificate = Certificate.from_dict(lower, tensors)
    assert check_lower(model, certificate) >= certificate.value > 0


def test_certify_bound_best_uses_the_tightest_sound_bound(tmp_path) -> None:
    """Issue 21: certify used ECLipsE-Fast although LipSDP was tighter, with no option;
    ``--bound best`` certifies with the tightest sound bound, ``--bound trivial`` never loosens
    the method's own."""
    import json

    from conftest import mnist_dir_or_skip

    mnist_dir_or_skip()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 12), torch.nn.ReLU(), torch.nn.Linear(12, 10))
    torch.save(model.state_dict(), tmp_path / "net.pt")
    common = ["certify", str(tmp_path / "net.pt"), "--architecture", "linear,relu,linear",
              "--quick", "--attack-limit", "20", "--lower-seconds", "1"]
    values = {}
    for bound in (None, "best", "trivial"):
        out = tmp_path / f"cert-{bound}"
        args = [*common, "--out", str(out)] + ([] if bound is None else ["--bound", bound])
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        values[bound] = (metrics["lipschitz_upper"], metrics["upper_certificate"]["method"])
    assert values["best"][0] <= values[None][0]
    assert values["best"][1] in ("lipsdp", "eclipse", "syed-hu", "eclipse-fast", "trivial")
    assert values["best"][0] < values[None][0] * 0.999  # an SDP-class bound beats ECLipsE-Fast
    assert values["trivial"] == values[None]  # the trivial bound is not tighter: kept as it was
    bad = runner.invoke(app, [*common, "--bound", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "nope" in bad.stderr
