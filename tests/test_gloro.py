"""GloRo (Leino, Wang & Fredrikson, ICML 2021) as a method: MinMax conv net, GloRo loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_image_data as _data

from tightlip.eval.certify import certify
from tightlip.layers import ChannelGroupSort
from tightlip.methods import METHODS, fit
from tightlip.model import ModelSpec, to_chain
from tightlip.settings import merge_settings
from tightlip.train.checkpoint import load_checkpoint

ARCH = "c4k3,c4k4s2,f16"






def _spec() -> ModelSpec:
    return ModelSpec(input_dim=64, num_classes=3, arch=ARCH, input_shape=(1, 8, 8))


def _jacobian_norms(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda t: model(t[None])[0]))(points)
    return torch.linalg.matrix_norm(jac.detach().double(), ord=2)


def test_gloro_defaults_are_the_published_mnist_settings() -> None:
    config = merge_settings("gloro", explicit={}).train
    assert (config.loss, config.margin_epsilon, config.lr, config.batch_size) == (
        "gloro",
        1.74,
        1e-3,
        256,
    )
    assert config.penalty == "none"


def test_gloro_epsilon_ramps_up_over_the_first_half() -> None:
    config = merge_settings("gloro", explicit={"epochs": 10}).train
    model, _ = METHODS.get("gloro").build(_spec(), config, {})
    objective = METHODS.get("gloro").objective(model, config, {})
    values = []
    for epoch in range(10):
        objective.start_epoch(epoch)
        values.append(objective.epsilon())
    assert all(a < b for a, b in zip(values[:5], values[1:5], strict=False))
    assert values[4:] == [pytest.approx(1.74)] * 6


def test_gloro_builds_a_minmax_net_with_biases() -> None:
    config = merge_settings("gloro", explicit={"epochs": 1}).train
    model, description = METHODS.get("gloro").build(_spec(), config, {})
    assert description["kind"] == "gloro"
    assert description["arguments"]["activation"] == "maxmin"
    chain = to_chain(model.eval())
    assert any(isinstance(s.activation, ChannelGroupSort) for s in chain.activation_steps)
    assert all(s.bias is not None for s in chain.affine_steps)
    x = torch.rand(3, 64)
    assert torch.allclose(model(x), model(x.reshape(3, 1, 8, 8)))


def test_gloro_trains_reloads_and_its_bound_is_sound(tmp_path: Path) -> None:
    x, y = _data()
    config = merge_settings(
        "gloro", explicit={"epochs": 2, "batch_size": 32, "margin_epsilon": 0.3}
    ).train
    result = fit("gloro", _spec(), config, x, y, out_dir=tmp_path, progress=False)
    model = result.model.eval()
    assert all(math.isfinite(h["loss"]) for h in result.history)
    reloaded = load_checkpoint(tmp_path).model.eval()
    assert torch.allclose(reloaded(x[:5]), model(x[:5]), atol=1e-6)
    bound = METHODS.get("gloro").certified_bound(model, "2").value
    generator = torch.Generator().manual_seed(1)
    points = torch.cat([x[:10], torch.rand(20, 64, generator=generator) * 2 - 0.5])
    assert bound >= float(_jacobian_norms(model, points).max())
    # every certificate (global, last-layer = GloRo's) is attacked; a broken one raises
    report = certify(
        to_chain(model), x, y, "2", bound, (0.05, 0.3), attack_model=model, pgd_steps=10
    )
    assert 0 <= report.certified_accuracy["last_layer"]["0.05"] <= report.clean_accuracy
