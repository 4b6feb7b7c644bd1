"""Convolutional networks: the architecture string, the layers, and conv nets as LayerChains
(evaluation, the trivial bound, the gradient lower bound, certification, refusals)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import tightlip as tl
from tightlip.arch import ConvLayer, DenseLayer, PoolLayer, parse_arch
from tightlip.errors import (
    BadArgumentError,
    MethodNotApplicableError,
    ModelShapeError,
    UnsupportedLayerError,
)
from tightlip.eval.certify import certify
from tightlip.layers import MaxMin, make_activation
from tightlip.layers.channels import ChannelGroupSort, OnChannels
from tightlip.layers.conv import Conv2d
from tightlip.layers.pooling import MaxPool2dActivation
from tightlip.model import ModelSpec, build_model, to_chain
from tightlip.norms import NORMS, vector_norm

FOUR_C_THREE_F = "c32k3,c32k4s2,c64k3,c64k4s2,f512,f512"


# --------------------------------------------------------------------------------------------
# The architecture string and ModelSpec
# --------------------------------------------------------------------------------------------


def test_arch_string_reads_every_token_and_round_trips() -> None:
    layers = parse_arch("c32k3, c32k4s2,c16k3p0d2,c8k3circ,avg2,max3s1,f512")
    assert layers == (
        ConvLayer(32, 3),
        ConvLayer(32, 4, stride=2),
        ConvLayer(16, 3, padding=0, dilation=2),
        ConvLayer(8, 3, circular=True),
        PoolLayer("avg", 2),
        PoolLayer("max", 3, stride=1),
        DenseLayer(512),
    )
    spec = ModelSpec(arch=",".join(layer.token() for layer in layers), input_dim=32 * 32)
    assert parse_arch(spec.arch) == layers


@pytest.mark.parametrize(
    ("arch", "error", "match"),
    [
        ("c32", BadArgumentError, "cannot read 'c32'"),
        ("f64,c8k3", BadArgumentError, "after a dense layer"),
        ("max2,c8k3", BadArgumentError, "must follow"),
        ("c0k3", ModelShapeError, "positive"),
        ("c8k31p0", ModelShapeError, "does not fit"),
        ("", None, None),
    ],
)
def test_bad_arch_strings_are_refused_in_one_line(arch: str, error: type, match: str) -> None:
    if error is None:
        assert ModelSpec(arch=arch) == ModelSpec()
        return
    with pytest.raises(error, match=match):
        ModelSpec(arch=arch)


def test_4c3f_spec_shapes_and_dict_round_trip() -> None:
    spec = ModelSpec(arch=FOUR_C_THREE_F, activation="maxmin")
    assert spec.convolutional and spec.input_shape == (1, 28, 28)
    assert spec.widths == (512, 512)
    assert spec.feature_shapes() == ((32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 7, 7))
    data = spec.to_dict()
    assert data["arch"] == FOUR_C_THREE_F and data["input_shape"] == [1, 28, 28]
    assert ModelSpec.from_dict(data) == spec
    assert ModelSpec(arch=FOUR_C_THREE_F, input_dim=3072).input_shape == (3, 32, 32)
    with pytest.raises(ModelShapeError, match="input_shape"):
        ModelSpec(arch="c8k3", input_dim=10)
    with pytest.raises(ModelShapeError, match="entries"):
        ModelSpec(arch="c8k3", input_shape=(1, 5, 5))


def test_mlp_descriptions_are_unchanged() -> None:
    """Old checkpoints' dicts load, and an MLP's dict has exactly the old keys."""
    old = {"input_dim": 784, "widths": [256, 256], "num_classes": 10, "activation": "abs",
           "norm": "2", "bias": True}
    spec = ModelSpec.from_dict(old)
    assert spec.to_dict() == old
    assert ModelSpec(arch="f256,f256", activation="abs", bias=True) == spec
    # an image shape given to an MLP (as fit_to_data does) does not change its description
    assert ModelSpec(widths=(256, 256), activation="abs", bias=True,
                     input_shape=(1, 28, 28)).to_dict() == old
    mlp = build_model(spec)
    assert [type(m).__name__ for m in mlp] == [
        "Flatten", "Linear", "Abs", "Linear", "Abs", "Linear"
    ]


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def test_conv2d_is_bias_free_and_delta_orthogonal() -> None:
    layer = Conv2d(4, 8, 3, padding=1)
    assert layer.bias is None
    kernel = layer.weight.detach()
    centre = kernel[:, :, 1, 1]
    torch.testing.assert_close(centre.T @ centre, torch.eye(4), atol=1e-5, rtol=0)
    assert float(kernel.abs().sum()) == pytest.approx(float(centre.abs().sum()))
    chain = to_chain(nn.Sequential(layer, nn.Flatten(), nn.Linear(8 * 6 * 6, 2)),
                     input_shape=(4, 6, 6))
    assert chain.steps[0].certified_norm("2") <= 1 + 1e-6  # an isometry
    with pytest.raises(UnsupportedLayerError, match="reflect"):
        Conv2d(1, 1, 3, padding_mode="reflect")


def test_maxmin_on_channels_pairs_channels_not_pixels() -> None:
    z = torch.randn(2, 4, 3, 5)
    out = OnChannels(MaxMin())(z)
    expected = torch.stack(
        [torch.maximum(z[:, 0::2], z[:, 1::2]), torch.minimum(z[:, 0::2], z[:, 1::2])], dim=2
    ).flatten(1, 2)
    torch.testing.assert_close(out, expected)
    flat = ChannelGroupSort(2, 15)(z.flatten(1))
    torch.testing.assert_close(flat, expected.flatten(1))
    assert not torch.equal(MaxMin()(z.flatten(1)), flat)  # the flat MaxMin pairs neighbours
    with pytest.raises(ModelShapeError, match="divisible"):
        OnChannels(MaxMin()).chain_activation((3, 2, 2))


@pytest.mark.parametrize("name", ["crelu", "sincos", "sinpair", "abs"])
def test_polyactivations_on_channels_concatenate_channels(name: str) -> None:
    activation = make_activation(name)
    z = torch.randn(2, 3, 4, 4)
    out = OnChannels(activation)(z)
    assert out.shape == (2, 3 * activation.expansion, 4, 4)
    torch.testing.assert_close(out.flatten(1), activation(z.flatten(1)))


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "coverage"),
    [(2, 2, 0, 1), (3, 1, 0, 9), (3, 2, 1, 4), (4, 2, 1, 4), (2, 1, 0, 4)],
)
def test_max_pool_constants_are_exact(kernel: int, stride: int, padding: int, coverage: int) -> None:
    """Lip₁ = m, Lip₂ = √m, Lip_∞ = 1 (m windows read the most-read pixel): never exceeded by
    a Jacobian, and attained at the one-hot input of that pixel."""
    shape = (2, 7, 7)
    pool = MaxPool2dActivation(shape, kernel, stride, padding)
    assert pool.coverage == coverage
    assert pool.lipschitz("2") == pytest.approx(math.sqrt(coverage))
    counts = [int(a.coverage().argmax()) for a in pool.axes]
    hot = torch.zeros(math.prod(shape), dtype=torch.float64)
    hot[counts[0] * 7 + counts[1]] = 1.0
    points = [hot, *torch.randn(5, math.prod(shape), dtype=torch.float64)]
    for norm, ord_ in (("1", 1), ("2", 2), ("inf", math.inf)):
        values = [
            float(torch.linalg.matrix_norm(torch.autograd.functional.jacobian(pool, x), ord=ord_))
            for x in points
        ]
        assert max(values) <= pool.lipschitz(norm) * (1 + 1e-12)
        assert values[0] == pytest.approx(pool.lipschitz(norm), rel=1e-12)
    layer = nn.MaxPool2d(kernel, stride, padding)
    x = torch.randn(3, *shape)
    torch.testing.assert_close(pool(x.flatten(1)), layer(x).flatten(1))
    smooth = pool.surrogate(1e-6)(x.flatten(1).double())
    torch.testing.assert_close(smooth, layer(x).flatten(1).double(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------
# Conv nets as LayerChains
# --------------------------------------------------------------------------------------------

_ARCHS = [
    ("c4k3,c4k4s2,f8", (1, 8, 8)),
    ("c4k3,max2,c6k3circ,avg2,f8", (2, 8, 8)),
    ("c2k3d2,avg3s2,c4k2s2p0", (1, 9, 9)),
]


@pytest.mark.parametrize(
    ("activation", "bias", "arch"),
    [(a, b, arch) for a, b, arch in itertools.product(
        ["relu", "abs", "maxmin", "crelu", "sincos", "sinpair"], [False, True], _ARCHS)],
)
def test_chain_evaluates_the_built_model(activation: str, bias: bool, arch) -> None:
    spec = ModelSpec(arch=arch[0], input_shape=arch[1], input_dim=math.prod(arch[1]),
                     activation=activation, bias=bias, num_classes=3)
    model = build_model(spec).double()
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.3)
    chain = to_chain(model)
    x = torch.rand(5, spec.input_dim, dtype=torch.float64)
    torch.testing.assert_close(chain(x), model(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chain(x.reshape(5, *arch[1])), model(x), rtol=1e-12, atol=1e-12)
    assert chain.input_shape == arch[1]


def test_user_sequentials_convert_with_an_input_shape() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding="same", padding_mode="circular"), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).double()
    chain = to_chain(model, input_shape=(1, 6, 6))
    x = torch.randn(3, 36, dtype=torch.float64)
    torch.testing.assert_close(chain(x), model(x.reshape(3, 1, 6, 6)))
    unflattened = nn.Sequential(nn.Unflatten(1, (1, 6, 6)), *model)
    torch.testing.assert_close(to_chain(unflattened)(x), model(x.reshape(3, 1, 6, 6)))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), nn.Flatten(),
                       nn.Linear(72, 2)), "padding_mode='reflect'"),
        (nn.Sequential(nn.Conv2d(2, 2, 3), make_activation("crelu"), nn.Flatten(),
                       nn.Linear(32, 2)), "OnChannels"),
        (nn.Sequential(nn.Conv2d(2, 2, 3), nn.Linear(4, 2)), "nn.Flatten"),
        (nn.Sequential(nn.Conv2d(2, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                       nn.Linear(8, 2)), "ceil_mode"),
    ],
)
def test_unsupported_conv_settings_are_refused_in_one_line(model: nn.Module, match: str) -> None:
    with pytest.raises(UnsupportedLayerError, match=match):
        to_chain(model, input_shape=(2, 6, 6))


@pytest.mark.parametrize(
    "first",
    [nn.Conv2d(2, 4, 3, groups=2, padding=1), nn.Conv2d(2, 2, 3, groups=2),
     nn.AvgPool2d(3, 2, 1, count_include_pad=False), nn.AvgPool2d(2, 1, 1, count_include_pad=False)],
    ids=["grouped", "depthwise", "avg-excl-pad-3s2", "avg-excl-pad-2s1"],
)
def test_grouped_convs_and_padding_excluded_pools_are_the_module_with_sound_norms(
    first: nn.Module,
) -> None:
    """Grouped convolutions (the block-diagonal kernel) and average pooling that divides
    border windows by their real pixels (count_include_pad=False): the chain is the module,
    and every certified norm is at least the dense matrix's exact one."""
    torch.manual_seed(0)
    with torch.no_grad():
        features = first.double()(torch.zeros(1, 2, 6, 6, dtype=torch.float64)).numel()
    model = nn.Sequential(first, nn.Flatten(), nn.Linear(features, 2)).double()
    chain = to_chain(model, input_shape=(2, 6, 6))
    x = torch.randn(4, 72, dtype=torch.float64)
    torch.testing.assert_close(chain(x), model(x.reshape(4, 2, 6, 6)))
    operator = chain.affine_steps[0].operator
    factor = operator.factors[0] if hasattr(operator, "factors") else operator
    dense = factor.dense()
    torch.testing.assert_close(factor.apply(x), x @ dense.T)
    g = torch.randn(4, factor.out_features, dtype=torch.float64)
    torch.testing.assert_close(factor.apply_transpose(g), g @ dense)
    error = factor.dense_error()  # |fl(1/n) − 1/n| ≤ u/n: the operator is within it
    assert bool((error >= 0).all()) and float(error.max()) <= 2.0**-53
    for norm, order in (("1", 1), ("2", 2), ("inf", float("inf"))):
        rounded = float(torch.linalg.matrix_norm(dense, ord=order))
        slack = float(torch.linalg.matrix_norm(error, ord=order if order != 2 else "fro"))
        assert rounded - slack <= factor.certified_norm(norm) <= rounded * 1.5 + 1e-12, norm


def test_conv_without_a_known_shape_is_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="input_shape"):
        to_chain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2)))


def _tiny_conv_net(activation: str, bias: bool, seed: int) -> nn.Sequential:
    """Input (1, 2, 3) = 6 features, small enough for exact region enumeration."""
    torch.manual_seed(seed)
    spec = ModelSpec(arch="c2k2p0,f3", input_shape=(1, 2, 3), input_dim=6,
                     activation=activation, bias=bias, num_classes=2)
    model = build_model(spec).double()
    for parameter in model.parameters():
        nn.init.normal_(parameter)
    return model


@pytest.mark.parametrize("activation", ["relu", "abs"])
@pytest.mark.parametrize("norm", NORMS)
def test_trivial_bound_is_above_the_exact_value_of_tiny_conv_nets(activation: str, norm: str) -> None:
    """Region enumeration gives the exact Lipschitz constant of a piecewise-linear conv net (its
    convolution lowered to a 4 × 6 matrix); the trivial bound is above it, the gradient lower
    bound below."""
    for seed in range(2):
        model = _tiny_conv_net(activation, bias=seed == 1, seed=seed)
        exact = tl.lower_bound(model, norm, "exact-regions")
        assert exact.side == "exact"
        upper = tl.upper_bound(model, norm, "trivial")
        lower = tl.lower_bound(model, norm, "gradient", time_limit=0.5, seed=seed)
        assert lower.value <= exact.value * (1 + 1e-9) <= upper.value * (1 + 1e-9)


@pytest.mark.parametrize("activation", ["maxmin", "sincos", "crelu"])
@pytest.mark.parametrize("norm", NORMS)
def test_trivial_bound_is_above_sampled_jacobians_of_conv_nets(activation: str, norm: str) -> None:
    spec = ModelSpec(arch="c4k3,c4k4s2,max2,f8", input_shape=(1, 8, 8), input_dim=64,
                     activation=activation, num_classes=3)
    model = build_model(spec).double()
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.5)
    upper = tl.upper_bound(model, norm, "trivial")
    ord_ = {"1": 1, "2": 2, "inf": math.inf}[norm]
    for x in torch.randn(8, 64, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(lambda t: model(t[None])[0], x)
        assert float(torch.linalg.matrix_norm(jacobian, ord=ord_)) <= upper.value
    lower = tl.lower_bound(model, norm, "gradient", time_limit=0.5)
    assert 0 < lower.value <= upper.value


@pytest.mark.parametrize("activation", ["relu"])
def test_sdp_verifiers_lower_small_conv_layers(activation: str) -> None:
    """ECLipsE-Fast and LipSDP read small convolutions as dense matrices: sound (above the
    gradient lower bound), and for ReLU no looser than the trivial bound (the slope form of
    Abs duplicates rows, which loosens SDP bounds)."""
    spec = ModelSpec(arch="c2k3,c2k4s2,f4", input_shape=(1, 4, 4), input_dim=16,
                     activation=activation, num_classes=3)
    model = build_model(spec).double()
    for parameter in model.parameters():
        nn.init.normal_(parameter, std=0.5)
    trivial = tl.upper_bound(model, "2", "trivial").value
    lower = tl.lower_bound(model, "2", "gradient", time_limit=0.5).value
    for method in ("eclipse-fast", "lipsdp"):
        value = tl.upper_bound(model, "2", method).value
        assert lower <= value
        assert activation != "relu" or value <= trivial * (1 + 1e-6)


def test_certify_and_pgd_cross_check_on_a_conv_net() -> None:
    spec = ModelSpec(arch="c4k3,c4k4s2,f8", input_shape=(1, 8, 8), input_dim=64,
                     activation="maxmin", num_classes=3)
    model = build_model(spec)
    chain = to_chain(model)
    x, y = torch.rand(30, 64), torch.randint(0, 3, (30,))
    upper = tl.upper_bound(model, "2", "trivial").value
    result = certify(chain, x.double(), y, "2", upper, (0.01, 0.1), attack_model=model,
                     pgd_steps=10)
    assert result.n_examples == 30
    assert result.certified_accuracy["global"]["0.01"] <= result.pgd_accuracy["0.01"]
    margins = (chain(x.double()) - chain(x.double()).max(-1, keepdim=True).values)
    assert bool((margins <= 0).all())


def test_4c3f_dense_verifiers_refuse_and_the_trivial_bound_holds() -> None:
    """At MNIST size the SDP verifiers refuse by the layer's dimension; the trivial bound is
    the product of sound factors (delta-orthogonal convolutions and orthogonal dense layers:
    each ≤ 1 up to its margin) and above the Jacobian norms found by jvp."""
    chain = to_chain(build_model(ModelSpec(arch=FOUR_C_THREE_F, activation="maxmin")))
    for method in ("eclipse-fast", "eclipse", "lipsdp", "syed-hu"):
        with pytest.raises(MethodNotApplicableError, match="25 088-dimensional layer"):
            tl.upper_bound(chain, "2", method)
    factors = [s.certified_norm("2") for s in chain.affine_steps]
    assert len(factors) == 7 and all(f <= 1 + 1e-5 for f in factors)
    upper = tl.upper_bound(chain, "2", "trivial").value
    x = torch.rand(4, 784, dtype=torch.float64)
    v = torch.randn(4, 784, dtype=torch.float64)
    _, jv = torch.func.jvp(chain.forward, (x,), (v,))
    ratio = vector_norm(jv, "2") / vector_norm(v, "2")
    assert 0 < float(ratio.max()) <= upper


def test_arch_is_a_model_setting_and_every_method_builds_it() -> None:
    from tightlip.methods import METHODS
    from tightlip.settings import merge_settings
    from tightlip.train.config import TrainConfig

    settings = merge_settings(preset="robust", explicit={"arch": "c8k3,c8k4s2,f64"})
    assert settings.spec.arch == "c8k3,c8k4s2,f64" and settings.spec.widths == (64,)
    assert settings.origin["arch"] == "explicit"
    model, description = METHODS.get("tightlip").build(settings.spec, TrainConfig(), {})
    assert ModelSpec.from_dict(description["arguments"]) == settings.spec
    x = torch.rand(2, 784)
    for name, method in METHODS.items():  # every baseline has a conv form (issue 12)
        model, _ = method.build(settings.spec, TrainConfig(), dict(method.defaults))
        model.eval()
        assert model(x).shape == (2, 10), name


def test_lower_bound_through_a_wide_identity_step_before_max_pooling() -> None:
    """ReLU then max pooling on a 16×32×32 map: the identity between them (16 384 wide, over
    the dense limit) answers |I| itself, so the matrix-free search runs and stays ≤ trivial."""
    from tightlip.bounds import lower_bound, upper_bound
    from tightlip.bounds.lower import gradient  # noqa: F401  (registers "gradient")

    torch.manual_seed(0)
    spec = ModelSpec(input_dim=3072, arch="c16k3,max2,f10", activation="relu", bias=False)
    model = build_model(spec).eval()
    lower = lower_bound(model, "2", "gradient", time_limit=2)
    assert 0 < lower.value <= upper_bound(model, "2", "trivial").value
