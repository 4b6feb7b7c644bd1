"""A model behind a fixed per-channel input normalisation, certified in raw-input units.

``Normalized(f, μ, σ)`` computes ``f(N(x))`` with ``N(x) = D x + t``, ``D = diag(1/σ)`` (each
channel's ``1/σ_c`` over its pixels) and ``t = −μ/σ`` (:mod:`tightlip.data.normalize`). The
scale and shift are buffers, fixed during training and saved with the model, and the forward
pass computes exactly ``x · scale + shift``, so the float64 chain below is the network.

Certification reads ``N`` as the first affine step of the chain (``chain_steps``): it merges
with the first linear layer ``W₁`` into one step whose operator is the product ``W₁ D`` with a
certified norm ``≤ min(‖W₁‖ ‖D‖, ‖fl(W₁D)‖ + error)`` (:mod:`tightlip.operators`), so every
bound and every certified radius is about the raw input ``x``. Training sees the same factor:
``lipschitz(p) = ‖D‖_{p→p} = max_i |D_ii|`` (exact for a diagonal map in every ℓp norm) is
added to the penalised log-bound by :class:`~tightlip.train.penalty.TrivialBoundEstimator`,
which sums the ``lipschitz`` of every non-linear-layer module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tightlip.data.normalize import Normalization
from tightlip.model import AffineStep, Step, to_chain
from tightlip.models.registry import MODEL_KINDS, build_from_description
from tightlip.norms import NormName

__all__ = ["Normalized", "build_normalized"]


class Normalized(nn.Module):
    """``x ↦ model(x · scale + shift)``: a fixed per-channel normalisation, then ``model``."""

    def __init__(
        self,
        model: nn.Module,
        normalization: Normalization,
        input_shape: tuple[int, ...],
        description: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.input_shape = tuple(int(s) for s in input_shape)
        self.normalization = normalization.for_shape(self.input_shape)
        self.inner_description = description
        scale, shift = self.normalization.scale_and_shift(self.input_shape)
        self.register_buffer("scale", scale.to(torch.float32))
        self.register_buffer("shift", shift.to(torch.float32))

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        scale = self.scale.to(dtype=flat.dtype)
        shift = self.shift.to(dtype=flat.dtype)
        return self.model((flat * scale + shift).reshape(x.shape))

    def lipschitz(self, norm: NormName) -> float:
        """``‖diag(scale)‖_{p→p} = max |scale_i|`` (the same in every ℓp norm)."""
        del norm
        return float(self.scale.abs().max())

    def chain_steps(self) -> list[Step]:
        """The normalisation as an affine step, then the model's own steps."""
        step = AffineStep(
            torch.diag(self.scale.detach().to(torch.float64)),
            self.shift.detach().to(torch.float64),
            name="normalize",
        )
        return [step, *to_chain(self.model).steps]

    def description(self) -> dict[str, Any]:
        if self.inner_description is None:
            raise ValueError("Normalized needs the inner model's description to be saved")
        return {
            "kind": "normalized",
            "arguments": {
                **self.normalization.to_dict(),
                "input_shape": list(self.input_shape),
                "model": self.inner_description,
            },
        }


@MODEL_KINDS.register("normalized")
def build_normalized(arguments: dict[str, Any]) -> nn.Module:
    inner = dict(arguments["model"])
    return Normalized(
        build_from_description(inner),
        Normalization(tuple(arguments["mean"]), tuple(arguments["std"])),
        tuple(arguments["input_shape"]),
        description=inner,
    )
