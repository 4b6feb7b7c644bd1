"""Lower bounds are true lower bounds, even at a kink, and every one carries a re-checkable witness.

* the trap: ``f(x) = [relu(x−1) − relu(1−x)] − [relu(x) − relu(−x)] + 1 ≡ 0``, where autograd
  reports slope 1 at ``x = 0``; bias-free MaxMin networks at ``x = 0``, where autograd's
  Jacobian exceeds the exact constant (before the witnesses, ``gradient`` and ``sampled``
  reported those values);
* the error-bounded float64 evaluation really bounds the error (exact rationals for PL
  networks, 60-digit arithmetic for smooth ones), and the affine ball of an interior witness
  really has one activation pattern;
* random networks: the certified value never exceeds the exact constant (region enumeration),
  and ``check_lower`` re-certifies the witness after a save/load round trip, including a
  3072-dimensional input whose witness goes to a safetensors file beside ``metrics.json``;
* strength: at interior points and on smooth networks the certified value is autograd's
  Jacobian norm to 10⁻⁷ relative.
"""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
from conftest import build_random_chain
from safetensors.torch import load_file
from torch import nn

from tightlip import lower_bound
from tightlip.bounds import check_lower
from tightlip.bounds.exact import exact_lipschitz_by_regions
from tightlip.bounds.lower import jacobian_operator_norm, network
from tightlip.bounds.lower.forward_error import ErrorBoundedNetwork
from tightlip.bounds.lower.kinks import chain_pieces
from tightlip.bounds.lower.options import DEFAULT_TIME_LIMIT, GradientOptions
from tightlip.bounds.lower.witness import WITNESS_LIST_LIMIT, interior_values
from tightlip.certificate import Certificate
from tightlip.convolution.operators import Conv2dOperator
from tightlip.errors import BadArgumentError, SoundnessError
from tightlip.eval.report import LOWER_WITNESS_FILE, write_metrics
from tightlip.layers import make_activation
from tightlip.model import ActivationStep, AffineStep, LayerChain, to_chain
from tightlip.norms import NORMS, NormName, vector_norm

QUICK = {"steps": 20, "num_random": 8, "screen": 256, "refine_steps": 5, "search_rounds": 2}
#: a search that only ever sees the given starting points
STARTS_ONLY = {**QUICK, "num_random": 0}
#: what a certified value of a constant that is 0 may be: rounding-level, never 1
TINY = 1e-12


def _f64(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def kink_chain() -> LayerChain:
    """``f(x) = [relu(x−1) − relu(1−x)] − [relu(x) − relu(−x)] + 1``, which is 0 everywhere."""
    first = AffineStep(_f64([[1.0], [-1.0], [1.0], [-1.0]]), _f64([[-1.0, 1.0, 0.0, 0.0]])[0])
    last = AffineStep(_f64([[1.0, -1.0, -1.0, 1.0]]), _f64([[1.0]])[0])
    return LayerChain((first, ActivationStep(make_activation("relu")), last))


def kink_sequential() -> nn.Sequential:
    """The same function as ``nn.Sequential(Linear, ReLU, Linear)`` with the exact weights."""
    chain = kink_chain()
    model = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        for linear, step in zip((model[0], model[2]), chain.affine_steps, strict=True):
            linear.weight.copy_(step.weight)
            linear.bias.copy_(step.bias)
    return model


ZERO = torch.zeros(1, 1, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# The trap: a kink where autograd's slope is the Jacobian of no neighbouring piece
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [kink_chain, kink_sequential], ids=["chain", "sequential"])
def test_the_kink_example_is_zero_and_autograd_says_one(build) -> None:
    model = build()
    x = (torch.arange(-64, 65, dtype=torch.float64) / 16).unsqueeze(1)  # dyadic: exact sums
    assert torch.equal(to_chain(model)(x), torch.zeros_like(x))  # f ≡ 0
    assert float(jacobian_operator_norm(to_chain(model), ZERO, "2")) == 1.0  # the trap


@pytest.mark.parametrize("build", [kink_chain, kink_sequential], ids=["chain", "sequential"])
@pytest.mark.parametrize("norm", NORMS)
def test_kink_example_lower_bounds_are_zero(build, norm: NormName) -> None:
    model = build()
    certificates = [
        lower_bound(model, norm, "gradient", starts=ZERO, **STARTS_ONLY),
        lower_bound(model, norm, "gradient", starts=ZERO, **QUICK),
        lower_bound(model, norm, "sampled", points=ZERO),
        lower_bound(model, norm, "sampled", starts=ZERO),
    ]
    for certificate in certificates:
        assert 0.0 <= certificate.value <= TINY, certificate
        assert certificate.details["jacobian_value"] <= 1.0  # what autograd said, kept apart
        assert check_lower(model, certificate) <= TINY


def test_an_interior_claim_at_the_kink_is_refused() -> None:
    """A forged interior witness at x = 0 with autograd's value 1 does not check."""
    forged = Certificate(
        value=1.0,
        method="forged",
        norm="2",
        side="lower",
        sound=True,
        details={"witness_kind": "interior", "witness": [0.0], "witness_direction": [1.0]},
    )
    with pytest.raises(SoundnessError, match="certifies 0.0"):
        check_lower(kink_chain(), forged)
    secant = {"witness_kind": "secant", "witness": [-0.5], "witness_pair": [0.5]}
    with pytest.raises(SoundnessError):
        check_lower(kink_chain(), Certificate(**{**_fields(forged), "details": secant}))


def _fields(certificate: Certificate) -> dict:
    return {
        "value": certificate.value,
        "method": certificate.method,
        "norm": certificate.norm,
        "side": certificate.side,
        "sound": certificate.sound,
    }


# bias-free MaxMin networks where autograd's ‖J(0)‖₂ exceeds the exact constant (found by search:
# ties in the sort at x = 0 are broken into a pattern that no region near 0 has)
BIAS_FREE_TRAPS = [(6, (1, 4, 4, 2)), (1, (1, 4, 4, 2)), (0, (1, 4, 4, 2))]


@pytest.mark.parametrize(("seed", "dims"), BIAS_FREE_TRAPS)
def test_bias_free_maxmin_at_zero_stays_below_the_exact_constant(seed: int, dims) -> None:
    chain = build_random_chain(dims, "maxmin", bias=False, seed=seed)
    exact = exact_lipschitz_by_regions(chain, "2")
    zero = torch.zeros(1, dims[0], dtype=torch.float64)
    assert float(jacobian_operator_norm(chain, zero, "2")) > exact * 1.01  # the trap is there
    for certificate in (
        lower_bound(chain, "2", "sampled", points=zero),
        lower_bound(chain, "2", "gradient", starts=zero, **STARTS_ONLY),
    ):
        assert certificate.value <= exact * (1 + 1e-12)
        assert check_lower(chain, certificate) >= certificate.value


@pytest.mark.parametrize("activation", ["abs", "relu", "crelu", "maxmin"])
@pytest.mark.parametrize("norm", NORMS)
def test_bias_free_networks_started_at_zero(activation: str, norm: NormName) -> None:
    """x = 0 is a kink of every unit at once: from there, nothing above the exact constant."""
    for seed in range(2):
        chain = build_random_chain((2, 4, 4, 2), activation, bias=False, seed=seed)
        exact = exact_lipschitz_by_regions(chain, norm)
        zero = torch.zeros(3, 2, dtype=torch.float64)
        for certificate in (
            lower_bound(chain, norm, "sampled", points=zero),
            lower_bound(chain, norm, "gradient", starts=zero, **STARTS_ONLY),
        ):
            assert certificate.value <= exact * (1 + 1e-12), (seed, certificate.method)
            assert check_lower(chain, certificate) >= certificate.value


# --------------------------------------------------------------------------------------------
# The error-bounded evaluation and the affine ball
# --------------------------------------------------------------------------------------------


def _exact_forward(chain: LayerChain, x: torch.Tensor) -> tuple[list[list[Fraction]], ...]:
    """Pre-activations and output of ``chain`` at the float ``x``, in exact rationals (ReLU,
    |·| and MaxMin only)."""
    h = [Fraction(float(t)) for t in x]
    pre = []
    for step in chain.steps:
        if isinstance(step, AffineStep):
            weight = [[Fraction(float(w)) for w in row] for row in step.weight.tolist()]
            bias = [Fraction(0)] * len(weight) if step.bias is None else step.bias.tolist()
            h = [
                sum((w * v for w, v in zip(row, h, strict=True)), Fraction(b))
                for row, b in zip(weight, bias, strict=True)
            ]
        else:
            pre.append(h)
            name = type(step.activation).__name__
            if name == "ReLU":
                h = [max(v, Fraction(0)) for v in h]
            elif name == "Abs":
                h = [abs(v) for v in h]
            else:  # MaxMin
                h = [
                    t for a, b in zip(h[::2], h[1::2], strict=True) for t in (max(a, b), min(a, b))
                ]
    return (*pre, h)


def _scaled_chain(activation: str, seed: int) -> LayerChain:
    """Weights over 12 orders of magnitude and biases, so that rounding errors are not tiny."""
    generator = torch.Generator().manual_seed(seed)
    chain = build_random_chain((5, 8, 8, 3), activation, bias=True, seed=seed)
    steps = []
    for step in chain.steps:
        if isinstance(step, AffineStep):
            scale = 10.0 ** (12 * torch.rand(step.weight.shape, generator=generator) - 6)
            steps.append(AffineStep(step.weight * scale.double(), step.bias, name=step.name))
        else:
            steps.append(step)
    return LayerChain(tuple(steps))


def _assert_encloses_the_rational_evaluation(chain: LayerChain, x: torch.Tensor):
    """Every computed pre-activation and output of every row of ``x`` is within its error
    bound of the exact rational value; returns the evaluation."""
    evaluation = ErrorBoundedNetwork(chain)(x)
    for b in range(x.shape[0]):
        *pre, out = _exact_forward(chain, x[b])
        computed = [*evaluation.pre_activations, evaluation.output]
        bounds = [*evaluation.pre_errors, evaluation.output_error]
        for exact, z, e in zip([*pre, out], computed, bounds, strict=True):
            for i, value in enumerate(exact):
                assert abs(Fraction(float(z[b, i])) - value) <= Fraction(float(e[b, i]))
    return evaluation


@pytest.mark.parametrize("activation", ["relu", "abs", "maxmin"])
def test_forward_error_bound_covers_the_exact_rational_evaluation(activation: str) -> None:
    for seed in range(3):
        chain = _scaled_chain(activation, seed)
        x = torch.randn(4, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        _assert_encloses_the_rational_evaluation(chain, x)


@pytest.mark.parametrize("activation", ["sincos", "tanh", "sinpair"])
def test_forward_error_bound_covers_a_60_digit_evaluation(activation: str) -> None:
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    functions = {
        "sincos": lambda z: [mpmath.sin(v) for v in z] + [mpmath.cos(v) for v in z],
        "tanh": lambda z: [mpmath.tanh(v) for v in z],
        "sinpair": lambda z: (
            [(v + mpmath.sin(v)) / 2 for v in z] + [(v - mpmath.sin(v)) / 2 for v in z]
        ),
    }
    chain = _scaled_chain(activation, 0)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    evaluation = ErrorBoundedNetwork(chain)(x)
    for b in range(3):
        h = [mpmath.mpf(float(t)) for t in x[b]]
        for step in chain.steps:
            if isinstance(step, AffineStep):
                bias = [0.0] * step.out_features if step.bias is None else step.bias.tolist()
                h = [
                    mpmath.fsum(mpmath.mpf(w) * v for w, v in zip(row, h, strict=True)) + c
                    for row, c in zip(step.weight.tolist(), bias, strict=True)
                ]
            else:
                h = functions[activation](h)
        for i, value in enumerate(h):
            error = abs(mpmath.mpf(float(evaluation.output[b, i])) - value)
            assert error <= float(evaluation.output_error[b, i])


def _cancelling_chain(reading: str, depth: int = 8, width: int = 64) -> LayerChain:
    """``depth`` random orthogonal maps with |·| between: ``‖W‖₂ = 1`` but ``‖|W|‖_∞ ≈ 6``, as
    in a Sandwich chain's cancelling full-map convolutions. ``reading="matrix-free"`` holds
    each map as a 1×1 convolution on 64 channels, read through its operator."""
    generator = torch.Generator().manual_seed(0)
    steps: list[AffineStep | ActivationStep] = []
    for i in range(depth):
        q, _ = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))
        operator = q
        if reading == "matrix-free":
            operator = Conv2dOperator(q.reshape(width, width, 1, 1), (width, 1, 1))
        steps.append(AffineStep(operator, name=f"q{i}"))
        if i < depth - 1:
            steps.append(ActivationStep(make_activation("abs")))
    return LayerChain(tuple(steps))


@pytest.mark.parametrize("reading", ["dense", "matrix-free"])
def test_cancelling_layers_keep_a_small_sound_error_bound(reading: str, monkeypatch) -> None:
    """Carried through ``|W|`` alone, the error bound would grow ~6× per layer (to ~10⁻⁸ here);
    the normwise companion carries it through ``‖W‖₂ = 1``. Still ≥ the exact error."""
    monkeypatch.setattr(network, "SEARCH_DENSE_ENTRIES", 0)
    chain = _cancelling_chain(reading)
    assert all(network.is_matrix_free(s) == (reading == "matrix-free") for s in chain.affine_steps)
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    evaluation = _assert_encloses_the_rational_evaluation(chain, x)
    assert float(evaluation.output_error.max()) < 1e-11


@pytest.mark.parametrize("activation", ["relu", "abs", "crelu", "maxmin"])
@pytest.mark.parametrize("norm", NORMS)
def test_interior_witness_ball_has_one_pattern_and_secants_inside_equal_the_value(
    activation: str, norm: NormName
) -> None:
    chain = build_random_chain((3, 6, 6, 2), activation, bias=True, seed=11)
    certificate = lower_bound(chain, norm, "gradient", **QUICK)
    details = certificate.details
    assert details["witness_kind"] == "interior" and details["witness_radius"] > 0
    x = torch.tensor(details["witness"], dtype=torch.float64)
    v = torch.tensor(details["witness_direction"], dtype=torch.float64)
    radius = details["witness_radius"]
    pieces = chain_pieces(chain)
    assert pieces is not None
    network = ErrorBoundedNetwork(chain)

    def patterns(points: torch.Tensor) -> list[list]:
        evaluation = network(points)
        return [
            [
                piece.observe(z[b].numpy())
                for piece, z in zip(pieces, evaluation.pre_activations, strict=True)
            ]
            for b in range(points.shape[0])
        ]

    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    directions = directions / vector_norm(directions, norm).unsqueeze(-1)
    inside = x + 0.999 * radius * directions
    centre = patterns(x[None])[0]
    assert all(p == centre for p in patterns(inside))
    # the secant across the ball along v is the certified value (f is affine there)
    t = 0.49 * radius / float(vector_norm(v, norm))
    gap = chain((x + t * v)[None]) - chain((x - t * v)[None])
    secant = float(vector_norm(gap, norm)[0] / vector_norm(2 * t * v, norm))
    assert secant == pytest.approx(certificate.value, rel=1e-8)
    value, radii = interior_values(network, x[None], v[None], norm)
    assert float(radii[0]) == radius and float(value[0]) >= certificate.value


# --------------------------------------------------------------------------------------------
# Random networks: never above the exact constant; witnesses re-check after a round trip
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "abs", "crelu", "maxmin"])
@pytest.mark.parametrize("bias", [False, True])
def test_random_networks_below_exact_and_recheck_after_save(
    activation: str, bias: bool, tmp_path
) -> None:
    for seed in (int(bias), 2 + int(bias)):
        chain = build_random_chain((2, 6, 4, 2), activation, bias=bias, seed=seed)
        for norm in NORMS:
            exact = exact_lipschitz_by_regions(chain, norm)
            for method, options in (("gradient", QUICK), ("sampled", {"num_random": 32})):
                certificate = lower_bound(chain, norm, method, seed=seed, **options)
                assert certificate.value <= exact * (1 + 1e-12)
                # random points are off every kink: nothing of autograd's value is lost
                assert certificate.value >= certificate.details["jacobian_value"] * (1 - 1e-9)
                path = certificate.save(tmp_path, f"{activation}-{bias}-{seed}-{norm}-{method}")
                loaded = Certificate.load(path)
                assert check_lower(chain, loaded) >= loaded.value == certificate.value


def test_exact_region_witness_rechecks() -> None:
    chain = build_random_chain((2, 4, 3, 2), "relu", bias=True, seed=3)
    exact = lower_bound(chain, "2", "exact-regions")
    assert check_lower(chain, exact, rtol=1e-9) == pytest.approx(exact.value, rel=1e-9)


def _cifar_chain(activation: str) -> LayerChain:
    return build_random_chain((3072, 16, 10), activation, bias=False, seed=0)


@pytest.mark.parametrize("activation", ["relu", "sincos"])
def test_cifar_sized_witness_goes_to_safetensors_and_rechecks(activation: str, tmp_path) -> None:
    chain = _cifar_chain(activation)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    certificate = lower_bound(chain, "2", "gradient", starts=images, **QUICK)
    witness = certificate.details["witness"]
    assert isinstance(witness, torch.Tensor) and witness.numel() == 3072 > WITNESS_LIST_LIMIT
    data = certificate.to_dict()
    assert "witness" not in data["details"] and data["tensors"]["witness"]["shape"] == [3072]
    with pytest.raises(BadArgumentError, match="no witness"):
        check_lower(chain, Certificate.from_dict(data))  # the JSON alone lacks it
    loaded = Certificate.load(certificate.save(tmp_path))
    assert check_lower(chain, loaded) >= certificate.value > 0
    # the run's metrics.json writer puts it beside metrics.json and names the file
    metrics = {
        key: 0.0 for key in ("clean_accuracy", "lipschitz_upper", "tightness", "train_seconds")
    }
    metrics.update(
        norm="2",
        lipschitz_lower=certificate.value,
        certified_accuracy={},
        pgd_accuracy={},
        config={},
        lower_certificate=data,
        lower_witness=certificate.tensors(),
    )
    write_metrics(tmp_path, metrics)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert "lower_witness" not in written
    assert written["lower_certificate"]["tensor_file"] == LOWER_WITNESS_FILE
    tensors = load_file(str(tmp_path / written["lower_certificate"]["tensor_file"]))
    again = Certificate.from_dict(written["lower_certificate"], tensors)
    assert check_lower(chain, again) >= certificate.value


def test_small_witness_stays_in_the_json(tmp_path) -> None:
    chain = build_random_chain((6, 8, 3), "sincos", bias=True, seed=1)
    certificate = lower_bound(chain, "2", "gradient", **QUICK)
    assert "tensors" not in certificate.to_dict()
    loaded = Certificate.from_dict(json.loads(json.dumps(certificate.to_dict())))
    assert check_lower(chain, loaded) >= certificate.value


def test_check_lower_refuses_what_it_cannot_check() -> None:
    chain = kink_chain()
    upper = Certificate(value=1.0, method="trivial", norm="2", side="upper", sound=True)
    with pytest.raises(BadArgumentError, match="lower bound"):
        check_lower(chain, upper)
    bare = Certificate(value=0.5, method="m", norm="2", side="lower", sound=True)
    with pytest.raises(BadArgumentError, match="no witness"):
        check_lower(chain, bare)
    half = {"witness_kind": "secant", "witness": [0.0]}
    with pytest.raises(BadArgumentError, match="witness_pair"):
        check_lower(chain, Certificate(**{**_fields(bare), "details": half}))


def test_an_inflated_value_does_not_check() -> None:
    chain = build_random_chain((3, 6, 2), "relu", bias=True, seed=2)
    certificate = lower_bound(chain, "1", "gradient", **QUICK)
    inflated = Certificate(
        **{
            **_fields(certificate),
            "value": certificate.value * 1.001,
            "details": certificate.details,
        }
    )
    with pytest.raises(SoundnessError):
        check_lower(chain, inflated)


# --------------------------------------------------------------------------------------------
# Strength: interior points and smooth networks lose (almost) nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sincos", "tanh", "relu", "maxmin"])
@pytest.mark.parametrize("norm", NORMS)
def test_certified_value_is_autograds_away_from_kinks(activation: str, norm: NormName) -> None:
    """A tightlip-shaped network (784 inputs, bias-free): the witness certifies the Jacobian norm
    found by the search to 10⁻⁷ relative (smooth: a secant; PL: an interior point)."""
    chain = build_random_chain((784, 64, 64, 10), activation, bias=False, seed=4)
    data = torch.rand(8, 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    certificate = lower_bound(chain, norm, "gradient", starts=data, **QUICK)
    kind = "secant" if activation in ("sincos", "tanh") else "interior"
    assert certificate.details["witness_kind"] == kind
    jacobian = certificate.details["jacobian_value"]
    assert jacobian * (1 - 1e-7) <= certificate.value
    assert certificate.value <= jacobian * (1 + 1e-3)  # a long secant may beat the Jacobian


def test_default_time_limit() -> None:
    assert GradientOptions().time_limit == DEFAULT_TIME_LIMIT == 30.0
    certificate = lower_bound(
        build_random_chain((3, 4, 2), "relu", seed=0), "2", "gradient", **QUICK
    )
    assert certificate.details["time_limited"] is False
    unlimited = lower_bound(
        build_random_chain((3, 4, 2), "relu", seed=0), "2", "gradient", time_limit=None, **QUICK
    )
    assert "time_limited" not in unlimited.details


def test_jacobian_witness_survives_tiny_jacobians_and_eigensolver_failures(monkeypatch) -> None:
    """A saturated Sigmoid's Jacobian (entries ~1e-160, Gram ~1e-320) still gets a good ``v``;
    and when LAPACK's batched ``eigh`` reports non-convergence (seen once in CI at an
    ONNX Sigmoid net), each matrix is solved alone, by SVD where ``eigh`` fails too."""
    from tightlip.bounds.lower.jacobians import matrix_norm_witness

    generator = torch.Generator().manual_seed(0)
    jac = torch.randn(8, 3, 6, generator=generator, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(jac, ord=2)
    tiny_values, tiny_v = matrix_norm_witness(jac * 1e-150, "2")
    assert torch.all(tiny_values <= exact * 1e-150 * (1 + 1e-12))
    assert torch.all(tiny_values >= exact * 1e-150 * (1 - 1e-9))

    real_eigh = torch.linalg.eigh

    def failing_eigh(matrix):  # type: ignore[no-untyped-def]
        if matrix.ndim == 3 or matrix[0, 0] > 0:  # the batch, and every Gram matrix alone
            raise torch.linalg.LinAlgError("linalg.eigh: failed to converge (simulated)")
        return real_eigh(matrix)

    monkeypatch.setattr(torch.linalg, "eigh", failing_eigh)
    for wide in (jac, jac.transpose(1, 2)):
        values, v = matrix_norm_witness(wide, "2")
        assert torch.allclose(
            torch.linalg.vector_norm(v, dim=-1), torch.ones(8, dtype=torch.float64)
        )
        assert torch.all(values <= exact * (1 + 1e-12))
        assert torch.all(values >= exact * (1 - 1e-9))
