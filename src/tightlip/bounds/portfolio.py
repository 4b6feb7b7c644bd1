"""Run several bound methods on one network and compare them.

* :func:`upper_bound_or_trivial` — one upper method, falling back to the trivial bound (with
  the note ``"fell back to trivial: <reason>"``) when the method does not apply, e.g. the
  slope-restriction methods on SinCos or MaxMin networks.
* :func:`portfolio` — every registered (or requested) upper method plus lower methods. A
  method that raises :class:`~tightlip.bounds.MethodNotApplicableError` is recorded as a
  certificate with value ``inf`` (trivially sound), ``details["skipped"] = True`` and the
  reason in ``notes``/``details["reason"]``. Each applicable upper certificate gets
  ``details["ratio_to_best_lower"]`` = value / best lower bound (the CLI prints it). Method
  names may be given in any accepted spelling and are reported by their registered name; an
  unknown name raises :class:`~tightlip.errors.UnknownNameError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from torch import nn

from tightlip.bounds.deadline import TimedOut, run_with_deadline
from tightlip.bounds.registry import (
    LOWER_BOUNDS,
    UPPER_BOUNDS,
    lower_bound,
    upper_bound,
    upper_methods,
)
from tightlip.bounds.registry import lower_methods as registered_lower_methods
from tightlip.certificate import Certificate, Side
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NormName, parse_norm


def upper_bound_or_trivial(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    method: str = "trivial",
    **options: Any,
) -> Certificate:
    """``upper_bound(model, norm, method)``, or the trivial bound if the method does not apply."""
    try:
        return upper_bound(model, norm, method, **options)
    except MethodNotApplicableError as exc:
        certificate = upper_bound(model, norm, "trivial")
        return replace(
            certificate,
            notes=(*certificate.notes, f"fell back to trivial: {exc}"),
            details={**certificate.details, "requested_method": method, "fallback": True},
        )


def skipped(method: str, norm: NormName, side: Side, reason: str) -> Certificate:
    """A placeholder certificate for a method that does not apply (``+∞`` or ``0``, never wrong)."""
    return Certificate(
        value=math.inf if side == "upper" else 0.0,
        method=method,
        norm=norm,
        side=side,
        sound=True,
        notes=(f"not applicable: {reason}",),
        details={"skipped": True, "reason": reason},
    )


def timed_out(method: str, norm: NormName, seconds: float) -> Certificate:
    """A placeholder for an upper method stopped at its time limit (``+∞``, never wrong)."""
    reason = f"timed out after {seconds:.0f} s"
    return Certificate(
        value=math.inf,
        method=method,
        norm=norm,
        side="upper",
        sound=True,
        seconds=seconds,
        notes=(reason,),
        details={"skipped": True, "timed_out": True, "reason": reason},
    )


def portfolio(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    methods: Sequence[str] | None = None,
    lower_methods: Sequence[str] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    timeout: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Certificate]:
    """Certificates from every upper method (default: all registered) and lower method.

    ``lower_methods`` defaults to every registered lower method; each raising
    ``MethodNotApplicableError`` is kept as a skipped entry. ``options`` maps a method name
    to keyword options for it. Upper certificates come first, in ``methods`` order, then the
    lower ones; each applicable upper certificate has ``details["ratio_to_best_lower"]``.
    ``timeout`` limits each upper method to that many seconds
    (:func:`~tightlip.bounds.deadline.run_with_deadline`): one that runs longer is a skipped
    entry with ``details["timed_out"]``. ``progress`` is called with a line before each method.
    """
    chain = to_chain(model)
    norm_name = parse_norm(norm)
    options = options or {}
    uppers = [UPPER_BOUNDS.resolve(m) for m in methods] if methods is not None else upper_methods()
    lowers = (
        [LOWER_BOUNDS.resolve(m) for m in lower_methods]
        if lower_methods is not None
        else registered_lower_methods()
    )
    upper_certs: list[Certificate] = []
    for index, name in enumerate(uppers, start=1):
        if progress is not None:
            limit = f", time limit {timeout:g} s" if timeout is not None else ""
            progress(f"[{index}/{len(uppers)}] {name}{limit}")
        call = partial(upper_bound, chain, norm_name, name, **options.get(name, {}))
        try:
            result = run_with_deadline(call, timeout)
        except MethodNotApplicableError as exc:
            upper_certs.append(skipped(name, norm_name, "upper", str(exc)))
            continue
        if isinstance(result, TimedOut):
            upper_certs.append(timed_out(name, norm_name, result.seconds))
        else:
            upper_certs.append(result)
    lower_certs: list[Certificate] = []
    for name in lowers:
        try:
            lower_certs.append(lower_bound(chain, norm_name, name, **options.get(name, {})))
        except MethodNotApplicableError as exc:
            lower_certs.append(skipped(name, norm_name, "lower", str(exc)))
    best_lower = max((c.value for c in lower_certs if not c.details.get("skipped")), default=0.0)
    rated = [
        c
        if c.details.get("skipped")
        else replace(
            c,
            details={
                **c.details,
                "ratio_to_best_lower": c.value / best_lower if best_lower > 0 else math.inf,
            },
        )
        for c in upper_certs
    ]
    return rated + lower_certs
