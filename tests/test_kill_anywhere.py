"""Kill anywhere: SIGKILL a run at seeded random moments, resume it, and demand the exact result.

Each case starts a child (forked; spawned where CUDA is, see `conftest.child_context`) that
trains into a fresh store and dies by SIGKILL at one moment:

- ``step``: the parent kills it from outside once training has passed a random step (plus a
  random few milliseconds, so the kill lands inside a step);
- ``checkpoint``: inside the n-th checkpoint write, after a random fraction of its bytes;
- ``rename``: right after the n-th checkpoint was renamed into place, before the directory sync;
- ``transaction``: inside the n-th store transaction, after its statements, before its COMMIT;
- ``ledger`` / ``named``: inside the n-th ledger file (the group when members left) or the n-th
  checkpoint that names one, in an ensemble whose early-stopped members leave the batched model.

Some cases kill the resume a second time. After every kill the store passes SQLite's integrity
check, holds no half-written row, and its checkpoint (if any) passes the full checks of
:func:`read_checkpoint` (with the ledger file it names). The finished run must equal an
uninterrupted one exactly (CPU, one thread): every metric of every evaluation, the summary, and
every tensor of the final checkpoint (whole, no ledger file left) —
weights, optimizer state and generator states. Sweep workers are killed the same way under the
local and the Ray backend, where the owning pid comes from the store's owner column.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from contextlib import contextmanager

import pytest
import torch

from groklab import with_overrides
from groklab.api import resume
from groklab.store import Store
from groklab.train import checkpoint as ckpt_mod
from groklab.train import train
from groklab.train.checkpoint import read_checkpoint, read_tensors

from conftest import CPU, child_context, early_stopping_group, tiny

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX signals and fork")

SEED = 14  # the kill schedule is drawn from this: the same moments on every run of the suite
STEPS = 150
EXTRA = ["train.checkpoint_every=15", "model.dropout=0.1", CPU]  # dropout: its masks follow the resumed step
VOLATILE = {"wall_time", "wall_seconds", "steps_per_second"}  # clocks, not results


def _solo():
    return [tiny("quickstart", *EXTRA, steps=STEPS)]


def _ensemble():
    base = tiny("quickstart", *EXTRA, steps=STEPS)
    return [with_overrides(base, {"name": "m0", "train.seed": 0}),
            with_overrides(base, {"name": "m1", "train.seed": 5, "optim.lr": 2e-3, "optim.weight_decay": 0.3,
                                  "data.frac_train": 0.6, "data.split_seed": 2})]


def _schedule(rng: random.Random, scenario: str, n: int) -> list[dict]:
    """`n` kill cases for one scenario: (site, which occurrence or step, byte fraction, 2nd kill)."""
    sites = ["step", "checkpoint", "transaction", "step", "rename", "transaction", "checkpoint", "step"]
    cases = []
    for i in range(n):
        site = sites[i % len(sites)]
        cases.append({"scenario": scenario, "site": site, "nth": rng.randint(1, 8),
                      "target": rng.randint(1, STEPS - 30), "delay": rng.uniform(0, 0.03),
                      "frac": rng.random(), "again": i % 3 == 2,
                      "again_site": rng.choice(["step", "checkpoint", "transaction"]),
                      "again_nth": rng.randint(1, 4), "again_target": rng.randint(1, STEPS - 30)})
    return cases


def _shrink_case(site: str, nth: int = 1, frac: float = 0.5, target: int = 0, again: str | None = None) -> dict:
    """A kill in the early-stopping group (its two early members leave at step 517; one ledger
    file, then checkpoints naming it at 600-1 100); `again`: kill the resume inside that site's
    first occurrence too (the resumed group leaves at once and writes its ledger anew)."""
    return {"scenario": "shrink", "site": site, "nth": nth, "target": target, "delay": 0.01, "frac": frac,
            "again": again is not None, "again_site": again, "again_nth": 1, "again_target": 0}


_RNG = random.Random(SEED)
# 20 here + 1 local sweep worker + 3 Ray workers (test_kill_workers.py) = 24 kill points in CI.
CASES = (_schedule(_RNG, "solo", 9) + _schedule(_RNG, "ensemble", 7)
         + [_shrink_case("ledger", frac=0.6), _shrink_case("named", nth=1, frac=0.2, again="ledger"),
            _shrink_case("named", nth=4, frac=0.9), _shrink_case("step", target=800, again="named")])
SCENARIOS = {"solo": _solo, "ensemble": _ensemble, "shrink": early_stopping_group}


# ---------------------------------------------------------------- traps run in the child

def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _torn(fd, data, frac: float) -> None:
    """Write the file's first `frac` of bytes (it comes as bytes or as its parts), then die."""
    whole = data if isinstance(data, bytes) else b"".join(memoryview(d).cast("B") for d in data)
    os.write(fd, whole[:int(frac * len(whole))])
    _die()


def _arm(site: str, nth: int, frac: float) -> None:
    """Patch the child so that it kills itself at the n-th occurrence of `site`."""
    count = [0]

    def hit() -> bool:
        count[0] += 1
        return count[0] == nth

    if site == "checkpoint":
        real_write = ckpt_mod._write_all

        def write(fd, data):
            if hit():
                _torn(fd, data, frac)
            real_write(fd, data)
        ckpt_mod._write_all = write
    elif site in ("ledger", "named"):
        real_tensors = ckpt_mod.write_tensors

        def write_tensors(path, tensors, metadata, **kwargs):
            if (".ledger-" in path.name if site == "ledger" else "ledger" in metadata) and hit():
                ckpt_mod._write_all = lambda fd, data: _torn(fd, data, frac)
            real_tensors(path, tensors, metadata, **kwargs)
        ckpt_mod.write_tensors = write_tensors
    elif site == "rename":
        real_sync = ckpt_mod._fsync_dir

        def sync(folder):
            if hit():
                _die()
            real_sync(folder)
        ckpt_mod._fsync_dir = sync
    elif site == "transaction":
        real_tx = Store._tx

        @contextmanager
        def tx(self):
            with real_tx(self) as conn:
                yield conn
                if hit():  # the statements ran; COMMIT has not
                    _die()
        Store._tx = tx


def _child(root, cfgs, site: str, nth: int, frac: float, run_id: int | None) -> None:
    """The child: train (or resume) until the trap or the parent kills it."""
    torch.set_num_threads(1)  # a spawned child starts with the machine's default
    _arm(site, nth, frac)
    store = Store(root)
    if run_id is None:
        train(cfgs, store=store, progress=False)
    else:
        resume(run_id, store)


def _start(root, cfgs, site: str, nth: int, frac: float, run_id: int | None):
    proc = child_context().Process(target=_child, args=(root, cfgs, site, nth, frac, run_id))
    proc.start()
    return proc


@contextmanager
def _db(root):
    # Closed explicitly: a connection still open in the parent at a fork confuses SQLite's locks
    # in the child (its writes can then be lost), so none may outlive its use here.
    conn = sqlite3.connect(root / "groklab.db", timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def _max_step(root) -> int:
    try:
        with _db(root) as conn:
            return conn.execute("SELECT COALESCE(MAX(step), -1) FROM metrics").fetchone()[0]
    except sqlite3.Error:
        return -1


def _kill_once(root, cfgs, site, nth, frac, target, delay, run_id=None) -> bool:
    """Run the child until it dies at its trap (or, for `step`, until the parent kills it past
    `target`); True if it was killed, False if it finished first."""
    proc = _start(root, cfgs, "none" if site == "step" else site, nth, frac, run_id)
    if site == "step":
        while proc.is_alive():
            if _max_step(root) >= target:
                time.sleep(delay)
                proc.kill()
                break
            time.sleep(0.002)
    proc.join()
    return proc.exitcode == -signal.SIGKILL  # a child that raised printed its traceback (exit code 1)


def _assert_intact(root) -> None:
    """After a kill: the database is consistent, and a checkpoint that exists loads in full."""
    if not (root / "groklab.db").exists():
        return
    with _db(root) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute("SELECT status, summary_json FROM runs").fetchall()
    assert check == "ok"
    assert {status for status, _ in rows} <= {"running"}, rows  # a failed child printed its traceback
    for path in (root / "groups").glob("*/checkpoint.safetensors") if (root / "groups").exists() else ():
        read_checkpoint(path)  # raises CheckpointError on a torn, truncated or altered file or ledger


# ---------------------------------------------------------------- comparison with the reference

def _final(store: Store) -> tuple[list, list, dict]:
    rows = store.list()
    metrics = [store.metrics(r["id"]).drop(columns=["wall_time"]) for r in rows]
    summaries = [{k: v for k, v in r["summary"].items() if k not in VOLATILE} for r in rows]
    tensors, _ = read_tensors(store.paths.checkpoint(rows[0]["group_id"]))
    return metrics, summaries, tensors


def _assert_same(got, want) -> None:
    (gm, gs, gt), (wm, ws, wt) = got, want
    assert len(gm) == len(wm)
    for a, b in zip(gm, wm):
        assert list(a.columns) == list(b.columns)
        assert a.equals(b), "metrics differ from the uninterrupted run"
    assert gs == ws
    assert set(gt) == set(wt)
    for key in wt:
        assert torch.equal(gt[key], wt[key]), f"checkpoint tensor {key} differs from the uninterrupted run"


_REFERENCE: dict[str, tuple] = {}


def _reference(scenario: str, tmp_path_factory) -> tuple:
    if scenario not in _REFERENCE:
        store = Store(tmp_path_factory.mktemp(f"ref-{scenario}"))
        train(SCENARIOS[scenario](), store=store, progress=False)
        _REFERENCE[scenario] = _final(store)
        store.close()
    return _REFERENCE[scenario]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{c['scenario']}-{c['site']}-{i}" for i, c in enumerate(CASES)])
def test_kill_anywhere_resumes_exactly(case, tmp_path, tmp_path_factory):
    want = _reference(case["scenario"], tmp_path_factory)
    cfgs = SCENARIOS[case["scenario"]]()
    root = tmp_path / "runs"
    killed = _kill_once(root, cfgs, case["site"], case["nth"], case["frac"], case["target"], case["delay"])
    assert killed, "the run finished before its kill point: the schedule no longer fits the run"
    _assert_intact(root)
    store = Store(root)
    rows = store.list()
    store.close()  # no SQLite connection may cross a fork
    if not rows:  # killed inside the transaction that creates the rows: nothing was half-made
        train(cfgs, store=Store(root), progress=False)
    else:
        assert len(rows) == len(cfgs)
        if case["again"]:  # kill the resume too
            _kill_once(root, cfgs, case["again_site"], case["again_nth"], case["frac"], case["again_target"],
                       case["delay"], run_id=rows[0]["id"])
            _assert_intact(root)
        resume(rows[0]["id"], Store(root))
    store = Store(root)
    assert [r["status"] for r in store.list()] == ["finished"] * len(cfgs)
    _assert_same(_final(store), want)
    assert not list(root.glob("groups/*/*.ledger-*")), "a ledger file outlived the run"
