"""Certification: the margin constants, both certificates, and the attack cross-check."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import build_random_chain, train_blob_model

import tightlip as t
from tightlip.eval.certify import SoundnessError, certified_radii, certify
from tightlip.norms import margin_constant


def test_margin_constants() -> None:
    assert margin_constant("2") == pytest.approx(math.sqrt(2))
    assert margin_constant("inf") == 2.0
    assert margin_constant("1") == 1.0


def _trained(norm: str):
    return train_blob_model(norm, "abs", 32)


@pytest.mark.parametrize("norm", ["2", "inf", "1"])
def test_certified_points_survive_pgd(norm: str) -> None:
    model, x, y = _trained(norm)
    chain = t.to_chain(model)
    upper = t.upper_bound(model, norm).value
    radii = {"2": (0.05, 0.2), "inf": (0.01, 0.05), "1": (0.1, 0.4)}[norm]
    result = certify(
        chain, x, y, norm, upper, radii, attack_model=model, pgd_steps=30, pgd_restarts=2
    )
    assert result.clean_accuracy > 0.9
    for radius in map(str, radii):
        for method in ("global", "last_layer"):
            assert result.certified_accuracy[method][f"{float(radius):g}"] <= (
                result.pgd_accuracy[f"{float(radius):g}"] + 1e-9
            )


def test_last_layer_certificate_dominates_global() -> None:
    model, x, y = _trained("2")
    chain = t.to_chain(model)
    margins = certified_radii(chain, x, y, "2", t.upper_bound(model, "2").value)
    assert torch.all(margins.last_layer_radius >= margins.global_radius * (1 - 1e-9))
    assert margins.global_radius.max() > 0


def test_wrong_bound_is_caught_by_the_attack() -> None:
    model, x, y = _trained("2")
    chain = t.to_chain(model)
    too_small = t.upper_bound(model, "2").value * 1e-3  # an unsound "certificate"
    with pytest.raises(SoundnessError):
        certify(
            chain,
            x,
            y,
            "2",
            too_small,
            (0.5, 2.0),
            backbone_upper=1e-3,
            attack_model=model,
            pgd_steps=30,
            pgd_restarts=2,
        )


def test_backbone_of_a_wide_conv_network_is_matrix_free(monkeypatch) -> None:
    """Issue 21: ``--arch c16k3`` ended the last-layer certificate in ``torch.eye(25088)``
    (5 GB); the backbone's read-out is now the matrix-free identity, never densified."""
    import tightlip as t
    from tightlip.eval.certify import certified_radii
    from tightlip.model import to_chain
    from tightlip.operators import Identity

    spec = t.ModelSpec(input_dim=784, arch="c32k3", num_classes=10, activation="sincos")
    chain = to_chain(t.build_model(spec).eval())
    backbone = chain.backbone()
    assert backbone is not None
    read_out = backbone.steps[-1].operator
    assert isinstance(read_out, Identity) and read_out.in_features == 2 * 32 * 28 * 28

    def refuse(*args, **kwargs):
        raise AssertionError("the backbone's identity was densified")

    monkeypatch.setattr(Identity, "dense", refuse)
    x, y = torch.rand(3, 784), torch.tensor([0, 1, 2])
    margins = certified_radii(chain, x, y, "2", t.upper_bound(chain, "2").value)
    assert margins is not None


def test_sandwich_last_layer_certificate_uses_its_own_backbone_bound() -> None:
    """Issue 21, item 4: a Sandwich model's last-layer certificate read 0 % because the chain
    merges the last output map into the head; its read-out (√γ·B, backbone ≈ √γ) certifies."""
    from tightlip.eval.certify import certified_radii
    from tightlip.methods import METHODS
    from tightlip.model import to_chain
    from tightlip.models.sandwich import SandwichMLP

    torch.manual_seed(0)
    model = SandwichMLP(12, (16, 16), 3).eval()
    chain = to_chain(model)
    x = torch.rand(40, 12)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    weight, backbone = METHODS.get("sandwich").read_out(model, "2")
    assert backbone <= 1.0 + 1e-6  # √γ·∏c with γ = 1

    def g(h: torch.Tensor) -> torch.Tensor:  # everything before the head
        for layer in model.layers[:-1]:
            h = layer(h)
        return h

    with torch.no_grad():  # the factorisation is the network: f = W g(x) + b
        rebuilt = g(x[:5]).double() @ weight.T + model.layers[-1].bias.double()
        torch.testing.assert_close(rebuilt, model(x[:5]).double(), rtol=1e-5, atol=1e-5)
    for point in x[:5]:  # and L_backbone bounds g's Jacobian (a wrong bound would be caught)
        jacobian = torch.autograd.functional.jacobian(lambda v: g(v[None])[0], point)
        assert float(torch.linalg.matrix_norm(jacobian.double(), 2)) <= backbone * (1 + 1e-6)
    upper = METHODS.get("sandwich").certified_bound(model, "2").value
    own = certified_radii(chain, x, y, "2", upper, read_out=(weight, backbone))
    from_chain = certified_radii(chain, x, y, "2", upper)
    counts = []
    for r in (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3):
        mine, theirs = own.certified(r, "last_layer"), from_chain.certified(r, "last_layer")
        # never looser than the global certificate (‖w_y − w_j‖ ≤ √2‖W‖, L_g‖W‖ ≤ L)
        assert bool((own.certified(r, "global") <= mine).all())
        counts.append((int(mine.sum()), int(theirs.sum())))
    assert all(mine >= theirs for mine, theirs in counts)
    assert any(mine > theirs for mine, theirs in counts), counts


def test_certified_accuracy_on_the_attacked_images_sits_beside_pgd() -> None:
    """Issue 21: certified accuracy over all images against PGD over the first N looked like a
    soundness bug; the certified fraction of the attacked images is reported too, ≤ PGD."""
    from tightlip.eval.certify import certify

    chain = build_random_chain([6, 12, 3], activation="relu", seed=3)
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = chain.forward(x.double()).argmax(dim=1)
    upper = __import__("tightlip").upper_bound(chain, "2").value
    result = certify(chain, x, y, "2", upper, (0.01, 0.1), pgd_steps=10, attack_limit=15)
    assert set(result.certified_on_attacked) == {"0.01", "0.1"}
    for key, value in result.certified_on_attacked.items():
        assert value <= result.pgd_accuracy[key] + 1e-12
    assert result.certified_on_attacked["0.01"] > 0
