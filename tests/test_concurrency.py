"""Concurrency and unusable stores: four processes training and sweeping into one store lose no
row and corrupt nothing while readers list and show; a locked, read-only, missing or misplaced
store gives one clear error (exit code 2 from the CLI) and changes nothing."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest

from groklab.cli import main
from groklab.store import Store, StoreError
from groklab.sweep import load_spec, run_sweep
from groklab.train import train
from groklab.train.checkpoint import read_tensors

from conftest import CPU, PROCESSES, child_context, tiny

pytestmark = PROCESSES

WRITERS, RUNS = 4, 25
# The writers train on the CPU: this test is about the store, and forked writers could not use a CUDA context.
QUICK = ["train.eval_every=5", "train.checkpoint_every=5", "train.eval_log_points=0", CPU]


def _writer(root: str, w: int) -> None:
    """One writer process: 25 short runs, trained one by one or (writer 0) as a sweep."""
    import torch
    torch.set_num_threads(1)
    store = Store(root)
    if w == 0:
        spec = load_spec({"name": "conc", "base": "quickstart",
                          "set": ["data.p=11", "train.threads=1", "train.steps=10", "train.batch_size=32", *QUICK],
                          "axes": {"optim.lr": [1e-3 + i * 1e-4 for i in range(RUNS)]}})
        report = run_sweep(spec, store=store, workers=1)
        assert not report.failed
    else:
        for i in range(RUNS):
            cfg = tiny("quickstart", "data.p=11", "train.batch_size=32", *QUICK, f"train.seed={w * 100 + i}",
                       steps=10)
            train(cfg, store=store, progress=False)
    store.close()


def _read(root: Path, capsys) -> int:
    """`ls --json` and `show --json` of the newest run while the writers work; rows seen."""
    assert main(["ls", "--json", "--store", str(root)]) == 0
    rows = json.loads(capsys.readouterr().out)
    if rows:
        assert main(["show", str(rows[-1]["run_id"]), "--json", "--store", str(root)]) == 0
        assert json.loads(capsys.readouterr().out)["run_id"] == rows[-1]["run_id"]
    return len(rows)


@pytest.mark.slow
def test_four_writers_and_readers_lose_nothing(tmp_path, capsys):
    root = tmp_path / "runs"
    Store(root).conn.close()  # schema now; no connection may stay open in this process across a fork
    procs = [child_context().Process(target=_writer, args=(str(root), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    reads, seen = 0, []
    while any(p.is_alive() for p in procs):
        if (root / "groklab.db").exists():
            seen.append(_read(root, capsys))
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reads >= 3 and seen == sorted(seen)  # readers ran throughout and saw the store only grow
    store = Store(root)
    rows = store.list()
    assert len(rows) == WRITERS * RUNS and {r["status"] for r in rows} == {"finished"}
    assert len(store.list(sweep="conc")) == RUNS
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n_evals = {len(store.metrics(r["id"])) for r in rows}
    assert n_evals == {3}  # steps 0, 5, 10: every evaluation of every run, none twice
    for r in rows:
        read_tensors(store.paths.checkpoint(r["group_id"]))


def _open_at_once(root: str, barrier, errors) -> None:
    """Wait for the others, then open the store and write one row; an error goes to `errors`."""
    barrier.wait()
    try:
        Store(root).create_runs(["{}"], ["x"], f"g{os.getpid()}", {})
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.put(repr(e))


def test_processes_opening_a_store_at_once_all_get_in(tmp_path):
    """A sweep's workers open the store together. Setting WAL mode takes a lock SQLite does not
    wait for, so one of them often failed at once with "locked by another process (waited 120 s)"
    (2 workers: 1 round in 2; 3 processes on a new store: 1 in 25) and its group was lost."""
    ctx = child_context()
    errors, rows = ctx.Queue(), 0
    for i in range(20):
        root = tmp_path / f"s{i}"
        if i % 2:
            Store(root).conn.close()  # a store the driver made, already in WAL mode; else a new one
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=_open_at_once, args=(str(root), barrier, errors)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        rows += len(Store(root).list())
    seen = [errors.get() for _ in range(errors.qsize())]
    assert not seen and rows == 60, seen[:3]


def _bad_store(args: list[str], capsys) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


def test_locked_store_is_a_clear_error(tmp_path, capsys, monkeypatch):
    root = tmp_path / "runs"
    main(["run", "quickstart", "-q", "--store", str(root), "--set", "data.p=11", "--set", "train.steps=5",
          "--set", "train.threads=1"])
    capsys.readouterr()
    holder = sqlite3.connect(root / "groklab.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a long write
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            Store(root, timeout=0.2).create_runs(["{}"], ["x"], "g", {})
        monkeypatch.setenv("GROKLAB_STORE_TIMEOUT", "0.2")
        msg = _bad_store(["run", "quickstart", "-q", "--store", str(root), "--set", "train.steps=5"], capsys)
        assert "is locked by another process" in msg
        assert main(["ls", "--json", "--store", str(root)]) == 0  # readers are not blocked by a writer
        assert len(json.loads(capsys.readouterr().out)) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(Store(root).list()) == 1  # the refused run left nothing


def _open_as_unprivileged(root: str) -> int:
    """In a forked child without root's override of permissions: 0 if Store refused clearly."""
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)  # nobody: file permissions apply again
    try:
        Store(root).create_runs(["{}"], ["x"], "g", {})
    except StoreError as e:
        return 0 if ("not writable" in str(e) or "read-only" in str(e)) else 3
    return 4


def test_read_only_store_is_a_clear_error():
    base = Path(tempfile.mkdtemp(prefix="groklab-ro-"))  # not under pytest's root-only tmp dir
    try:
        root = base / "runs"
        Store(root).conn.close()
        os.chmod(base, 0o755)
        os.chmod(root, 0o555)
        ctx = mp.get_context("fork")
        with ctx.Pool(1) as pool:
            assert pool.apply(_open_as_unprivileged, (str(root),)) == 0
    finally:
        os.chmod(base / "runs", 0o755)
        import shutil
        shutil.rmtree(base)


def test_missing_or_misplaced_store_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert "no store at" in _bad_store(["ls", "--store", str(missing)], capsys)
    assert "run 3 is not in the store" in _bad_store(["show", "3", "--store", str(missing)], capsys)
    assert "run 3 is not in the store" in _bad_store(["resume", "3", "--store", str(missing)], capsys)
    assert not missing.exists()  # reading never creates a store
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    msg = _bad_store(["run", "quickstart", "--store", str(a_file), "--set", "train.steps=5"], capsys)
    assert "is a file, not a directory" in msg
    msg = _bad_store(["run", "quickstart", "--store", str(a_file / "runs"), "--set", "train.steps=5"], capsys)
    assert "cannot create the store directory" in msg
