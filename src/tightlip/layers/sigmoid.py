"""The logistic sigmoid ``σ(z) = 1 / (1 + e^{−z})``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch
from scipy.special import expit

from tightlip.layers.activation import ACTIVATIONS, Activation
from tightlip.layers.slope_form import SlopeForm
from tightlip.norms import NormName

#: ``Lip_p(σ) = 1/4`` in ℓ1, ℓ2 and ℓ∞ (derived in the class docstring)
QUARTER: Mapping[NormName, float] = MappingProxyType({"1": 0.25, "2": 0.25, "inf": 0.25})


def _numpy_sigmoid(z: np.ndarray) -> np.ndarray:
    return expit(z)


@ACTIVATIONS.register("sigmoid")
class Sigmoid(Activation):
    """``σ(z) = 1 / (1 + e^{−z})``, elementwise. Lip = 1/4 in every p-norm.

    Its derivative is ``σ'(z) = σ(z)(1 − σ(z))``; with ``s = σ(z) ∈ (0, 1)``, ``s(1 − s) ≤ 1/4``
    with equality exactly at ``s = 1/2``, i.e. ``z = 0``. The Jacobian is ``diag(σ'(z))``, whose
    ``p → p`` operator norm is ``max_i σ'(z_i)`` for every p, so ``Lip_p(σ) = 1/4``, attained at
    ``z = 0`` and saturating no norm (σ' → 0 as ``|z| → ∞``). By the mean-value theorem every
    difference quotient lies in ``(0, 1/4]``: σ is slope-restricted on ``[0, 1/4]``, the form in
    which LipSDP (Fazlyab et al., NeurIPS 2019) and ECLipsE (Xu & Sivaranjani, NeurIPS 2024)
    take it. Smooth, so it is its own surrogate for lower-bound search.
    """

    lipschitz_constants = QUARTER

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z)

    def slopes(self) -> tuple[float, float]:
        return (0.0, 0.25)

    def as_slope_network(self, width: int) -> SlopeForm:
        return SlopeForm.elementwise("sigmoid", width, _numpy_sigmoid, self.slopes())
