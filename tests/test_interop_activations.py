"""Sigmoid and LeakyReLU, the activations that imported networks bring.

* Sigmoid networks get ``Lip(σ) = 1/4`` per activation in every norm: the trivial bound is
  ``∏ ‖W_i‖ · 4^{−(L−1)}``, computed densely here; the slope-restricted verifiers see slopes
  ``[0, 1/4]`` and stay between the gradient lower bound and the trivial bound.
* ``LeakyReLU(a)`` has slopes ``[a, 1]`` in the slope-restricted verifiers and
  ``Lip = max(1, |a|)``; its linear pieces let exact-regions compute the exact constant, which
  every verifier's bound is at least.
* ``torch.nn.Sigmoid`` and ``torch.nn.LeakyReLU`` are read by ``to_chain``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from tightlip import lower_bound, upper_bound
from tightlip.bounds.slope import to_slope_network
from tightlip.layers import ACTIVATIONS, LeakyReLU, Sigmoid, make_activation
from tightlip.model import to_chain
from tightlip.norms import NORMS, certified_operator_norm, operator_norm

SLOPE_METHODS = ("eclipse-fast", "eclipse", "lipsdp", "syed-hu")


def _mlp(activation: Callable[[], nn.Module], dims: tuple[int, ...], seed: int) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(fan_out, fan_in, generator=generator))
            linear.bias.copy_(torch.randn(fan_out, generator=generator))
        layers.append(linear)
        if i < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).double()


def test_both_are_registered_and_built_by_name() -> None:
    assert {"sigmoid", "leaky-relu"} <= set(ACTIVATIONS.names())
    assert isinstance(make_activation("leaky_relu"), LeakyReLU)
    assert isinstance(make_activation("sigmoid"), Sigmoid)


@pytest.mark.parametrize("norm", NORMS)
def test_sigmoid_nets_get_a_quarter_per_layer(norm: str) -> None:
    model = _mlp(nn.Sigmoid, (5, 7, 6, 3), seed=1)
    chain = to_chain(model)
    assert all(isinstance(s.activation, Sigmoid) for s in chain.activation_steps)
    assert all(s.activation.lipschitz(norm) == 0.25 for s in chain.activation_steps)
    cert = upper_bound(chain, norm, "trivial")
    activation_factors = [layer.value for layer in cert.layers if "Sigmoid" in layer.kind]
    assert activation_factors == [0.25, 0.25], cert.layers
    dense = 1.0
    for linear in (model[0], model[2], model[4]):
        dense *= certified_operator_norm(linear.weight.detach(), norm)
    assert cert.value == pytest.approx(dense / 16, rel=1e-12)
    assert cert.value >= dense / 16


def test_sigmoid_slopes_in_the_slope_restricted_verifiers() -> None:
    chain = to_chain(_mlp(nn.Sigmoid, (4, 8, 8, 2), seed=2))
    net = to_slope_network(chain)
    assert [(a.alpha, a.beta) for a in net.activations] == [(0.0, 0.25), (0.0, 0.25)]
    x = torch.randn(32, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(net.forward(x.numpy())), chain(x))
    trivial = upper_bound(chain, "2", "trivial").value
    lower = lower_bound(chain, "2", "gradient", steps=40, num_random=16, screen=512).value
    assert 0 < lower <= trivial
    for method in SLOPE_METHODS:
        value = upper_bound(chain, "2", method).value
        assert lower <= value <= trivial * (1 + 1e-6), method


def test_sigmoid_lipschitz_constant_is_attained_at_zero() -> None:
    act = Sigmoid()
    z = torch.zeros(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(act, z)
    assert all(operator_norm(jac, norm) == 0.25 for norm in NORMS)


@pytest.mark.parametrize("slope", [0.0, 0.01, 0.3, 1.0, 2.0])
def test_leaky_relu_slopes_and_constant(slope: float) -> None:
    act = LeakyReLU(slope)
    assert act.slopes() == (min(slope, 1.0), max(slope, 1.0))
    assert all(act.lipschitz(norm) == max(1.0, slope) for norm in NORMS)
    z = torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(act(z), nn.functional.leaky_relu(z, slope))


@pytest.mark.parametrize("slope", [0.05, 0.5, 2.0])
def test_leaky_relu_in_the_verifiers(slope: float) -> None:
    """Slopes ``[a, 1]`` reach the slope-restricted verifiers; exact-regions uses the pieces;
    every upper bound is at least the exact constant, which the sampled Jacobians reach."""
    model = _mlp(lambda: nn.LeakyReLU(slope), (2, 5, 5, 2), seed=3)
    chain = to_chain(model)
    assert [s.activation.negative_slope for s in chain.activation_steps] == [slope, slope]
    net = to_slope_network(chain)
    slopes = (min(slope, 1.0), max(slope, 1.0))
    assert [(a.alpha, a.beta) for a in net.activations] == [slopes, slopes]
    exact = lower_bound(chain, "2", "exact-regions")
    assert exact.side == "exact" and exact.value > 0
    points = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jac = torch.func.vmap(torch.func.jacrev(lambda x: chain(x[None])[0]))(points * 3)
    sampled = float(torch.linalg.matrix_norm(jac, ord=2).max())
    assert sampled <= exact.value * (1 + 1e-9)
    assert sampled >= 0.9 * exact.value  # the exact value is a Jacobian the samples come near
    for method in ("trivial", *SLOPE_METHODS):
        assert upper_bound(chain, "2", method).value >= exact.value, method
