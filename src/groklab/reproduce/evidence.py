"""What a criterion sees: the stored runs of each of a claim's run groups, and their metrics.

A group's runs are found by sweep name *and* run key (the same matching the sweep planner uses),
so runs of an older spec under the same name are ignored rather than judged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import pandas as pd

from ..analysis import GrokMetrics, grokking_metrics
from ..config import ConfigError, RunCfg, from_dict
from ..store import TERMINAL, trained_elsewhere
from ..sweep import SweepSpec, expand, run_key


@dataclass(frozen=True)
class StoredRun:
    """One finished run of a group: its config, metric history and grokking metrics."""

    run_id: int
    config: RunCfg
    history: pd.DataFrame
    metrics: GrokMetrics


@dataclass(frozen=True)
class GroupEvidence:
    """The runs a group asked for (`expected`) and those the store holds finished (`runs`)."""

    name: str
    sweep: str
    expected: int
    runs: tuple[StoredRun, ...] = ()
    busy: int = 0
    """Of the runs still missing, how many another live process is training now."""

    @property
    def complete(self) -> bool:
        return self.expected > 0 and len(self.runs) >= self.expected

    @property
    def run_ids(self) -> list[int]:
        return [r.run_id for r in self.runs]


@dataclass(frozen=True)
class ProtocolEvidence:
    """A protocol group: one :class:`~groklab.reproduce.protocols.ProtocolRun` per seed that the
    store holds whole (`runs`), out of `expected`; `error` when a component failed its budget."""

    name: str
    protocol: str
    expected: int
    runs: tuple = ()
    error: str = ""
    missing: str = ""
    """The first run the store lacked (when `runs` is short)."""

    @property
    def complete(self) -> bool:
        return self.expected > 0 and len(self.runs) >= self.expected

    @property
    def run_ids(self) -> list[int]:
        return list(dict.fromkeys(i for r in self.runs for i in r.run_ids))


@dataclass(frozen=True)
class Evidence:
    """Group name → :class:`GroupEvidence` (or :class:`ProtocolEvidence`) of one claim at one size."""

    groups: Mapping[str, GroupEvidence | ProtocolEvidence] = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.groups[name]

    @property
    def run_ids(self) -> list[int]:
        return list(dict.fromkeys(i for g in self.groups.values() for i in g.run_ids))

    @property
    def missing(self) -> dict[str, tuple[int, int]]:
        """Groups without all their runs: name → (stored, expected)."""
        return {n: (len(g.runs), g.expected) for n, g in self.groups.items() if not g.complete}


def collect_group(store, name: str, spec: SweepSpec) -> GroupEvidence:
    """The finished runs of `spec` in `store` (matched by sweep name and run key)."""
    keys = {run_key(c) for c in expand(spec)}
    runs: dict[str, StoredRun] = {}
    busy: set[str] = set()
    for row in store.list(sweep=spec.name) if store.exists() else []:
        try:
            cfg = from_dict(RunCfg, row["config"])
        except ConfigError:  # written by another groklab version
            continue
        key = run_key(cfg)
        if key not in keys or key in runs:
            continue
        if row["status"] not in TERMINAL:
            if trained_elsewhere(row):
                busy.add(key)
            continue
        hist = store.metrics(row["id"])
        if not len(hist) or not {"train_acc", "val_acc"} <= set(hist.columns):
            continue
        runs[key] = StoredRun(int(row["id"]), cfg, hist, grokking_metrics(hist))
    ordered = tuple(sorted(runs.values(), key=lambda r: r.run_id))
    return GroupEvidence(name=name, sweep=spec.name, expected=len(keys), runs=ordered, busy=len(busy - set(runs)))
