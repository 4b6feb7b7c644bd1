"""``TrainConfig``: the hyper-parameters of one training run, with tightlip's built-in defaults.

The field defaults here are the *built-in defaults*, the lowest layer of the one merge order
(:func:`tightlip.config.merge_settings`): built-in defaults < method defaults < preset <
explicit flags. The values are those of the accurate ℓ2 SinCos run (``--preset accurate``):
penalty ``λ log L̂`` with λ = 0.01, the normalised margin loss at ε = 0.5, T = 0.25, Adam at
2·10⁻³ with a cosine schedule, 30 epochs of batch 256.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from tightlip.errors import BadArgumentError
from tightlip.norms import NormName, parse_norm
from tightlip.train.losses import LOSSES
from tightlip.train.optimizers import OPTIMIZERS
from tightlip.train.penalty import PENALTY_FORMS, PenaltyForm
from tightlip.train.projections import PROJECTIONS

LR_SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (stored in every checkpoint's JSON)."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    lr_schedule: str = "cosine"  # "cosine" (to 0 over the run) or "constant"
    seed: int = 0
    norm: NormName = "2"
    penalty: PenaltyForm = "log"
    penalty_weight: float = 0.01
    penalty_target: float = 1.0
    conditioning_weight: float = 0.0
    loss: str = "normalized-margin"
    margin_epsilon: float = 0.5
    temperature: float = 0.25
    power_iterations: int = 2
    smooth_max: float = 0.0  # ℓ1 / ℓ∞: relative log-sum-exp temperature of the row/column max
    optimizer: str = "adam"  # "adam", or "muon": spectral-norm steps (tightlip.train.optimizers)
    projection: str = "none"  # tightlip, after each step: "rescale" or "clip" every layer (projections)

    def __post_init__(self) -> None:
        self.norm = parse_norm(self.norm)
        self.loss = LOSSES.resolve(self.loss)
        for name, value in (
            ("epochs", self.epochs),
            ("batch size", self.batch_size),
            ("lr", self.lr),
        ):
            if not value > 0:
                raise BadArgumentError(f"{name} must be positive, got {value}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise BadArgumentError(
                f"unknown lr schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise BadArgumentError(
                f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.projection not in PROJECTIONS:
            raise BadArgumentError(
                f"unknown projection {self.projection!r}: choose one of {', '.join(PROJECTIONS)}"
            )
        if self.penalty not in PENALTY_FORMS:
            raise BadArgumentError(
                f"unknown penalty {self.penalty!r}: choose one of {', '.join(PENALTY_FORMS)}"
            )
        if not self.temperature > 0:
            raise BadArgumentError(f"temperature must be positive, got {self.temperature}")
        for name, value in (
            ("margin epsilon", self.margin_epsilon),
            ("penalty weight", self.penalty_weight),
            ("power iterations", self.power_iterations),
            ("smooth max", self.smooth_max),
        ):
            if value < 0:
                raise BadArgumentError(f"{name} must be ≥ 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
