"""Training on several processes with ``torch.distributed``: DDP, launched by torchrun.

tightlip does not have an engine of its own: processes are started by torch's launcher
(``torch.distributed.run``, the module behind ``torchrun``), which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; each process joins the
default process group (:func:`from_environment`: backend gloo on the CPU, nccl on GPUs) and
the training loop wraps its step in ``DistributedDataParallel`` (Li et al., "PyTorch
Distributed: experiences on accelerating data parallel training", VLDB 2020), as LiResNet,
SLL and orthogonium do. ``tightlip train --nproc N`` only builds the launcher's command line
(:func:`launcher_command`) and runs it.

How a run on ``W`` processes equals one process at the same global batch ``B`` and seed:

* every process draws the same seeded permutation of the training set per epoch, and rank
  ``r`` takes the contiguous slice ``[⌊rb/W⌋, ⌊(r+1)b/W⌋)`` of each global batch of ``b ≤ B``
  examples (:meth:`Distributed.shard`), the role of ``DistributedSampler``;
* rank ``r``'s loss is scaled by ``W b_r / b`` before DDP averages the gradients over the
  ``W`` ranks, so the gradient is ``Σ_r (b_r / b) ∇ℓ_r``: the gradient of the global batch's
  mean loss whatever the split, and of the penalty, which each rank computes in full;
* DDP broadcasts rank 0's parameters and buffers once, when it wraps the model; after that the
  all-reduced gradients and Adam's deterministic update keep the weights identical on every
  rank, and the penalty's power-iteration vectors, which are updated from those weights, stay
  identical too. DDP's per-forward buffer broadcast is off (``forward_sync_buffers=False``,
  formerly ``broadcast_buffers=False``): it would overwrite buffers in place between a forward
  pass that read them and its backward pass. Instead :meth:`Distributed.check_identical` compares a digest of every parameter and
  buffer across ranks after each epoch and stops the run if any rank differs.

Only rank 0 writes checkpoints, logs and metrics; every rank reads the checkpoint to resume
(the output directory must be visible to every node); certification runs once, on rank 0,
after training. Collectives time out after ``timeout`` seconds, and ``torchrun`` stops every
process when one dies, so a killed rank ends the run with an error instead of a hang.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from tightlip.errors import BadArgumentError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "SINGLE_PROCESS",
    "Distributed",
    "from_environment",
    "launcher_command",
    "running_under_launcher",
    "shutdown",
]

#: seconds a collective waits for the other ranks before the run fails
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and metrics."""
        return self.rank == 0

    @property
    def communication_device(self) -> torch.device:
        """Where small tensors for collectives live (the local GPU for nccl)."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's contiguous slice of a global batch, and its share ``b_r / b``."""
        n = int(batch.shape[0])
        start = n * self.rank // self.world_size
        stop = n * (self.rank + 1) // self.world_size
        return batch[start:stop], (stop - start) / n

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (module docstring), or itself alone."""
        if not self.enabled:
            return module
        lazy = [
            name
            for name, p in module.named_parameters()
            if isinstance(p, nn.parameter.UninitializedParameter)
        ]
        if lazy:
            raise BadArgumentError(
                f"distributed training needs every parameter created before it starts; "
                f"{', '.join(lazy)} are lazy (run one forward pass first)"
            )
        return nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            **_no_buffer_broadcast(),
        )

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """The sum of ``values`` over every rank (in float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.communication_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def check_identical(self, modules: Iterable[nn.Module], what: str) -> None:
        """Raise on every rank if any rank's parameters and buffers differ from rank 0's.

        Compares SHA-256 digests of the bytes of every tensor in the modules' state dicts.
        """
        if not self.enabled:
            return
        local = torch.tensor(
            list(state_digest(modules)), dtype=torch.int64, device=self.communication_device
        )
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        differ = [r for r, g in enumerate(gathered) if not torch.equal(g, gathered[0])]
        if differ:
            raise RuntimeError(
                f"{what}: the parameters or buffers of rank(s) {differ} differ from rank 0's; "
                "the ranks no longer train the same model (a bug: please report it)"
            )

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE_PROCESS = Distributed()


def _no_buffer_broadcast() -> dict[str, bool]:
    """DDP's keyword for "sync buffers once, at wrapping, never in forward" (torch renamed it:
    ``forward_sync_buffers=False`` in newer versions, ``broadcast_buffers=False`` before)."""
    parameters = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def state_digest(modules: Iterable[nn.Module]) -> bytes:
    """SHA-256 over the names, shapes, dtypes and bytes of every state tensor of ``modules``."""
    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, tensor in module.state_dict().items():
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{index}.{name}:{tuple(value.shape)}:{value.dtype}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.digest()


def running_under_launcher(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun as one of several."""
    env = os.environ if env is None else env
    return int(env.get("WORLD_SIZE", "1") or 1) > 1


def from_environment(
    device: torch.device, timeout: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None
) -> Distributed:
    """This process's :class:`Distributed`, joining the process group if torchrun started it.

    One process (no ``WORLD_SIZE`` above 1) gives :data:`SINGLE_PROCESS` and touches nothing.
    """
    env = os.environ if env is None else env
    if not running_under_launcher(env):
        return SINGLE_PROCESS
    if timeout <= 0:
        raise BadArgumentError(f"the distributed timeout must be positive, got {timeout:g} s")
    backend = "nccl" if device.type == "cuda" else "gloo"
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return Distributed(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def shutdown(context: Distributed) -> None:
    """Leave the process group (nothing to do for one process)."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def check_nnodes(nnodes: str) -> None:
    """``--nnodes``: a positive number of nodes, or ``MIN:MAX`` with 1 ≤ MIN ≤ MAX (torchrun)."""
    parts = nnodes.split(":")
    if len(parts) in (1, 2) and all(p.isdigit() and int(p) >= 1 for p in parts):
        if len(parts) == 1 or int(parts[0]) <= int(parts[1]):
            return
    raise BadArgumentError(
        f"--nnodes {nnodes!r}: expected a number of nodes (2) or a range MIN:MAX (1:4)"
    )


def check_endpoint(endpoint: str) -> None:
    """``--rdzv-endpoint``: ``HOST:PORT`` with a port in 1 … 65535."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadArgumentError(
            f"--rdzv-endpoint {endpoint!r}: expected HOST:PORT, e.g. 127.0.0.1:29400"
        )


def launcher_command(
    program_args: Sequence[str],
    nproc: int,
    *,
    nnodes: str = "1",
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    node_rank: int | None = None,
    python: str | None = None,
) -> list[str]:
    """``python -m torch.distributed.run … -m tightlip PROGRAM_ARGS`` (torchrun's options).

    One node without an endpoint runs ``--standalone`` (a local rendezvous on a free port);
    otherwise the c10d rendezvous at ``rdzv_endpoint`` (``host:port``) joins ``nnodes`` nodes
    (a number, or ``MIN:MAX``), as torchrun defines them. Failed workers are not restarted.
    """
    if nproc < 1:
        raise BadArgumentError(f"--nproc must be at least 1, got {nproc}")
    check_nnodes(str(nnodes))
    if rdzv_endpoint is not None:
        check_endpoint(rdzv_endpoint)
    command = [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
    ]
    if str(nnodes) == "1" and rdzv_endpoint is None:
        command.append("--standalone")
    else:
        if rdzv_endpoint is None:
            raise BadArgumentError(
                f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT, the rendezvous every node "
                "joins"
            )
        command += [
            "--nnodes",
            str(nnodes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            rdzv_endpoint,
            "--rdzv-id",
            rdzv_id or "tightlip",
        ]
        if node_rank is not None:
            command += ["--node-rank", str(node_rank)]
    return [*command, "-m", "tightlip", *program_args]
