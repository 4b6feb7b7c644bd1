"""The ``tightlip`` command line: run, train, certify, bound, export, data.

Thin by design: options become one explicit-settings dictionary, merged with the method's
defaults and a preset by :func:`tightlip.settings.merge_settings`; the work is done by the
library. Errors a user's input can cause (:class:`~tightlip.errors.TightlipError`) print one
line and exit with code 2; anything else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from safetensors.torch import save_file

from tightlip.arch import parse_arch
from tightlip.bounds import upper_methods
from tightlip.bounds.portfolio import portfolio
from tightlip.bounds.portfolio import skipped as skipped_certificate
from tightlip.bounds.registry import UPPER_BOUNDS
from tightlip.certificate import Certificate
from tightlip.data import (
    DATASETS,
    DatasetError,
    default_fetch_dir,
    get_dataset,
    resolve_data_dir,
)
from tightlip.device import DEVICE_CHOICES, resolve_device
from tightlip.distributed import (
    DEFAULT_TIMEOUT_S,
    SINGLE_PROCESS,
    from_environment,
    launcher_command,
    running_under_launcher,
    shutdown,
)
from tightlip.errors import BadArgumentError, ModelShapeError, TightlipError
from tightlip.eval.config import EvalConfig
from tightlip.eval.experiment import (
    RunConfig,
    build_and_train,
    certify_config,
    evaluate,
    load_data,
    run_experiment,
    stderr_line,
    write_outputs,
)
from tightlip.eval.report import results_rows
from tightlip.interop.describe import describe
from tightlip.interop.imported import IMPORTED
from tightlip.interop.load import LoadedModel
from tightlip.interop.load import load as load_model_file
from tightlip.layers.activation import ACTIVATIONS
from tightlip.methods import METHODS, Method
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NormName, parse_norm
from tightlip.settings import (
    PRESETS,
    QUICK_EPOCHS,
    QUICK_MAX_BATCH,
    QUICK_TRAIN_EXAMPLES,
    merge_settings,
)
from tightlip.threads import apply_thread_policy
from tightlip.train.checkpoint import Checkpoint, load_checkpoint
from tightlip.train.config import TrainConfig
from tightlip.train.losses import LOSSES

app = typer.Typer(
    help="Train networks whose trivial Lipschitz bound is tight, certify them, prove tightness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
#: results go to stdout and are never wrapped (a piped line stays one line); errors go to stderr
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: the errors a user's input can cause; everything else is a bug and keeps its traceback
USER_ERRORS = (TightlipError,)

DEFAULT_RUN_PRESET = "robust"
_T = TrainConfig()
_E = EvalConfig()

NormOption = Annotated[str | None, typer.Option("--norm", help="1, 2 or inf (default 2)")]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="dataset directory (else $TIGHTLIP_DATA, else the user cache "
        "$XDG_CACHE_HOME/tightlip/DATASET or ~/.cache/tightlip/DATASET, else "
        "../shared/datasets/DATASET; `tightlip data where` shows the choice)",
    ),
]
DatasetOption = Annotated[
    str,
    typer.Option(
        "--dataset",
        help=f"one of {', '.join(DATASETS.names())} (files: train.npz and test.npz with arrays "
        "x and y in --data DIR)",
    ),
]
VerifyOption = Annotated[
    bool,
    typer.Option(
        "--verify/--no-verify",
        help="check the data set's pinned checksums (--no-verify: for files you made yourself)",
    ),
]
NormalizeOption = Annotated[
    str | None,
    typer.Option(
        "--normalize",
        help="per-channel input normalisation, folded into the model's first layer so that "
        "bounds and radii stay in raw-input units: none, auto (from the training data) or "
        "MEANS/STDS, e.g. 0.49,0.48,0.45/0.25,0.24,0.26 (default none)",
    ),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help=f"where training and the attacks run: {', '.join(DEVICE_CHOICES)} (or cuda:N); "
        "certification is float64 on the CPU whatever the device",
    ),
]
ArchitectureOption = Annotated[
    str | None,
    typer.Option(
        "--architecture",
        help="for a state dict: its layers in order, e.g. 'flatten,linear,relu,linear' "
        "(tensors NAME.weight with NAME the position, or 'fc1=linear,relu,fc2=linear'), or a "
        "tightlip model spec JSON (inline or a .json file)",
    ),
]
ModelArgument = Annotated[
    Path,
    typer.Argument(
        help="a tightlip checkpoint (directory or one of its files), an .onnx file, or a state "
        "dict with --architecture"
    ),
]
ResumeOption = Annotated[bool, typer.Option("--resume", help="continue from OUT/checkpoint")]
OverrideOption = Annotated[
    bool,
    typer.Option(
        "--override",
        help="with --resume: continue although the settings differ from the checkpoint's "
        "(the changes are recorded in its history)",
    ),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="replace the results and checkpoint already in OUT")
]
QuickOption = Annotated[
    bool,
    typer.Option(
        "--quick",
        help=f"smoke test: {QUICK_TRAIN_EXAMPLES} training examples, {QUICK_EPOCHS} epochs, "
        f"batch ≤ {QUICK_MAX_BATCH}, and a smaller test set and attack",
    ),
]
CertifyQuickOption = Annotated[
    bool,
    typer.Option("--quick", help="smoke test: a few hundred test images and a shorter attack"),
]


def _fail(error: Exception) -> None:
    """Print ``error`` as one line on stderr (its text is never read as markup) and exit 2."""
    message = " ".join(str(error).split())
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code=2)


def _parse_numbers(text: str | None, kind: type, what: str) -> tuple | None:
    if text is None:
        return None
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise BadArgumentError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise BadArgumentError(f"{what} must not be empty")
    return values


def _print_metrics(metrics: dict) -> None:
    table = Table(title="tightlip results")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for label, value in results_rows(metrics):
        table.add_row(label, value)
    console.print(table)


def _set_threads() -> None:
    """One torch thread unless the user chose a count (:mod:`tightlip.threads`)."""
    try:
        apply_thread_policy()
    except USER_ERRORS as error:
        _fail(error)


def _print_presets() -> None:
    table = Table(title="presets (tightlip run --preset NAME; default: robust)")
    for column in ("preset", "method", "what it is for"):
        table.add_column(column)
    for name, preset in PRESETS.items():
        table.add_row(name, preset.method, preset.purpose)
    console.print(table)


#: what a run writes into its output directory
RUN_OUTPUTS = ("checkpoint", "metrics.json", "report.md", "certified.png")


def check_output_path(path: Path, kind: str, option: str) -> None:
    """Refuse, before any work, an output path that cannot be written as ``kind``.

    ``kind`` is ``"directory"`` or ``"file"``: a directory must not be an existing file, a
    file must not be an existing directory, and the nearest existing ancestor must be a
    directory (``runs/notes.txt/x`` cannot be created).
    """
    if kind == "directory" and path.exists() and not path.is_dir():
        raise BadArgumentError(f"{option} {path} is a file, not a directory")
    if kind == "file" and path.is_dir():
        raise BadArgumentError(f"{option} {path} is a directory, not a file")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadArgumentError(f"{option} {path}: {ancestor} is a file, not a directory")


def check_fresh_output(out: Path, *, resume: bool, override: bool, force: bool) -> None:
    """Refuse to replace an earlier run's checkpoint and results (or a user's own
    ``report.md`` / ``certified.png``) by accident, and an ``--out`` that is not a directory."""
    check_output_path(out, "directory", "--out")
    if override and not resume:
        raise BadArgumentError("--override applies only with --resume")
    if resume or force:
        return
    existing = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if existing:
        raise BadArgumentError(
            f"{out} already holds a run ({', '.join(existing)}): choose another --out, "
            "continue it with --resume, or replace it with --force"
        )


def interrupted_message(out: Path) -> str:
    """What an interrupted ``train`` / ``run`` kept, and how to continue it."""
    checkpoint = out / "checkpoint"
    try:
        epoch = int(json.loads((checkpoint / "checkpoint.json").read_text()).get("epoch", 0))
    except (OSError, ValueError, AttributeError):
        epoch = 0
    if epoch == 0:
        return (
            f"interrupted before the first epoch ended: nothing was kept in {out}; run the "
            "same command again to start over"
        )
    return (
        f"interrupted: {checkpoint} holds the model after epoch {epoch}; run the same command "
        "with --resume to continue from there (certification starts after the last epoch)"
    )


def _train_and_report(
    *,
    out: Path,
    data: Path | None,
    quick: bool,
    method: str | None,
    preset: str | None,
    explicit: dict[str, Any],
    resume: bool,
    override: bool,
    force: bool,
    certify_after: bool = True,
    dataset: str = "mnist",
    verify: bool = True,
    normalize: str | None = None,
    device: str = "cpu",
    dist_timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """The one implementation behind ``run`` and ``train``.

    Started by torchrun as one of several processes, it joins the process group first; every
    rank trains, rank 0 alone certifies and prints (:mod:`tightlip.distributed`).
    """
    _set_threads()
    context = SINGLE_PROCESS
    try:
        settings = merge_settings(method, preset, explicit, quick=quick)
        check_fresh_output(out, resume=resume, override=override, force=force)
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if running_under_launcher() else None
        place = resolve_device(device, local_rank)
        context = from_environment(place, dist_timeout)
        run = RunConfig(
            settings=settings,
            out_dir=out,
            data_dir=data,
            resume=resume,
            override=override,
            dataset=get_dataset(dataset).info.name,
            verify=verify,
            normalize=normalize,
            device=place,
            distributed=context,
        )
        if not certify_after:
            loaded = load_data(data, quick, settings.train.seed, run.dataset, verify)
            _, seconds = build_and_train(run, loaded)
            if context.is_main:
                console.print(f"trained in {seconds:.1f} s; checkpoint in {out / 'checkpoint'}")
            return
        metrics = run_experiment(run)
    except USER_ERRORS as error:
        _fail(error)
    except KeyboardInterrupt:
        if context.is_main:
            err_console.print(interrupted_message(out), soft_wrap=True)
        raise typer.Exit(code=130) from None
    finally:
        shutdown(context)
    if not context.is_main:
        return
    _print_metrics(metrics)
    console.print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'certified.png'}")


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path("runs/default"),
    data: DataOption = None,
    dataset: DatasetOption = "mnist",
    verify: VerifyOption = True,
    device: DeviceOption = "cpu",
    quick: QuickOption = False,
    preset: Annotated[
        str,
        typer.Option(help="a named configuration; 'list' shows them (default: robust)"),
    ] = DEFAULT_RUN_PRESET,
    norm: NormOption = None,
    activation: Annotated[str | None, typer.Option(help="override the preset's")] = None,
    widths: Annotated[str | None, typer.Option(help="hidden widths, e.g. 256,256")] = None,
    arch: Annotated[str | None, typer.Option(help="layers, e.g. c32k3,c32k4s2,f512 (over --widths)")] = None,
    epochs: Annotated[int | None, typer.Option(help="override the preset's")] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    resume: ResumeOption = False,
    override: OverrideOption = False,
    force: ForceOption = False,
) -> None:
    """The main job: train tightlip's robust MNIST model, certify it, attack it, report."""
    if preset == "list":
        _print_presets()
        return
    try:
        explicit = {
            "norm": norm,
            "activation": activation,
            "widths": _parse_numbers(widths, int, "widths"),
            "arch": _checked_arch(arch),
            "epochs": epochs,
            "seed": seed,
        }
    except USER_ERRORS as error:
        _fail(error)
    _train_and_report(
        out=out,
        data=data,
        quick=quick,
        method=None,
        preset=preset,
        explicit=explicit,
        resume=resume,
        override=override,
        force=force,
        dataset=dataset,
        verify=verify,
        device=device,
    )


@app.command()
def train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="output directory")] = Path("runs/train"),
    data: DataOption = None,
    dataset: DatasetOption = "mnist",
    verify: VerifyOption = True,
    normalize: NormalizeOption = None,
    device: DeviceOption = "cpu",
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="train on N processes per node, launched by torch.distributed.run (torchrun); "
            "--batch-size stays the global batch, split over the processes",
        ),
    ] = None,
    nnodes: Annotated[
        str, typer.Option("--nnodes", help="with --nproc: nodes, N or MIN:MAX (as torchrun)")
    ] = "1",
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option("--rdzv-endpoint", help="with --nnodes > 1: HOST:PORT every node joins"),
    ] = None,
    dist_timeout: Annotated[
        float,
        typer.Option(
            "--dist-timeout", help="seconds a process waits for the others before the run fails"
        ),
    ] = DEFAULT_TIMEOUT_S,
    quick: QuickOption = False,
    method: Annotated[
        str | None, typer.Option(help=f"one of {', '.join(METHODS.names())} (default tightlip)")
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help=f"one of {', '.join(PRESETS.names())} (default: none)")
    ] = None,
    norm: NormOption = None,
    activation: Annotated[
        str | None,
        typer.Option(help=f"one of {', '.join(ACTIVATIONS.names())} (default sincos)"),
    ] = None,
    widths: Annotated[str | None, typer.Option(help="hidden widths (default 512,512)")] = None,
    arch: Annotated[str | None, typer.Option(help="layers, e.g. c32k3,c32k4s2,f512 (over --widths)")] = None,
    bias: Annotated[bool | None, typer.Option("--bias/--no-bias", help="default: no bias")] = None,
    epochs: Annotated[int | None, typer.Option(help=f"default {_T.epochs}")] = None,
    batch_size: Annotated[int | None, typer.Option(help=f"default {_T.batch_size}")] = None,
    lr: Annotated[float | None, typer.Option(help=f"default {_T.lr:g}, or the method's")] = None,
    penalty: Annotated[
        str | None, typer.Option(help=f"log, hinge or none (default {_T.penalty})")
    ] = None,
    lam: Annotated[
        float | None, typer.Option("--lambda", help=f"penalty weight λ (default {_T.penalty_weight:g})")
    ] = None,
    target: Annotated[
        float | None, typer.Option(help=f"hinge target for the bound (default {_T.penalty_target:g})")
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(help=f"one of {', '.join(LOSSES.names())} (default {_T.loss}, or the method's)"),
    ] = None,
    margin_epsilon: Annotated[
        float | None, typer.Option(help=f"loss radius ε (default {_T.margin_epsilon:g})")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help=f"loss temperature T (default {_T.temperature:g})")
    ] = None,
    smooth_max: Annotated[
        float | None,
        typer.Option(help="ℓ1/ℓ∞: relative log-sum-exp temperature of the norm (default 0 = max)"),
    ] = None,
    optimizer: Annotated[
        str | None,
        typer.Option(help="adam, or muon: spectral-norm steps on every layer (default adam)"),
    ] = None,
    projection: Annotated[
        str | None,
        typer.Option(
            help="tightlip, after each step: clip every layer's norm at 1 (projection onto the "
            "unit ball), rescale it to 1 (homogeneous activations only), or none (default none)",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="default 0")] = None,
    resume: ResumeOption = False,
    override: OverrideOption = False,
    force: ForceOption = False,
    radii: Annotated[str | None, typer.Option(help="comma-separated radii")] = None,
    attack_limit: Annotated[
        int | None, typer.Option(help=f"examples attacked (default {_E.attack_limit})")
    ] = None,
    lower_seconds: Annotated[
        float | None, typer.Option(help=f"lower-bound search budget (default {_E.lower_seconds:g})")
    ] = None,
    certify_after: Annotated[bool, typer.Option("--certify/--no-certify")] = True,
) -> None:
    """Train a model (any method), checkpoint it every epoch, then certify it.

    Settings merge as: built-in defaults < the method's published defaults < --preset <
    --quick < the flags given here. With --nproc N the same command runs on N processes
    (``torchrun --nproc-per-node N -m tightlip train ...`` is the same thing).
    """
    if nproc is not None:
        try:
            check_fresh_output(out, resume=resume, override=override, force=force)
        except USER_ERRORS as error:
            _fail(error)
        _launch(ctx, nproc, nnodes, rdzv_endpoint)
        return
    try:
        explicit = {
            "norm": norm,
            "activation": activation,
            "widths": _parse_numbers(widths, int, "widths"),
            "arch": _checked_arch(arch),
            "bias": bias,
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "penalty": penalty,
            "penalty_weight": lam,
            "penalty_target": target,
            "loss": loss,
            "margin_epsilon": margin_epsilon,
            "temperature": temperature,
            "smooth_max": smooth_max,
            "optimizer": optimizer,
            "projection": projection,
            "seed": seed,
            "radii": _parse_numbers(radii, float, "radii"),
            "attack_limit": attack_limit,
            "lower_seconds": lower_seconds,
        }
    except USER_ERRORS as error:
        _fail(error)
    _train_and_report(
        out=out,
        data=data,
        quick=quick,
        method=method,
        preset=preset,
        explicit=explicit,
        resume=resume,
        override=override,
        force=force,
        certify_after=certify_after,
        dataset=dataset,
        verify=verify,
        normalize=normalize,
        device=device,
        dist_timeout=dist_timeout,
    )


#: the options of ``train`` that choose how to launch, never forwarded to the processes
LAUNCH_OPTIONS = frozenset({"nproc", "nnodes", "rdzv_endpoint"})


def forwarded_arguments(ctx: typer.Context, drop: frozenset[str] = LAUNCH_OPTIONS) -> list[str]:
    """The command and the options the user gave (not defaults), as a command line again."""
    args = [ctx.info_name or "train"]
    for param in ctx.command.params:
        name = param.name
        if name in drop or not getattr(param, "opts", None):
            continue
        if ctx.get_parameter_source(name).name not in ("COMMANDLINE", "ENVIRONMENT"):
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):
            if param.secondary_opts:
                args.append(param.opts[0] if value else param.secondary_opts[0])
            elif value:
                args.append(param.opts[0])
        elif value is not None:
            args += [param.opts[0], str(value)]
    return args


def _launch(ctx: typer.Context, nproc: int, nnodes: str, rdzv_endpoint: str | None) -> None:
    """Run this command on ``nproc`` processes per node through torch.distributed.run."""
    try:
        if running_under_launcher():
            raise BadArgumentError(
                "--nproc: this process was already started by torchrun; leave out --nproc"
            )
        command = launcher_command(
            forwarded_arguments(ctx), nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint
        )
    except USER_ERRORS as error:
        _fail(error)
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        err_console.print(
            f"[bold red]error:[/] distributed training failed: torch.distributed.run exited "
            f"with code {code} (its report above names the rank that failed and why)",
            soft_wrap=True,
        )
        raise typer.Exit(code=code)


@app.command()
def certify(
    ckpt: ModelArgument,
    out: Annotated[
        Path | None,
        typer.Option(help="output directory (default: a new CKPT/../certify-<time> folder)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace the results already in --out")
    ] = False,
    data: DataOption = None,
    quick: CertifyQuickOption = False,
    radii: Annotated[str | None, typer.Option(help="comma-separated radii")] = None,
    attack_limit: int = _E.attack_limit or 0,
    lower_seconds: float = _E.lower_seconds,
    device: DeviceOption = "cpu",
    architecture: ArchitectureOption = None,
    norm: Annotated[
        str | None,
        typer.Option("--norm", help="1, 2 or inf (default: the checkpoint's; 2 otherwise)"),
    ] = None,
    dataset_name: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="the test set for a network trained elsewhere (default mnist; a checkpoint "
            "uses its own)",
        ),
    ] = None,
    bound_method: Annotated[
        str | None,
        typer.Option(
            "--bound",
            help="the upper bound that certifies: 'best' (the tightest sound bound of every "
            "verifier that fits, within --timeout each) or a verifier's name (kept only if "
            "tighter than the method's own); default: the method's own",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="with --bound: seconds per verifier (0: no limit)")
    ] = 120.0,
) -> None:
    """Certify a model: bounds, tightness, certified and PGD accuracy.

    Any file ``bound`` reads: a checkpoint is certified on the data set it was trained on; an
    ONNX file or a state dict with its architecture on --dataset, whose inputs must have the
    network's input shape. The results go to a folder of their own, never over those of the
    run that made the checkpoint.
    """
    _set_threads()
    try:
        evaluation = EvalConfig(
            radii=_parse_numbers(radii, float, "radii"),
            attack_limit=attack_limit,
            lower_seconds=lower_seconds,
        )
        if bound_method is not None and bound_method != "best":
            bound_method = UPPER_BOUNDS.resolve(bound_method)
        if timeout < 0:
            raise BadArgumentError(f"--timeout must be ≥ 0, got {timeout:g}")
        loaded = _load_model_file(ckpt, architecture)
        checkpoint = loaded.checkpoint
        if checkpoint is None:
            metrics, target = _certify_imported(
                loaded, out, force, data, quick, evaluation, norm, dataset_name, device,
                _with_bound(IMPORTED, bound_method, timeout),
            )
        else:
            if dataset_name is not None:
                raise BadArgumentError(
                    "--dataset is for networks trained elsewhere; a checkpoint is certified on "
                    "the data set it was trained on"
                )
            target = certify_output_dir(checkpoint.directory, out, force=force)
            config = checkpoint.config
            norm_name = parse_norm(norm or config.get("train", {}).get("norm", "2"))
            trained_on = config.get("data", {})  # the data set of the run, as it was read
            dataset = load_data(
                data,
                quick,
                dataset=trained_on.get("dataset", "mnist"),
                verify=trained_on.get("verify", True),
            )
            metrics = evaluate(
                checkpoint.model,
                norm_name,
                dataset,
                evaluation,
                method=_with_bound(
                    METHODS.get(config.get("method", "tightlip")), bound_method, timeout
                ),
                train_seconds=float(config.get("train_seconds", 0.0)),
                config=certify_config(checkpoint, evaluation, quick=quick),
                device=resolve_device(device),
                log=stderr_line,
            )
        write_outputs(target, metrics)
    except USER_ERRORS as error:
        _fail(error)
    _print_metrics(metrics)
    console.print(
        f"wrote {target / 'metrics.json'}, {target / 'report.md'}, {target / 'certified.png'}"
    )


def _certify_imported(
    loaded: LoadedModel,
    out: Path | None,
    force: bool,
    data: Path | None,
    quick: bool,
    evaluation: EvalConfig,
    norm: str | None,
    dataset_name: str | None,
    device: str,
    method: Method | None = None,
) -> tuple[dict[str, Any], Path]:
    """``certify`` for a network trained elsewhere (ONNX, state dict + architecture)."""
    target = certify_output_dir(loaded.source, out, force=force)  # beside the file
    name = dataset_name or "mnist"
    dataset = load_data(data, quick, dataset=name)
    features = dataset.test_x[0].numel()
    wanted = math.prod(loaded.input_shape)
    if features != wanted:
        raise ModelShapeError(
            f"{loaded.source} reads inputs of shape {loaded.input_shape} ({wanted} features) but "
            f"the {name} test images have shape {tuple(dataset.test_x.shape[1:])} ({features} "
            "features): certify needs a data set of the network's input shape (--dataset, --data)"
        )
    config = {
        "model": str(loaded.source),
        "model_format": loaded.kind,
        "input_shape": list(loaded.input_shape),
        "import_notes": list(loaded.notes),
        "data": {"dataset": name},
        "evaluation": evaluation.to_dict(),
        "quick": quick,
    }
    metrics = evaluate(
        loaded.model,
        parse_norm(norm or "2"),
        dataset,
        evaluation,
        method=method or IMPORTED,
        config=config,
        device=resolve_device(device),
        log=stderr_line,
    )
    return metrics, target


def certify_output_dir(
    checkpoint_dir: Path, out: Path | None, *, force: bool, now: float | None = None
) -> Path:
    """Where ``certify`` writes: ``out``, or a new ``certify-<local time>`` folder beside the
    checkpoint (a numeric suffix keeps two in the same second apart).

    An ``out`` that already holds results is refused unless ``force``; the folder of the run
    that made the checkpoint is refused even then, since its results would be replaced.
    """
    run_dir = checkpoint_dir.resolve().parent
    if out is not None:
        check_output_path(out, "directory", "--out")
        if (out / "metrics.json").exists():
            if out.resolve() == run_dir:
                raise BadArgumentError(
                    f"{out} holds the results of the run that made the checkpoint: certify "
                    "writes elsewhere (leave out --out for a new folder beside them)"
                )
            if not force:
                raise BadArgumentError(
                    f"{out} already holds results (metrics.json): choose another --out, or "
                    "pass --force to replace them"
                )
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate, n = run_dir / f"certify-{stamp}", 1
    while candidate.exists():
        candidate, n = run_dir / f"certify-{stamp}-{n}", n + 1
    return candidate


def _load_checkpoint(path: Path) -> Checkpoint:
    """:func:`load_checkpoint`, printing its notes (what could not be verified) on stderr."""
    checkpoint = load_checkpoint(path)
    for note in checkpoint.notes:
        err_console.print(f"note: {escape(note)}", soft_wrap=True)
    return checkpoint


def _checked_arch(arch: str | None) -> str | None:
    """``--arch`` as given, after :func:`tightlip.arch.parse_arch` has read it: an empty string
    or an empty layer (``c16k3,``) is refused rather than read as the default MLP."""
    if arch is not None:
        parse_arch(arch)
    return arch


def _load_model_file(path: Path, architecture: str | None) -> LoadedModel:
    """:func:`tightlip.interop.load.load` (checkpoint, ONNX, state dict + architecture),
    printing its notes (what could not be verified, how an import was checked) on stderr."""
    loaded = load_model_file(path, architecture=architecture)
    for note in loaded.notes:
        err_console.print(f"note: {escape(note)}", soft_wrap=True)
    return loaded


#: the SDP methods, with the option that limits the size of their SDP and how to measure it
_SDP_LIMITS = {"lipsdp": "max_size", "eclipse": "max_width"}


def _with_bound(method: Method | str, bound: str | None, timeout: float) -> Method:
    """``method`` certifying with the tightest sound upper bound of its own and ``bound``'s
    (``best``: every registered verifier that fits the network, each within ``timeout``)."""
    chosen = METHODS.get(method) if isinstance(method, str) else method
    if bound is None:
        return chosen
    own = chosen.certified_bound

    def certified(model: torch.nn.Module, norm: NormName) -> Certificate:
        chain = to_chain(model)
        names = list(upper_methods()) if bound == "best" else [bound]
        runnable = [name for name in names if _sdp_too_large(chain, name) is None]
        limit = timeout or None
        found = portfolio(chain, norm, methods=runnable, lower_methods=[],
                          options=_method_options(runnable, limit, None, 0.0), timeout=limit)
        candidates = [own(model, norm)] + [
            c for c in found if c.side == "upper" and c.sound and not c.details.get("skipped")
        ]
        return min(candidates, key=lambda c: c.value)

    return replace(chosen, certified_bound=certified)


def _sdp_too_large(chain: LayerChain, method: str) -> str | None:
    """"too large for an SDP (N variables …)" if ``method`` would refuse ``chain`` for its size
    (decided before running it, so that no time is spent on a solve that cannot finish)."""
    option = _SDP_LIMITS.get(method)
    if option is None:
        return None
    from tightlip.bounds.slope import to_slope_network

    try:
        net = to_slope_network(chain, method)
    except USER_ERRORS:
        return None  # the method explains itself when it runs
    if not net.hidden_widths:
        return None
    if method == "lipsdp":
        rows = min(net.weights[0].shape) + sum(net.hidden_widths)
        what = "rank of W_1 + hidden widths"
    else:
        rows = max(net.hidden_widths)
        what = "the widest hidden layer, one SDP per layer"
    limit = inspect.signature(UPPER_BOUNDS.get(method).run).parameters[option].default
    if rows <= limit:
        return None
    return (
        f"too large for an SDP ({rows * (rows + 1) // 2} variables in a {rows} × {rows} matrix: "
        f"{what}; {method}'s {option} is {limit})"
    )


def _skip_line(method: str, reason: str) -> str:
    """Why a method gave no bound, as ``bound`` prints it."""
    return reason if reason.startswith("timed out") else f"skipped: {reason}"


def _method_options(
    methods: list[str], timeout: float | None, starts: torch.Tensor | None, lower_seconds: float
) -> dict[str, dict[str, Any]]:
    """Per-method options: the gradient search's budget; SDP solvers stop at 80 % of the time
    limit, so that they can still return a certified value before the deadline kills them."""
    options: dict[str, dict[str, Any]] = {
        "gradient": {"starts": starts, "time_limit": lower_seconds}
    }
    if timeout is not None:
        for name in methods:
            run = UPPER_BOUNDS.get(name).run
            if "time_limit" in inspect.signature(run).parameters:
                options[name] = {"time_limit": 0.8 * timeout}
    return options


def _lower_bound_starts(chain: LayerChain, data: Path | None) -> torch.Tensor | None:
    """Test images as starting points of the lower-bound search, if they fit the model.

    Without images the search starts from random points. Images found by themselves that do
    not fit the model are replaced by random starts (with a note); images passed with
    ``--data`` must fit, else :class:`ModelShapeError` names both shapes.
    """
    try:
        images = load_data(data, quick=True).test_x
    except DatasetError:
        return None
    features = images[0].numel()
    if features == chain.input_dim:
        return images
    if data is not None:
        raise ModelShapeError(
            f"the images in {data} have {features} features each (shape {tuple(images.shape[1:])}) "
            f"but the model expects {chain.input_dim} input features"
        )
    err_console.print(
        f"note: the test images ({features} features) do not fit the model's "
        f"{chain.input_dim} inputs; the lower-bound search starts from random points",
        soft_wrap=True,
    )
    return None


def _bound_table(title: str, certificates: list[Certificate], lower: Certificate) -> Table:
    table = Table(title=title)
    for column in ("method", "side", "value", "value / lower", "seconds", "sound"):
        table.add_column(column, justify="left" if column in ("method", "side") else "right")
    for cert in [*certificates, lower]:
        table.add_row(
            cert.method,
            cert.side,
            f"{cert.value:.6g}",
            f"{cert.value / lower.value:.4f}" if lower.value > 0 else "—",
            f"{cert.seconds:.3f}",
            "yes" if cert.sound else "no",
        )
    return table


@app.command()
def bound(
    ckpt: ModelArgument,
    norm: Annotated[str, typer.Option("--norm", help="1, 2 or inf")] = "2",
    method: Annotated[
        str, typer.Option(help=f"an upper-bound method ({', '.join(upper_methods())}), or 'all'")
    ] = "trivial",
    architecture: ArchitectureOption = None,
    data: DataOption = None,
    lower_seconds: float = 30.0,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help="seconds each upper-bound method may run before it is reported as timed out "
            "(0: no limit)",
        ),
    ] = 120.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the table as JSON")
    ] = None,
) -> None:
    """Print the architecture read, then Lipschitz bounds: value, value / lower bound, seconds."""
    _set_threads()
    try:
        if lower_seconds < 0:
            raise BadArgumentError(f"--lower-seconds must be ≥ 0, got {lower_seconds:g}")
        if timeout < 0:
            raise BadArgumentError(f"--timeout must be ≥ 0, got {timeout:g}")
        if json_out is not None:
            check_output_path(json_out, "file", "--json")
        norm_name = parse_norm(norm)
        methods = list(upper_methods()) if method == "all" else [UPPER_BOUNDS.resolve(method)]
        loaded = _load_model_file(ckpt, architecture)
        chain = to_chain(loaded.model)
        starts = _lower_bound_starts(chain, data)
    except USER_ERRORS as error:
        _fail(error)
    console.print(
        f"architecture read from {ckpt} ({loaded.kind}, input {loaded.input_shape}):",
        markup=False,
        highlight=False,
    )
    for line in describe(chain, norm_name):
        console.print(line, markup=False, highlight=False)
    limit = timeout or None
    too_large = {m: reason for m in methods if (reason := _sdp_too_large(chain, m))}
    runnable = [m for m in methods if m not in too_large]
    try:
        certificates = portfolio(
            chain,
            norm_name,
            methods=runnable,
            lower_methods=["gradient"],
            options=_method_options(runnable, limit, starts, lower_seconds),
            timeout=limit,
            progress=(lambda line: err_console.print(line, markup=False, highlight=False))
            if method == "all"
            else None,
        )
    except USER_ERRORS as error:
        _fail(error)
    done = {c.method: c for c in certificates if c.side != "lower"}
    for name, reason in too_large.items():
        done[name] = skipped_certificate(name, norm_name, "upper", reason)
    uppers = [done[m] for m in methods]
    lower = next(c for c in certificates if c.side == "lower")
    skipped = {c.method: c.details.get("reason", "") for c in uppers if c.details.get("skipped")}
    if method != "all" and skipped:
        _fail(BadArgumentError(f"{methods[0]}: {_skip_line(methods[0], skipped[methods[0]])}"))
    applicable = [c for c in uppers if not c.details.get("skipped")]
    console.print(_bound_table(f"Lipschitz bounds ({norm_name}-norm) of {ckpt}", applicable, lower))
    if len(applicable) == 1 and applicable[0].layers:
        console.print(
            "per layer: "
            + " · ".join(
                f"{i}: {layer.value:.5g}" for i, layer in enumerate(applicable[0].layers, start=1)
            ),
            markup=False,
        )
    for name, reason in skipped.items():
        console.print(f"[yellow]{name}[/]: {escape(_skip_line(name, reason))}")
    if json_out is not None:
        document = _bound_json(loaded, chain, norm_name, uppers, lower)
        witness = lower.tensors()
        if witness:  # a large witness (e.g. a 3072-input image) is saved apart, re-checkable
            tensor_file = json_out.with_suffix(".safetensors")
            save_file({k: v.contiguous() for k, v in witness.items()}, str(tensor_file))
            for row in document["bounds"]:
                if row.get("side") == "lower" and row.get("status") == "ok":
                    row["tensor_file"] = tensor_file.name
        json_out.write_text(json.dumps(document, indent=2))


def _bound_json(
    loaded: LoadedModel,
    chain: LayerChain,
    norm: str,
    uppers: list[Certificate],
    lower: Certificate,
) -> dict[str, Any]:
    """``bound --json``: one row per method (``method``, ``side``, ``value``, ``seconds``,
    ``sound``, ``status``: ok, skipped or timed out), the architecture and the model read."""
    rows = []
    for cert in [*uppers, lower]:
        if cert.details.get("skipped"):
            status = "timed out" if cert.details.get("timed_out") else "skipped"
            rows.append(
                {
                    "method": cert.method,
                    "side": cert.side,
                    "value": None,
                    "seconds": cert.seconds,
                    "sound": None,
                    "status": status,
                    "reason": _skip_line(cert.method, cert.details.get("reason", "")),
                }
            )
        else:
            rows.append({**cert.to_dict(), "status": "ok"})
    skipped = {r["method"]: r["reason"] for r in rows if r["status"] != "ok"}
    return {
        "model": str(loaded.source),
        "format": loaded.kind,
        "input_shape": list(loaded.input_shape),
        "architecture": describe(chain, norm),
        "bounds": rows,
        "skipped": skipped,
    }


@app.command()
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="run directories (or their metrics.json), any method")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="also write compare.md, compare.json and compare.png (the curves) here"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an earlier comparison")] = False,
) -> None:
    """Runs side by side: method, architecture, clean, certified and PGD accuracy per radius,
    upper / lower bound and seconds, from each run's metrics.json; with --out, one plot that
    overlays their certified curves."""
    from tightlip.eval.compare import read_runs, table_rows, write_comparison

    try:
        records = read_runs(list(runs))
        if out is not None:
            check_output_path(out, "directory", "--out")
            if (out / "compare.md").exists() and not force:
                raise BadArgumentError(f"{out} already holds a comparison: pass --force to replace it")
    except USER_ERRORS as error:
        _fail(error)
    header, rows = table_rows(records)
    table = Table(title=f"{len(records)} run(s), best certificate per radius")  # one column a run
    table.add_column(header[0])
    for row in rows:
        table.add_column(escape(row[0]), justify="right", overflow="fold")
    for i, name in enumerate(header[1:], start=1):
        table.add_row(name, *(escape(row[i]) for row in rows))
    console.print(table)
    if out is not None:
        written = write_comparison(records, out)
        console.print(f"wrote {', '.join(str(p) for p in written)}")


@app.command("export")
def export(
    ckpt: ModelArgument,
    out: Annotated[Path, typer.Argument(help="the .onnx file to write")],
    architecture: ArchitectureOption = None,
    dtype: Annotated[
        str, typer.Option(help="auto (float32 when nothing rounds, else float64), float32, float64")
    ] = "auto",
    exporter: Annotated[
        str, typer.Option(help="dynamo (torch.export, the default) or torchscript (faster)")
    ] = "dynamo",
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
) -> None:
    """Write a model as ONNX (every method; SinCos as Sin/Cos/Concat), read back and checked:
    importing the file gives the same matrices, activations and bounds."""
    _set_threads()
    try:
        if out.suffix.lower() != ".onnx":
            raise BadArgumentError(f"the output must be an .onnx file, got {out}")
        check_output_path(out, "file", "the output")
        if out.exists() and not force:
            raise BadArgumentError(f"{out} exists: pass --force to replace it")
        loaded = _load_model_file(ckpt, architecture)
        from tightlip.interop.onnx_export import export_onnx  # onnx loads in about a second

        result = export_onnx(
            loaded.model,
            out,
            dtype=dtype,
            input_shape=loaded.input_shape,
            source=str(ckpt),
            exporter=exporter,
        )
    except USER_ERRORS as error:
        _fail(error)
    console.print(
        f"wrote {out}: {result.nodes} ONNX nodes, {result.dtype}, input shape "
        f"(batch, {', '.join(str(s) for s in loaded.input_shape)}); it reads back as the same "
        "network",
        highlight=False,
    )
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)


def _downloadable() -> str:
    """The datasets ``data fetch`` can download (``files`` is the user's own and is not)."""
    return ", ".join(name for name in DATASETS.names() if DATASETS.get(name).info.url)


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[
        str, typer.Argument(help=f"dataset name ({_downloadable()})")
    ] = "mnist",
    url: Annotated[
        str | None, typer.Option(help="base URL of the dataset's files (default: a public mirror)")
    ] = None,
    dest: Annotated[
        Path | None,
        typer.Option(
            help="target directory (default: $TIGHTLIP_DATA if set, else the user cache "
            "$XDG_CACHE_HOME/tightlip/DATASET or ~/.cache/tightlip/DATASET)"
        ),
    ] = None,
    force: bool = False,
) -> None:
    """Download a dataset where every command finds it, verifying the sha256 of every file."""
    try:
        entry = get_dataset(dataset)
        target = (dest or default_fetch_dir(entry.info.name)).expanduser()
        paths = entry.fetch(target, url, force=force, report=typer.echo)
    except USER_ERRORS as error:
        _fail(error)
    for path in paths:
        typer.echo(f"ok {path}")
    try:
        found = entry.locate(None)
    except DatasetError:
        found = None
    if found != target.resolve():
        typer.echo(
            f"note: commands do not look in {target} by themselves: pass --data {target} "
            f"or set TIGHTLIP_DATA={target}"
        )


@data_app.command("where")
def data_where(
    dataset: Annotated[
        str, typer.Argument(help=f"dataset name ({', '.join(DATASETS.names())})")
    ] = "mnist",
    data: DataOption = None,
) -> None:
    """Print the directory that commands would read the dataset from."""
    try:
        directory = resolve_data_dir(data, dataset)
    except USER_ERRORS as error:
        _fail(error)
    typer.echo(str(directory))


if __name__ == "__main__":
    app()
