"""The run store: SQLite (WAL) for runs and metrics, safetensors files for checkpoints.

Layout under the store root (``./runs`` by default, ``--store DIR`` or ``$GROKLAB_STORE``)::

    groklab.db                           runs, metrics (long form), schema version in user_version
    groups/<group>/checkpoint.safetensors   one checkpoint per trained group (ensemble or solo run)

Every write is one transaction (``BEGIN IMMEDIATE``, so concurrent writers queue on the lock
instead of deadlocking), so a crash never leaves a half-written row; checkpoints are written to a
temporary file and renamed. Row ↔ dict conversion lives only here.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "diverged", "stopped", "failed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    cfg_json TEXT NOT NULL,
    group_id TEXT NOT NULL,
    member INTEGER NOT NULL,
    sweep TEXT,
    groklab_version TEXT,
    torch_version TEXT,
    git_sha TEXT,
    summary_json TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS runs_group ON runs(group_id);
CREATE INDEX IF NOT EXISTS runs_sweep ON runs(sweep);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, key, step)
) WITHOUT ROWID;
"""


def default_root() -> Path:
    return Path(os.environ.get("GROKLAB_STORE", "runs"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


@dataclass(frozen=True)
class RunPaths:
    """Every file path of the store derives from its root."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / "groklab.db"

    def group_dir(self, group: str) -> Path:
        return self.root / "groups" / group

    def checkpoint(self, group: str) -> Path:
        return self.group_dir(group) / "checkpoint.safetensors"


class Store:
    """SQLite-backed run store. Safe for several processes writing at once."""

    def __init__(self, root: str | Path | None = None):
        self.paths = RunPaths(Path(root) if root else default_root())
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.paths.db, timeout=120, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=120000")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"store {self.paths.db} has schema {version}, newer than this groklab ({SCHEMA_VERSION})")
            if version < SCHEMA_VERSION:
                # Idempotent DDL in one script-level transaction: racing creators are harmless.
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            self._conn = conn
        return self._conn

    def exists(self) -> bool:
        return self.paths.db.exists()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- writes
    def create_runs(self, cfg_jsons: list[str], names: list[str], group: str, env: dict[str, Any],
                    sweep: str | None = None) -> list[int]:
        """Insert one 'running' row per member in one transaction; return their ids."""
        now = _now()
        ids = []
        with _tx(self.conn):
            for member, (cfg_json, name) in enumerate(zip(cfg_jsons, names)):
                cur = self.conn.execute(
                    "INSERT INTO runs (name, created, updated, status, cfg_json, group_id, member, sweep,"
                    " groklab_version, torch_version, git_sha) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (name, now, now, "running", cfg_json, group, member, sweep,
                     env.get("groklab_version"), env.get("torch_version"), env.get("git_sha")))
                ids.append(int(cur.lastrowid))
        return ids

    def log_metrics(self, rows: Iterable[tuple[int, int, str, float]]) -> None:
        with _tx(self.conn):
            self.conn.executemany("INSERT OR REPLACE INTO metrics (run_id, step, key, value) VALUES (?,?,?,?)",
                                  list(rows))

    def update_runs(self, updates: dict[int, tuple[str, dict]]) -> None:
        """Set status and summary of several runs at once: {run_id: (status, summary)}."""
        now = _now()
        with _tx(self.conn):
            for run_id, (status, summary) in updates.items():
                self.conn.execute("UPDATE runs SET status=?, summary_json=?, updated=? WHERE id=?",
                                  (status, json.dumps(summary), now, run_id))

    def truncate_metrics(self, run_ids: list[int], after_step: int) -> None:
        """Drop metrics logged after a checkpoint: a resumed run recomputes them."""
        with _tx(self.conn):
            self.conn.executemany("DELETE FROM metrics WHERE run_id=? AND step>?",
                                  [(r, after_step) for r in run_ids])

    # ---------------------------------------------------------------- reads
    def get(self, run_id: int) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return _row(row)

    def list(self, sweep: str | None = None) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        if sweep is None:
            rows = self.conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM runs WHERE sweep=? ORDER BY id", (sweep,)).fetchall()
        return [_row(r) for r in rows]

    def group(self, group: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM runs WHERE group_id=? ORDER BY member", (group,)).fetchall()
        return [_row(r) for r in rows]

    def metrics(self, run_id: int) -> pd.DataFrame:
        """Metrics of one run, one row per evaluation step, one column per key."""
        rows = self.conn.execute("SELECT step, key, value FROM metrics WHERE run_id=?", (run_id,)).fetchall()
        if not rows:
            return pd.DataFrame({"step": pd.Series(dtype=int)})
        long = pd.DataFrame([tuple(r) for r in rows], columns=["step", "key", "value"])
        wide = long.pivot(index="step", columns="key", values="value").sort_index().reset_index()
        wide.columns.name = None
        return wide

    def metrics_long(self, run_ids: Iterable[int], keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Metrics of several runs in long form (run_id, step, key, value), in few queries:
        reports and exports read hundreds of runs at once. `keys`: only these metrics."""
        ids = [int(r) for r in run_ids]
        keys = None if keys is None else list(keys)
        only = f" AND key IN ({','.join('?' * len(keys))})" if keys else ""
        frames = []
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples: sqlite3.Row costs more than the query at 10^5 rows
        for i in range(0, len(ids), 500):  # SQLite caps bound parameters per statement
            chunk = ids[i:i + 500]
            # the primary key's order: no sort step
            rows = cur.execute(f"SELECT run_id, step, key, value FROM metrics WHERE run_id IN "
                               f"({','.join('?' * len(chunk))}){only} ORDER BY run_id, key, step",
                               chunk + (keys or [])).fetchall()
            frames.append(pd.DataFrame(rows, columns=["run_id", "step", "key", "value"]))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "step", "key", "value"])
        return out.astype({"run_id": "int64", "step": "int64", "key": "object", "value": "float64"})


@contextmanager
def _tx(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["config"] = json.loads(d.pop("cfg_json"))
    d["summary"] = json.loads(d.pop("summary_json") or "{}")
    return d
