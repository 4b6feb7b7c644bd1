"""The bound-method registries and the runner behind ``upper_bound`` / ``lower_bound``.

A method is a function ``method(chain, norm, **options) -> Certificate`` taking a
:class:`~tightlip.model.LayerChain` and a parsed norm. It registers itself with
:func:`register_upper` or :func:`register_lower` under a lower-case, hyphenated name
(``eclipse-fast``); users may type the underscore spelling too (``eclipse_fast``), which
:class:`~tightlip.registry.Registry` normalises. A method that does not apply to a model raises
:class:`~tightlip.errors.MethodNotApplicableError` with the reason.

The runner (:func:`upper_bound`, :func:`lower_bound`) converts the model with
:func:`~tightlip.model.to_chain`, parses the norm, times the call and fills in the certificate's
``seconds`` and its registered ``method`` name, so a method never reports its own timing.

Method modules import this module, never the package ``tightlip.bounds``: the package imports
them to register them, so importing it back from them would be a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from torch import nn

from tightlip.certificate import Certificate
from tightlip.model import LayerChain, to_chain
from tightlip.norms import NormName, parse_norm
from tightlip.registry import Registry

BoundMethod = Callable[..., Certificate]

#: upper-bound methods: certificates never below the true Lipschitz constant
UPPER_BOUNDS: Registry[BoundMethod] = Registry("upper-bound method")
#: lower-bound methods: certificates never above it (or exact values)
LOWER_BOUNDS: Registry[BoundMethod] = Registry("lower-bound method")


def register_upper(
    name: str, *, aliases: Iterable[str] = ()
) -> Callable[[BoundMethod], BoundMethod]:
    """Decorator: register an upper-bound method under ``name`` (lower case, hyphens)."""
    return UPPER_BOUNDS.register(name, aliases=aliases)


def register_lower(
    name: str, *, aliases: Iterable[str] = ()
) -> Callable[[BoundMethod], BoundMethod]:
    """Decorator: register a lower-bound (or exact) method under ``name``."""
    return LOWER_BOUNDS.register(name, aliases=aliases)


def upper_methods() -> tuple[str, ...]:
    """Registered upper-bound method names, in registration order."""
    return UPPER_BOUNDS.names()


def lower_methods() -> tuple[str, ...]:
    """Registered lower-bound method names, in registration order."""
    return LOWER_BOUNDS.names()


def upper_bound(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    method: str = "trivial",
    **options: Any,
) -> Certificate:
    """A certified upper bound on the Lipschitz constant of ``model`` in ``‖·‖_p → ‖·‖_p``.

    ``method`` is any spelling of a registered name (``eclipse-fast`` or ``eclipse_fast``);
    an unknown name raises :class:`~tightlip.errors.UnknownNameError` listing the choices.
    """
    return run_method(UPPER_BOUNDS, model, norm, method, options)


def lower_bound(
    model: nn.Module | LayerChain,
    norm: NormName | str = "2",
    method: str = "gradient",
    **options: Any,
) -> Certificate:
    """A lower bound on the Lipschitz constant (a witness value ``‖J(x)‖`` or an exact value)."""
    return run_method(LOWER_BOUNDS, model, norm, method, options)


def run_method(
    registry: Registry[BoundMethod],
    model: nn.Module | LayerChain,
    norm: NormName | str,
    method: str,
    options: dict[str, Any],
) -> Certificate:
    """Resolve ``method``, run it on ``to_chain(model)``, and stamp its name and wall time."""
    name = registry.resolve(method)
    chain = to_chain(model)
    norm_name = parse_norm(norm)
    start = time.perf_counter()
    certificate = registry.get(name)(chain, norm_name, **options)
    return replace(certificate, method=name, seconds=time.perf_counter() - start)
