"""The FFT evaluation of circular convolutions (tightlip.convolution.fourier): the same linear
map as the direct convolution, and the lower-bound search that uses it stays sound."""

from __future__ import annotations

import pytest
import torch

import tightlip as t
from tightlip.bounds import check_lower, lower_bound
from tightlip.bounds.lower import network
from tightlip.convolution.fourier import CircularFourierForm
from tightlip.convolution.operators import Conv2dOperator
from tightlip.errors import ModelShapeError
from tightlip.model import to_chain
from tightlip.operators import Dense, Product, fast_apply


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [
        ((2, 8, 8), 3, (1, 1), ((1, 1), (1, 1))),
        ((3, 6, 6), 6, (1, 1), ((3, 2), (3, 2))),  # a full-map kernel, uneven offsets
        ((2, 8, 8), 4, (2, 2), ((1, 1), (1, 1))),
        ((2, 8, 8), 8, (2, 2), ((4, 2), (4, 2))),  # strided full map, as a Sandwich chain
        ((2, 9, 8), 3, (3, 2), ((1, 1), (1, 1))),
    ],
)
def test_fourier_form_is_the_direct_circular_convolution(shape, kernel, stride, padding) -> None:
    torch.manual_seed(0)
    k = torch.randn(4, shape[0], kernel, kernel, dtype=torch.float64)
    op = Conv2dOperator(k, shape, stride=stride, padding=padding, circular=True)
    form = CircularFourierForm(op.apply, op.input_shape, op.output_shape, op.stride)
    h = torch.randn(5, op.in_features, dtype=torch.float64)
    direct = op.apply(h)
    assert torch.allclose(form(h), direct, rtol=0, atol=1e-12 * float(direct.abs().max()))
    # float32 rows are evaluated in complex64 and stay close
    single = form(h.float())
    assert single.dtype == torch.float32
    assert torch.allclose(single.double(), direct, atol=1e-4 * float(direct.abs().max()))
    # dense check: the form applied to the identity is the operator's matrix
    eye = torch.eye(op.in_features, dtype=torch.float64)
    assert torch.allclose(form(eye).T, op.dense(None), atol=1e-12)


def test_fourier_form_refuses_a_stride_that_does_not_divide_the_map() -> None:
    k = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    op = Conv2dOperator(k, (1, 7, 7), stride=(2, 2), padding=((1, 1), (1, 1)), circular=True)
    with pytest.raises(ModelShapeError, match="polyphase"):
        CircularFourierForm(op.apply, op.input_shape, op.output_shape, op.stride)


def test_fast_apply_falls_back_to_apply_and_runs_through_products() -> None:
    a = Dense(torch.randn(3, 4, dtype=torch.float64))
    b = Dense(torch.randn(2, 3, dtype=torch.float64))
    h = torch.randn(6, 4, dtype=torch.float64)
    assert torch.equal(fast_apply(a, h), a.apply(h))
    product = Product([a, b])
    assert torch.allclose(fast_apply(product, h), product.apply(h), atol=1e-14)


def test_sandwich_search_uses_the_fft_and_stays_sound(monkeypatch) -> None:
    """A Sandwich chain's full-map convolutions are searched by FFT (the direct route is never
    taken by the search), and the certified witness still re-checks and stays below γ."""
    from tightlip.models.sandwich_conv import FullMapConvOperator, SandwichConvNet

    torch.manual_seed(0)
    spec = t.ModelSpec(input_dim=64, num_classes=3, arch="c4k3,c4k4s2,f8", input_shape=(1, 8, 8))
    model = SandwichConvNet(spec, gamma=2.0).double().eval()
    chain = to_chain(model)
    x = torch.randn(4, 64, dtype=torch.float64)
    monkeypatch.setattr(network, "SEARCH_DENSE_ENTRIES", 0)
    net = network.SearchNetwork(chain, torch.float64)
    assert torch.allclose(net(x), chain(x), atol=1e-12)
    calls = {"fft": 0}
    original = FullMapConvOperator.fast_apply

    def counted(self, h):
        calls["fft"] += 1
        return original(self, h)

    monkeypatch.setattr(FullMapConvOperator, "fast_apply", counted)
    certificate = lower_bound(model, "2", "gradient", time_limit=2, seed=0)
    assert calls["fft"] > 0
    assert 0 < certificate.value <= model.certified_lipschitz()
    assert check_lower(model, certificate) >= certificate.value
