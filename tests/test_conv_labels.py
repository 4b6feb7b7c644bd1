"""Conv nets say what they are: the checkpoint's model kind and the layer lines of
``tightlip bound``.

* a convolutional spec is described with the kind ``spec``, an MLP still with ``mlp``; both
  kinds rebuild any spec, so a conv checkpoint written as ``mlp`` still loads;
* operators describe themselves (``conv 1→32 k3 s1 p1 on 28×28``, ``avg-pool 2``, a merged
  ``avg-pool 2 then conv …``), max pooling and channel MaxMin too, and ``tightlip bound``
  prints those lines.
"""

from __future__ import annotations

import torch
from typer.testing import CliRunner

import tightlip as t
from tightlip.cli import app
from tightlip.interop.describe import describe
from tightlip.methods import METHODS
from tightlip.model import ModelSpec, build_model
from tightlip.models import build_from_description
from tightlip.models.mlp import spec_description
from tightlip.train.checkpoint import load_checkpoint, save_checkpoint
from tightlip.train.config import TrainConfig

CONV = ModelSpec(
    input_dim=64, input_shape=(1, 8, 8), arch="c4k3,avg2,c6k3s2,max2,f8", num_classes=3,
    activation="maxmin",
)
MLP = ModelSpec(input_dim=12, widths=(8,), num_classes=3, activation="abs")


def test_conv_specs_have_the_spec_kind_and_mlps_keep_theirs() -> None:
    assert spec_description(CONV)["kind"] == "spec"
    assert spec_description(MLP) == {"kind": "mlp", "arguments": MLP.to_dict()}
    _, description = METHODS.get("tightlip").build(CONV, TrainConfig(), {})
    assert description["kind"] == "spec"  # what a trained conv checkpoint records


def test_both_kinds_rebuild_a_conv_spec(tmp_path) -> None:
    x = torch.rand(5, 64)
    torch.manual_seed(0)
    reference = build_model(CONV).eval()
    for kind in ("spec", "mlp"):  # "mlp": conv checkpoints written before the spec kind
        rebuilt = build_from_description({"kind": kind, "arguments": CONV.to_dict()})
        rebuilt.load_state_dict(reference.state_dict())
        assert torch.equal(rebuilt.eval()(x), reference(x))
        save_checkpoint(tmp_path / kind, reference, {"model": {"kind": kind,
                                                               "arguments": CONV.to_dict()}})
        assert torch.equal(load_checkpoint(tmp_path / kind).model.eval()(x), reference(x))


def test_layer_lines_describe_convolutions_and_pooling() -> None:
    chain = t.to_chain(build_model(CONV))
    lines = describe(chain, "2")
    assert "conv 1→4 k3 s1 p1 on 8×8" in lines[0] and "MaxMin on channels" in lines[0]
    assert "avg-pool 2 then conv 4→6 k3 s2 p1 on 4×4" in lines[1]
    assert "identity" in lines[2] and "max-pool 2" in lines[2]
    assert lines[3].split()[1] == "linear" and lines[4].split()[1] == "linear"
    assert not any("folded" in line for line in lines)


def test_operator_descriptions_name_every_setting() -> None:
    from tightlip.convolution.operators import AvgPool2dOperator, Conv2dOperator

    conv = Conv2dOperator(
        torch.ones(8, 3, 3, 5), (3, 16, 16), stride=(2, 1), dilation=(2, 2),
        padding=((1, 1), (2, 2)), circular=True,
    )
    assert conv.describe() == "conv 3→8 k3×5 s2×1 p(1,1,2,2) d2 circ on 16×16"
    pool = AvgPool2dOperator((2, 8, 8), (3, 3), stride=(1, 1), padding=((1, 1), (1, 1)))
    assert pool.describe() == "avg-pool 3 s1 p1"


def test_cli_bound_prints_conv_layer_labels(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(CONV)
    save_checkpoint(tmp_path, model, {"method": "tightlip", "model": spec_description(CONV),
                                      "train": {"norm": "2"}})
    result = CliRunner().invoke(app, ["bound", str(tmp_path), "--lower-seconds", "0.2"])
    assert result.exit_code == 0, result.output
    assert "conv 1→4 k3 s1 p1 on 8×8" in result.output
    assert "avg-pool 2 then conv 4→6 k3 s2 p1 on 4×4" in result.output
    assert "max-pool 2" in result.output
