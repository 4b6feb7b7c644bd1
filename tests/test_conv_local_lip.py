"""Local Lipschitz bounds through convolutions (Huang et al., NeurIPS 2021): tiny conv nets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tightlip import upper_bound
from tightlip.eval.attacks import pgd_attack
from tightlip.methods import METHODS, fit
from tightlip.model import ModelSpec, to_chain
from tightlip.models.local_lip import certify_local, local_bounds, local_lipschitz
from tightlip.models.local_lip_conv import ConvAffine, LocalLipConvNet
from tightlip.settings import merge_settings
from tightlip.train.checkpoint import load_checkpoint

ARCH = "c4k3,c4k4s2,f16"




def _net(seed: int = 0, init: float = 0.5) -> LocalLipConvNet:
    torch.manual_seed(seed)
    return LocalLipConvNet(ARCH, (1, 8, 8), 3, init=init).eval()


def _jacobian_norms(model: torch.nn.Module, points: torch.Tensor) -> torch.Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda t: model(t[None])[0]))(points)
    return torch.linalg.matrix_norm(jac.detach().double(), ord=2)


def _ball(centre: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, centre.numel(), generator=generator)
    radius = eps * torch.rand(n, 1, generator=generator)
    return centre + radius * direction / direction.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_interval_contains_images_of_box_points(stride: int) -> None:
    torch.manual_seed(stride)
    conv = torch.nn.Conv2d(2, 3, 3, stride=stride, padding=1)
    layer = ConvAffine(conv, (2, 5, 5))
    centre, radius = torch.randn(1, 50).double(), torch.rand(1, 50).double()
    mid = layer.apply(centre, torch.float64)
    spread = layer.abs_apply(radius, torch.float64)
    points = centre + radius * (2 * torch.rand(200, 50).double() - 1)
    images = layer.apply(points, torch.float64)
    assert bool(((images >= mid - spread - 1e-12) & (images <= mid + spread + 1e-12)).all())
    # and the interval is attained by the box's vertex in each coordinate
    assert torch.allclose(
        layer.abs_apply(radius, torch.float64), (layer.dense().abs() @ radius.T).T
    )


@pytest.mark.parametrize("norm", ["1", "2", "inf"])
def test_conv_masked_norms_bound_the_dense_masked_matrix(norm: str) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1)
    layer = ConvAffine(conv, (2, 6, 6))
    dense = layer.dense()
    rows = (torch.rand(3, layer.out_features) > 0.4).double()
    cols = (torch.rand(3, layer.in_features) > 0.4).double()
    bounds = layer.certified_norms(rows, cols, norm)  # type: ignore[arg-type]
    ord_ = {"1": 1, "2": 2, "inf": float("inf")}[norm]
    for b in range(3):
        exact = torch.linalg.matrix_norm(rows[b][:, None] * dense * cols[b][None], ord=ord_)
        assert float(bounds[b]) >= float(exact)
        if norm != "2":
            assert float(bounds[b]) <= float(exact) * (1 + 1e-12)
    assert layer.certified_full_norm(norm) >= float(  # type: ignore[arg-type]
        torch.linalg.matrix_norm(dense, ord=ord_)
    )


def test_schur_path_for_large_conv_layers_is_sound(monkeypatch: pytest.MonkeyPatch) -> None:
    from tightlip.models import local_lip_conv

    monkeypatch.setattr(local_lip_conv, "DENSE_ENTRIES", 0)
    torch.manual_seed(1)
    layer = ConvAffine(torch.nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5))
    rows = (torch.rand(2, layer.out_features) > 0.5).double()
    bounds = layer.certified_norms(rows, None, "2")
    for b in range(2):
        exact = torch.linalg.matrix_norm(rows[b][:, None] * layer.dense(), ord=2)
        assert float(bounds[b]) >= float(exact)


def test_local_bound_dominates_the_jacobian_in_the_ball_and_the_trivial_bound() -> None:
    model = _net()
    x = torch.rand(6, 64)
    eps = 0.2
    local = local_lipschitz(model, x, eps)
    trivial = upper_bound(model, "2", "trivial").value
    assert bool((local <= trivial * (1 + 1e-9)).all())
    for i in range(6):
        points = _ball(x[i], eps, 25, seed=i)
        assert float(_jacobian_norms(model, points).max()) <= float(local[i])
    # image-shaped input gives the same bounds
    same = local_lipschitz(model, x.reshape(6, 1, 8, 8), eps)
    assert torch.equal(local, same)


def test_local_certificates_are_never_broken_by_pgd() -> None:
    model = _net(seed=3, init=1.0)
    x = torch.rand(40, 64)
    y = model(x).argmax(dim=1)  # every point correct, so certificates are possible
    radii = (0.01, 0.05, 0.2)
    result = certify_local(model, x, y, "2", radii)
    for eps in radii:
        mask = result["certified_mask"][f"{eps:g}"]
        broken, _ = pgd_attack(model, x, y, "2", eps, steps=20, restarts=2)
        assert not bool((mask & broken).any()), f"certified point broken at ε={eps}"
    assert result["certified_accuracy"]["0.01"] > 0


def test_local_lip_trains_a_conv_net_reloads_and_its_chain_bound_is_sound(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 64, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    spec = ModelSpec(input_dim=64, num_classes=3, arch=ARCH, input_shape=(1, 8, 8))
    config = merge_settings(
        "local-lip", explicit={"epochs": 1, "batch_size": 32, "margin_epsilon": 0.3}
    ).train
    result = fit("local-lip", spec, config, x, y, out_dir=tmp_path, progress=False)
    model = result.model.eval()
    assert isinstance(model, LocalLipConvNet)
    reloaded = load_checkpoint(tmp_path).model.eval()
    assert torch.allclose(reloaded(x[:5]), model(x[:5]), atol=1e-6)
    bound = METHODS.get("local-lip").certified_bound(model, "2").value
    assert bound >= float(_jacobian_norms(model, x[:20]).max())
    chain = to_chain(model)
    assert torch.allclose(chain.forward(x[:4].double()).float(), model(x[:4]), atol=1e-5)
    training = local_bounds(model, x[:8], 0.3, certified=False)
    assert training.backbone.requires_grad
