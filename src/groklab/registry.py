"""Name → constructor registries: models, tasks, operations, losses, interventions.

A duplicate name raises at import time; an unknown name lists the valid choices and the closest
matches, so a typo in a config reads as one clear line.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """Bad user input: the message names the field and the valid choices."""


class Registry(Generic[T]):
    """A name → object mapping with loud duplicates and helpful misses."""

    def __init__(self, kind: str, field: str):
        self.kind = kind
        self.field = field  # the config field that names entries, for error messages
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"duplicate {self.kind} {name!r}")
            self._items[name] = obj
            self._docs[name] = doc or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(self.unknown(name))
        return self._items[name]

    def unknown(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        return f"{self.field}={name!r} is not a known {self.kind}{hint}; choose one of: {', '.join(self._items)}"

    def doc(self, name: str) -> str:
        return self._docs[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        return list(self._items)
