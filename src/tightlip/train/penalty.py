"""Differentiable estimates of the trivial bound, and the penalties built on them.

Training needs ``log ∏ ‖W_i‖`` with a gradient at every step, so it cannot afford an SVD per
step. :class:`TrivialBoundEstimator` keeps one persistent pair of power-iteration vectors per
linear layer (as ``torch.nn.utils.parametrizations.spectral_norm`` does), runs a few iterations
without gradient each step, and returns ``σ̂_i = u_iᵀ W_i v_i``, whose gradient w.r.t. ``W_i`` is
``u_i v_iᵀ``, the gradient of ``σ_max`` at convergence. For ℓ1 and ℓ∞ the operator norms are
cheap and exact (max column / row abs-sum) and are differentiated directly.

Smooth maximum (ℓ1 / ℓ∞, optional). The gradient of ``max_k s_k`` (``s_k`` the row or column
abs-sums) reaches one row only, so the penalty lowers one row at a time while the loss is free
to grow all the others up to it. With ``smooth_max = τ > 0`` the estimator uses instead the
log-sum-exp at a temperature *relative* to the largest sum ``m`` (treated as a constant):

    smax_τ(s) = m + τ m · log Σ_k exp((s_k − m) / (τ m)),
    max_k s_k ≤ smax_τ(s) ≤ max_k s_k · (1 + τ log K),

whose gradient is the softmax weights ``softmax(s / (τ m))``: every row near the maximum is
pushed down together, which equalises the sums (one of the two conditions for
``‖W_{i+1} D W_i‖ = ‖W_{i+1}‖ ‖W_i‖`` in ℓ1 / ℓ∞). It is never below the exact norm, so a loss
that divides by ``L̂`` stays conservative.

These estimates may *under*-estimate ℓ2 norms; they steer training only. Certification always
recomputes the sound bound (:mod:`tightlip.bounds.trivial`).

Penalties on the estimate ``L̂`` (the paper leaves the form open; both are offered and measured):

* ``log``:   ``λ · log L̂``  (scale-free: a 1 % cut in the bound is worth the same at any scale);
* ``hinge``: ``λ · max(0, log L̂ − log L_target)``  (no pressure once below the target);
* ``none``:  no penalty (the ablation).

Conditioning control (the third obstruction, ill-conditioned weights) is a separate,
scale-free term: for ℓ2, ``Σ_i log(σ_max(W_i) / σ_rms(W_i))`` with
``σ_rms = ‖W_i‖_F / √rank_max``; it is ≥ 0 and vanishes exactly when every singular value
equals the largest one (a scaled partial isometry), so the top singular directions of
consecutive layers can always line up. For ℓ1 / ℓ∞ the same shape with column / row
abs-sums: ``log(max_j c_j / mean_j c_j)``, zero when all column (row) sums are equal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tightlip.errors import BadArgumentError, ModelShapeError
from tightlip.layers.activation import Activation
from tightlip.norms import NormName
from tightlip.train.projections import project_dense

PenaltyForm = Literal["log", "hinge", "none"]
PENALTY_FORMS: tuple[str, ...] = ("log", "hinge", "none")


Layer = nn.Linear | nn.Conv2d
_POOLING = (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.MaxPool2d)


def _penalised_layers(model: nn.Module) -> list[Layer]:
    """The linear and convolutional layers, in ``model.modules()`` order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def _lipschitz_units(model: nn.Module) -> list[nn.Module]:
    """The non-linear modules that state a Lipschitz constant, each counted once.

    A module with a ``lipschitz`` method is a unit and its children are not visited, so a
    wrapper (e.g. an activation applied on channels) and the activation it holds are never both
    counted: the trivial bound multiplies one constant per step of the network.
    """
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Conv2d):
            return
        if callable(getattr(module, "lipschitz", None)):
            units.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return units


def _activation_log_lipschitz(
    model: nn.Module, norm: NormName, shapes: dict[int, tuple[int, ...]]
) -> float:
    """``Σ log Lip_p`` of the activations and of the pooling layers (constants, no gradient).

    Pooling is read at the shape it receives: average pooling by the certified norm of its
    operator, max pooling by the constant of its chain step (``√m`` in ℓ2 for windows that
    overlap ``m``-fold; :mod:`tightlip.layers.pooling`).
    """
    from tightlip.convolution.modules import avg_pool_operator
    from tightlip.layers.pooling import max_pool_activation

    total = sum(math.log(m.lipschitz(norm)) for m in _lipschitz_units(model))  # type: ignore[operator]
    for module in model.modules():
        if not isinstance(module, _POOLING) or id(module) not in shapes:
            continue
        name = type(module).__name__
        if isinstance(module, nn.MaxPool2d):
            total += math.log(max_pool_activation(module, shapes[id(module)], name).lipschitz(norm))
        else:
            operator = avg_pool_operator(module, shapes[id(module)], name)
            total += math.log(operator.certified_norm(norm))
    return total


def _image_shape(model: nn.Module) -> tuple[int, ...] | None:
    """The ``(C, H, W)`` of the first ``nn.Unflatten`` (how :func:`tightlip.build_model` and
    ``to_chain`` read a convolutional network's input shape), or ``None``."""
    for module in model.modules():
        if isinstance(module, nn.Unflatten):
            return tuple(int(s) for s in module.unflattened_size)  # type: ignore[union-attr]
    return None


@torch.no_grad()
def _input_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """The shape (without batch) each convolution and pooling layer receives, by ``id``, from
    one forward pass of a zero input of ``input_shape`` (flattened, or as maps)."""
    shapes: dict[int, tuple[int, ...]] = {}
    hooks = []
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, *_POOLING)):

            def record(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
                shapes.setdefault(id(mod), tuple(args[0].shape[1:]))

            hooks.append(module.register_forward_pre_hook(record))
    try:
        first = next(model.parameters(), None)
        dtype = torch.float32 if first is None else first.dtype
        device = None if first is None else first.device
        was_training = model.training
        model.eval()
        try:  # a network that unflattens reads flat rows; one that starts with a conv, maps
            model(torch.zeros(1, math.prod(input_shape), dtype=dtype, device=device))
        except RuntimeError as flat_error:
            shapes.clear()
            try:
                model(torch.zeros(1, *input_shape, dtype=dtype, device=device))
            except RuntimeError:
                raise flat_error from None
        finally:
            model.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _conv(layer: nn.Conv2d, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The convolution of ``layer`` (its padding, stride, dilation) with ``kernel``, no bias."""
    return layer._conv_forward(x, kernel, None)


def _conv_transpose(
    layer: nn.Conv2d, u: torch.Tensor, kernel: torch.Tensor, in_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """``Aᵀ u`` for a zero-padded convolution: the transposed convolution, with the
    ``output_padding`` that restores the input's size (rows and columns a stride skips);
    ``None`` for other paddings (the caller then differentiates the convolution instead)."""
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return None
    extra = []
    for axis in range(2):
        size, stride = in_shape[-2 + axis], layer.stride[axis]
        reach = (u.shape[-2 + axis] - 1) * stride - 2 * layer.padding[axis]
        reach += layer.dilation[axis] * (kernel.shape[-2 + axis] - 1) + 1
        extra.append(size - reach)
        if not 0 <= extra[-1] < max(stride, layer.dilation[axis]):
            return None
    return F.conv_transpose2d(
        u, kernel, None, layer.stride, layer.padding, tuple(extra), layer.groups, layer.dilation
    )


def conv_abs_sums(layer: nn.Conv2d, shape: tuple[int, ...], norm: NormName) -> torch.Tensor:
    """The exact absolute column (ℓ1) or row (ℓ∞) sums of the convolution on inputs of
    ``shape``, differentiable in the kernel ``K``.

    Every entry of the matrix ``A`` is one kernel value (:mod:`tightlip.convolution.abs_sums`),
    so ``|A|`` is the convolution with ``|K|``: the row sums are ``|K| ⋆ 1`` and the column sums
    ``|A|ᵀ 1``, the vector-Jacobian product of that convolution with an all-ones cotangent
    (taken with ``create_graph`` so that it stays differentiable in ``K``).
    """
    abs_kernel = layer.weight.abs()
    ones = torch.ones(
        1, *shape, dtype=abs_kernel.dtype, device=abs_kernel.device, requires_grad=norm == "1"
    )
    with torch.enable_grad():
        rows = _conv(layer, ones, abs_kernel)
        if norm == "inf":
            return rows.reshape(-1)
        (columns,) = torch.autograd.grad(
            rows, ones, torch.ones_like(rows), create_graph=abs_kernel.requires_grad
        )
    return columns.reshape(-1)


class TrivialBoundEstimator(nn.Module):
    """``log L̂ = Σ log ‖A_i‖_{p→p} + Σ log Lip_p(σ_j)`` with persistent power-iteration vectors.

    ``A_i`` runs over the ``nn.Linear`` and ``nn.Conv2d`` layers. A convolution is read at the
    shape it receives (``input_shape`` of the network, by default the first ``nn.Unflatten``'s,
    tracked by one forward pass): for ℓ2 its power-iteration vectors have the shapes of its
    input and output maps, and ``A v``, ``Aᵀ u`` are the convolution and its vector-Jacobian
    product (the transposed convolution), so no matrix is formed; for ℓ1 / ℓ∞ the exact column
    / row abs-sums (:func:`conv_abs_sums`) go through the same smooth maximum as a dense layer.

    The vectors are buffers, so they are saved in checkpoints and a resumed run continues with
    exactly the same estimates.
    """

    def __init__(
        self,
        model: nn.Module,
        norm: NormName,
        iterations: int = 1,
        seed: int = 0,
        smooth_max: float = 0.0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if smooth_max < 0:
            raise ValueError(f"smooth_max must be ≥ 0, got {smooth_max}")
        self.norm = norm
        self.iterations = iterations
        self.smooth_max = smooth_max
        self._layers = _penalised_layers(model)
        if not self._layers:
            raise ModelShapeError("the model has no nn.Linear or nn.Conv2d layer to penalise")
        shapes: dict[int, tuple[int, ...]] = {}
        if any(_needs_shape(m) for m in model.modules()):
            shape = input_shape if input_shape is not None else _image_shape(model)
            if shape is None:
                raise ModelShapeError(
                    "a convolutional model needs its input shape: add nn.Unflatten(1, (C, H, W)) "
                    "or pass input_shape"
                )
            shapes = _input_shapes(model, tuple(shape))
        self._shapes = [shapes.get(id(m), ()) for m in self._layers]
        self._activation_log_lip = _activation_log_lipschitz(model, norm, shapes)
        generator = torch.Generator().manual_seed(seed)
        for i, layer in enumerate(self._layers):
            in_shape, out_shape = self._vector_shapes(i)
            u = torch.randn(out_shape, generator=generator, dtype=torch.float64)
            v = torch.randn(in_shape, generator=generator, dtype=torch.float64)
            place = {"dtype": layer.weight.dtype, "device": layer.weight.device}
            self.register_buffer(f"u{i}", (u / u.norm()).to(**place))
            self.register_buffer(f"v{i}", (v / v.norm()).to(**place))
        self._warm_up(30)

    def _vector_shapes(self, i: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        layer = self._layers[i]
        if isinstance(layer, nn.Linear):
            out_features, in_features = layer.weight.shape
            return (in_features,), (out_features,)
        in_shape = self._shapes[i]
        with torch.no_grad():
            probe = torch.zeros(1, *in_shape, dtype=layer.weight.dtype, device=layer.weight.device)
            out_shape = tuple(_conv(layer, probe, layer.weight).shape[1:])
        return in_shape, out_shape

    def _forward_map(self, i: int, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``A_i v`` (differentiable in ``weight``)."""
        layer = self._layers[i]
        if isinstance(layer, nn.Linear):
            return weight @ v
        return _conv(layer, v.unsqueeze(0), weight).squeeze(0)

    def _transpose_map(self, i: int, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``A_iᵀ u`` (no gradient; the vector-Jacobian product for a convolution)."""
        layer = self._layers[i]
        if isinstance(layer, nn.Linear):
            return weight.T @ u
        v = getattr(self, f"v{i}")
        direct = _conv_transpose(layer, u.unsqueeze(0), weight.detach(), tuple(v.shape))
        if direct is not None:
            return direct.squeeze(0)
        with torch.enable_grad():  # circular or 'same' padding: autograd's adjoint
            x = torch.zeros_like(v).unsqueeze(0).requires_grad_(True)
            y = _conv(layer, x, weight.detach())
            (g,) = torch.autograd.grad(y, x, u.unsqueeze(0))
        return g.squeeze(0)

    @torch.no_grad()
    def _power_step(self, i: int, weight: torch.Tensor, iterations: int) -> None:
        u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
        for _ in range(iterations):
            v = self._transpose_map(i, weight, u)
            v = v / v.norm().clamp_min(1e-12)
            u = self._forward_map(i, weight, v)
            u = u / u.norm().clamp_min(1e-12)
        getattr(self, f"u{i}").copy_(u)
        getattr(self, f"v{i}").copy_(v)

    def _warm_up(self, iterations: int) -> None:
        if self.norm == "2":
            for i, layer in enumerate(self._layers):
                self._power_step(i, layer.weight.detach(), iterations)

    def _abs_sums(self, i: int) -> torch.Tensor:
        layer = self._layers[i]
        if isinstance(layer, nn.Linear):
            return layer.weight.abs().sum(dim=0 if self.norm == "1" else 1)
        return conv_abs_sums(layer, self._shapes[i], self.norm)

    def layer_norms(self, update: bool = True) -> list[torch.Tensor]:
        """Differentiable estimates of ``‖A_i‖_{p→p}`` for every linear / conv layer."""
        norms = []
        for i, layer in enumerate(self._layers):
            weight = layer.weight
            if self.norm in ("1", "inf"):
                norms.append(smooth_maximum(self._abs_sums(i), self.smooth_max))
            else:
                if update and self.training:
                    self._power_step(i, weight.detach(), self.iterations)
                u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
                # flattened dot product: for a dense layer exactly uᵀ(Wv) as before (the
                # reduction order decides the last bit, and seeded runs are pinned to it)
                norms.append(
                    torch.dot(u.flatten(), self._forward_map(i, weight, v).flatten()).abs()
                )
        return norms

    @torch.no_grad()
    def _current_norm(self, i: int) -> float:
        """Layer ``i``'s norm estimate for the current weights, without a power step:
        ``|uᵀ A_i v|`` in ℓ2 (from below), the largest abs-sum in ℓ1 / ℓ∞ (exact)."""
        if self.norm == "2":
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            weight = self._layers[i].weight
            return float(torch.dot(u.flatten(), self._forward_map(i, weight, v).flatten()).abs())
        return float(self._abs_sums(i).max())

    @torch.no_grad()
    def rescale_layers_(self) -> None:
        """Rescale every layer in place to estimated norm 1, keeping ``f / L̂`` unchanged.

        Layer ``i`` (in forward order) is multiplied by ``c_i = 1 / σ̂_i`` (``σ̂_i`` the current
        estimate of ``‖A_i‖_{p→p}``: ``uᵀ A_i v`` in ℓ2, the largest abs-sum in ℓ1 / ℓ∞) and
        its bias by ``c_1 ⋯ c_i``. With positively homogeneous activations and pooling
        (``σ(c z) = c σ(z)``, checked by :func:`check_rescalable`) the network becomes
        ``(∏ c_i) f`` and its estimate ``(∏ c_i) L̂``, so the normalised logits ``f / L̂`` that
        the margin losses read are unchanged: only the weights' scale is reset. Under a
        spectral-step optimiser (:class:`~tightlip.train.optimizers.Muon`) this keeps its step
        ``η`` a fixed *relative* change of every factor of the bound, instead of one that
        shrinks as the weights grow (issue 19's measurement: 56.7 % against 53.6 % certified at
        1.58 on validation). Nothing here is a certificate: the sound bound is recomputed
        from the actual weights.
        """
        cumulative = 1.0
        for i, layer in enumerate(self._layers):
            factor = 1.0 / max(self._current_norm(i), 1e-12)
            cumulative *= factor
            layer.weight.mul_(factor)
            if layer.bias is not None:
                layer.bias.mul_(cumulative)

    @torch.no_grad()
    def clip_layers_(self) -> None:
        """Project every layer onto the unit ball of its norm (:mod:`tightlip.train.projections`):
        dense layers exactly; a convolution's kernel matrix ``(c_out, c_in·k·k)`` is projected
        the same way (its spectrum equalised), then the operator divided by ``max(1, σ̂)``."""
        for i, layer in enumerate(self._layers):
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(project_dense(layer.weight, self.norm))
                continue
            kernel = layer.weight
            matrix = kernel.reshape(kernel.shape[0], -1)
            kernel.copy_(project_dense(matrix, self.norm).reshape(kernel.shape))
            layer.weight.div_(max(1.0, self._current_norm(i)))

    def last_weight(self) -> torch.Tensor:
        """The weight of the final linear layer (the read-out ``W_L``)."""
        last = self._layers[-1]
        if not isinstance(last, nn.Linear):
            raise ModelShapeError("the model does not end with an nn.Linear read-out")
        return last.weight

    def forward(self, update: bool = True) -> torch.Tensor:
        """``log L̂``, differentiable w.r.t. the model's weights."""
        return self.log_bound_and_conditioning(update)[0]

    def log_bound_and_conditioning(self, update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log L̂, Σ_i log(‖A_i‖_{p→p} / typical_i))``, both differentiable.

        ``typical_i`` is the RMS singular value for ℓ2 and the mean column / row abs-sum for
        ℓ1 / ℓ∞, so the second term measures how far each layer is from perfectly conditioned.
        """
        norms = self.layer_norms(update)
        logs = torch.stack([n.clamp_min(1e-30).log() for n in norms])
        typical = torch.stack([self._typical_scale(i) for i in range(len(self._layers))])
        conditioning = (logs - typical.clamp_min(1e-30).log()).sum()
        return logs.sum() + self._activation_log_lip, conditioning

    def _typical_scale(self, i: int) -> torch.Tensor:
        layer = self._layers[i]
        weight = layer.weight
        if isinstance(layer, nn.Linear):
            if self.norm == "1":
                return weight.abs().sum(dim=0).mean()
            if self.norm == "inf":
                return weight.abs().sum(dim=1).mean()
            return weight.norm() / math.sqrt(min(weight.shape))
        if self.norm in ("1", "inf"):
            return self._abs_sums(i).mean()
        # ‖A‖_F² = Σ_rows Σ_taps K² over the taps that read a real input: (K²) ⋆ 1
        in_shape, out_shape = self._vector_shapes(i)
        ones = torch.ones(1, *in_shape, dtype=weight.dtype, device=weight.device)
        frobenius = _conv(layer, ones, weight.square()).sum().sqrt()
        return frobenius / math.sqrt(min(math.prod(in_shape), math.prod(out_shape)))


def check_rescalable(model: nn.Module) -> None:
    """Refuse :meth:`TrivialBoundEstimator.rescale_layers_` for a model it would change.

    Rescaling keeps ``f / L̂`` only when every activation is positively homogeneous and the
    layers are applied in ``model.modules()`` order (a ``Sequential`` chain, as
    :func:`tightlip.build_model` builds; a fixed input normalisation in front is affine before
    the first layer and commutes with the rescaling).
    """
    others = [
        type(m).__name__
        for m in model.modules()
        if isinstance(m, Activation) and not m.positively_homogeneous
    ]
    if others:
        raise BadArgumentError(
            "--projection rescale needs positively homogeneous activations (abs, relu, maxmin, ...); "
            f"this model has {', '.join(sorted(set(others)))}"
        )


def _needs_shape(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, *_POOLING))


def smooth_maximum(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """``smax_τ(s) = m + τ m log Σ_k exp((s_k − m)/(τ m))`` with ``m = max s`` (no gradient).

    ``τ = 0`` gives the exact maximum. For ``τ > 0`` and ``s ≥ 0``:
    ``max s ≤ smax_τ(s) ≤ (1 + τ log K) max s`` (the sum has one term equal to 1 and K terms
    ≤ 1), so it is an upper estimate of the operator norm, differentiable in every ``s_k``.
    """
    top = values.max()
    if temperature <= 0:
        return top
    scale = (temperature * top.detach()).clamp_min(1e-30)
    return top.detach() + scale * torch.logsumexp((values - top.detach()) / scale, dim=0)


def bound_penalty(log_bound: torch.Tensor, form: PenaltyForm, target: float = 1.0) -> torch.Tensor:
    """The penalty term (before the weight λ) on the estimated bound ``L̂ = exp(log_bound)``."""
    if form == "log":
        return log_bound
    if form == "hinge":
        return torch.relu(log_bound - math.log(target))
    if form == "none":
        return torch.zeros((), dtype=log_bound.dtype)
    raise ValueError(f"unknown penalty form {form!r}: choose log, hinge or none")
