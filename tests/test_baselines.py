"""Baselines: Sandwich is 1-Lipschitz per layer and γ overall, local bounds are sound and never
above the trivial bound, every method trains, reloads and certifies without a PGD counterexample.

Tiny sizes throughout (2 shared cores): MNIST subsets when the data is present, else random data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import mnist_dir_or_skip

from tightlip import upper_bound
from tightlip.eval.attacks import pgd_attack
from tightlip.eval.certify import certify
from tightlip.methods import METHODS, Method
from tightlip.model import ModelSpec, to_chain
from tightlip.models.local_lip import (
    ClippedReLU,
    LocalLipMLP,
    certify_local,
    local_bounds,
    local_lipschitz,
    masked_norms_certified,
)
from tightlip.models.sandwich import SandwichLinear, SandwichMLP, cayley
from tightlip.settings import merge_settings
from tightlip.train.checkpoint import load_checkpoint
from tightlip.train.loop import TrainConfig, train
from tightlip.train.losses import gloro_bottom_logit, offset_cross_entropy


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matrices run far faster on one thread when the 2 cores are shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """600 training and 100 test MNIST images (the test is skipped only when MNIST is not
    installed; any other data error fails it)."""
    from tightlip.data import load_mnist

    mnist_dir_or_skip()
    x, y = load_mnist(None, "train", limit=600)
    xt, yt = load_mnist(None, "test", limit=100)
    return x, y, xt, yt


def _config(method: Method, **overrides: object) -> TrainConfig:
    explicit = {"epochs": 1, "batch_size": 100, **overrides}
    return merge_settings(method.name, explicit=explicit).train


def _jacobian_norms(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda t: model(t[None])[0]))(points)
    return torch.linalg.matrix_norm(jac.detach().double(), ord=2)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------


def test_offset_cross_entropy_matches_formula() -> None:
    z, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    expected = 0.25 * F.cross_entropy((z - 2.0 * F.one_hot(y, 4)) / 0.25, y)
    assert torch.allclose(offset_cross_entropy(z, y, offset=2.0, temperature=0.25), expected)


def test_gloro_bottom_logit_brute_force() -> None:
    z, y, w = torch.randn(3, 4), torch.tensor([2, 0, 3]), torch.randn(4, 6)
    bottom = gloro_bottom_logit(
        z, y, w, backbone_lipschitz=torch.tensor([1.0, 2.0, 0.5]), epsilon=0.3
    )
    for b, lip in enumerate([1.0, 2.0, 0.5]):
        values = [z[b, j] + (w[y[b]] - w[j]).norm() * lip * 0.3 for j in range(4) if j != int(y[b])]
        assert torch.isclose(bottom[b], torch.stack(values).max())


# --------------------------------------------------------------------------------------------
# Sandwich
# --------------------------------------------------------------------------------------------


def test_cayley_has_orthonormal_rows() -> None:
    for shape in [(3, 3), (3, 8), (5, 12)]:
        q = cayley(torch.randn(*shape, dtype=torch.float64))
        assert torch.allclose(q @ q.T, torch.eye(shape[0], dtype=torch.float64), atol=1e-12)


def test_sandwich_layer_is_one_lipschitz_for_every_activation_pattern() -> None:
    layer = SandwichLinear(4, 3).double()
    with torch.no_grad():
        layer.psi.copy_(torch.tensor([0.7, -1.2, 0.3]))
        layer.bias.normal_()
    first, _, second = layer.chain_steps()
    # On each linear piece the Jacobian is second · D · first with D a 0/1 diagonal.
    worst, trivial = 0.0, 0.0
    for pattern in itertools.product([0.0, 1.0], repeat=3):
        d = torch.diag(torch.tensor(pattern, dtype=torch.float64))
        worst = max(worst, float(torch.linalg.matrix_norm(second.weight @ d @ first.weight, 2)))
    trivial = float(torch.linalg.matrix_norm(second.weight, 2)) * float(
        torch.linalg.matrix_norm(first.weight, 2)
    )
    assert worst <= 1 + 1e-12
    assert trivial > 1.05  # the certificate comes from the structure, not the product of norms
    layer.eval()
    points = torch.randn(300, 4, dtype=torch.float64) * 3
    assert float(_jacobian_norms(layer, points).max()) <= 1 + 1e-6


def test_trained_sandwich_bound_is_gamma_and_sound(mnist) -> None:
    x, y, xt, yt = mnist
    method = METHODS.get("sandwich")
    config = _config(method)
    model, _ = method.build(ModelSpec(widths=(32, 32)), config, {"gamma": 2.0})
    assert isinstance(model, SandwichMLP) and model.gamma == 2.0
    train(model, method.objective(model, config, {}), x, y, config, progress=False)
    bound = method.certified_bound(model, "2").value
    assert 2.0 <= bound <= 2.0 * (1 + 1e-8)
    assert model.certified_lipschitz(tight=True) <= bound
    jac = _jacobian_norms(model, torch.cat([xt[:50], torch.rand(50, 784)]))
    assert float(jac.max()) <= bound
    chain = to_chain(model)
    assert torch.allclose(chain(xt[:8].double()), model(xt[:8]).double(), atol=1e-5)
    assert upper_bound(chain, "2", "trivial").value >= float(jac.max())
    result = certify(chain, xt, yt, "2", bound, (0.1, 0.3), attack_model=model, pgd_steps=20)
    assert result.certified_accuracy["global"]["0.1"] <= result.clean_accuracy


def test_sandwich_eval_cache_follows_parameters() -> None:
    model = SandwichMLP(6, (4,), 3).eval()
    x = torch.rand(5, 6)
    before = model(x)
    state = {k: v + 0.1 * torch.randn_like(v) for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    after = model(x)
    fresh = SandwichMLP(6, (4,), 3)
    fresh.load_state_dict(state)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, fresh.eval()(x), atol=1e-6)


# --------------------------------------------------------------------------------------------
# local Lipschitz bounds
# --------------------------------------------------------------------------------------------


def test_clipped_relu_is_a_chain_activation() -> None:
    model = LocalLipMLP(5, (4, 4), 3, init=0.5)
    chain = to_chain(model)
    x = torch.randn(7, 5) * 3
    assert torch.allclose(chain(x.double()), model(x).double(), atol=1e-6)
    act = ClippedReLU(3, init=0.5)
    z = torch.linspace(-2, 2, 9)[:, None].expand(9, 3)
    assert torch.allclose(act(z), torch.relu(z) - torch.relu(z - 0.5))
    assert torch.allclose(act.smoothed(1e-3)(z), act(z), atol=1e-2)


def test_masked_norms_certified_upper_bound_exact_norms() -> None:
    w = torch.randn(6, 9, dtype=torch.float64)
    rows = (torch.rand(4, 6) > 0.4).double()
    cols = (torch.rand(4, 9) > 0.4).double()
    for norm, order in (("2", 2), ("1", 1), ("inf", math.inf)):
        got = masked_norms_certified(w, rows, cols, norm)
        exact = torch.linalg.matrix_norm(w[None] * rows[:, :, None] * cols[:, None, :], order)
        assert torch.all(got >= exact) and torch.all(got <= exact * (1 + 1e-6) + 1e-6)


def _trained_local_lip(x: torch.Tensor, y: torch.Tensor) -> LocalLipMLP:
    method = METHODS.get("local-lip")
    config = _config(method, epochs=2, margin_epsilon=0.3)
    model, _ = method.build(ModelSpec(widths=(32, 32)), config, {})
    train(model, method.objective(model, config, {}), x, y, config, progress=False)
    assert isinstance(model, LocalLipMLP)
    return model.eval()


def test_local_bound_is_sound_and_below_trivial(mnist) -> None:
    x, y, xt, yt = mnist
    model = _trained_local_lip(x, y)
    trivial = upper_bound(model, "2", "trivial").value
    eps = 0.3
    local = local_lipschitz(model, xt[:40], eps)
    assert torch.all(local <= trivial)
    bounds = local_bounds(model, xt[:40], eps)
    assert bool((bounds.masks[0] < 1).any())  # some units are provably fixed
    # No point of the ball has a steeper Jacobian than that input's local bound.
    generator = torch.Generator().manual_seed(1)
    for i in range(0, 40, 4):
        direction = torch.randn(30, 784, generator=generator)
        radius = eps * torch.rand(30, 1, generator=generator)
        points = xt[i] + radius * direction / direction.norm(dim=1, keepdim=True)
        assert float(_jacobian_norms(model, points).max()) <= float(local[i])


def test_local_certificates_survive_pgd(mnist) -> None:
    x, y, xt, yt = mnist
    model = _trained_local_lip(x, y)
    radii = (0.05, 0.15, 0.3)
    result = certify_local(model, xt, yt, "2", radii)
    for eps in radii:
        mask = result["certified_mask"][f"{eps:g}"]
        broken, _ = pgd_attack(model, xt, yt, "2", eps, steps=30, restarts=2)
        assert not bool((mask & broken).any()), f"certified point broken at ε={eps}"
    assert result["certified_accuracy"]["0.05"] > 0


# --------------------------------------------------------------------------------------------
# every method in the same harness
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_method_trains_reloads_and_certifies_soundly(name: str, mnist, tmp_path: Path) -> None:
    x, y, xt, yt = mnist
    method = METHODS.get(name)
    config = _config(method)
    model, description = method.build(ModelSpec(widths=(32, 32)), config, {})
    objective = method.objective(model, config, {})
    result = train(
        model,
        objective,
        x,
        y,
        config,
        out_dir=tmp_path,
        model_description=description,
        method=name,
        progress=False,
    )
    assert math.isfinite(result.history[-1]["loss"])
    reloaded = load_checkpoint(tmp_path).model
    assert torch.allclose(reloaded(xt[:5]), model(xt[:5]), atol=1e-5)
    bound = method.certified_bound(model, "2").value
    assert bound >= float(_jacobian_norms(model, xt[:20]).max())
    radii = (0.05, 0.3)
    # certify() raises SoundnessError if PGD breaks a certified point.
    report = certify(to_chain(model), xt, yt, "2", bound, radii, attack_model=model, pgd_steps=20)
    assert 0.0 <= report.certified_accuracy["global"]["0.05"] <= report.clean_accuracy
    if method.certify_local is not None:
        local = method.certify_local(model, xt, yt, "2", radii)
        for eps in radii:
            key = f"{eps:g}"
            global_mask = report.margins.certified(eps, "global")
            assert local["certified_accuracy"][key] >= float(global_mask.float().mean()) - 1e-9
