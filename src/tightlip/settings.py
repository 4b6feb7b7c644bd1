"""Settings: one merge of defaults, method defaults, presets and explicit options.

A run is described by one flat set of named settings, each of which belongs to exactly one of
:class:`~tightlip.model.ModelSpec` (``widths``, ``activation``, ``bias``, ``norm``, ...),
:class:`~tightlip.train.config.TrainConfig` (``epochs``, ``lr``, ``loss``, ...),
:class:`~tightlip.eval.config.EvalConfig` (``radii``, ``attack_limit``, ...) or, if none of them
has it, the method's own options (e.g. Sandwich's ``gamma``). :func:`merge_settings` applies,
in this order, each later layer overriding the earlier ones:

    built-in defaults < method defaults < preset < quick overlay < explicit options

and records where every value came from (``origin``), so ``metrics.json`` says what was used
and why. This is the only place where defaults are combined.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from tightlip.errors import BadArgumentError
from tightlip.eval.config import EvalConfig
from tightlip.layers.activation import make_activation
from tightlip.methods import METHODS
from tightlip.model import ModelSpec
from tightlip.registry import Registry
from tightlip.train.config import TrainConfig

#: ``--quick``: a smoke test on a subset, seconds instead of minutes
QUICK_TRAIN_EXAMPLES = 2000
QUICK_TEST_EXAMPLES = 500
QUICK_EPOCHS = 3
QUICK_OVERLAY: dict[str, Any] = {
    "epochs": QUICK_EPOCHS,
    "attack_limit": 200,
    "pgd_steps": 20,
    "lower_seconds": 10.0,
    "lower_starts": 64,
}
QUICK_MAX_BATCH = 64


@dataclass(frozen=True)
class Preset:
    """A named configuration of one training method, with what it is for."""

    name: str
    method: str
    purpose: str
    settings: Mapping[str, Any]


PRESETS: Registry[Preset] = Registry("preset")

PRESETS.register(
    "robust",
    Preset(
        name="robust",
        method="tightlip",
        purpose=(
            "certified robustness at ℓ2 radius 1.58 on MNIST: Abs 784-256-256-10 with biases, "
            "Muon steps with every layer clipped to the spectral unit ball, λ 0.1, normalised "
            "margin ε 2 / T 0.1, lr 0.01, batch 256, 20 epochs (issue 19's recipe)"
        ),
        settings={
            "activation": "abs",
            "widths": (256, 256),
            "bias": True,
            "epochs": 20,
            "batch_size": 256,
            "lr": 0.01,
            "optimizer": "muon",
            "projection": "clip",
            "penalty": "log",
            "penalty_weight": 0.1,
            "loss": "normalized-margin",
            "margin_epsilon": 2.0,
            "temperature": 0.1,
        },
    ),
)
PRESETS.register(
    "accurate",
    Preset(
        name="accurate",
        method="tightlip",
        purpose=(
            "clean accuracy ≥ 97 % with a tight bound: bias-free SinCos 784-512-512-10, "
            "λ 0.01, normalised margin ε 0.5 / T 0.25, batch 256, 30 epochs"
        ),
        settings={
            "activation": "sincos",
            "widths": (512, 512),
            "bias": False,
            "epochs": 30,
            "batch_size": 256,
            "penalty": "log",
            "penalty_weight": 0.01,
            "loss": "normalized-margin",
            "margin_epsilon": 0.5,
            "temperature": 0.25,
        },
    ),
)

_SECTIONS: dict[str, type] = {"model": ModelSpec, "train": TrainConfig, "evaluation": EvalConfig}


def _section_of(key: str) -> list[str]:
    return [name for name, cls in _SECTIONS.items() if key in {f.name for f in fields(cls)}]


@dataclass
class Settings:
    """The merged configuration of one run."""

    method: str
    spec: ModelSpec
    train: TrainConfig
    evaluation: EvalConfig
    options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    quick: bool = False
    origin: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.train.projection == "rescale":
            if not make_activation(self.spec.activation).positively_homogeneous:
                raise BadArgumentError(
                    "--projection rescale needs positively homogeneous activations (abs, relu, "
                    f"maxmin, ...); {self.spec.activation} is not"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "preset": self.preset,
            "quick": self.quick,
            "model": self.spec.to_dict(),
            "train": self.train.to_dict(),
            "evaluation": self.evaluation.to_dict(),
            "method_options": dict(self.options),
            "origin": dict(self.origin),
        }


def merge_settings(
    method: str | None = None,
    preset: str | None = None,
    explicit: Mapping[str, Any] | None = None,
    *,
    quick: bool = False,
) -> Settings:
    """The one merge: built-in defaults < method defaults < preset < quick < explicit options.

    ``explicit`` holds only what the user actually set (``None`` values are ignored). A preset
    belongs to one method; naming another method with it is an error, and a preset alone
    selects its method. Unknown setting names raise :class:`BadArgumentError`.
    """
    chosen_preset = PRESETS.get(preset) if preset is not None else None
    if method is None:
        method = chosen_preset.method if chosen_preset else "tightlip"
    method_name = METHODS.resolve(method)
    if chosen_preset is not None and chosen_preset.method != method_name:
        raise BadArgumentError(
            f"preset {chosen_preset.name!r} is for method {chosen_preset.method!r}, "
            f"not {method_name!r}"
        )
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def apply(layer: Mapping[str, Any], source: str) -> None:
        for key, value in layer.items():
            if value is not None:
                values[key], origin[key] = value, source

    apply(METHODS.get(method_name).defaults, "method")
    if chosen_preset is not None:
        apply(chosen_preset.settings, f"preset {chosen_preset.name}")
    if quick:
        apply(QUICK_OVERLAY, "quick")
        values["batch_size"] = min(int(values.get("batch_size", TrainConfig.batch_size)), QUICK_MAX_BATCH)
        origin.setdefault("batch_size", "quick")
    apply(dict(explicit or {}), "explicit")

    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    options: dict[str, Any] = {}
    for key, value in values.items():
        owners = _section_of(key)
        for owner in owners:
            sections[owner][key] = value
        if not owners:
            options[key] = value
    unknown = sorted(k for k in options if origin.get(k) == "explicit")
    if unknown:
        raise BadArgumentError(f"unknown setting(s): {', '.join(unknown)}")
    return Settings(
        method=method_name,
        spec=ModelSpec(**sections["model"]),
        train=TrainConfig(**sections["train"]),
        evaluation=EvalConfig(**sections["evaluation"]),
        options=options,
        preset=chosen_preset.name if chosen_preset else None,
        quick=quick,
        origin=origin,
    )


def fit_settings(settings: Settings, train_x: Any, train_y: Any, **options: Any) -> Any:
    """:func:`tightlip.methods.fit` of a merged configuration: its method, model, training
    settings and method options; ``options`` are ``fit``'s keywords (``out_dir``, ...)."""
    from tightlip.methods import fit

    return fit(
        settings.method,
        settings.spec,
        settings.train,
        train_x,
        train_y,
        options=settings.options,
        **options,
    )
