"""Certificates for float32 inference: a sound bound on the rounding error of the logits.

The certificates of :mod:`tightlip.eval.certify` are proved for the network ``f`` evaluated
exactly. A deployed model evaluates ``f̂``, the same network in float32, and rounding can flip a
decision near the decision boundary (Jin, Ohrimenko & Rubinstein 2022, "Getting a-Round
Guarantees: Floating-Point Attacks on Certified Robustness"). This module bounds, for each
example ``x`` and radius ``ε``,

    E_yj(ε)  ≥  |(f̂_y − f̂_j)(x') − (f_y − f_j)(x')|     for every x' with ‖x' − x‖_p ≤ ε,

and the float32 certificate follows (last section).

**What "float32 inference" means here.** The :class:`~tightlip.model.LayerChain` evaluated in
float32 the way ``LayerChain.forward`` does it: the input rounded to float32; each affine step
``h ↦ A h + b`` with each dense factor of ``A`` rounded to float32 and applied as a matrix
product, factor after factor, and the rounded bias added (separately, or fused into the
product as ``nn.Linear``'s ``addmm`` does: the bound covers both); activations by torch's
float32 kernels. tightlip's own models (``nn.Sequential`` of ``Linear`` layers and tightlip
activations) evaluate exactly these operations. A convolutional chain evaluates its
convolutions by ``conv2d`` with the kernel rounded to float32 (and the bias added, separately
or fused), average pooling as a window sum divided by the window size, max pooling and the
channel-wise activations by torch's float32 kernels: each linear factor states how it rounds
(``float_rounding()``, :class:`~tightlip.operators.FloatRounding`), so this module never asks
what kind of operator it holds. Modules that *compute* their weights at run
time (Sandwich layers' Cayley transform) deploy other float32 weights: the bound covers their
exported chain, not their module.

**Assumptions** (IEEE 754 binary32, round to nearest): unit roundoff ``u = 2⁻²⁴``; matrix
products are sums of products in any order, with or without fused multiply-add (no Strassen,
no TF32 or bfloat16 passes: ``torch.get_float32_matmul_precision() == "highest"``, torch's
default) and so are convolutions (direct or im2col-and-GEMM, as oneDNN and PyTorch's CPU
kernels compute them; no Winograd or FFT algorithms, no TF32: on CUDA this needs
``torch.backends.cudnn.allow_tf32 = False`` and a deterministic direct algorithm);
``sin``, ``cos`` and ``tanh`` are accurate to 4 ulps of the result (we assume twice
what the kernels document: the SLEEF ``u10`` functions that PyTorch's CPU kernels call claim
1 ulp, CUDA's ``sinf``/``cosf``/``tanhf`` claim 2 ulps; fast-math intrinsics such as
``__sinf`` are not covered); ``abs``, ``relu``, ``max``, ``min``, sorting, negation and
halving are exact. Near underflow, every operation and every operand read may be off by at
most ``μ = 2⁻¹²⁶`` (the smallest normal float32), which covers gradual underflow and
flush-to-zero. A magnitude that could reach ``2¹²⁴`` makes the bound infinite (overflow).

**One affine output** (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
§3.1 and §3.5, Lemma 3.3; ``γ_n = nu/(1 − nu)``). An inner product of ``n`` terms computed in
any order satisfies ``|fl(wᵀh) − wᵀh| ≤ γ_n |w|ᵀ|h|``; rounding the weights to float32 adds
one factor ``(1 + α)``, ``|α| ≤ u``, and the bias one more term. So for the computed input
``ĥ`` of a factor ``W`` (``m × n``) with bias ``b``, the computed output differs from
``W ĥ + b`` entrywise by

    |δ_i| ≤ γ_{n+2} ((|W||ĥ|)_i + |b_i|) + μ (2‖w_i‖₁ + 4‖ĥ‖₁ + 5n + 8)              (1)

(``γ_{n+1}`` and ``5n`` without a bias). The same holds for any linear factor whose outputs
are sums of ``n`` products, with ``|W|`` read as its *magnitude* operator ``M ≥ |A|`` (the sum
of the moduli of the products formed) and ``‖w_i‖_q`` as a bound on ``‖M_i‖_q``: a
convolution's output is an inner product of ``n = c_in k_h k_w`` products (fewer at a
zero-padded border), ``M`` is the convolution with ``|K|``, and ``‖M_i‖_q ≤ ‖K_o‖_q`` (a
window's taps read distinct pixels); average pooling sums ``k_h k_w`` exact products and
divides once, ``γ_{k_h k_w + 1}`` (see :mod:`tightlip.convolution.operators`). An identity
factor (between an activation and max pooling) is exact. The ``μ`` term collects ``2n`` flushed products and
sums, the flushed operands ``ĥ_j`` (``|w_ij| μ`` each) and weights (``2μ |ĥ_j|`` each), and
the bias add, each amplified by at most ``1 + γ ≤ 2``. Unfused, ``fl(fl(Wĥ) + b̂)`` is within
``(γ_{n+1} + u(1 + γ_{n+1}))|W||ĥ| + (2u + u²)|b| ≤ γ_{n+2}(|W||ĥ| + |b|)`` of ``Wĥ + b``.

**Activations** (``m`` outputs), per output entry: ``|·|``, ReLU, CReLU, MaxMin/GroupSort
(flat or on channels), max pooling:
``μ`` (exact up to flushing); ``sin``, ``cos``, ``tanh`` (values in [−1, 1], where an ulp is at
most ``2⁻²³``): ``A = 4·2⁻²³ + 2⁻²⁴`` (the extra ``2⁻²⁴`` for results near 0, subnormal or
flushed); SinPair ``(z ± sin z)/2`` (``sin``, then a rounded add, then an exact halving):
``½(A + u(|ẑ_i| + 1 + A)) + μ``; the clipped ReLU ``min(relu z, θ)``: ``uθ_i + 2μ`` (the
threshold rounded to float32).

**Propagation.** The float32 forward pass is a sequence of stages ``s = 0 … S`` (the input
rounding, each matrix factor with its bias, each activation) with exact maps ``Φ_s`` of
Lipschitz constant ``λ_s`` in ℓp (the factor's certified operator norm, the activation's
``lipschitz(p)``, 1 for the input rounding) and computed values ``ĥ_s = Φ_s(ĥ_{s−1}) + δ_s``.
With ``h_s(x')`` the exact values, the triangle inequality gives

    ρ_s ≥ ‖ĥ_s − h_s(x')‖_p    for    ρ_s = λ_s ρ_{s−1} + η_s,    η_s ≥ ‖δ_s‖_p,    ρ_{−1} = 0.

The local error ``δ_s`` depends on the size of the computed input ``ĥ_{s−1}``, which lies in
the ℓp ball of radius ``R_{s−1} = ρ_{s−1} + Λ_{s−1} ε + ρᶜ_{s−1}`` around the value
``c_{s−1}`` that tightlip computes at the centre ``x`` in float64: ``‖h(x') − h(x)‖_p ≤ Λ ε``
with ``Λ_s = ∏_{t≤s} λ_t`` (the trivial bound of the network up to stage s), and ``ρᶜ`` bounds
the float64 error at the centre (the same recursion with ``u = 2⁻⁵³`` and ``R = 0``, since
tightlip's own float64 inputs *are* the centres). Hölder, row by row, turns the ball into
entrywise sizes: ``(|W||ĥ|)_i ≤ (|W||c|)_i + ‖w_i‖_q R`` and ``‖ĥ‖₁ ≤ ‖c‖₁ + n^{1−1/p} R``
(q dual to p). Taking ℓp norms of (1) and using the triangle inequality,

    η_s ≤ γ ‖|W||c| + |b|‖_p + γ ‖(‖w_i‖_q)_i‖_p R + μ (2‖(‖w_i‖₁)_i‖_p + (4‖c‖₁ + 4n^{1−1/p}R + 5n + 8) m^{1/p}),

and likewise ``η ≤ μ m^{1/p}``, ``A m^{1/p}``, ``(½(A + u(1 + A)) + μ) m^{1/p} + ½u 2^{1/p}
(‖c‖_p + R)`` and ``u‖θ‖_p + 2μ m^{1/p}`` for the activations, and ``u(‖x‖_p + ε) + μ d^{1/p}``
for rounding the input ``x'`` (``|fl(x'_j) − x'_j| ≤ u|x'_j| + μ``). Exact float32 data make the
last term conservative. CReLU and SinCos double the width; ``m`` counts their outputs.

**Logits.** The last matrix factor ``W`` (``C × n``, its bias ``b``) is kept entrywise: with
``ρ = ρ_{S−1}``, ``R = R_{S−1}`` and ``Δ_i`` the right side of (1) with the ball terms above,
``(ẑ − z)(x') = W (ĝ − g(x')) + δ``, so logit ``i`` is off by at most
``E_i = ‖w_i‖_q ρ + Δ_i`` and a logit gap by at most

    E_yj = ‖w_y − w_j‖_q ρ + Δ_y + Δ_j    (≤ 2 max_i E_i: the two logits' errors).

**The certificate.** Let ``ĝ_yj`` be the gap ``z_y − z_j`` at ``x`` computed by any float64
evaluation of the chain, and ``Eᶜ_yj`` the bound above with ``u = 2⁻⁵³`` at radius 0, so the
exact gap at ``x`` is at least ``ĝ_yj − Eᶜ_yj``. Over the ball the exact gap moves by at most
``T_yj ε`` (``c_p L ε`` for the global certificate, ``‖w_y − w_j‖_q L_g ε`` for the last-layer
one; see :mod:`tightlip.eval.certify`). Hence, for every ``x'`` in the ball,

    (ẑ_y − ẑ_j)(x') ≥ ĝ_yj − Eᶜ_yj − T_yj ε − E_yj(ε),

and the float32 decision is ``y`` at every ``x'`` (a strict maximum, so ties do not count)
when ``ĝ_yj − Eᶜ_yj − E_yj(ε) > T_yj ε`` for all ``j ≠ y``: the float64 certificate applied to
gaps lowered by :meth:`RoundingErrorBound.gap_reduction`. It can only certify fewer points.

**The bound's own arithmetic** is float64. Every quantity is a sum, product, maximum or ℓp
norm of non-negative numbers that are already upper bounds, with at most ``2²⁰`` terms per
sum, so its relative rounding error is below ``2⁻³¹`` between two inflations by
``1 + 2⁻³⁰`` (plus ``2⁻¹⁰⁰⁰`` against underflow); operator norms are certified
(:mod:`tightlip.norms`). The cost is about two float64 forward passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tightlip.errors import MethodNotApplicableError
from tightlip.layers import Activation
from tightlip.layers.rounding import RoundingModel, ones_norm, rounded_up_bound
from tightlip.model import AffineStep, LayerChain
from tightlip.norms import NormName, dual_norm, round_up, vector_norm
from tightlip.operators import FloatRounding, LinearOperator

#: the widest layer the bound arithmetic is argued for (module docstring)
MAX_WIDTH = 2**20

#: a batch of centres holds at most this many entries per stage (128 MiB in float64): a few
#: hundred images for a conv net, the whole default batch for an MLP
_BATCH_ENTRIES = 2**24


@dataclass(frozen=True)
class Precision:
    """A binary floating-point format and the error model assumed for it (module docstring)."""

    name: str
    #: ``u``: ``fl(a ∘ b) = (a ∘ b)(1 + δ)``, ``|δ| ≤ u``, barring underflow
    unit_roundoff: float
    #: ``μ``: the absolute error an operation or an operand read may add near underflow
    underflow: float
    #: ``A``: ``|fl(φ(z)) − φ(z)| ≤ A`` for ``φ`` in sin, cos, tanh (values in [−1, 1])
    bounded_function_error: float
    #: a magnitude bound at or above this may overflow: the error bound is then infinite
    overflow_threshold: float

    def gamma(self, n: int) -> float:
        """``γ_n = n u / (1 − n u)`` rounded up (Higham, §3.1); ``inf`` once ``n u ≥ 1/2``.

        ``n u`` and ``1 − n u`` are exact in float64 for these formats, so only the division
        rounds.
        """
        nu = n * self.unit_roundoff
        if nu >= 0.5:
            return math.inf
        return round_up(nu / (1.0 - nu))


FLOAT32 = Precision("float32", 2.0**-24, 2.0**-126, 4 * 2.0**-23 + 2.0**-24, 2.0**124)
FLOAT64 = Precision("float64", 2.0**-53, 2.0**-1022, 4 * 2.0**-52 + 2.0**-53, 2.0**1020)


def float32_logits(chain: LayerChain, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """The logits of float32 inference as this module defines it (``LayerChain.forward`` on
    float32 inputs: weights and biases rounded to float32), returned in float64."""
    x = chain.check_input(x.reshape(x.shape[0], -1) if x.ndim > 2 else x)
    with torch.no_grad():
        parts = [
            chain.forward(x[i : i + batch_size].to(torch.float32))
            for i in range(0, x.shape[0], batch_size)
        ]
    return torch.cat(parts).to(torch.float64) if parts else torch.empty(0, chain.output_dim)


def _co_root(n: int, norm: NormName) -> float:
    """``n^{1−1/p}``, so that ``‖v‖₁ ≤ n^{1−1/p} ‖v‖_p`` for ``v ∈ R^n`` (Hölder)."""
    return {"1": 1.0, "2": round_up(math.sqrt(n)), "inf": float(n)}[norm]


def _guard(error: torch.Tensor, size: torch.Tensor, precision: Precision) -> torch.Tensor:
    """``error`` where the magnitude bound ``size`` cannot overflow, ``inf`` elsewhere."""
    return torch.where(size < precision.overflow_threshold, error, math.inf)


# --------------------------------------------------------------------------------------------
# Activations: the rounding error of one activation layer
# --------------------------------------------------------------------------------------------


def activation_rounding(
    activation: Activation, centre: torch.Tensor, norm: NormName
) -> RoundingModel:
    """The rounding model of ``activation`` on pre-activations around ``centre`` ``(B, d)``:
    the activation's own ``rounding_model`` (:mod:`tightlip.layers.rounding`)."""
    own = getattr(activation, "rounding_model", None)
    if not callable(own):
        raise MethodNotApplicableError(
            f"no float32 rounding model is known for the activation {type(activation).__name__} "
            "(give it a rounding_model(centre, norm) method)"
        )
    return own(centre, norm)


# --------------------------------------------------------------------------------------------
# Stages of the forward pass
# --------------------------------------------------------------------------------------------


class _InputStage:
    """Rounding the input ``x'`` (``‖x' − x‖_p ≤ R``): ``‖δ‖_p ≤ u(‖x‖_p + R) + μ d^{1/p}``."""

    lipschitz = 1.0

    def __init__(self, x: torch.Tensor, norm: NormName) -> None:
        self.norm = norm
        self.features = x.shape[1]
        self.size = rounded_up_bound(vector_norm(x, norm))
        self.largest = x.abs().amax(dim=1)

    def local_error(self, precision: Precision, radius: torch.Tensor) -> torch.Tensor:
        tiny = precision.underflow * ones_norm(self.features, self.norm)
        error = rounded_up_bound(precision.unit_roundoff * (self.size + radius) + tiny)
        return _guard(error, self.largest + radius, precision)


class _LinearStage:
    """``v ↦ A v (+ b)`` for one linear factor ``A`` (``m × n``): bound (1) of the docstring,
    with ``|W|`` read as the factor's magnitude operator ``M`` and ``n`` as the products per
    output (:meth:`~tightlip.operators.FloatRounding`, which the operator states)."""

    def __init__(
        self,
        rounding: FloatRounding,
        bias: torch.Tensor | None,
        centre: torch.Tensor,
        norm: NormName,
        lipschitz: float,
        entrywise: bool,
    ) -> None:
        self.norm, self.lipschitz = norm, lipschitz
        self.exact = rounding.terms == 0 and bias is None
        self.terms, self.products = rounding.terms, rounding.products
        self.inputs = centre.shape[1]
        self.has_bias = bias is not None
        size = rounding.magnitude(centre.abs())  # M|c|, (B, m)
        self.outputs = size.shape[1]
        if bias is not None:
            size = size + bias.abs()
        self.size = rounded_up_bound(size) if entrywise else None
        self.size_norm = rounded_up_bound(vector_norm(size, norm))
        self.size_max = rounded_up_bound(size.amax(dim=1))
        self.centre_l1 = rounded_up_bound(centre.abs().sum(dim=1))
        self.row_dual = rounded_up_bound(rounding.row_norms(dual_norm(norm)))  # ‖M_i‖_q, (m,)
        self.row_l1 = rounded_up_bound(rounding.row_norms("1"))  # ‖M_i‖₁, (m,)
        self.row_dual_norm = float(rounded_up_bound(vector_norm(self.row_dual, norm)))
        self.row_dual_max = float(self.row_dual.max())
        self.row_l1_norm = float(rounded_up_bound(vector_norm(self.row_l1, norm)))

    def _gamma(self, precision: Precision) -> float:
        return precision.gamma(self.terms + (1 if self.has_bias else 0))

    def _count(self) -> float:
        return 5.0 * self.products + (8.0 if self.has_bias else 0.0)

    def local_error(self, precision: Precision, radius: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bounds on ``‖δ‖_p`` for computed inputs within ``radius`` of the centre."""
        if self.exact:
            return torch.zeros_like(radius)
        gamma, mu = self._gamma(precision), precision.underflow
        rows = ones_norm(self.outputs, self.norm)
        constant = gamma * self.size_norm + mu * (
            2.0 * self.row_l1_norm + (4.0 * self.centre_l1 + self._count()) * rows
        )
        slope = gamma * self.row_dual_norm + 4.0 * mu * _co_root(self.inputs, self.norm) * rows
        error = rounded_up_bound(constant + slope * radius)
        return _guard(error, self.size_max + self.row_dual_max * radius, precision)

    def entrywise_error(self, precision: Precision, radius: torch.Tensor) -> torch.Tensor:
        """``(B, m)`` bounds on ``|δ_i|`` (needs ``entrywise=True`` at construction)."""
        if self.size is None:
            raise RuntimeError("this stage was built without its entrywise sizes")
        gamma, mu = self._gamma(precision), precision.underflow
        spread = self.size + self.row_dual[None, :] * radius[:, None]
        reach = self.centre_l1 + _co_root(self.inputs, self.norm) * radius
        under = mu * (2.0 * self.row_l1[None, :] + 4.0 * reach[:, None] + self._count())
        error = rounded_up_bound(gamma * spread + under)
        if self.exact:
            error = torch.zeros_like(error)
        return _guard(error, (self.size_max + self.row_dual_max * radius)[:, None], precision)


class _ActivationStage:
    def __init__(self, activation: Activation, centre: torch.Tensor, norm: NormName) -> None:
        self.lipschitz = float(activation.lipschitz(norm))
        self.model = activation_rounding(activation, centre, norm)

    def local_error(self, precision: Precision, radius: torch.Tensor) -> torch.Tensor:
        return self.model.local_error(precision, radius)


_Stage = _InputStage | _LinearStage | _ActivationStage


def _factors(step: AffineStep) -> tuple[tuple[LinearOperator, FloatRounding], ...]:
    """The linear factors of an affine step, in the order they are applied, each with the
    rounding model it states (``float_rounding()``; refused when it states none)."""
    operator = step.operator
    factors = tuple(getattr(operator, "factors", (operator,)))
    result = []
    for factor in factors:
        describe = getattr(factor, "float_rounding", None)
        if not callable(describe):
            raise MethodNotApplicableError(
                f"{step.name}: {type(factor).__name__} states no float32 rounding model "
                "(give it a float_rounding() method)"
            )
        if max(factor.in_features, factor.out_features) > MAX_WIDTH:
            raise MethodNotApplicableError(f"{step.name}: wider than {MAX_WIDTH} units")
        result.append((factor, describe()))
    return tuple(result)


class _Batch:
    """The stages of one batch of centres, and the float64 error of tightlip's own pass."""

    def __init__(self, chain: LayerChain, x: torch.Tensor, norm: NormName) -> None:
        self.norm = norm
        stages: list[_Stage] = [_InputStage(x, norm)]
        centre = x
        last_step = chain.steps[-1]
        for step in chain.steps:
            if isinstance(step, AffineStep):
                factors = _factors(step)
                for k, (factor, rounding) in enumerate(factors):
                    bias = step.bias if k == len(factors) - 1 else None
                    entrywise = step is last_step and k == len(factors) - 1
                    lipschitz = factor.certified_norm(norm)
                    stages.append(
                        _LinearStage(rounding, bias, centre, norm, lipschitz, entrywise)
                    )
                    centre = factor.apply(centre)
                    if bias is not None:
                        centre = centre + bias
            else:
                stages.append(_ActivationStage(step.activation, centre, norm))
                with torch.no_grad():
                    centre = step.activation(centre)
        head = stages[-1]
        assert isinstance(head, _LinearStage)
        self.hidden, self.head = stages[:-1], head
        self.logits = centre
        zero = torch.zeros(x.shape[0], dtype=torch.float64)
        # tightlip's own float64 pass starts from x itself and reads exactly the centres
        self.centre_errors = [zero] + [s.local_error(FLOAT64, zero) for s in self.hidden[1:]]
        w = _head_matrix(chain)
        rows = w[:, None, :] - w[None, :, :]  # (C, C, n): w_y − w_j
        self.pair_dual = rounded_up_bound(vector_norm(rows, dual_norm(norm)))  # ‖w_y − w_j‖_q

    def propagate(
        self, precision: Precision, radius: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ρ, R)`` at the input of the last factor: the evaluation error and the radius
        of the ball around the centre that holds the computed input (module docstring)."""
        rho = torch.zeros_like(self.centre_errors[0])
        rho_c = torch.zeros_like(rho)
        lipschitz = 1.0
        for stage, centre_error in zip(self.hidden, self.centre_errors, strict=True):
            reach = rounded_up_bound(rho + rho_c + round_up(lipschitz * radius))
            rho = rounded_up_bound(stage.lipschitz * rho + stage.local_error(precision, reach))
            rho_c = rounded_up_bound(stage.lipschitz * rho_c + centre_error)
            lipschitz = round_up(lipschitz * stage.lipschitz)
        return rho, rounded_up_bound(rho + rho_c + round_up(lipschitz * radius))

    def logit_error(self, precision: Precision, radius: float) -> torch.Tensor:
        rho, reach = self.propagate(precision, radius)
        delta = self.head.entrywise_error(precision, reach)
        return rounded_up_bound(self.head.row_dual[None, :] * rho[:, None] + delta)

    def pair_error(
        self, labels: torch.Tensor, precision: Precision, radius: float
    ) -> torch.Tensor:
        rho, reach = self.propagate(precision, radius)
        delta = self.head.entrywise_error(precision, reach)
        own = delta.gather(1, labels[:, None])
        error = rounded_up_bound(self.pair_dual[labels] * rho[:, None] + own + delta)
        return error.scatter(1, labels[:, None], 0.0)


def _widest(chain: LayerChain) -> int:
    """The widest row any stage of the chain holds (activations may double the width)."""
    widest, width = chain.input_dim, chain.input_dim
    for step in chain.steps:
        if isinstance(step, AffineStep):
            width = step.out_features
        else:
            width = step.activation.out_features(width)
        widest = max(widest, width)
    return widest


def _head_matrix(chain: LayerChain) -> torch.Tensor:
    return _factors(chain.affine_steps[-1])[-1][0].dense()


class RoundingErrorBound:
    """Per-example bounds on the rounding error of a chain's logits over ℓp balls.

    Built once for the centres ``x`` ``(N, d)``; :meth:`logit_error`, :meth:`pair_error` and
    :meth:`gap_reduction` then cost a few vector operations per radius. The derivation and the
    assumptions are in the module docstring. Raises
    :class:`~tightlip.errors.MethodNotApplicableError` for layers it has no rounding model for.
    """

    def __init__(
        self, chain: LayerChain, x: torch.Tensor, norm: NormName, batch_size: int = 2048
    ) -> None:
        x = chain.check_input(x.reshape(x.shape[0], -1) if x.ndim > 2 else x)
        x = x.detach().to(device="cpu", dtype=torch.float64)
        self.norm = norm
        batch_size = max(1, min(batch_size, _BATCH_ENTRIES // _widest(chain)))
        with torch.no_grad():
            self._batches = [
                _Batch(chain, x[i : i + batch_size], norm)
                for i in range(0, max(x.shape[0], 1), batch_size)
            ]

    @property
    def logits(self) -> torch.Tensor:
        """tightlip's float64 logits at the centres ``(N, C)``."""
        return torch.cat([b.logits for b in self._batches])

    def logit_error(self, radius: float = 0.0, precision: Precision = FLOAT32) -> torch.Tensor:
        """``(N, C)``: ``E_i ≥ |f̂_i(x') − f_i(x')|`` for every ``x'`` within ``radius``."""
        return torch.cat([b.logit_error(precision, radius) for b in self._batches])

    def pair_error(
        self, labels: torch.Tensor, radius: float = 0.0, precision: Precision = FLOAT32
    ) -> torch.Tensor:
        """``(N, C)``: ``E_yj ≥ |(f̂_y − f̂_j)(x') − (f_y − f_j)(x')|`` (0 at ``j = y``)."""
        return torch.cat([b.pair_error(y, precision, radius) for b, y in self._split(labels)])

    def gap_reduction(self, labels: torch.Tensor, radius: float) -> torch.Tensor:
        """``(N, C)``: what the float64 gaps ``z_y − z_j`` at the centres must exceed the
        Lipschitz term by for float32 inference to be certified within ``radius``:
        ``E_yj(ε)`` in float32 plus ``Eᶜ_yj``, the float64 error at the centre."""
        float32 = self.pair_error(labels, radius, FLOAT32)
        return rounded_up_bound(float32 + self.pair_error(labels, 0.0, FLOAT64))

    def _split(self, labels: torch.Tensor) -> list[tuple[_Batch, torch.Tensor]]:
        labels = labels.reshape(-1).to(device="cpu", dtype=torch.long)
        pieces, start = [], 0
        for batch in self._batches:
            size = batch.logits.shape[0]
            pieces.append((batch, labels[start : start + size]))
            start += size
        if start != labels.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {start} examples")
        return pieces
