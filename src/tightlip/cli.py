"""The ``tightlip`` command line: run, train, certify, bound, data.

Thin by design: options become one explicit-settings dictionary, merged with the method's
defaults and a preset by :func:`tightlip.settings.merge_settings`; the work is done by the
library. Errors a user's input can cause (:class:`~tightlip.errors.TightlipError`) print one
line and exit with code 2; anything else is a bug and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tightlip.bounds import upper_methods
from tightlip.bounds.portfolio import portfolio
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
    write_outputs,
)
from tightlip.eval.report import results_rows
from tightlip.methods import METHODS
from tightlip.model import LayerChain, state_dict_to_chain, to_chain
from tightlip.norms import parse_norm
from tightlip.settings import PRESETS, QUICK_EPOCHS, QUICK_TRAIN_EXAMPLES, merge_settings
from tightlip.threads import apply_thread_policy
from tightlip.train.checkpoint import Checkpoint, load_checkpoint, read_state_dict_file
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
        help=f"smoke test: {QUICK_TRAIN_EXAMPLES} training examples, {QUICK_EPOCHS} epochs",
    ),
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


def check_fresh_output(out: Path, *, resume: bool, override: bool, force: bool) -> None:
    """Refuse to replace an earlier run's checkpoint and results by accident."""
    if override and not resume:
        raise BadArgumentError("--override applies only with --resume")
    if resume or force:
        return
    existing = [name for name in ("checkpoint", "metrics.json") if (out / name).exists()]
    if existing:
        raise BadArgumentError(
            f"{out} already holds a run ({', '.join(existing)}): choose another --out, "
            "continue it with --resume, or replace it with --force"
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
        str | None, typer.Option(help="sincos, abs, crelu, sinpair, relu, tanh, maxmin (default sincos)")
    ] = None,
    widths: Annotated[str | None, typer.Option(help="hidden widths (default 512,512)")] = None,
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
        _launch(ctx, nproc, nnodes, rdzv_endpoint)
        return
    try:
        explicit = {
            "norm": norm,
            "activation": activation,
            "widths": _parse_numbers(widths, int, "widths"),
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
    ckpt: Annotated[Path, typer.Argument(help="checkpoint directory (or one of its files)")],
    out: Annotated[
        Path | None,
        typer.Option(help="output directory (default: a new CKPT/../certify-<time> folder)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace the results already in --out")
    ] = False,
    data: DataOption = None,
    quick: QuickOption = False,
    radii: Annotated[str | None, typer.Option(help="comma-separated radii")] = None,
    attack_limit: int = _E.attack_limit or 0,
    lower_seconds: float = _E.lower_seconds,
    device: DeviceOption = "cpu",
) -> None:
    """Certify a trained checkpoint: bounds, tightness, certified and PGD accuracy.

    The results go to a folder of their own, never over those of the run that made the
    checkpoint.
    """
    _set_threads()
    try:
        evaluation = EvalConfig(
            radii=_parse_numbers(radii, float, "radii"),
            attack_limit=attack_limit,
            lower_seconds=lower_seconds,
        )
        checkpoint = _load_checkpoint(ckpt)
        target = certify_output_dir(checkpoint.directory, out, force=force)
        config = checkpoint.config
        norm = parse_norm(config.get("train", {}).get("norm", "2"))
        trained_on = config.get("data", {})  # the data set of the run, as it was read
        dataset = load_data(
            data,
            quick,
            dataset=trained_on.get("dataset", "mnist"),
            verify=trained_on.get("verify", True),
        )
        metrics = evaluate(
            checkpoint.model,
            norm,
            dataset,
            evaluation,
            method=config.get("method", "tightlip"),
            train_seconds=float(config.get("train_seconds", 0.0)),
            config=certify_config(checkpoint, evaluation, quick=quick),
            device=resolve_device(device),
        )
        write_outputs(target, metrics)
    except USER_ERRORS as error:
        _fail(error)
    _print_metrics(metrics)
    console.print(
        f"wrote {target / 'metrics.json'}, {target / 'report.md'}, {target / 'certified.png'}"
    )


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


def _load_any_model(path: Path, activation: str) -> LayerChain:
    """A tightlip checkpoint, or a plain nn.Sequential state dict (.safetensors or .pt)."""
    if path.is_dir() or path.name.startswith("checkpoint."):
        return to_chain(_load_checkpoint(path).model)
    return state_dict_to_chain(read_state_dict_file(path), activation)


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
    ckpt: Annotated[Path, typer.Argument(help="tightlip checkpoint, or nn.Sequential state dict")],
    norm: Annotated[str, typer.Option("--norm", help="1, 2 or inf")] = "2",
    method: Annotated[
        str, typer.Option(help=f"an upper-bound method ({', '.join(upper_methods())}), or 'all'")
    ] = "trivial",
    activation: Annotated[
        str, typer.Option(help="activation between Linear layers of a plain state dict")
    ] = "relu",
    data: DataOption = None,
    lower_seconds: float = 30.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="also write the table as JSON")
    ] = None,
) -> None:
    """Print Lipschitz bounds of a model: value, value / lower bound, seconds."""
    _set_threads()
    try:
        if lower_seconds < 0:
            raise BadArgumentError(f"--lower-seconds must be ≥ 0, got {lower_seconds:g}")
        norm_name = parse_norm(norm)
        chain = _load_any_model(ckpt, activation)
        starts = _lower_bound_starts(chain, data)
        methods = list(upper_methods()) if method == "all" else [method]
        certificates = portfolio(
            chain,
            norm_name,
            methods=methods,
            lower_methods=["gradient"],
            options={"gradient": {"starts": starts, "time_limit": lower_seconds}},
        )
    except USER_ERRORS as error:
        _fail(error)
    uppers = [c for c in certificates if c.side != "lower"]
    lower = next(c for c in certificates if c.side == "lower")
    skipped = {c.method: c.details.get("reason", "") for c in uppers if c.details.get("skipped")}
    if method != "all" and skipped:
        _fail(BadArgumentError(f"{method}: not applicable: {skipped[methods[0]]}"))
    applicable = [c for c in uppers if not c.details.get("skipped")]
    console.print(_bound_table(f"Lipschitz bounds ({norm_name}-norm) of {ckpt}", applicable, lower))
    if len(applicable) == 1 and applicable[0].layers:
        console.print(
            "per layer: "
            + " · ".join(f"{layer.name}={layer.value:.5g}" for layer in applicable[0].layers)
        )
    for name, reason in skipped.items():
        console.print(f"[yellow]{name}[/]: not applicable: {reason}")
    if json_out is not None:
        rows = [c.to_dict() for c in [*applicable, lower]]
        json_out.write_text(json.dumps({"bounds": rows, "skipped": skipped}, indent=2))


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[
        str, typer.Argument(help=f"dataset name ({', '.join(DATASETS.names())})")
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
