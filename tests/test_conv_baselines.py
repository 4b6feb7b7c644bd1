"""The baselines on convolutional architectures: plain, specnorm, orthogonal (orthogonium) and
Sandwich (LBDN) conv nets of a tightlip ``arch`` string, trained, certified and reloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_image_data as _data

from tightlip.bounds import lower_bound
from tightlip.methods import METHODS, fit
from tightlip.model import ModelSpec, to_chain
from tightlip.models.sandwich_conv import SandwichConvNet, complex_cayley, space_to_depth
from tightlip.settings import merge_settings
from tightlip.train.checkpoint import load_checkpoint

ARCH = "c4k3,c4k4s2,f16"
METHOD_NAMES = ("plain", "specnorm", "orthogonal", "sandwich")






def _spec(arch: str = ARCH) -> ModelSpec:
    return ModelSpec(input_dim=64, num_classes=3, arch=arch, input_shape=(1, 8, 8))


def _jacobian_norms(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda t: model(t[None])[0]))(points)
    return torch.linalg.matrix_norm(jac.detach().double(), ord=2)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_conv_baseline_builds_the_arch_and_reads_flat_or_image_inputs(name: str) -> None:
    config = merge_settings(name, explicit={"epochs": 1}).train
    model, description = METHODS.get(name).build(_spec(), config, {})
    assert description["arguments"]["arch"] == ARCH
    model.eval()
    x = torch.rand(5, 64)
    out = model(x)
    assert out.shape == (5, 3)
    assert torch.allclose(out, model(x.reshape(5, 1, 8, 8)), atol=1e-6)
    chain = to_chain(model)
    assert chain.input_dim == 64 and chain.output_dim == 3
    assert torch.allclose(chain.forward(x.double()).float(), out, atol=1e-5)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_conv_baseline_trains_reloads_and_its_bound_is_sound(name: str, tmp_path: Path) -> None:
    x, y = _data()
    config = merge_settings(name, explicit={"epochs": 1, "batch_size": 32}).train
    result = fit(name, _spec(), config, x, y, out_dir=tmp_path, progress=False)
    model = result.model.eval()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    reloaded = load_checkpoint(tmp_path).model.eval()
    assert torch.allclose(reloaded(x[:5]), model(x[:5]), atol=1e-6)
    certificate = METHODS.get(name).certified_bound(model, "2")
    assert certificate.sound
    generator = torch.Generator().manual_seed(1)
    points = torch.cat([x[:8], torch.rand(8, 64, generator=generator) * 2 - 0.5])
    assert certificate.value >= float(_jacobian_norms(model, points).max())
    lower = lower_bound(model, "2", "gradient").value
    assert lower <= certificate.value
    trivial = METHODS.get("tightlip").certified_bound(model, "2").value
    assert trivial >= float(_jacobian_norms(model, points).max())


def test_orthogonal_conv_net_is_nearly_one_lipschitz_and_fixed_in_eval() -> None:
    config = merge_settings("orthogonal", explicit={"epochs": 1}).train
    model, _ = METHODS.get("orthogonal").build(_spec(), config, {})
    model.eval()
    x = torch.rand(4, 64)
    first = model(x)
    assert torch.equal(first, model(x))  # orthogonium's power iteration does not move it
    value = METHODS.get("orthogonal").certified_bound(model, "2").value
    assert 0.99 <= value <= 1.01


def test_complex_cayley_has_orthonormal_rows() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, dtype=torch.complex128, generator=generator)
    q = complex_cayley(x)
    assert torch.allclose(q @ q.mH, torch.eye(3, dtype=q.dtype).expand(6, 3, 3), atol=1e-12)


def test_space_to_depth_is_lbdn_rearrangement() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float64).reshape(1, 2, 4, 4)
    y = space_to_depth(x)
    assert y.shape == (1, 8, 2, 2)
    c, k1, k2, i, j = 1, 1, 0, 1, 0
    assert y[0, 4 * c + 2 * k1 + k2, i, j] == x[0, c, 2 * i + k1, 2 * j + k2]


@pytest.mark.parametrize("arch", [ARCH, "c4k3s2,c6k3,f8,f8"])
def test_sandwich_conv_is_gamma_lipschitz_and_its_chain_is_the_model(arch: str) -> None:
    torch.manual_seed(0)
    gamma = 2.0
    model = SandwichConvNet(_spec(arch), gamma=gamma).double().eval()
    certified = model.certified_lipschitz()
    assert gamma <= certified <= gamma * (1 + 1e-8)
    generator = torch.Generator().manual_seed(2)
    a = torch.rand(500, 64, dtype=torch.float64, generator=generator)
    b = a + 0.05 * torch.randn(a.shape, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        ratios = (model(a) - model(b)).norm(dim=1) / (a - b).norm(dim=1)
    assert float(ratios.max()) <= gamma
    assert float(_jacobian_norms(model, a[:20]).max()) <= certified
    chain = to_chain(model)
    assert torch.allclose(chain.forward(a), model(a), atol=1e-12)
    for step in chain.affine_steps:  # the operators' certified norms against the dense matrix
        assert step.certified_norm("2") >= float(torch.linalg.matrix_norm(step.weight, ord=2))


def test_sandwich_chain_applies_full_map_kernels_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from tightlip.models import sandwich_conv

    torch.manual_seed(0)
    model = SandwichConvNet(_spec()).double().eval()
    x = torch.rand(9, 64, dtype=torch.float64)
    whole = to_chain(model).forward(x)
    monkeypatch.setattr(sandwich_conv, "CHUNK_ENTRIES", 1)  # one image per chunk
    chain = to_chain(model)
    assert torch.allclose(chain.forward(x), whole, atol=1e-13)
    for step in chain.affine_steps:
        g = torch.rand(9, step.out_features, dtype=torch.float64)
        h = torch.rand(9, step.in_features, dtype=torch.float64)
        assert torch.allclose(
            (g * step.operator.apply(h)).sum(), (h * step.operator.apply_transpose(g)).sum()
        )


@pytest.mark.parametrize("name", ["sandwich", "orthogonal"])
def test_evaluate_certifies_conv_baselines_in_float32(name: str, tmp_path: Path) -> None:
    from tightlip.data import MnistData
    from tightlip.eval.config import EvalConfig
    from tightlip.eval.experiment import evaluate

    x, y = _data(96)
    config = merge_settings(name, explicit={"epochs": 1, "batch_size": 32}).train
    model = fit(name, _spec(), config, x[:64], y[:64], out_dir=tmp_path, progress=False).model
    data = MnistData(x[:64], y[:64], x[64:], y[64:])
    evaluation = EvalConfig(
        radii=(0.05, 0.1), pgd_steps=5, attack_limit=32, lower_starts=2, lower_seconds=1
    )
    metrics = evaluate(model, "2", data, evaluation, method=name)
    assert metrics["lipschitz_lower"] <= metrics["lipschitz_upper"]
    for kind, values in metrics["float32_certified_accuracy"].items():
        for key, value in values.items():
            assert value <= metrics["certified_accuracy"][kind][key]
