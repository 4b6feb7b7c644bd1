"""Lower bounds on conv nets: the search and the witness read large convolutions matrix-free."""

from __future__ import annotations

import pytest
import torch

import tightlip as t
from tightlip import lower_bound
from tightlip.bounds import check_lower
from tightlip.bounds.lower import network
from tightlip.bounds.lower.forward_error import ErrorBoundedNetwork
from tightlip.convolution.operators import Conv2dOperator
from tightlip.model import to_chain
from tightlip.operators import Product

ARCH_4C3F = "c8k3,c8k4s2,c16k3,c16k4s2,f64"  # the 4C3F shape, narrow


def _model(arch: str, activation: str, shape=(1, 28, 28), seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = t.ModelSpec(
        input_dim=shape[0] * shape[1] * shape[2],
        input_shape=shape,
        arch=arch,
        num_classes=10,
        activation=activation,
    )
    return t.build_model(spec)


def test_4c3f_shaped_net_has_matrix_free_steps() -> None:
    chain = to_chain(_model(ARCH_4C3F, "abs"))
    free = [network.is_matrix_free(step) for step in chain.affine_steps]
    assert free[1] and free[2] and not free[-1]  # 6272×1568 and 3136×1568 stay operators


@pytest.mark.parametrize("activation", ["abs", "sincos"])
def test_4c3f_gradient_lower_bound_is_certified_and_below_the_trivial_bound(
    activation: str, monkeypatch
) -> None:
    """Never lowering a large convolution to a matrix (``dense`` refuses here)."""
    original = Conv2dOperator.dense

    def refusing(self, *args, **kwargs):
        assert self.in_features * self.out_features <= network.SEARCH_DENSE_ENTRIES, self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Conv2dOperator, "dense", refusing)
    model = _model(ARCH_4C3F, activation)
    upper = t.upper_bound(model, "2", "trivial").value
    certificate = lower_bound(model, "2", "gradient", time_limit=5)
    assert 0 < certificate.value <= upper
    assert check_lower(model, certificate) >= certificate.value


@pytest.mark.parametrize("norm", ["1", "2", "inf"])
def test_matrix_free_search_agrees_with_the_dense_one(norm: str, monkeypatch) -> None:
    """On a small conv net every step fits densely; forcing every convolution matrix-free
    certifies a comparable value (the searches are time-limited, so not bit-equal), and the two forward-error evaluations enclose
    each other's outputs."""
    model = _model("c4k3,c4k4s2,f16", "abs", shape=(1, 10, 10))
    chain = to_chain(model)
    x = torch.randn(3, 100, dtype=torch.float64)
    dense = ErrorBoundedNetwork(chain)(x)
    dense_value = lower_bound(model, norm, "gradient", time_limit=2, seed=0).value
    monkeypatch.setattr(network, "SEARCH_DENSE_ENTRIES", 0)
    assert network.is_matrix_free(chain.affine_steps[0])
    free = ErrorBoundedNetwork(chain)(x)
    gap = (free.output - dense.output).abs()
    assert bool((gap <= free.output_error + dense.output_error).all())
    assert bool((free.output_error > 0).all())
    certificate = lower_bound(model, norm, "gradient", time_limit=2, seed=0)
    assert certificate.value >= 0.9 * dense_value
    assert certificate.value <= t.upper_bound(model, norm, "trivial").value
    assert check_lower(model, certificate) >= certificate.value


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_merged_sandwich_steps_are_searched_factor_by_factor(norm: str, monkeypatch) -> None:
    """A Sandwich layer's output map and the next layer's input map merge into one step (a
    product of two exact full-map convolutions); read matrix-free, it is evaluated factor by
    factor with each factor's own rounding bound, so its forward-error bound encloses the dense
    evaluation, and the certified lower bound stays below the certified γ."""
    from tightlip.models.sandwich_conv import SandwichConvNet

    torch.manual_seed(0)
    spec = t.ModelSpec(input_dim=64, num_classes=3, arch="c4k3,c4k3,f8", input_shape=(1, 8, 8))
    model = SandwichConvNet(spec, gamma=2.0).double().eval()
    chain = to_chain(model)
    merged = [s for s in chain.affine_steps if len(network.linear_factors(s)) > 1]
    assert merged, [s.name for s in chain.affine_steps]
    x = torch.randn(3, 64, dtype=torch.float64)
    dense = ErrorBoundedNetwork(chain)(x)
    monkeypatch.setattr(network, "SEARCH_DENSE_ENTRIES", 0)
    assert all(network.is_matrix_free(s) for s in merged)
    assert network.inner_length(merged[0]) > merged[0].in_features
    free = ErrorBoundedNetwork(chain)(x)
    gap = (free.output - dense.output).abs()
    assert bool((gap <= free.output_error + dense.output_error).all())

    def densified(*_args, **_kwargs):
        raise AssertionError("a matrix-free merged step's dense product was formed")

    with monkeypatch.context() as patch:  # applied through its exact factors: no merge error
        patch.setattr(Product, "dense_error", densified)
        certificate = lower_bound(model, norm, "gradient", time_limit=2, seed=0)
    assert 0 < certificate.value <= t.upper_bound(model, norm, "trivial").value
    assert check_lower(model, certificate) >= certificate.value
