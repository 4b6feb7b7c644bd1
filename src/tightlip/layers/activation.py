"""The :class:`Activation` base class: an activation that answers every verifier's questions.

In the style of auto_LiRPA's operators (Xu et al., NeurIPS 2020: each operator implements each
bound question itself), a verifier never asks ``isinstance``: it asks the activation.

=========================  ===================================================================
``expansion``              outputs per input unit (a *polyactivation* ``R^d → R^{Kd}``, outputs
                           stacked block-wise ``[σ₁(z), σ₂(z), …]``)
``lipschitz(norm)``        ``Lip_p(σ)`` in ``‖·‖_p → ‖·‖_p``, from ``lipschitz_constants``,
                           derived in each class docstring as ``sup_z ‖J_σ(z)‖_{p→p}`` (the maps
                           are locally Lipschitz and p-balls convex: mean-value theorem)
``saturates(norm)``        ``‖J_σ(z)‖ = Lip_p(σ)`` at *every* z, which removes σ from the
                           obstructions to a tight trivial bound (Kuang & Lin, arXiv 2604.00490)
``slopes()``               ``(α, β)`` when σ is elementwise and slope-restricted on ``[α, β]``
``as_slope_network(d)``    its exact form ``C φ(R z)`` as a slope-restricted layer
                           (:class:`~tightlip.layers.slope_form.SlopeForm`), or
                           :class:`~tightlip.errors.MethodNotApplicableError` saying why none
``pieces(d)``              its linear pieces if piecewise linear
                           (:class:`~tightlip.layers.pieces.Pieces`), else ``None``
``surrogate(τ)``           a smooth function tending to σ as ``τ → 0`` (for lower-bound search,
                           which needs a non-zero gradient of the Jacobian norm)
``positively_homogeneous`` ``σ(c z) = c σ(z)`` for ``c > 0`` (then bias-free networks satisfy
                           ``J(c x) = J(x)``)
``sign_jacobian``          σ is ``|·|``: ``σ(s ⊙ a) = a`` for ``a ≥ 0`` and every sign vector s,
                           and ``J_σ(z) = diag(sign z)`` (the first-layer sign search uses it)
=========================  ===================================================================

A new activation is one subclass in one module, registered in :data:`ACTIVATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from tightlip.errors import BadArgumentError, MethodNotApplicableError
from tightlip.layers.pieces import Pieces
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName, parse_norm
from tightlip.registry import Registry

Surrogate = Callable[[torch.Tensor], torch.Tensor]
#: a temperature: one float, or one per row (shape ``(B, 1)``)
Temperature = float | torch.Tensor

#: ``Lip_p = 1`` in ℓ1, ℓ2 and ℓ∞ (each class that uses it derives it in its docstring)
ONE_LIPSCHITZ: Mapping[NormName, float] = MappingProxyType({"1": 1.0, "2": 1.0, "inf": 1.0})


class Activation(nn.Module):
    """Base class: an activation that describes itself to the verifiers (module docstring)."""

    expansion: ClassVar[int] = 1
    piecewise_linear: ClassVar[bool] = False
    positively_homogeneous: ClassVar[bool] = False
    sign_jacobian: ClassVar[bool] = False
    #: norms in which the Jacobian's operator norm equals ``lipschitz(norm)`` everywhere
    saturating_norms: ClassVar[frozenset[NormName]] = frozenset()
    #: ``Lip_p(σ)`` per norm; every subclass must state (and derive) its own
    lipschitz_constants: ClassVar[Mapping[NormName, float]]

    def lipschitz(self, norm: NormName | str) -> float:
        """``Lip_p(σ)`` in ``‖·‖_p → ‖·‖_p`` (see the class docstring for the derivation)."""
        constants = getattr(type(self), "lipschitz_constants", None)
        if constants is None:
            raise NotImplementedError(f"{type(self).__name__} does not state lipschitz_constants")
        return constants[parse_norm(norm)]

    def saturates(self, norm: NormName | str) -> bool:
        return parse_norm(norm) in self.saturating_norms

    def slopes(self) -> tuple[float, float] | None:
        """``(α, β)`` if σ is elementwise with ``α ≤ (σ(a) − σ(b))/(a − b) ≤ β``, else ``None``."""
        return None

    def as_slope_network(self, width: int) -> SlopeForm:
        """σ on ``width`` units as ``C φ(R z)`` with φ slope-restricted (see ``SlopeForm``).

        The default covers elementwise activations that state ``slopes()``; others override
        it or refuse: the :class:`MethodNotApplicableError` message completes the sentence
        "<layer> is …" and says why no such form exists.
        """
        slopes = self.slopes()
        if slopes is None or self.expansion != 1:
            raise MethodNotApplicableError(
                f"{type(self).__name__}, for which no slope-restricted form is known"
            )
        return SlopeForm.elementwise(
            type(self).__name__.lower(), width, self._numpy_forward, slopes, self.piecewise_linear
        )

    def pieces(self, width: int) -> Pieces | None:
        """The linear pieces on ``width`` pre-activations, or ``None`` if σ is not PL."""
        return None

    def surrogate(self, temperature: Temperature) -> Surrogate:
        """A smooth surrogate that tends to ``forward`` as ``temperature → 0``.

        ``temperature`` is absolute (in the units of z); a tensor of shape ``(B, 1)`` gives
        each row its own. Smooth activations return ``forward`` itself.
        """
        return self.forward

    def smoothed(self, temperature: Temperature) -> Surrogate:
        """Alias of :meth:`surrogate`."""
        return self.surrogate(temperature)

    def out_features(self, in_features: int) -> int:
        return self.expansion * in_features

    def extra_repr(self) -> str:
        return ""

    def _numpy_forward(self, z: np.ndarray) -> np.ndarray:
        """``forward`` on a float64 numpy array (used by the default slope form)."""
        with torch.no_grad():
            return self(torch.as_tensor(z, dtype=torch.float64)).numpy()


def homogeneous_surrogate(unit: Surrogate, temperature: Temperature) -> Surrogate:
    """``z ↦ τ · σ̃₁(z / τ)``: a positively homogeneous σ smoothed at absolute temperature τ.

    ``σ̃₁`` is the smoothing at temperature 1 (softplus for ReLU, ``√(z² + 1)`` for ``|z|``);
    e.g. ``τ · softplus(z / τ) = softplus_{β = 1/τ}(z)`` and ``τ √((z/τ)² + 1) = √(z² + τ²)``.
    Written this way, ``τ`` may be a tensor (one temperature per row; entries must be > 0).
    """
    if isinstance(temperature, float | int) and temperature <= 0:
        raise BadArgumentError(f"a surrogate needs a positive temperature, got {temperature}")
    return lambda z: temperature * unit(z / temperature)


ACTIVATIONS: Registry[type[Activation]] = Registry("activation")


def make_activation(name: str) -> Activation:
    """Build a registered activation by its name (see ``ACTIVATIONS``); raises
    :class:`~tightlip.errors.UnknownNameError` listing the choices."""
    return ACTIVATIONS.get(name)()


def as_activation(module: nn.Module) -> Activation | None:
    """Translate a plain ``torch.nn`` activation into its tightlip description, else ``None``."""
    if isinstance(module, Activation):
        return module
    for torch_type, name in ((nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid")):
        if isinstance(module, torch_type):
            return make_activation(name)
    if isinstance(module, nn.LeakyReLU):
        return ACTIVATIONS.get("leaky-relu")(module.negative_slope)
    return None
