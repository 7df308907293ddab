"""Name → entry registries: tasks, models, losses (and operations, interventions, checks).

A duplicate name raises at import time; an unknown name lists the valid choices and the closest
matches (:func:`suggest`), so a typo in a config reads as one clear line.

The registries that config validation reads — :data:`TASKS`, :data:`MODELS`, :data:`LOSSES` —
are created here, below every other layer, so `config.py` asks them for names and rules without
importing the modules that fill them (those modules import `config` for its types: arrows run
one way). Each names its *providers*, the modules that register the built-in entries; they are
imported on the first lookup. An extension module registers its own entries when it is imported
(see docs/extending.md)::

    @MODELS.register("my_mlp", doc="...")
    class MyMLP(MemberModel): ...
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["ConfigError", "Registry", "suggest", "TASKS", "MODELS", "LOSSES"]


class ConfigError(ValueError):
    """Bad user input: the message names the field and the valid choices."""


def suggest(name: object, choices: Iterable[str]) -> str:
    """` (did you mean 'a', 'b'?)` for the closest of `choices` to `name`, or '' if none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=3)
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


class Registry(Generic[T]):
    """A name → object mapping with loud duplicates and helpful misses.

    Args:
        kind: what an entry is, for messages ("model").
        field: the config field that names entries ("model.name").
        providers: modules that register the built-in entries, imported on first lookup.
    """

    def __init__(self, kind: str, field: str, providers: tuple[str, ...] = ()):
        self.kind = kind
        self.field = field
        self._providers = providers
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._checks: list[Callable[[Any], None]] = []

    def _load(self) -> None:
        providers, self._providers = self._providers, ()  # cleared first: providers register into us
        try:
            for module in providers:
                importlib.import_module(module)
        except BaseException:
            self._providers = providers  # a failed import is retried (and reported) on the next lookup
            raise

    def register(self, name: str, doc: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"duplicate {self.kind} {name!r}")
            self._items[name] = obj
            self._docs[name] = doc or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return deco

    def remove(self, name: str) -> None:
        """Forget an entry (tests that register a toy entry clean up with this)."""
        self._items.pop(name)
        self._docs.pop(name)

    def cross_check(self, fn: Callable[[Any], None]) -> Callable[[Any], None]:
        """Register a rule `fn(run_cfg)` (raising ConfigError) that config validation runs for every
        run: a rule of this registry's domain that spans config sections (e.g. a loss that
        normalizes its logits cannot follow a softmax head)."""
        self._checks.append(fn)
        return fn

    def check(self, run_cfg: Any) -> None:
        """Run the registry's cross-checks on a whole run config."""
        self._load()
        for fn in self._checks:
            fn(run_cfg)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise ConfigError(self.unknown(name))
        return self._items[name]

    def unknown(self, name: str, field: str | None = None) -> str:
        """The message for an unknown name (`field` replaces the registry's own, e.g. in phases)."""
        self._load()
        return (f"{field or self.field}={name!r} is not a known {self.kind}{suggest(name, self._items)}; "
                f"choose one of: {', '.join(self._items)}")

    def doc(self, name: str) -> str:
        self._load()
        return self._docs[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._items))

    def names(self) -> list[str]:
        self._load()
        return list(self._items)


TASKS: Registry[Any] = Registry("task", "data.task", providers=("groklab.data",))
"""Tasks (`data.task`): classes with `inputs`, `build(data_cfg)`, `split(data_cfg, task_data)`."""
MODELS: Registry[Any] = Registry("model", "model.name", providers=("groklab.models",))
"""Models (`model.name`): `MemberModel` subclasses."""
LOSSES: Registry[Any] = Registry("loss", "train.loss", providers=("groklab.train.losses",))
"""Losses (`train.loss`): fn(outputs (N, B, C), targets (N, B)) → per-example losses (N, B)."""
