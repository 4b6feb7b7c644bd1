"""Per-channel input normalisation ``N(x) = (x − μ_c) / σ_c``, described and computed.

Normalising inputs per channel helps training, but a certificate must stay in the units of the
raw input (pixels in ``[0, 1]``): a radius ε around ``x`` is a ball of raw inputs. tightlip
therefore never normalises the *data*. The normalisation is the first layer of the model
(:class:`tightlip.models.normalized.Normalized`), a fixed affine map ``N(x) = D x + t`` with
``D = diag(1/σ)`` (each channel's ``1/σ_c`` repeated over its pixels) and ``t = −D μ``, and the
chain every verifier reads starts with that step, so ``Lip(f ∘ N) ≤ Lip(f) · ‖D‖`` with
``‖D‖_{p→p} = max_c 1/σ_c`` in every ℓp norm is part of every bound.

:class:`Normalization` holds ``μ`` and ``σ`` per channel; :func:`parse_normalization` reads
the command line's ``--normalize`` (``none``, ``auto``, or ``μ₁,…/σ₁,…``) and
:meth:`Normalization.of_data` computes them from training data (float64 sums).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tightlip.errors import BadArgumentError

__all__ = ["Normalization", "parse_normalization"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` (``std > 0``) of inputs in raw units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in self.mean)
        std = tuple(float(s) for s in self.std)
        if not mean or len(mean) != len(std):
            raise BadArgumentError(
                f"normalisation needs one mean and one std per channel, got {len(mean)} means "
                f"and {len(std)} stds"
            )
        if not all(math.isfinite(v) for v in mean + std):
            raise BadArgumentError(f"normalisation values must be finite, got {mean} / {std}")
        if min(std) <= 0:
            raise BadArgumentError(f"normalisation stds must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    def for_shape(self, input_shape: Sequence[int]) -> Normalization:
        """These values for inputs of ``input_shape`` (a single channel is broadcast)."""
        channels = _channels(input_shape)
        if self.channels == channels:
            return self
        if self.channels == 1:
            return Normalization(self.mean * channels, self.std * channels)
        raise BadArgumentError(
            f"normalisation has {self.channels} channels but the inputs of shape "
            f"{tuple(input_shape)} have {channels}"
        )

    def scale_and_shift(self, input_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """float64 ``(1/σ, −μ/σ)`` per input feature, each channel's value over its pixels."""
        values = self.for_shape(input_shape)
        per_channel = math.prod(input_shape) // values.channels
        std = torch.tensor(values.std, dtype=torch.float64)
        mean = torch.tensor(values.mean, dtype=torch.float64)
        scale = (1.0 / std).repeat_interleave(per_channel)
        shift = (-mean / std).repeat_interleave(per_channel)
        return scale, shift

    @classmethod
    def of_data(cls, x: torch.Tensor, input_shape: Sequence[int]) -> Normalization:
        """Per-channel mean and (population) std of ``x`` (``(N, d)``), in float64.

        A constant channel (std 0) gets std 1, so it is only centred.
        """
        channels = _channels(input_shape)
        if x.shape[0] == 0:
            raise BadArgumentError("cannot compute a normalisation from no examples")
        values = x.detach().to(torch.float64).reshape(x.shape[0], channels, -1)
        mean = values.mean(dim=(0, 2))
        std = values.std(dim=(0, 2), correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def __str__(self) -> str:
        return f"{','.join(f'{m:g}' for m in self.mean)}/{','.join(f'{s:g}' for s in self.std)}"


def _channels(input_shape: Sequence[int]) -> int:
    """Channels of an example shape: ``C`` of ``(C, H, W)``, 1 for flat ``(D,)`` inputs."""
    return int(input_shape[0]) if len(input_shape) >= 2 else 1


def parse_normalization(
    text: str | None, x: torch.Tensor | None = None, input_shape: Sequence[int] | None = None
) -> Normalization | None:
    """``--normalize``: ``None``/``none`` → no normalisation; ``auto`` → computed from ``x``;
    ``μ₁,…,μ_C/σ₁,…,σ_C`` (or one value each, for every channel) → those values."""
    if text is None or text.strip().lower() in ("", "none", "off"):
        return None
    text = text.strip()
    if text.lower() == "auto":
        if x is None or input_shape is None:
            raise BadArgumentError("--normalize auto needs the training data")
        return Normalization.of_data(x, input_shape)
    means, slash, stds = text.partition("/")
    try:
        if not slash:
            raise ValueError(text)
        mean = tuple(float(v) for v in means.split(",") if v.strip())
        std = tuple(float(v) for v in stds.split(",") if v.strip())
    except ValueError:
        raise BadArgumentError(
            f"--normalize must be none, auto, or MEANS/STDS such as 0.49,0.48,0.45/0.25,0.24,0.26"
            f" (one value per channel), got {text!r}"
        ) from None
    values = Normalization(mean, std)
    return values if input_shape is None else values.for_shape(input_shape)
