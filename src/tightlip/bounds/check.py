"""``check_lower``: re-check a lower-bound certificate from its witness alone.

A lower bound is only as good as its witness (:mod:`tightlip.bounds.lower.witness`): a secant
pair ``(x, y)``, or an interior point ``x`` of a linear region with a direction ``v``. The check
recomputes the value the witness certifies, in float64 with the rounding error bounded, from
the model and the stored vectors; nothing found by the search is trusted. Certificates read back
from JSON keep vectors of up to 1024 coordinates inline; longer ones come from the safetensors
file written beside the JSON (:meth:`tightlip.certificate.Certificate.load`, or ``tensors``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tightlip.bounds.lower.witness import recertify
from tightlip.certificate import Certificate
from tightlip.errors import BadArgumentError, SoundnessError
from tightlip.model import LayerChain, to_chain


def check_lower(
    model: nn.Module | LayerChain,
    certificate: Certificate,
    tensors: dict[str, torch.Tensor] | None = None,
    *,
    rtol: float = 0.0,
) -> float:
    """The value that ``certificate``'s witness certifies for ``model``, recomputed.

    ``tensors``: the certificate's tensors when they were saved apart (a safetensors file).
    Raises :class:`~tightlip.errors.SoundnessError` when the recomputed value is below the
    certificate's value (by more than ``rtol`` relative: exact methods such as region
    enumeration certify their values with their own rounding model), and
    :class:`~tightlip.errors.BadArgumentError` when the certificate is not a lower (or exact)
    bound, or carries no witness although its value is positive; a witness that does not fit
    the model is a :class:`~tightlip.errors.ModelShapeError`.
    """
    if certificate.side not in ("lower", "exact"):
        raise BadArgumentError(f"check_lower needs a lower bound, got a {certificate.side} bound")
    details: dict[str, Any] = {**certificate.details, **(tensors or {})}
    if details.get("witness") is None and details.get("witness_tensor") is None:
        if certificate.value <= 0:
            return 0.0
        raise BadArgumentError(
            f"the {certificate.method} certificate carries no witness (details['witness']); "
            "if it was saved with a safetensors file, pass its tensors"
        )
    chain = to_chain(model)
    try:
        value = recertify(chain, certificate.norm, details)
    except KeyError as missing:
        raise BadArgumentError(
            f"the {certificate.method} certificate's witness lacks {missing}"
        ) from None
    if value < certificate.value * (1.0 - rtol):
        raise SoundnessError(
            f"the {certificate.method} witness certifies {value!r}, below the certificate's "
            f"value {certificate.value!r}"
        )
    return value
