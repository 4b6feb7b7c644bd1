"""``upper_bound`` and ``lower_bound``: one interface over every verifier in tightlip.

Methods register themselves with :func:`register_upper` / :func:`register_lower`. Each takes a
:class:`~tightlip.model.LayerChain` and a norm (plus keyword options) and returns a
:class:`~tightlip.certificate.Certificate`; timing is filled in here. A method that does not
apply to a model raises :class:`MethodNotApplicableError` with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from tightlip.certificate import Certificate
from tightlip.errors import MethodNotApplicableError
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NormName, parse_norm

BoundMethod = Callable[..., Certificate]

_UPPER: dict[str, BoundMethod] = {}
_LOWER: dict[str, BoundMethod] = {}


def register_upper(name: str) -> Callable[[BoundMethod], BoundMethod]:
    def decorate(fn: BoundMethod) -> BoundMethod:
        _UPPER[name] = fn
        return fn

    return decorate


def register_lower(name: str) -> Callable[[BoundMethod], BoundMethod]:
    def decorate(fn: BoundMethod) -> BoundMethod:
        _LOWER[name] = fn
        return fn

    return decorate


def upper_methods() -> tuple[str, ...]:
    return tuple(_UPPER)


def lower_methods() -> tuple[str, ...]:
    return tuple(_LOWER)


def upper_bound(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    method: str = "trivial",
    **options: Any,
) -> Certificate:
    """A certified upper bound on the Lipschitz constant of ``model`` in ``‖·‖_p``."""
    return _run(_UPPER, "upper", model, norm, method, options)


def lower_bound(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    method: str = "gradient",
    **options: Any,
) -> Certificate:
    """A lower bound on the Lipschitz constant (a witness value ``‖J(x)‖`` or an exact value)."""
    return _run(_LOWER, "lower", model, norm, method, options)


def _run(
    registry: dict[str, BoundMethod],
    side: str,
    model: nn.Module | LayerChain,
    norm: NormName | str,
    method: str,
    options: dict[str, Any],
) -> Certificate:
    if method not in registry:
        raise MethodNotApplicableError(
            f"unknown {side}-bound method {method!r}: choose one of {', '.join(registry)}"
        )
    chain = to_chain(model)
    start = time.perf_counter()
    certificate = registry[method](chain, parse_norm(norm), **options)
    return replace(certificate, seconds=time.perf_counter() - start)


# Importing the method modules registers them.
from tightlip.bounds import (  # noqa: E402,F401
    eclipse,
    exact,
    lipsdp,
    lower,
    milp,
    syed_hu,
    trivial,
)
