"""One rank of the distributed tests (run by ``torch.distributed.run`` from test_distributed.py).

``python -m torch.distributed.run --standalone --nproc-per-node W tests/distributed_worker.py OUT``
trains the small problems of :func:`setups` on this rank and writes ``OUT/rank{r}.json``: the
final weights, a digest of the objective's state (the penalty's power-iteration vectors)
after every step, and what each phase wrote. The test trains the same problems in one process
and compares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tightlip.distributed import (
    SINGLE_PROCESS,
    Distributed,
    from_environment,
    shutdown,
    state_digest,
)
from tightlip.methods import METHODS
from tightlip.model import ModelSpec
from tightlip.train.config import TrainConfig
from tightlip.train.loop import train
from tightlip.train.objectives import Objective

#: 196 = 13 · 15 + 1 examples in global batches of 15: two ranks split each batch 7 / 8, so
#: their losses must be weighted by 14/15 and 16/15 to give the global mean, and the last batch
#: holds one example, so one rank gets none (the weight-0 path)
EXAMPLES = 196
BATCH = 15
FEATURES = 12


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = torch.rand(EXAMPLES, FEATURES, generator=generator)
    y = (x[:, :4].sum(1) > x[:, 4:8].sum(1)).long() + (x[:, 8:].sum(1) > 2).long()
    return x, y


def setups() -> dict[str, tuple[str, ModelSpec, TrainConfig]]:
    """Name → (method, model, config): the penalised ℓ2 estimator, and spectral normalisation
    (buffers updated inside the model's forward pass)."""
    spec = ModelSpec(input_dim=FEATURES, widths=(16, 16), num_classes=3, activation="abs",
                     bias=True)
    return {
        "tightlip": ("tightlip", spec, TrainConfig(epochs=2, batch_size=BATCH, lr=5e-3,
                                                   penalty_weight=0.1, power_iterations=2)),
        "specnorm": ("specnorm", spec, TrainConfig(epochs=2, batch_size=BATCH, lr=5e-3,
                                                   loss="offset", penalty="none")),
        # issue 19's recipe: Muon steps and the spectral projection after every step
        "muon-clip": ("tightlip", spec, TrainConfig(epochs=2, batch_size=BATCH, lr=1e-2,
                                                    penalty_weight=0.1, optimizer="muon",
                                                    projection="clip")),
    }


class Recording(Objective):
    """The method's objective, recording a digest of its state after every step's forward."""

    def __init__(self, inner: Objective) -> None:
        super().__init__()
        self.inner = inner
        self.digests: list[str] = []

    def start_epoch(self, epoch: int) -> None:
        self.inner.start_epoch(epoch)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):  # type: ignore[override]
        out = self.inner(model, x, y)
        self.digests.append(state_digest([self.inner, model]).hex())
        return out


def run(
    name: str,
    context: Distributed = SINGLE_PROCESS,
    out_dir: Path | None = None,
    resume: bool = False,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train setup ``name``; the final weights (as lists) and the per-step digests."""
    method_name, spec, config = setups()[name]
    method = METHODS.get(method_name)
    model, description = method.build(spec, config, {})
    objective = Recording(method.objective(model, config, {}))
    x, y = data()
    result = train(model, objective, x, y, config, out_dir=out_dir, resume=resume,
                   model_description=description, method=method_name, progress=False,
                   stop_after_epochs=stop_after_epochs, distributed=context)
    return {
        "weights": {k: v.detach().double().tolist() for k, v in result.model.state_dict().items()},
        "digests": objective.digests,
        "history": result.history,
    }


def main(out: Path) -> None:
    # generous: a loaded CI machine must not time out a healthy run
    context = from_environment(torch.device("cpu"), timeout=300)
    report: dict[str, Any] = {"rank": context.rank, "world_size": context.world_size}
    for name in setups():
        own = out / name / f"rank{context.rank}"  # each rank its own directory: who writes?
        report[name] = run(name, context, out_dir=own)
        report[name]["wrote"] = sorted(p.name for p in own.glob("*")) if own.exists() else []
    shared = out / "resume"
    run("tightlip", context, out_dir=shared, stop_after_epochs=1)
    context.barrier()  # rank 0 has written the checkpoint that every rank resumes from
    report["resumed"] = run("tightlip", context, out_dir=shared, resume=True)
    shutdown(context)
    (out / f"rank{context.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
