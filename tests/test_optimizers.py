"""Muon: orthogonalised spectral steps on matrices and kernels, Adam on vectors; resumable."""

from __future__ import annotations

import pytest
import torch

import tightlip as t
from tightlip.errors import BadArgumentError
from tightlip.methods import fit
from tightlip.train.config import TrainConfig
from tightlip.train.optimizers import Muon, make_optimizer, orthogonalize


@pytest.mark.parametrize("shape", [(40, 40), (16, 50), (50, 16), (3, 200)])
def test_orthogonalize_pushes_every_singular_value_near_one(shape) -> None:
    generator = torch.Generator().manual_seed(1)
    matrix = torch.randn(*shape, generator=generator) @ torch.diag(
        torch.logspace(-1, 0, shape[1], dtype=torch.float32)
    )
    values = torch.linalg.svdvals(orthogonalize(matrix).double())
    assert values.shape[0] == min(shape)
    assert float(values.max()) < 1.3
    assert float(values.min()) > 0.3  # a 10× smaller direction moves about as much


def test_a_spectral_step_moves_each_layer_by_about_lr_in_the_spectral_norm() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(30, 20)
    conv = torch.nn.Conv2d(3, 8, 3)
    params = [layer.weight, layer.bias, conv.weight]
    before = [p.detach().clone() for p in params]
    optimizer = Muon(params, lr=0.01)
    loss = layer(torch.randn(5, 30)).square().sum() + conv(torch.randn(2, 3, 6, 6)).sum()
    loss.backward()
    optimizer.step()
    for weight, old in ((layer.weight, before[0]), (conv.weight, before[2])):
        step = (weight.detach() - old).reshape(weight.shape[0], -1).double()
        rows, cols = step.shape
        scale = max(1.0, rows / cols) ** 0.5
        assert 0.005 * scale < float(torch.linalg.matrix_norm(step, 2)) < 0.013 * scale
    # the bias took an Adam step of lr · ADAM_LR_FACTOR per entry (first step: ±lr/10)
    assert torch.allclose((layer.bias.detach() - before[1]).abs(), torch.full((20,), 1e-3), atol=1e-6)


def test_unknown_optimizer_is_refused_in_one_line() -> None:
    with pytest.raises(BadArgumentError, match="optimizer 'sgd'"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(BadArgumentError):
        make_optimizer(torch.nn.Linear(2, 2), "sgd", 0.1)


def test_muon_run_resumes_bit_for_bit(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(240, 12, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    spec = t.ModelSpec(input_dim=12, widths=(16, 16), num_classes=3, activation="abs", bias=True)
    config = TrainConfig(epochs=3, batch_size=40, lr=5e-3, optimizer="muon", penalty_weight=0.1)
    full = fit("tightlip", spec, config, x, y, out_dir=tmp_path / "full", progress=False)
    fit("tightlip", spec, config, x, y, out_dir=tmp_path / "cut", progress=False, stop_after_epochs=1)
    resumed = fit("tightlip", spec, config, x, y, out_dir=tmp_path / "cut", progress=False, resume=True)
    for (name, a), b in zip(
        full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # training with spectral steps still ends in a model whose sound bound is computed from
    # its actual weights: the trivial bound equals the product of certified layer norms
    bound = t.upper_bound(full.model, "2", "trivial").value
    norms = [
        float(torch.linalg.matrix_norm(m.weight.detach().double(), 2))
        for m in full.model.modules()
        if isinstance(m, torch.nn.Linear)
    ]
    product = norms[0] * norms[1] * norms[2]
    assert product <= bound <= product * (1 + 1e-6)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_rescaling_keeps_the_normalised_logits_and_resets_every_estimate(norm) -> None:
    from tightlip.train.penalty import TrivialBoundEstimator

    torch.manual_seed(3)
    spec = t.ModelSpec(
        input_dim=1 * 8 * 8, arch="c4k3,c4k3s2,f16", num_classes=3, activation="abs", bias=True,
        norm=norm,
    )
    model = t.build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.7).add_(0.05)
    estimator = TrivialBoundEstimator(model, norm, iterations=3)
    x = torch.randn(6, 64)
    before = model(x) / estimator(update=False).exp()
    estimator.rescale_layers_()
    after = model(x) / estimator(update=False).exp()
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    for value in estimator.layer_norms(update=False):
        assert abs(float(value.detach()) - 1.0) < 1e-5


def test_rescaling_refuses_an_activation_that_is_not_homogeneous() -> None:
    spec = t.ModelSpec(input_dim=5, widths=(8,), num_classes=2, activation="sincos")
    config = TrainConfig(projection="rescale")
    x, y = torch.randn(10, 5), torch.randint(0, 2, (10,))
    with pytest.raises(BadArgumentError, match="positively homogeneous"):
        fit("tightlip", spec, config, x, y, progress=False)


def test_clipping_projects_onto_the_spectral_ball_keeping_small_singular_values() -> None:
    from tightlip.train.projections import clip_singular_values

    generator = torch.Generator().manual_seed(2)
    for shape in ((20, 50), (50, 20), (30, 30)):
        u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=generator, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=generator, dtype=torch.float64))
        k = min(shape)
        sigma = torch.linspace(0.1, 3.0, k, dtype=torch.float64)
        w = u[:, :k] @ torch.diag(sigma) @ v[:, :k].T
        clipped = clip_singular_values(w)
        expected = u[:, :k] @ torch.diag(sigma.clamp(max=1.0)) @ v[:, :k].T
        torch.testing.assert_close(clipped, expected, atol=1e-10, rtol=0)
        # a matrix already inside the ball is unchanged; a repeated spectrum is no problem
        torch.testing.assert_close(clip_singular_values(clipped), clipped, atol=1e-10, rtol=0)


def test_row_projection_onto_the_l1_ball_is_the_nearest_point() -> None:
    from tightlip.train.projections import project_dense, project_rows_to_l1_ball

    generator = torch.Generator().manual_seed(4)
    w = torch.randn(12, 9, generator=generator, dtype=torch.float64) * 0.5
    w[0] *= 0.01  # a row already inside the ball
    projected = project_rows_to_l1_ball(w)
    sums = projected.abs().sum(dim=1)
    assert float(sums.max()) <= 1.0 + 1e-12
    torch.testing.assert_close(projected[0], w[0])
    for row, target in zip(w[1:], projected[1:], strict=True):
        if float(row.abs().sum()) > 1:
            assert abs(float(target.abs().sum()) - 1.0) < 1e-12
            # optimality: no random point of the ball is closer
            for _ in range(50):
                other = torch.randn(9, generator=generator, dtype=torch.float64)
                other = other / other.abs().sum() * float(torch.rand((), generator=generator, dtype=torch.float64))
                assert float((row - target).norm()) <= float((row - other).norm()) + 1e-12
    assert float(project_dense(w, "1").abs().sum(dim=0).max()) <= 1.0 + 1e-12
    assert float(project_dense(w, "inf").abs().sum(dim=1).max()) <= 1.0 + 1e-12


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_clip_projection_trains_and_the_bound_is_recomputed_from_the_weights(norm) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 10, generator=generator)
    y = (x[:, 0] + x[:, 1] > 0).long()
    spec = t.ModelSpec(input_dim=10, widths=(16, 16), num_classes=2, activation="abs", norm=norm)
    config = TrainConfig(
        epochs=2, batch_size=50, lr=1e-2, optimizer="muon", projection="clip", norm=norm
    )
    model = fit("tightlip", spec, config, x, y, progress=False).model
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    norms = [
        float(torch.linalg.matrix_norm(m.weight.detach().double(), 2))
        if norm == "2"
        else float(m.weight.detach().double().abs().sum(dim=1).max())
        for m in layers
    ]
    assert all(value <= 1.0 + 1e-5 for value in norms)
    bound = t.upper_bound(model, norm, "trivial").value
    product = norms[0] * norms[1] * norms[2]
    assert product * (1 - 1e-6) <= bound <= product * (1 + 1e-4)


def test_clip_projection_of_a_convolution_keeps_its_operator_norm_near_one() -> None:
    from tightlip.train.penalty import TrivialBoundEstimator

    torch.manual_seed(5)
    spec = t.ModelSpec(input_dim=64, arch="c4k3,c6k3s2,f8", num_classes=3, activation="abs")
    model = t.build_model(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    estimator = TrivialBoundEstimator(model, "2", iterations=30)
    estimator.clip_layers_()
    estimator.train()
    for _ in range(5):
        estimator.layer_norms(update=True)  # let the power iteration settle on the new weights
    for value in estimator.layer_norms(update=False):
        assert float(value.detach()) <= 1.0 + 1e-3
    bound = t.upper_bound(model, "2", "trivial").value
    assert bound <= 1.02  # the sound bound of the projected weights (power iteration lags a bit)
