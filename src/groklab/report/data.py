"""What reports, comparisons and exports read from the store: runs, their flat configs, the
fields that differ between them, grokking metrics and curves decimated on a log grid.

    views = collect_runs(Store("runs"), run_ids=[3, 4, 7])
    views = collect_runs(Store("runs"), sweep="mlp-fraction")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..analysis import GrokMetrics, grokking_metrics
from ..config import flatten
from ..registry import ConfigError
from ..store import Store
from ..sweep.table import varying_fields

__all__ = ["CURVE_KEYS", "RunView", "collect_runs", "curves", "differing_fields", "flatten", "histories",
           "log_grid_indices", "select_rows"]


def differing_fields(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Dotted fields whose values differ between (nested or flat) configs, in config order; names,
    descriptions and execution fields such as threads never count (the sweep planner's rule)."""
    return varying_fields(list(configs))

CURVE_KEYS = ("train_acc", "val_acc", "train_loss", "val_loss", "param_norm")


@dataclass(frozen=True)
class RunView:
    """One stored run as the report sees it.

    Attributes:
        config: the stored config flattened to dotted keys (``optim.lr``); lists stay lists.
        metrics: grokking metrics of the full history (None when nothing was logged yet).
        history: the full metric history, one row per evaluation (``step`` + one column per key).
    """

    run_id: int
    name: str
    status: str
    sweep: str | None
    created: str
    description: str
    config: dict[str, Any]
    summary: dict[str, Any]
    metrics: GrokMetrics | None
    history: pd.DataFrame = field(repr=False)
    group: str = ""
    member: int = 0
    trained_in: str | None = None
    """The sweep that trained the run (differs from `sweep` for a run the sweep reuses)."""

    @property
    def phases(self) -> list[tuple[int, str]]:
        """(start step, label) of each phase of the schedule."""
        return [(int(p.get("start", 0)), p.get("name") or f"phase {i + 1}")
                for i, p in enumerate(self.config.get("train.phases") or [])]


def select_rows(store: Store, run_ids: Sequence[int] = (), sweep: str | None = None) -> list[dict]:
    """Stored rows of the given runs (in the order given) or of a sweep; ConfigError when missing."""
    if not store.exists():
        raise ConfigError(f"no store at {store.paths.root}; train something first or pass --store")
    if sweep is not None:
        rows = store.list(sweep=sweep)
        if not rows:
            raise ConfigError(f"sweep {sweep!r} has no runs in the store at {store.paths.root}; see `groklab ls`")
        return rows
    if not run_ids:
        raise ConfigError("give run ids or a sweep name")
    rows = []
    for r in dict.fromkeys(int(i) for i in run_ids):  # keep the order, drop repeats
        try:
            rows.append(store.get(r))
        except KeyError:
            raise ConfigError(f"run {r} is not in the store at {store.paths.root}; see `groklab ls`") from None
    return rows


def histories(store: Store, run_ids: Sequence[int], keys: Sequence[str] | None = None) -> dict[int, pd.DataFrame]:
    """Wide metric histories of many runs from one long read (run_id → DataFrame; `keys`: only these).

    The pivot is done with numpy per run: pandas' unstack + groupby cost about as much as the
    whole rest of a 100-run report.
    """
    long = store.metrics_long(run_ids, keys)
    out = {int(r): pd.DataFrame({"step": pd.Series(dtype="int64")}) for r in run_ids}
    if long.empty:
        return out
    rid = long["run_id"].to_numpy()
    step, key, value = long["step"].to_numpy(), long["key"].to_numpy(), long["value"].to_numpy(dtype=float)
    bounds = np.flatnonzero(np.diff(rid)) + 1  # rows arrive grouped by run
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rid)]):
        steps, s_idx = np.unique(step[lo:hi], return_inverse=True)
        names, k_idx = np.unique(key[lo:hi], return_inverse=True)
        grid = np.full((len(names), len(steps)), np.nan)
        grid[k_idx, s_idx] = value[lo:hi]
        out[int(rid[lo])] = pd.DataFrame({"step": steps.astype("int64"), **dict(zip(names.tolist(), grid))})
    return out


def collect_runs(store: Store, run_ids: Sequence[int] = (), sweep: str | None = None,
                 threshold: float = 0.99) -> list[RunView]:
    """Read runs (by id, or every run of a sweep) with their histories and grokking metrics."""
    rows = select_rows(store, run_ids, sweep)
    hists = histories(store, [r["id"] for r in rows], CURVE_KEYS)
    views = []
    for row in rows:
        hist = hists[row["id"]]
        ok = len(hist) and {"train_acc", "val_acc"} <= set(hist.columns)
        views.append(RunView(
            run_id=int(row["id"]), name=row["name"], status=row["status"], sweep=row.get("sweep"),
            created=row["created"], description=row["config"].get("description") or "",
            config=flatten(row["config"]), summary=row["summary"],
            metrics=grokking_metrics(hist[["step", "train_acc", "val_acc"]], threshold=threshold) if ok else None,
            history=hist, group=row["group_id"], member=int(row["member"]),
            trained_in=row.get("trained_in", row.get("sweep"))))
    return views


def log_grid_indices(steps: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ~max_points rows, evenly spread on a log-step axis (first and last
    always kept): what a log axis shows, at a size a page with hundreds of runs can carry."""
    n = len(steps)
    if n <= max_points:
        return np.arange(n)
    lo = max(float(steps[0]), 1.0)
    grid = np.geomspace(lo, max(float(steps[-1]), lo), max_points)
    idx = np.clip(np.searchsorted(steps, grid), 0, n - 1)
    return np.unique(np.concatenate([[0], idx, [n - 1]]))


def round_sig(values: np.ndarray, digits: int) -> list:
    """Round to `digits` significant digits (NaN/inf → None). The nearest double to a short
    decimal prints short, so the page carries '0.9912', not '0.99123456789'."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v) & (v != 0)
    mag = np.floor(np.log10(np.abs(np.where(finite, v, 1.0))))
    scale = 10.0 ** (digits - 1 - mag)
    r = np.where(finite, np.round(v * scale) / scale, v)
    return [x if np.isfinite(x) else None for x in r.tolist()]


def curves(view: RunView, max_points: int = 200, digits: int = 5) -> dict[str, list]:
    """The run's curves for a log-step axis: step 0 dropped, decimated, rounded to `digits`
    significant digits (missing values as None)."""
    h = view.history
    if "step" not in h or h.empty:
        return {"step": []}
    h = h[h["step"] > 0].sort_values("step")
    idx = log_grid_indices(h["step"].to_numpy(), max_points)
    out: dict[str, list] = {"step": h["step"].to_numpy()[idx].astype(int).tolist()}
    for key in CURVE_KEYS:
        if key in h:
            out[key] = round_sig(h[key].to_numpy(dtype=float)[idx], digits)
    return out
