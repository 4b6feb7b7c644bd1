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

Merged layers. A chain whose consecutive linear layers were merged holds *rounded* dense
matrices (:attr:`~tightlip.model.LayerChain.exact` is ``False``). Each method declares at
registration how it stays sound on such a chain (``dense_error``):

* ``"included"``: the method accounts for it itself (the trivial bound multiplies certified
  operator norms; the witness lower bounds deflate by the chain's Jacobian error);
* ``"add"`` (the default for upper bounds): the method's bound holds for every product
  ``Ŵ_L Λ ⋯ Λ Ŵ_1`` with ``Λ`` in its class of activation Jacobians (slope-restricted SDP
  methods), so the runner adds :meth:`~tightlip.model.LayerChain.jacobian_error_bound`;
* ``"refuse"`` (the default for lower bounds): exact methods (region enumeration, MILP) read the
  activation pattern of the rounded network, which the error cannot be added to; the runner
  raises :class:`~tightlip.errors.MethodNotApplicableError`.

Method modules import this module, never the package ``tightlip.bounds``: the package imports
them to register them, so importing it back from them would be a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from torch import nn

from tightlip.certificate import Certificate
from tightlip.model import VERIFIER_DENSE_ENTRIES, LayerChain, to_chain
from tightlip.norms import NormName, parse_norm, round_up
from tightlip.registry import Registry
from tightlip.threads import uses_library_threads

BoundMethod = Callable[..., Certificate]
DenseErrorPolicy = Literal["included", "add", "refuse"]


@dataclass(frozen=True)
class BoundMethodEntry:
    """A registered method and how it stays sound on merged layers (module docstring)."""

    run: BoundMethod
    dense_error: DenseErrorPolicy


#: upper-bound methods: certificates never below the true Lipschitz constant
UPPER_BOUNDS: Registry[BoundMethodEntry] = Registry("upper-bound method")
#: lower-bound methods: certificates never above it (or exact values)
LOWER_BOUNDS: Registry[BoundMethodEntry] = Registry("lower-bound method")


def register_upper(
    name: str, *, aliases: Iterable[str] = (), dense_error: DenseErrorPolicy = "add"
) -> Callable[[BoundMethod], BoundMethod]:
    """Decorator: register an upper-bound method under ``name`` (lower case, hyphens)."""
    return _register(UPPER_BOUNDS, name, aliases, dense_error)


def register_lower(
    name: str, *, aliases: Iterable[str] = (), dense_error: DenseErrorPolicy = "refuse"
) -> Callable[[BoundMethod], BoundMethod]:
    """Decorator: register a lower-bound (or exact) method under ``name``."""
    if dense_error == "add":
        raise ValueError("adding the dense error to a lower bound would make it unsound")
    return _register(LOWER_BOUNDS, name, aliases, dense_error)


def _register(
    registry: Registry[BoundMethodEntry],
    name: str,
    aliases: Iterable[str],
    dense_error: DenseErrorPolicy,
) -> Callable[[BoundMethod], BoundMethod]:
    def decorate(fn: BoundMethod) -> BoundMethod:
        registry.register(name, BoundMethodEntry(fn, dense_error), aliases=aliases)
        return fn

    return decorate


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


@uses_library_threads
def run_method(
    registry: Registry[BoundMethodEntry],
    model: nn.Module | LayerChain,
    norm: NormName | str,
    method: str,
    options: dict[str, Any],
) -> Certificate:
    """Resolve ``method``, run it on ``to_chain(model)``, and stamp its name and wall time.

    On a chain with merged layers the method's ``dense_error`` policy is applied (module
    docstring). The method runs on one torch thread unless the user chose a count
    (:mod:`tightlip.threads`).
    """
    name = registry.resolve(method)
    entry = registry.get(name)
    chain = to_chain(model)
    norm_name = parse_norm(norm)
    start = time.perf_counter()
    zero = zero_layer(chain)
    if zero is not None and registry is UPPER_BOUNDS:
        return constant_network_bound(name, norm_name, zero, time.perf_counter() - start)
    if not chain.exact and entry.dense_error == "refuse":
        for step in chain.affine_steps:
            step.exact_weight(name)  # raises MethodNotApplicableError naming the step
    certificate = entry.run(chain, norm_name, **options)
    if not chain.exact and entry.dense_error == "add":
        certificate = with_dense_error(certificate, chain.jacobian_error_bound(norm_name))
    return replace(certificate, method=name, seconds=time.perf_counter() - start)


def zero_layer(chain: LayerChain) -> str | None:
    """The name of an affine step whose matrix is exactly zero (then ``f`` is constant), or
    ``None``. Only steps small enough for the dense verifiers (:data:`VERIFIER_DENSE_ENTRIES`)
    are read; a pruned dense layer or a convolution that reads only padding is one."""
    for step in chain.affine_steps:
        if step.in_features * step.out_features > VERIFIER_DENSE_ENTRIES or not step.exact:
            continue
        if not bool(step.weight.any()):
            return step.name
    return None


def constant_network_bound(
    method: str, norm: NormName, layer: str, seconds: float
) -> Certificate:
    """``Lip(f) = 0`` exactly: layer ``layer`` maps everything to zero, so ``f`` is constant.

    Every upper-bound method answers this case the same way, rather than dividing by the
    zero norm (the audit's crash in ECLipsE) or handing a solver a degenerate problem."""
    return Certificate(
        value=0.0,
        method=method,
        norm=norm,
        side="upper",
        sound=True,
        seconds=seconds,
        notes=(f"layer {layer!r} is exactly zero: the network is constant, Lip = 0",),
        details={"zero_layer": layer},
    )


def with_dense_error(certificate: Certificate, error: float) -> Certificate:
    """An upper certificate raised by ``error`` (rounded up), with a note and the amount."""
    if certificate.side != "upper":
        raise ValueError(f"{certificate.method}: only an upper bound may be raised")
    return replace(
        certificate,
        value=round_up(certificate.value + error),
        notes=(*certificate.notes, f"+ {error:.3g} for the rounding of merged linear layers"),
        details={**certificate.details, "merged_layer_error": error},
    )
