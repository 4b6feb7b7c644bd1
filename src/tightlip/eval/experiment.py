"""The end-to-end job: train on a data set (MNIST by default), bound, certify, attack, report.

``evaluate`` is shared by ``tightlip run``, ``tightlip train`` and ``tightlip certify``, so
every method (tightlip and the baselines) is measured by the same code into the same
``metrics.json`` schema.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tightlip
from tightlip.bounds import MethodNotApplicableError, lower_bound
from tightlip.certificate import Certificate, tightness
from tightlip.data import DatasetSplits, MnistData, get_dataset, parse_normalization
from tightlip.device import OnDevice
from tightlip.distributed import SINGLE_PROCESS, Distributed
from tightlip.errors import ModelShapeError, SoundnessError
from tightlip.eval.certify import DEFAULT_RADII, certify, radius_key
from tightlip.eval.config import EvalConfig
from tightlip.eval.report import plot_certified_curve, write_metrics, write_report
from tightlip.interop.describe import layer_lines
from tightlip.methods import METHODS, Method
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NormName
from tightlip.settings import QUICK_TEST_EXAMPLES, QUICK_TRAIN_EXAMPLES, Settings, fit_settings
from tightlip.threads import uses_library_threads
from tightlip.train.checkpoint import Checkpoint
from tightlip.train.loop import TrainResult


@dataclass
class RunConfig:
    """A whole run: where to read data and write results, and the merged settings."""

    settings: Settings
    out_dir: Path = Path("runs/default")
    data_dir: Path | None = None
    resume: bool = False
    #: with ``resume``: continue although settings differ from the checkpoint's (recorded)
    override: bool = False
    progress: bool = True
    #: a registered data set (:data:`tightlip.data.DATASETS`): mnist, fashion-mnist, cifar10,
    #: files (the user's train.npz / test.npz)
    dataset: str = "mnist"
    #: check the pinned checksums (``--no-verify`` skips them for files the user made)
    verify: bool = True
    #: ``--normalize``: none, auto (from the training data) or MEANS/STDS per channel
    normalize: str | None = None
    #: where training and the attacks run; certification stays float64 on the CPU
    device: torch.device = torch.device("cpu")
    #: this process's place in a torchrun run (rank 0 alone evaluates and writes)
    distributed: Distributed = SINGLE_PROCESS


def load_data(
    data_dir: Path | None,
    quick: bool,
    seed: int = 0,
    dataset: str = "mnist",
    verify: bool = True,
) -> DatasetSplits:
    """Both splits of a registered data set; ``quick`` takes the stratified smoke-test subset."""
    return get_dataset(dataset).load_splits(
        data_dir,
        train_limit=QUICK_TRAIN_EXAMPLES if quick else None,
        test_limit=QUICK_TEST_EXAMPLES if quick else None,
        seed=seed,
        verify=verify,
    )


def fit_to_data(settings: Settings, data: DatasetSplits) -> Settings:
    """The settings with the model's input size (and shape, if the model has one) and its
    number of classes taken from the data."""
    changes: dict[str, Any] = {"input_dim": data.input_dim, "num_classes": data.num_classes}
    if "input_shape" in {f.name for f in fields(settings.spec)}:
        changes["input_shape"] = data.example_shape
    return replace(settings, spec=replace(settings.spec, **changes))


def best_lower_bound(
    model: nn.Module, norm: NormName, starts: torch.Tensor, evaluation: EvalConfig
) -> Certificate:
    """Gradient ascent on ‖J_f(x)‖ from data and random starts (:mod:`tightlip.bounds.lower`)."""
    try:
        return lower_bound(
            model,
            norm,
            "gradient",
            starts=starts[: evaluation.lower_starts],
            seed=evaluation.seed,
            time_limit=evaluation.lower_seconds,
        )
    except MethodNotApplicableError:
        return lower_bound(model, norm, "sampled", starts=starts[: evaluation.lower_starts])


def check_test_inputs(chain: LayerChain, data: MnistData) -> None:
    """Refuse test images that do not fit the model, naming both shapes, before any work."""
    features = data.test_x[0].numel()
    if features != chain.input_dim:
        raise ModelShapeError(
            f"the test images have {features} features each (shape {tuple(data.test_x.shape[1:])}) "
            f"but the model expects {chain.input_dim} input features"
        )


@uses_library_threads
def evaluate(
    model: nn.Module,
    norm: NormName,
    data: MnistData,
    evaluation: EvalConfig,
    *,
    method: str | Method = "tightlip",
    train_seconds: float = 0.0,
    config: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Bounds, certified and PGD accuracy of ``model`` on the test split, as a metrics dict.

    Every certificate reported (global, last-layer and the method's local one, if any) goes
    through the same PGD soundness cross-check in :func:`tightlip.eval.certify.certify`.
    The attacks run on ``device`` (a copy of the model there); every bound and certificate is
    computed in float64 on the CPU. ``log`` receives one line as each stage ends (the CLI
    prints them on stderr, so a long certification is never silent).
    """
    chosen = METHODS.get(method) if isinstance(method, str) else method
    started = time.perf_counter()

    def stage(text: str) -> None:
        if log is not None:
            log(f"certify: {text} ({time.perf_counter() - started:.1f} s)")

    model.eval()
    chain = to_chain(model)
    check_test_inputs(chain, data)
    radii = tuple(evaluation.radii or DEFAULT_RADII[norm])
    upper = chosen.certified_bound(model, norm)
    stage(f"sound upper bound {upper.value:.6g} ({upper.method})")
    lower = best_lower_bound(model, norm, data.test_x, evaluation)
    stage(f"lower bound {lower.value:.6g} ({lower.method})")
    if lower.value > upper.value * (1 + 1e-9):
        raise SoundnessError(
            f"lower bound {lower.value} exceeds the sound upper bound {upper.value}: a bug"
        )
    local: dict[str, dict[str, torch.Tensor]] = {}
    if chosen.certify_local is not None:
        local_result = chosen.certify_local(model, data.test_x, data.test_y, norm, radii)
        local["local"] = local_result["certified_mask"]
        stage("local certificates")
    result = certify(
        chain,
        data.test_x,
        data.test_y,
        norm,
        upper.value,
        radii,
        read_out=chosen.read_out(model, norm) if chosen.read_out is not None else None,
        other_certificates=local,
        attack_model=OnDevice(model, device),
        pgd_steps=evaluation.pgd_steps,
        pgd_restarts=evaluation.pgd_restarts,
        attack_limit=evaluation.attack_limit,
        seed=evaluation.seed,
    )
    attacked = min(result.n_examples, evaluation.attack_limit or result.n_examples)
    stage(f"certificates on {result.n_examples} images, PGD on {attacked}")
    margins = result.margins
    curve_radii = [float(r) for r in torch.linspace(0, max(radii) * 1.5, 61)]
    curve = {
        "radii": curve_radii,
        "global": [float(margins.certified(r, "global").float().mean()) for r in curve_radii],
        "last_layer": [
            float(margins.certified(r, "last_layer").float().mean()) for r in curve_radii
        ],
    }
    certified = dict(result.certified_accuracy)
    best = {
        radius_key(r): max(by_radius[radius_key(r)] for by_radius in certified.values())
        for r in radii
    }
    return {
        "method": chosen.name,
        "norm": norm,
        "clean_accuracy": result.clean_accuracy,
        "lipschitz_upper": upper.value,
        "lipschitz_lower": lower.value,
        "tightness": tightness(upper, lower),
        "certified_accuracy": certified,
        "certified_accuracy_best": best,
        "float32_certified_accuracy": result.float32_certified_accuracy,
        "pgd_accuracy": result.pgd_accuracy,
        "certified_on_attacked": result.certified_on_attacked,
        "train_seconds": train_seconds,
        "certify_seconds": time.perf_counter() - started,
        "n_test": result.n_examples,
        "n_attacked": min(result.n_examples, evaluation.attack_limit or result.n_examples),
        "pgd": {"steps": evaluation.pgd_steps, "restarts": evaluation.pgd_restarts},
        "upper_certificate": upper.to_dict(),
        "lower_certificate": lower.to_dict(),
        "lower_witness": lower.tensors(),  # written beside metrics.json by write_metrics
        "radius_curve": curve,
        "config": config or {},
        "versions": {
            "tightlip": tightlip.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


#: checkpoint fields that stay in the checkpoint: the optimizer's state, the per-epoch history,
#: and the digests (the checkpoint's own ``sha256`` is recorded under its own name)
CHECKPOINT_ONLY_FIELDS = ("optimizer", "history", "tensors_sha256", "sha256", "format")


def certify_config(checkpoint: Checkpoint, evaluation: EvalConfig, *, quick: bool) -> dict[str, Any]:
    """The ``config`` of a ``certify`` run's metrics: what was trained (the checkpoint's
    settings, without its optimizer state or history) and how it was measured."""
    saved = checkpoint.config
    return {
        "checkpoint": str(checkpoint.directory),
        "checkpoint_sha256": saved.get("sha256"),
        "checkpoint_notes": list(checkpoint.notes),
        **{k: v for k, v in saved.items() if k not in CHECKPOINT_ONLY_FIELDS},
        "evaluation": evaluation.to_dict(),
        "quick": quick,
    }


def stderr_line(text: str) -> None:
    """One progress line on stderr (what the CLI shows while certifying)."""
    print(text, file=sys.stderr, flush=True)


def write_outputs(out_dir: Path, metrics: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir, metrics)
    plot_certified_curve(out_dir, metrics)
    write_report(out_dir, metrics)


def build_and_train(run: RunConfig, data: MnistData) -> tuple[nn.Module, float]:
    """Train the run's method; returns the model and the training seconds."""
    result = train_run(run, data)
    return result.model, result.train_seconds


def trained_network(model: nn.Module, description: dict[str, Any], norm: NormName) -> dict[str, Any]:
    """What was trained, read from the network itself: its model kind and arguments (the
    checkpoint's description) and one entry per affine layer (kind, sizes, bias, the
    activation after it). A method builds its own network (Sandwich: ReLU sandwich layers
    with biases; orthogonal: MaxMin), so the run's model *settings* alone would misdescribe
    it (issue 21, item 3)."""
    lines = layer_lines(to_chain(model), norm)
    return {
        "kind": description.get("kind"),
        "arguments": description.get("arguments", {}),
        "layers": [
            {
                "kind": line.kind,
                "in_features": line.in_features,
                "out_features": line.out_features,
                "bias": line.bias,
                "activation": line.activation,
            }
            for line in lines
        ],
    }


def recorded_model(spec: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    """``config.model`` of ``metrics.json``: the spec when the method built the network from it
    (tightlip's ``mlp`` / ``spec`` kinds), else the built network's own arguments, with the
    activations and biases read from its layers (a Sandwich run is not "sincos, no bias")."""
    kind, arguments = network["kind"], network["arguments"]
    if kind == "normalized":  # a fixed input normalisation in front of the method's model
        kind, arguments = arguments["model"].get("kind"), arguments["model"].get("arguments", {})
    if kind in (None, "mlp", "spec"):
        return spec
    layers = network["layers"]
    activations = sorted({str(layer["activation"]) for layer in layers if layer["activation"]})
    return {
        "kind": kind,
        **arguments,
        "activation": ", ".join(activations),
        "bias": any(layer["bias"] for layer in layers),
        "norm": spec.get("norm"),
    }


def train_run(run: RunConfig, data: MnistData) -> TrainResult:
    """Train the run's method (the model comes back on the CPU)."""
    settings = fit_to_data(run.settings, data)
    result = fit_settings(
        settings,
        data.train_x,
        data.train_y,
        out_dir=run.out_dir / "checkpoint",
        resume=run.resume,
        override=run.override,
        progress=run.progress,
        normalization=parse_normalization(run.normalize, data.train_x, data.example_shape),
        input_shape=data.example_shape,
        data_description={"dataset": data.dataset, "verify": run.verify},
        device=run.device,
        distributed=run.distributed,
    )
    result.model = result.model.cpu()
    return result


def run_experiment(run: RunConfig) -> dict[str, Any]:
    """Train, certify and report; returns the metrics written to ``out_dir/metrics.json``.

    In a distributed run every rank trains; rank 0 alone certifies and writes (others return
    ``{}``).
    """
    data = load_data(
        run.data_dir, run.settings.quick, run.settings.train.seed, run.dataset, run.verify
    )
    settings = fit_to_data(run.settings, data)
    result = train_run(run, data)
    model, train_seconds = result.model, result.train_seconds
    if not run.distributed.is_main:
        return {}
    model.eval()
    network = trained_network(model, result.description, settings.spec.norm)
    config = {
        **settings.to_dict(),
        "model": recorded_model(settings.spec.to_dict(), network),
        "network": network,
        "train_examples": int(data.train_x.shape[0]),
        "dataset": data.dataset,
        "data_dir": str(data.data_dir) if data.data_dir else None,
        "verify": run.verify,
        "normalize": run.normalize,
        "device": str(run.device),
        "processes": run.distributed.world_size,
    }
    metrics = evaluate(
        model,
        settings.spec.norm,
        data,
        settings.evaluation,
        method=settings.method,
        train_seconds=train_seconds,
        config=config,
        device=run.device,
        log=stderr_line if run.progress else None,
    )
    write_outputs(run.out_dir, metrics)
    return metrics
