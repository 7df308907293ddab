"""`groklab export`: runs to CSV or Parquet for pandas, R, spreadsheets or a colleague.

Two tables: the metrics in long form (``run, step, metric, value``: every stored value) and the
runs (identity, flattened config under dotted names, the stored summary as ``summary.*`` and the
grokking metrics). ``FILE`` gets the metrics and ``FILE`` with ``.runs`` before its suffix the runs.

    metrics_path, runs_path = export_runs(store, [3, 4], fmt="parquet", path="runs.parquet")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..registry import ConfigError
from ..store import Store
from .data import RunView, collect_runs

FORMATS = ("csv", "parquet")


def metrics_table(store: Store, run_ids: Sequence[int]) -> pd.DataFrame:
    """Every stored metric value of the runs: columns run, step, metric, value."""
    long = store.metrics_long(run_ids)
    return long.rename(columns={"run_id": "run", "key": "metric"})[["run", "step", "metric", "value"]]


def _uniform(col: pd.Series) -> pd.Series:
    """Lists as JSON text, and a column mixing types (batch_size 512 vs "full") as text: columnar
    formats need one type per column."""
    col = col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    kinds = {type(v) for v in col if v is not None and not (isinstance(v, float) and pd.isna(v))}
    if len(kinds) > 1 and not kinds <= {int, float}:
        col = col.map(lambda v: None if v is None else str(v))
    return col


def runs_table(views: Sequence[RunView]) -> pd.DataFrame:
    """One row per run: run, name, status, sweep, trained_in (the sweep that trained it: another, or
    none, for a run the sweep reuses), group, member, created, config fields, summary.*, and the
    grokking metrics (t_train99, t_val99, delay_ratio, final accuracies, ...)."""
    rows = []
    for v in views:
        row = {"run": v.run_id, "name": v.name, "status": v.status, "sweep": v.sweep, "trained_in": v.trained_in,
               "group": v.group, "member": v.member, "created": v.created}
        row.update({k: x for k, x in v.config.items() if k not in row})  # the stored name wins over the config's
        row.update({f"summary.{k}": s for k, s in v.summary.items()})
        if v.metrics is not None:
            row.update(v.metrics.as_dict())
        rows.append(row)
    df = pd.DataFrame(rows)
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = _uniform(df[c])
    return df


def runs_path(path: str | Path) -> Path:
    """Where the runs table goes: ``frac.parquet`` → ``frac.runs.parquet``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.runs{p.suffix}")


def export_runs(store: Store, run_ids: Sequence[int] = (), sweep: str | None = None, *, fmt: str = "csv",
                path: str | Path = "export.csv") -> tuple[Path, Path]:
    """Write the metrics (long form) to `path` and the runs table beside it; return both paths.

    Raises:
        ConfigError: unknown runs or sweep, an unknown format, or Parquet without pyarrow.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt!r} must be one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install pyarrow "
                              "(or pip install 'groklab[parquet]')") from None
    views = collect_runs(store, run_ids, sweep)
    metrics = metrics_table(store, [v.run_id for v in views])
    runs = runs_table(views)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        metrics.to_csv(path, index=False)
        runs.to_csv(runs_path(path), index=False)
    else:
        metrics.to_parquet(path, index=False)
        runs.to_parquet(runs_path(path), index=False)
    return path, runs_path(path)
