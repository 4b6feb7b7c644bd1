"""Activations describe themselves: every answer an activation gives a verifier is checked.

For each activation (the registered ones and ClippedReLU):

* ``slopes()``: every difference quotient ``(σ(a) − σ(b)) / (a − b)`` lies in ``[α, β]``;
* ``as_slope_network(d)``: ``C φ(R z)`` equals ``σ(z)``, and φ's pieces respect ``[α, β]``;
  activations without a form refuse with ``MethodNotApplicableError``;
* ``pieces(d)``: at random z, the observed choice's constraints hold at z and the induced
  affine map reproduces ``σ(z)``;
* ``surrogate(τ)``: tends to σ as ``τ → 0``; a per-row tensor τ equals the rows' floats;
* ``positively_homogeneous`` and ``sign_jacobian``: the claimed identities hold.

Then the point of it: ECLipsE, ECLipsE-Fast, LipSDP and Syed–Hu accept a LocalLipMLP
(ClippedReLU, slopes in [0, 1]) and their bounds are at least the exact constant.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tightlip import lower_bound, upper_bound
from tightlip.bounds.exact import enumerate_regions
from tightlip.bounds.slope import to_slope_network
from tightlip.errors import MethodNotApplicableError
from tightlip.layers import ACTIVATIONS, Activation, ClippedReLU, make_activation
from tightlip.model import to_chain
from tightlip.models.local_lip import LocalLipMLP
from tightlip.norms import NORMS, operator_norm

WIDTH = 4


def _clipped() -> ClippedReLU:
    act = ClippedReLU(WIDTH)
    with torch.no_grad():
        act.threshold.copy_(torch.tensor([0.5, 1.0, 2.0, 0.0]))  # θ⁺ = 0 included
    return act


def _activation(name: str) -> Activation:
    return _clipped() if name == "clipped" else make_activation(name)


NAMES = [*sorted(ACTIVATIONS), "clipped"]


def _points(seed: int, count: int = 200) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-2, 1.5, count, dtype=torch.float64).unsqueeze(-1)
    return scales * torch.randn(count, WIDTH, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_slopes_bound_every_difference_quotient(name: str) -> None:
    act = _activation(name)
    slopes = act.slopes()
    if slopes is None:
        assert act.expansion != 1 or name == "maxmin"  # only non-elementwise maps lack slopes
        return
    alpha, beta = slopes
    a, b = _points(1), _points(2)
    with torch.no_grad():
        quotients = (act(a) - act(b)) / (a - b)
    assert float(quotients.min()) >= alpha - 1e-12
    assert float(quotients.max()) <= beta + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_slope_form_reproduces_the_activation(name: str) -> None:
    act = _activation(name)
    try:
        form = act.as_slope_network(WIDTH)
    except MethodNotApplicableError as exc:
        assert name in ("sincos", "maxmin")
        assert str(exc)  # the reason
        return
    z = _points(3).numpy()
    inner = np.concatenate([r * z for r in form.rows], axis=-1)  # R z
    out = np.empty_like(inner)
    start = 0
    for piece in form.pieces:
        block = slice(start, start + piece.count)
        out[:, block] = piece.function(inner[:, block])
        start += piece.count
    assert start == len(form.rows) * WIDTH == form.width
    if form.columns is not None:  # C = [c_1 I, c_2 I, …]
        out = sum(c * out[:, k * WIDTH : (k + 1) * WIDTH] for k, c in enumerate(form.columns))
    with torch.no_grad():
        expected = act(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)
    # φ's difference quotients respect [α, β]
    shifted = inner + 1e-3 * np.random.default_rng(0).standard_normal(inner.shape)
    phi = np.concatenate([p.function(x) for p, x in _split(form.pieces, inner)], axis=-1)
    phi2 = np.concatenate([p.function(x) for p, x in _split(form.pieces, shifted)], axis=-1)
    quotients = (phi - phi2) / (inner - shifted)
    assert quotients.min() >= form.alpha - 1e-9 and quotients.max() <= form.beta + 1e-9


def _split(pieces, values):  # type: ignore[no-untyped-def]
    start = 0
    for piece in pieces:
        yield piece, values[:, start : start + piece.count]
        start += piece.count


@pytest.mark.parametrize("name", NAMES)
def test_pieces_describe_the_activation(name: str) -> None:
    act = _activation(name)
    pieces = act.pieces(WIDTH)
    if not act.piecewise_linear:
        assert pieces is None
        return
    assert pieces is not None
    identity = np.eye(WIDTH)
    for z in _points(4).numpy():
        pattern = pieces.observe(z)
        assert pattern is not None  # random points are off the boundaries
        assert all(choice in pieces.choices for choice in pattern)
        for unit, choice in enumerate(pattern):
            block = slice(unit * pieces.unit_size, (unit + 1) * pieces.unit_size)
            for g, h in pieces.constraints(unit, identity[block], np.zeros(WIDTH)[block], choice):
                assert float(g @ z + h) > 0  # the cell of the observed choice contains z
        m, offset = pieces.linear_map(pattern)
        affine = m @ z + (0.0 if offset is None else offset)
        with torch.no_grad():
            expected = act(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(affine, expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_surrogates_converge_and_take_one_temperature_per_row(name: str) -> None:
    act = _activation(name)
    z = _points(5, count=8)
    temperatures = torch.logspace(-3, 0, 8, dtype=torch.float64).unsqueeze(-1)
    per_row = act.surrogate(temperatures)(z)
    for row in range(8):
        alone = act.surrogate(float(temperatures[row]))(z[row : row + 1])
        torch.testing.assert_close(per_row[row : row + 1], alone, rtol=1e-12, atol=1e-12)
    if act.piecewise_linear:
        with torch.no_grad():
            exact = act(z)
        for temperature, tolerance in ((1e-2, 3e-2), (1e-5, 3e-5)):
            with torch.no_grad():
                gap = (act.surrogate(temperature)(z) - exact).abs().max()
            assert float(gap) <= tolerance


@pytest.mark.parametrize("name", NAMES)
def test_homogeneity_and_sign_jacobian_claims(name: str) -> None:
    act = _activation(name)
    z = _points(6)
    with torch.no_grad():
        if act.positively_homogeneous:
            torch.testing.assert_close(act(3.0 * z), 3.0 * act(z), rtol=1e-14, atol=1e-14)
        if act.sign_jacobian:
            signs = torch.where(_points(7) >= 0, 1.0, -1.0).to(torch.float64)
            torch.testing.assert_close(act(signs * z.abs()), z.abs())
    if act.sign_jacobian:
        for point in z[:10]:
            jac = torch.autograd.functional.jacobian(act, point)
            torch.testing.assert_close(jac, torch.diag(torch.sign(point)))
    if name == "clipped":
        assert not act.positively_homogeneous  # the threshold does not scale


def test_clipped_relu_lipschitz_constant_holds_and_is_attained() -> None:
    act = _clipped()
    sup = dict.fromkeys(NORMS, 0.0)
    for z in _points(8):
        jac = torch.autograd.functional.jacobian(act, z)
        for norm in NORMS:
            value = operator_norm(jac, norm)
            assert value <= act.lipschitz(norm)
            sup[norm] = max(sup[norm], value)
    assert all(sup[norm] == act.lipschitz(norm) == 1.0 for norm in NORMS)


# --------------------------------------------------------------------------------------------
# The verifiers accept ClippedReLU networks (LocalLipMLP)
# --------------------------------------------------------------------------------------------

L2_METHODS = ("eclipse-fast", "eclipse", "lipsdp", "syed-hu")


def local_lip_mlp(input_dim: int, widths: tuple[int, ...], seed: int) -> LocalLipMLP:
    torch.manual_seed(seed)
    model = LocalLipMLP(input_dim=input_dim, widths=widths, num_classes=2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for act in model.clipped():
            act.threshold.copy_(0.2 + 1.3 * torch.rand(act.features, generator=generator))
        for linear in model.linears():  # large enough that the thresholds are crossed
            linear.weight.mul_(2.0)
            linear.bias.mul_(2.0)
    return model


def dense_jacobian_max(chain, points: torch.Tensor) -> float:  # type: ignore[no-untyped-def]
    jac = torch.func.vmap(torch.func.jacrev(lambda x: chain(x[None])[0]))(points)
    return float(torch.linalg.matrix_norm(jac.detach(), ord=2).max())


@pytest.mark.parametrize("seed", [0, 4])
def test_l2_verifiers_accept_local_lip_mlp_and_are_sound(seed: int) -> None:
    """Tiny LocalLipMLP: exact constant by region enumeration (the clip's three pieces)."""
    chain = to_chain(local_lip_mlp(2, (3, 3), seed))
    enumeration = enumerate_regions(chain)
    patterns = [layer for region in enumeration.regions for layer in region.pattern]
    assert any(2 in layer for layer in patterns)  # some regions have clipped units
    exact, region = enumeration.lipschitz("2")
    assert exact > 0 and region is not None and region.verified
    # the value is witnessed: autograd's Jacobian at the region's interior point has that norm
    at_witness = torch.func.jacrev(lambda x: chain(x[None])[0])(region.witness).detach()
    assert operator_norm(at_witness, "2") == pytest.approx(exact, rel=1e-12)
    generator = torch.Generator().manual_seed(seed)
    radii = torch.logspace(-1, 1.5, 20_000, dtype=torch.float64).unsqueeze(-1)
    points = radii * torch.randn(20_000, 2, generator=generator, dtype=torch.float64)
    assert dense_jacobian_max(chain, points) <= exact * (1 + 1e-12)  # nothing above it
    trivial = upper_bound(chain, "2", "trivial").value
    for method in L2_METHODS:
        cert = upper_bound(chain, "2", method)
        assert cert.sound and cert.side == "upper"
        assert cert.value >= exact, method
        assert cert.value <= trivial * (1 + 1e-6), method  # [0, 1] slopes: never worse


def test_l2_verifiers_on_a_wider_local_lip_mlp() -> None:
    """Beyond enumeration: every bound is above the gradient search's witnessed value."""
    chain = to_chain(local_lip_mlp(6, (8, 8), seed=3))
    net = to_slope_network(chain)
    x = torch.randn(64, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = chain(x).numpy()
    np.testing.assert_allclose(net.forward(x.numpy()), expected, rtol=1e-12, atol=1e-12)
    lower = lower_bound(chain, "2", "gradient", steps=40, num_random=16, screen=1024).value
    assert lower > 0
    for method in L2_METHODS:
        assert upper_bound(chain, "2", method).value >= lower, method


def test_milp_refuses_clipped_relu_with_its_reason() -> None:
    chain = to_chain(local_lip_mlp(2, (3,), seed=0))
    with pytest.raises(MethodNotApplicableError, match="clipped_relu"):
        lower_bound(chain, "inf", "milp")
    assert math.isfinite(upper_bound(chain, "inf", "trivial").value)
