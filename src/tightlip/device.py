"""Devices: where training and attacks run (``--device auto|cpu|cuda``).

Training and the PGD attacks run on the chosen device in float32. Certification never moves:
every bound and every certified radius is computed from the float64
:class:`~tightlip.model.LayerChain` on the CPU (its operators copy the weights there), so a
certificate does not depend on the device a model was trained on; only the float32 training
itself does, through the usual floating-point differences of GPU kernels.

* :func:`resolve_device` turns ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a
  :class:`torch.device`, refusing ``cuda`` with one clear line where no GPU is available;
  for a distributed run each process takes the GPU of its local rank.
* :class:`OnDevice` runs a CPU model's forward pass on a device for tensors that live on the
  CPU (how the attacks of :func:`tightlip.eval.certify.certify` use a GPU without any change
  to the attack code: gradients flow through the copies).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tightlip.errors import BadArgumentError

__all__ = ["DEVICE_CHOICES", "OnDevice", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "cpu", local_rank: int | None = None) -> torch.device:
    """``auto`` → the GPU if one is available, else the CPU; ``cuda``/``cuda:N``; ``cpu``.

    ``local_rank`` (a distributed run) picks ``cuda:local_rank`` for a plain ``cuda``/``auto``.

    Raises:
        BadArgumentError: an unknown name, or ``cuda`` where torch sees no GPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "cpu").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise BadArgumentError(
            f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)"
        )
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        built = "with" if torch.version.cuda else "without"
        raise BadArgumentError(
            f"--device {text}: no CUDA GPU is available (torch {torch.__version__}, built "
            f"{built} CUDA); use --device cpu, or auto to take a GPU only when there is one"
        )
    number = int(index) if index else (local_rank or 0)
    if number >= torch.cuda.device_count():
        raise BadArgumentError(
            f"--device cuda:{number}: only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return torch.device("cuda", number)


class OnDevice:
    """``x ↦ model_on_device(x.to(device)).to(x.device)``: a copy of ``model`` on ``device``.

    The copy is taken once (the model is not moved); on the CPU the model itself is used.
    """

    def __init__(self, model: nn.Module, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.model = model if self.device.type == "cpu" else copy.deepcopy(model).to(self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.device)).to(x.device)
