"""``upper_bound`` and ``lower_bound``: one interface over every verifier in tightlip.

Methods register themselves in :mod:`tightlip.bounds.registry`; importing this package imports
every method module, so that all of them are registered. Each method takes a
:class:`~tightlip.model.LayerChain` and a norm (plus keyword options) and returns a
:class:`~tightlip.certificate.Certificate`; the runner fills in the timing. A method that does
not apply to a model raises :class:`MethodNotApplicableError` with the reason.

Upper-bound methods: ``trivial``, ``eclipse-fast``, ``eclipse``, ``syed-hu``, ``lipsdp``.
Lower-bound methods: ``gradient``, ``sampled``, ``exact-regions``, ``milp`` (the last two
return exact values when they finish). Underscore spellings (``eclipse_fast``) are accepted.
"""

from __future__ import annotations

from tightlip.bounds import eclipse, exact, lipsdp, lower, milp, syed_hu, trivial
from tightlip.bounds.check import check_lower
from tightlip.bounds.registry import (
    LOWER_BOUNDS,
    UPPER_BOUNDS,
    BoundMethod,
    BoundMethodEntry,
    lower_bound,
    lower_methods,
    register_lower,
    register_upper,
    upper_bound,
    upper_methods,
)
from tightlip.errors import MethodNotApplicableError

#: the method modules, imported for their registrations
METHOD_MODULES = (trivial, eclipse, syed_hu, lipsdp, lower, exact, milp)

__all__ = [
    "LOWER_BOUNDS",
    "METHOD_MODULES",
    "UPPER_BOUNDS",
    "BoundMethod",
    "BoundMethodEntry",
    "MethodNotApplicableError",
    "check_lower",
    "lower_bound",
    "lower_methods",
    "register_lower",
    "register_upper",
    "upper_bound",
    "upper_methods",
]
