"""``Registry[T]``: the one way tightlip registers named things.

Upper- and lower-bound methods, training methods, model kinds, activations and losses each
live in one :class:`Registry`. A name a user types is normalised before lookup: lower case,
underscores read as hyphens, so ``eclipse_fast`` and ``ECLipsE-Fast`` both find
``eclipse-fast``. Explicit aliases (other spellings) may be added per entry. An unknown name
raises :class:`~tightlip.errors.UnknownNameError` listing every choice.

The registry module depends on nothing else in tightlip except :mod:`tightlip.errors`, so any
module may import it without creating a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar, overload

from tightlip.errors import UnknownNameError

T = TypeVar("T")


def canonical_name(name: str) -> str:
    """``"Eclipse_Fast"`` → ``"eclipse-fast"``: lower case, hyphens, no outer blanks."""
    return str(name).strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in error messages, e.g. "activation")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    @overload
    def register(self, name: str, entry: T, *, aliases: Iterable[str] = ()) -> T: ...

    @overload
    def register(
        self, name: str, entry: None = None, *, aliases: Iterable[str] = ()
    ) -> Callable[[T], T]: ...

    def register(
        self, name: str, entry: T | None = None, *, aliases: Iterable[str] = ()
    ) -> T | Callable[[T], T]:
        """Register ``entry`` under ``name``; without ``entry``, return a decorator.

        A name (or alias) that is already taken raises ``ValueError``: registering twice is a
        programming error, not something to overwrite silently.
        """
        key = canonical_name(name)
        if key != name:
            raise ValueError(f"{self.kind} names are lower-case with hyphens: {name!r}")
        alias_keys = [canonical_name(a) for a in aliases]

        def add(value: T) -> T:
            for taken in (key, *alias_keys):
                if taken in self._entries or taken in self._aliases:
                    raise ValueError(f"{self.kind} {taken!r} is registered twice")
            self._entries[key] = value
            for alias in alias_keys:
                self._aliases[alias] = key
            return value

        return add if entry is None else add(entry)

    def resolve(self, name: str) -> str:
        """The registered name that ``name`` (any accepted spelling) refers to."""
        key = canonical_name(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            )
        return key

    def get(self, name: str) -> T:
        return self._entries[self.resolve(name)]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> tuple[tuple[str, T], ...]:
        return tuple(self._entries.items())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name)
        return self._aliases.get(key, key) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
