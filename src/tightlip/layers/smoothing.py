"""Smooth stand-ins for kinks, at temperature τ (used by the activations' surrogates).

* ``√(z² + τ²)`` for ``|z|`` (error at most τ, at z = 0);
* ``softplus_{1/τ}(z) = τ log(1 + e^{z/τ})`` for ``max(z, 0)`` (error at most ``τ log 2``).
"""

from __future__ import annotations

import torch
from torch import nn


def smooth_abs(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``√(z² + τ²)``."""
    return torch.sqrt(z * z + temperature * temperature)


def smooth_relu(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softplus`` with ``β = 1/τ``."""
    return nn.functional.softplus(z, beta=1.0 / max(temperature, 1e-12))
