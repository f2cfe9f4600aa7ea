"""One registry per kind of plug-in (datasets, encoders, models, variants, metrics).

Names are the exact CLI names. Registering a name twice is a bug and raises; looking up an unknown name
is a user error that lists the known names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from xmlbench.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def add(o: T) -> T:
            for n in (name, *aliases):
                if n in self._items or n in self._aliases:
                    raise ValueError(f"{self.kind} {n!r} is registered twice")
            self._items[name] = o
            for a in aliases:
                self._aliases[a] = name
            return o

        if obj is None:
            return add
        return add(obj)

    def canonical(self, name: str) -> str:
        name = self._aliases.get(name, name)
        if name not in self._items:
            known = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return name

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        return name in self._items or name in self._aliases

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

