"""The runs table of a sweep: one row per stored run, the input of every sweep analysis.

    from groklab.store import Store
    from groklab.sweep import runs_table
    from groklab.analysis import critical_fraction
    table = runs_table(Store("runs"), "mlp-fraction")
    critical_fraction(table).d_crit

Columns: ``run_id, name, status, group, member``; the swept fields under their dotted names
(``data.frac_train``, ``train.seed``, ...: every config field that varies across the sweep's
runs, plus any asked for), ``n_train`` (training examples, the D of the critical-size
analysis), and the grokking metrics of :func:`groklab.analysis.grokking_metrics` computed
from each run's metric history (``t_train99, t_val99, t_val95, final_val_acc, steps, ...``).
"""
from __future__ import annotations

import json
import math
from typing import Sequence

import pandas as pd

from ..config import ConfigError, RunCfg, flatten, from_dict, get_field, to_dict
from ..store import TERMINAL
from .plan import EXEC_FIELDS

__all__ = ["runs_table", "varying_fields"]


def varying_fields(configs: Sequence[dict]) -> list[str]:
    """Dotted config fields whose values differ across `configs` (execution fields ignored)."""
    flats = [flatten(c) for c in configs]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    return [k for k in keys if k not in EXEC_FIELDS
            and len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]


def _n_train(cfg: RunCfg, cache: dict) -> float:
    """Training examples of a run (the task's own split), NaN if its data cannot be built."""
    data = to_dict(cfg.data)
    key = json.dumps({k: v for k, v in data.items() if k not in ("frac_train", "split_seed", "label_noise",
                                                                   "n_train")}, sort_keys=True)
    try:
        from ..data import TASKS
        if key not in cache:
            task_def = TASKS.get(cfg.data.task)()
            cache[key] = (task_def, task_def.build(cfg.data))
        task_def, task = cache[key]
        return float(len(task_def.split(cfg.data, task)[0]))
    except Exception:  # noqa: BLE001 - a missing data file must not break the table
        cache[key] = None
        return math.nan


def runs_table(store, sweep: str, fields: Sequence[str] = (), *, threshold: float = 0.99,
               include_incomplete: bool = False) -> pd.DataFrame:
    """One row per run of `sweep`: swept fields, status and grokking metrics.

    Args:
        store: a :class:`groklab.store.Store`.
        sweep: the sweep name.
        fields: extra dotted config fields to include as columns (the varying ones always are).
        threshold: accuracy level of ``t_train99`` / ``t_val99``.
        include_incomplete: also include runs that are running, stopped or failed (their
            metrics describe a partial run); by default only finished and diverged runs.
    Returns:
        The table (``attrs['fields']``: the config columns; ``attrs['swept']``: those that vary;
        ``attrs['excluded']``: how many incomplete runs were left out).
    Raises:
        ConfigError: if the sweep has no runs or a requested field does not exist.
    """
    from ..analysis import grokking_metrics

    rows = store.list(sweep=sweep)
    if not rows:
        raise ConfigError(f"sweep {sweep!r} has no runs in the store at {store.paths.root}; see `groklab ls`")
    kept = [r for r in rows if include_incomplete or r["status"] in TERMINAL]
    cfgs = [from_dict(RunCfg, r["config"]) for r in kept]
    swept = varying_fields([to_dict(c) for c in cfgs])
    cols = swept + [f for f in fields if f not in swept]
    cache: dict = {}
    out = []
    for row, cfg in zip(kept, cfgs):
        rec = {"run_id": row["id"], "name": row["name"], "status": row["status"], "group": row["group_id"],
               "member": row["member"]}
        for f in cols:
            try:
                rec[f] = get_field(cfg, f)
            except AttributeError:
                raise ConfigError(f"{f!r} is not a config field (e.g. data.frac_train, optim.lr)") from None
        rec["n_train"] = _n_train(cfg, cache)
        hist = store.metrics(row["id"])
        if len(hist) and {"train_acc", "val_acc"} <= set(hist.columns):
            rec.update(grokking_metrics(hist, threshold=threshold).as_dict())
        out.append(rec)
    table = pd.DataFrame(out)
    table.attrs.update(fields=cols, swept=swept, excluded=len(rows) - len(kept), sweep=sweep)
    return table
