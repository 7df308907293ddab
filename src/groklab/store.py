"""The run store: SQLite (WAL) for runs and metrics, safetensors files for checkpoints.

Layout under the store root (``./runs`` by default, ``--store DIR`` or ``$GROKLAB_STORE``)::

    groklab.db                           runs, metrics (long form), schema version in user_version
    groups/<group>/checkpoint.safetensors   one checkpoint per trained group (ensemble or solo run)

Every write is one transaction (``BEGIN IMMEDIATE``, so concurrent writers queue on the lock
instead of deadlocking), so a crash never leaves a half-written row; checkpoints are written to a
temporary file and renamed. Row ↔ dict conversion lives only here.

A `running` row records its owner (host, pid, the pid's start time) and a heartbeat refreshed with
every metrics write, so `groklab ls` can tell a live run from one whose process is gone
(:meth:`Store.liveness`). Every SQLite failure (locked, read-only, disk full, not a database)
surfaces as one :class:`StoreError` naming the store and what to do.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

SCHEMA_VERSION = 4  # 2: owner_host, owner_pid, owner_start, heartbeat (who runs a `running` row); 3: parent;
# 4: sweep_reuse (finished runs a sweep counts as its own without having trained them)
STATUSES = ("running", "finished", "diverged", "stopped", "failed")
TERMINAL = ("finished", "diverged")  # complete: a sweep skips these, analyses read them; the rest resume
STALE_S = 600.0  # a `running` row on another host without a heartbeat for this long counts as lost
LOCK_TIMEOUT_S = 120.0  # how long a writer waits for another's transaction before giving up


class StoreError(RuntimeError):
    """The store cannot be used (locked, read-only, disk full, corrupt, newer schema): the message
    names the store and what to do. The CLI prints it as one line and exits with code 2."""

# A finished run that a sweep found stored outside it (a `groklab run`, another sweep's run) with the
# config of one of its points: the sweep reads it as its own instead of training it again.
_REUSE_TABLE = """CREATE TABLE IF NOT EXISTS sweep_reuse (
    sweep TEXT NOT NULL,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    PRIMARY KEY (sweep, run_id)
) WITHOUT ROWID"""

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
    summary_json TEXT NOT NULL DEFAULT '{{}}',
    owner_host TEXT,
    owner_pid INTEGER,
    owner_start TEXT,
    heartbeat REAL,
    parent INTEGER REFERENCES runs(id) ON DELETE SET NULL
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
{_REUSE_TABLE};
"""


# The statements that take a store of schema version v to v + 1, by v. Added columns are NULL for
# old rows: 1 → 2 the owner columns (their liveness is unknown), 2 → 3 the run a row continues
# (`groklab extend`; old rows continue none), 3 → 4 the runs sweeps reuse (none yet).
_MIGRATIONS = {
    1: [f"ALTER TABLE runs ADD COLUMN {c}" for c in
        ("owner_host TEXT", "owner_pid INTEGER", "owner_start TEXT", "heartbeat REAL")],
    2: ["ALTER TABLE runs ADD COLUMN parent INTEGER REFERENCES runs(id) ON DELETE SET NULL"],
    3: [_REUSE_TABLE],
}


def _proc_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc), so a reused pid is not mistaken for the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may contain spaces
    return None if fields[0] == "Z" else fields[19]  # a zombie has exited: no start time


def _owner() -> tuple[str, int, str | None]:
    pid = os.getpid()
    return socket.gethostname(), pid, _proc_start(pid)


def _pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    now = _proc_start(pid)
    if Path("/proc/self/stat").exists():
        return now is not None and (start is None or now == start)
    return True


def _lock_timeout() -> float:
    text = os.environ.get("GROKLAB_STORE_TIMEOUT")
    if text is None:
        return LOCK_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e6:
        raise StoreError(f"GROKLAB_STORE_TIMEOUT={text!r} must be a number of seconds (0 to 1e6)")
    return value


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
    """SQLite-backed run store. Safe for several processes writing at once.

    Args:
        root: the store directory (default ``./runs`` or ``$GROKLAB_STORE``).
        timeout: seconds a writer waits for another process's transaction before a
            :class:`StoreError` says the store is locked (default ``$GROKLAB_STORE_TIMEOUT``,
            else 120).
        read_only: open an existing store for reading only: nothing is created or migrated (an
            older schema's missing columns read as absent), every write fails with `StoreError`.
    """

    def __init__(self, root: str | Path | None = None, timeout: float | None = None, read_only: bool = False):
        self.paths = RunPaths(Path(root) if root else default_root())
        self.timeout = _lock_timeout() if timeout is None else timeout
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = _retry_io(self._open)
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            return self._open_read_only()
        root = self.paths.root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreError(f"store {str(root)!r} is a file, not a directory; give --store a directory") from None
        except OSError as e:
            raise StoreError(f"cannot create the store directory {str(root)!r}: {e.strerror}; give --store a "
                             f"writable directory") from None
        if not os.access(root, os.W_OK | os.X_OK):
            raise StoreError(f"store directory {str(root)!r} is not writable; give --store a writable directory")
        conn = None
        try:
            conn = sqlite3.connect(self.paths.db, timeout=self.timeout, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            self._wal(conn)
            conn.execute("PRAGMA foreign_keys=ON")
            self._migrate(conn)
        except BaseException as e:
            if conn is not None:
                conn.close()
            if isinstance(e, sqlite3.Error):
                raise self._error(e) from None
            raise
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        db = self.paths.db
        if not db.is_file():
            raise StoreError(f"no store at {str(self.paths.root)!r} (no {db.name} there)")
        uri = db.resolve().as_uri()
        conn = None
        try:
            try:
                conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            except sqlite3.OperationalError as e:
                # A WAL store in a directory this process may not write (a copy handed back read-only)
                # opens only as immutable; that is exact when no write-ahead log holds unmerged pages.
                if "unable to open" not in str(e) or Path(f"{db}-wal").exists():
                    raise
                if conn is not None:
                    conn.close()
                conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.row_factory = sqlite3.Row
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise self._error(e) from None
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"store {str(db)!r} has schema version {version}, newer than this "
                             f"groklab's ({SCHEMA_VERSION}); upgrade groklab to read it")
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Put a new store in WAL mode. Setting the mode takes a lock SQLite does not wait for (no
        busy handler): processes opening a store at once (a sweep's workers) got "database is
        locked" at once, even with the store long in WAL mode. So read the mode first (the file
        keeps it), and retry setting it until the store's timeout."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {str(self.paths.db)!r} has schema version {version}, newer than this "
                             f"groklab's ({SCHEMA_VERSION}); upgrade groklab to read it")
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            else:
                for v in range(version, SCHEMA_VERSION):
                    for stmt in _MIGRATIONS[v]:
                        conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={max(version, SCHEMA_VERSION)}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _error(self, e: sqlite3.Error) -> StoreError:
        """One clear message for each way SQLite can fail on a user's machine."""
        msg, where = str(e), repr(str(self.paths.root))
        if "locked" in msg or "busy" in msg:
            return StoreError(f"store {where} is locked by another process (waited {self.timeout:g} s); "
                              "try again when it finishes")
        if "full" in msg:
            return StoreError(f"store {where}: the disk is full ({msg}); this write was rolled back, earlier "
                              "runs and checkpoints are intact — free space and `groklab resume` the run")
        if "readonly" in msg or "read-only" in msg:
            return StoreError(f"store {where} is read-only ({msg}); give --store a writable directory")
        if "not a database" in msg or "malformed" in msg:
            return StoreError(f"{str(self.paths.db)!r} is not a groklab store (not an SQLite database, or "
                              f"corrupt: {msg})")
        if "unable to open" in msg:
            return StoreError(f"cannot open the store {where} ({msg}); give --store a writable directory")
        return StoreError(f"store {where}: {msg}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed or none of it."""
        conn = self.conn
        try:
            _retry_io(lambda: conn.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as e:
            raise self._error(e) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:  # the connection is unusable; SQLite discards the transaction
                    pass
            if isinstance(e, sqlite3.Error):
                raise self._error(e) from None
            raise

    def _read(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._error(e) from None

    def exists(self) -> bool:
        return self.paths.db.exists()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- writes
    def create_runs(self, cfg_jsons: list[str], names: list[str], group: str, env: dict[str, Any],
                    sweep: str | None = None, parents: list[int] | None = None) -> list[int]:
        """Insert one 'running' row per member in one transaction; return their ids. `parents`:
        the run each member continues (`groklab extend`), or None."""
        now = _now()
        host, pid, pstart = _owner()
        parents = parents or [None] * len(names)
        ids = []
        with self._tx() as conn:
            for member, (cfg_json, name, parent) in enumerate(zip(cfg_jsons, names, parents, strict=True)):
                cur = conn.execute(
                    "INSERT INTO runs (name, created, updated, status, cfg_json, group_id, member, sweep,"
                    " groklab_version, torch_version, git_sha, owner_host, owner_pid, owner_start, heartbeat,"
                    " parent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (name, now, now, "running", cfg_json, group, member, sweep,
                     env.get("groklab_version"), env.get("torch_version"), env.get("git_sha"),
                     host, pid, pstart, time.time(), parent))
                ids.append(int(cur.lastrowid))
        return ids

    def add_rows(self, rows: list[dict[str, Any]], metrics: list[list[tuple[int, str, float]]]) -> list[int]:
        """Insert rows as another store holds them (`groklab merge`: every field but the id, as
        `list()` returns it) with each row's metrics (step, key, value), in one transaction;
        return the new ids in order."""
        cols = ("name", "created", "updated", "status", "group_id", "member", "sweep", "groklab_version",
                "torch_version", "git_sha", "owner_host", "owner_pid", "owner_start", "heartbeat", "parent")
        ids = []
        with self._tx() as conn:
            for row, mets in zip(rows, metrics, strict=True):
                cur = conn.execute(f"INSERT INTO runs ({', '.join(cols)}, cfg_json, summary_json) VALUES "
                                   f"({', '.join('?' * (len(cols) + 2))})",
                                   [row.get(c) for c in cols] + [json.dumps(row["config"], sort_keys=True),
                                                                 json.dumps(row["summary"])])
                rid = int(cur.lastrowid)
                conn.executemany("INSERT INTO metrics (run_id, step, key, value) VALUES (?,?,?,?)",
                                 [(rid, int(step), key, value) for step, key, value in mets])
                ids.append(rid)
        return ids

    def replace_runs(self, rows: dict[int, dict[str, Any]], metrics: dict[int, list[tuple[int, str, float]]]) -> None:
        """Overwrite runs here with the state another store holds of the same runs (`groklab merge`
        refreshing a group that trained on there): every field but the id, name, group, member,
        sweep, parent and creation time, and all metrics, in one transaction."""
        cols = ("status", "updated", "groklab_version", "torch_version", "git_sha", "owner_host", "owner_pid",
                "owner_start", "heartbeat")
        with self._tx() as conn:
            for rid, row in rows.items():
                conn.execute(f"UPDATE runs SET {', '.join(f'{c}=?' for c in cols)}, cfg_json=?, summary_json=?"
                             " WHERE id=?", [row.get(c) for c in cols] + [
                                 json.dumps(row["config"], sort_keys=True), json.dumps(row["summary"]), rid])
                conn.execute("DELETE FROM metrics WHERE run_id=?", (rid,))
                conn.executemany("INSERT INTO metrics (run_id, step, key, value) VALUES (?,?,?,?)",
                                 [(rid, int(step), key, value) for step, key, value in metrics[rid]])

    def reuse(self, sweep: str, run_ids: Iterable[int]) -> None:
        """Record that `sweep` counts these finished runs (trained outside it) as its own: from now
        on `list(sweep=...)` returns them (the sweep planner's reuse; `groklab merge` carries it)."""
        with self._tx() as conn:
            conn.executemany("INSERT OR IGNORE INTO sweep_reuse (sweep, run_id) VALUES (?,?)",
                             [(sweep, int(r)) for r in run_ids])

    def log_metrics(self, rows: Iterable[tuple[int, int, str, float]]) -> None:
        """Insert metric rows and refresh the heartbeat of their runs (one transaction)."""
        rows = list(rows)
        beat = time.time()
        with self._tx() as conn:
            conn.executemany("INSERT OR REPLACE INTO metrics (run_id, step, key, value) VALUES (?,?,?,?)", rows)
            conn.executemany("UPDATE runs SET heartbeat=? WHERE id=?",
                             [(beat, run_id) for run_id in sorted({r[0] for r in rows})])

    def update_runs(self, updates: dict[int, tuple[str, dict]]) -> None:
        """Set status and summary of several runs at once: {run_id: (status, summary)}.

        Setting `running` makes this process the rows' owner (a resumed run changes hands)."""
        now = _now()
        host, pid, pstart = _owner()
        with self._tx() as conn:
            for run_id, (status, summary) in updates.items():
                if status == "running":
                    conn.execute("UPDATE runs SET status=?, summary_json=?, updated=?, owner_host=?, owner_pid=?,"
                                 " owner_start=?, heartbeat=? WHERE id=?",
                                 (status, json.dumps(summary), now, host, pid, pstart, time.time(), run_id))
                else:
                    conn.execute("UPDATE runs SET status=?, summary_json=?, updated=? WHERE id=?",
                                 (status, json.dumps(summary), now, run_id))

    def copy_metrics(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Copy every metric row of each (source, destination) run pair (one transaction)."""
        with self._tx() as conn:
            conn.executemany("INSERT INTO metrics (run_id, step, key, value)"
                             " SELECT ?, step, key, value FROM metrics WHERE run_id=?",
                             [(dst, src) for src, dst in pairs])

    def truncate_metrics(self, run_ids: list[int], after_step: int) -> None:
        """Drop metrics logged after a checkpoint: a resumed run recomputes them."""
        with self._tx() as conn:
            conn.executemany("DELETE FROM metrics WHERE run_id=? AND step>?", [(r, after_step) for r in run_ids])

    # ---------------------------------------------------------------- reads
    def get(self, run_id: int) -> dict[str, Any]:
        rows = self._read("SELECT * FROM runs WHERE id=?", (run_id,))
        if not rows:
            raise KeyError(run_id)
        return _row(rows[0])

    def list(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """Every run, or a sweep's: those it trained and those it reuses (:meth:`reuse`). A reused
        run's row reads `sweep` as the sweep asked for and `trained_in` as its own tag (None for a
        plain `groklab run`); every other row has `trained_in` equal to `sweep`."""
        if not self.exists():
            return []
        if sweep is None:
            return [_row(r) for r in self._read("SELECT * FROM runs ORDER BY id")]
        rows = [_row(r) for r in self._read("SELECT * FROM runs WHERE sweep=? ORDER BY id", (sweep,))]
        for r in rows:
            r["trained_in"] = sweep
        if self._has_table("sweep_reuse"):  # a read-only store of schema < 4 has none
            for r in self._read("SELECT runs.* FROM runs JOIN sweep_reuse ON sweep_reuse.run_id = runs.id"
                                " WHERE sweep_reuse.sweep=? AND (runs.sweep IS NULL OR runs.sweep != ?)",
                                (sweep, sweep)):
                row = _row(r)
                rows.append({**row, "sweep": sweep, "trained_in": row["sweep"]})
        return sorted(rows, key=lambda r: r["id"])

    def reused(self) -> list[tuple[str, int]]:
        """Every (sweep, run id) pair recorded by :meth:`reuse`."""
        if not self.exists() or not self._has_table("sweep_reuse"):
            return []
        return [(r[0], int(r[1])) for r in self._read("SELECT sweep, run_id FROM sweep_reuse ORDER BY run_id")]

    def _has_table(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)))

    def group(self, group: str) -> list[dict[str, Any]]:
        rows = self._read("SELECT * FROM runs WHERE group_id=? ORDER BY member", (group,))
        return [_row(r) for r in rows]

    def metrics(self, run_id: int) -> pd.DataFrame:
        """Metrics of one run, one row per evaluation step, one column per key."""
        rows = self._read("SELECT step, key, value FROM metrics WHERE run_id=?", (run_id,))
        if not rows:
            return pd.DataFrame({"step": pd.Series(dtype=int)})
        long = pd.DataFrame([tuple(r) for r in rows], columns=["step", "key", "value"])
        wide = long.pivot(index="step", columns="key", values="value").sort_index().reset_index()
        wide.columns.name = None
        return wide

    def last_step(self, run_ids: Iterable[int]) -> int:
        """The last step any of these runs logged a metric at (-1: none)."""
        ids = [int(r) for r in run_ids]
        if not ids:
            return -1
        rows = self._read(f"SELECT MAX(step) FROM metrics WHERE run_id IN ({','.join('?' * len(ids))})", tuple(ids))
        return -1 if rows[0][0] is None else int(rows[0][0])

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


def _retry_io(fn, tries: int = 6, wait: float = 0.05):
    """Call `fn`, again after a short wait when SQLite reports a transient "disk I/O error": seen
    (rarely, under load) when several processes open one WAL store at once while its shared-memory
    index is being rebuilt. Anything else, or the last try's error, propagates."""
    for attempt in range(tries):
        try:
            return fn()
        except (sqlite3.OperationalError, StoreError) as e:
            if "disk I/O error" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(wait * 2 ** attempt)


def liveness(row: dict[str, Any], now: float | None = None) -> bool | None:
    """Is the process of a `running` row alive? True / False (lost: killed, host rebooted) /
    None (not running, or an old row without an owner). On this host the owner's pid (and its
    start time) decides; on another host, a heartbeat older than STALE_S means lost."""
    if row.get("status") != "running" or row.get("owner_pid") is None:
        return None
    if row.get("owner_host") == socket.gethostname():
        return _pid_alive(int(row["owner_pid"]), row.get("owner_start"))
    beat = row.get("heartbeat")
    return beat is not None and (now or time.time()) - float(beat) < STALE_S


def trained_elsewhere(row: dict[str, Any]) -> bool:
    """Is a `running` row being trained right now by another live process? (One this process
    owns means an earlier call here failed: nothing is training it now.)"""
    return bool(liveness(row)) and not (row.get("owner_host") == socket.gethostname()
                                        and row.get("owner_pid") == os.getpid())


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["config"] = json.loads(d.pop("cfg_json"))
    d["summary"] = json.loads(d.pop("summary_json") or "{}")
    return d
