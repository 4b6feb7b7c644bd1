"""Registry[T]: one way to register names, one spelling, one error listing the choices."""

from __future__ import annotations

import pytest

from tightlip.errors import TightlipError, UnknownNameError
from tightlip.registry import Registry, canonical_name


def test_lookup_accepts_underscores_and_case() -> None:
    registry: Registry[int] = Registry("bound method")
    registry.register("eclipse-fast", 1, aliases=("fast",))
    assert registry.get("eclipse_fast") == 1
    assert registry.get("ECLipsE-Fast") == 1
    assert registry.get("fast") == 1
    assert registry.resolve("Eclipse_Fast") == "eclipse-fast"
    assert "eclipse_fast" in registry and "slow" not in registry
    assert registry.names() == ("eclipse-fast",)


def test_decorator_form_registers_and_returns_the_entry() -> None:
    registry: Registry[object] = Registry("loss")

    @registry.register("offset")
    def offset() -> str:
        return "o"

    assert registry.get("offset") is offset


def test_unknown_name_lists_every_choice_and_is_a_user_error() -> None:
    registry: Registry[int] = Registry("activation")
    registry.register("abs", 1)
    registry.register("sincos", 2)
    with pytest.raises(UnknownNameError, match=r"unknown activation 'tanh': choose one of abs, sincos"):
        registry.get("tanh")
    assert issubclass(UnknownNameError, TightlipError)
    assert issubclass(UnknownNameError, ValueError)


def test_double_registration_and_bad_spelling_are_refused() -> None:
    registry: Registry[int] = Registry("method")
    registry.register("syed-hu", 1, aliases=("sh",))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("syed-hu", 2)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("other", 3, aliases=("syed_hu",))
    with pytest.raises(ValueError, match="lower-case with hyphens"):
        registry.register("Syed_Hu2", 4)
    assert canonical_name(" Local_Lip ") == "local-lip"
