"""Kill anywhere, sweep workers: SIGKILL the process training a sweep group (found through the
store's owner column) at seeded random steps, under the local and the Ray backend; the sweep
resumes it (a re-run locally, a task retry on Ray) and every run equals an uninterrupted one
exactly: metrics, summary and every tensor of its checkpoint."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

import groklab
from groklab.store import Store
from groklab.sweep import expand, load_spec, run_sweep
from groklab.train import train
from groklab.train.checkpoint import read_tensors

from conftest import CPU, PROCESSES, STOPS, stop_command
from test_kill_anywhere import SEED, STEPS, VOLATILE, _assert_same, _db

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="POSIX signals"), PROCESSES]

RNG = random.Random(SEED + 1)
# CPU: a process pool to kill (a GPU sweep trains in-process) and resumes equal bit for bit.
SET = ["data.p=23", "train.threads=1", f"train.steps={STEPS}", "train.eval_every=20", "train.batch_size=64",
       "train.early_stop=false", "train.checkpoint_every=15", "model.dropout=0.1", CPU]


def _spec(name: str, fracs: tuple[float, ...]):
    return load_spec({"name": name, "base": "quickstart", "set": SET, "axes": {"data.frac_train": list(fracs)}})


def _by_name(store: Store) -> dict[str, tuple]:
    """Each run's (metrics, summary, checkpoint tensors), by run name."""
    out = {}
    for r in store.list():
        metrics = store.metrics(r["id"]).drop(columns=["wall_time"])
        summary = {k: v for k, v in r["summary"].items() if k not in VOLATILE}
        tensors, _ = read_tensors(store.paths.checkpoint(r["group_id"]))
        out[r["name"]] = ([metrics], [summary], tensors)
    return out


def _reference(spec, root: Path) -> dict[str, tuple]:
    store = Store(root)
    for cfg in expand(spec):
        train(cfg, store=store, progress=False)
    return _by_name(store)


class Killer(threading.Thread):
    """SIGKILLs the worker that owns a `running` row once its metrics pass the next target step;
    records, per worker pid, the lowest last-logged step it saw (a resumed worker starts at its
    checkpoint's step, a restarted one at 0)."""

    def __init__(self, root: Path, targets: list[int]):
        super().__init__(daemon=True)
        self.root, self.targets, self.killed, self.stop = root, list(targets), [], threading.Event()
        self.lowest: dict[int, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            owners = self._owners()
            for pid, step in owners.items():
                self.lowest[pid] = min(step, self.lowest.get(pid, step))
            victim = next((pid for pid, step in owners.items() if self.targets and step >= self.targets[0]), None)
            if victim is not None:
                time.sleep(RNG.uniform(0, 0.02))
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append((victim, self.targets.pop(0)))
                except ProcessLookupError:  # it finished just now
                    pass
            time.sleep(0.005)

    def _owners(self) -> dict[int, int]:
        """{worker pid: last logged step} of the running rows that a worker (not us) owns."""
        if not (self.root / "groklab.db").exists():
            return {}
        try:
            with _db(self.root) as conn:
                rows = conn.execute(
                    "SELECT r.owner_pid, MAX(m.step) FROM runs r JOIN metrics m ON m.run_id = r.id"
                    " WHERE r.status = 'running' AND r.owner_pid != ? GROUP BY r.id", (os.getpid(),)).fetchall()
        except Exception:  # noqa: BLE001 - the store is being created: look again
            return {}
        return {int(pid): int(step) for pid, step in rows}


def _targets(n: int) -> list[int]:
    # From step 30 on: a checkpoint (every 15 steps) exists, so a resumed worker cannot start at 0.
    return [RNG.randint(30, STEPS - 40) for _ in range(n)]


@pytest.mark.slow
def test_local_sweep_worker_killed_resumes_exactly(tmp_path):
    spec = _spec("kill-local", (0.3, 0.5))
    want = _reference(spec, tmp_path / "ref")
    root = tmp_path / "runs"
    kills = 0
    for round_ in range(2):  # a round with a kill, then the re-run that resumes and finishes
        killer = Killer(root, _targets(1) if round_ == 0 else [])
        killer.start()
        # The re-run trains in this process (workers=1): it only has to resume, not be killed.
        report = run_sweep(spec, store=Store(root), workers=2 if round_ == 0 else 1)
        killer.stop.set()
        killer.join()
        kills += len(killer.killed)
        if killer.killed:
            assert report.failed, "a worker was killed but the sweep reported no failure"
    assert kills == 1
    store = Store(root)
    assert [r["status"] for r in store.list()] == ["finished", "finished"]
    got = _by_name(store)
    assert set(got) == set(want)
    for name in want:
        _assert_same(got[name], want[name])


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_pool_workers_end_on_sigterm_when_idle_and_stop_once_when_busy(tmp_path):
    """After one worker dies abruptly, Python >= 3.12 ends the pool's other workers with SIGTERM and
    then joins them: a worker that ignored SIGTERM while idle hung the sweep there for ever (seen on
    Python 3.12 in the test above). Idle, SIGTERM ends a worker; the driver's stop does not."""
    from types import SimpleNamespace

    from groklab.sweep.backends import STOP, PoolExecutor, _Worker

    plan = SimpleNamespace(sweep="t", workers=2, resources=SimpleNamespace(kind="cpu", gpus=0))
    ex = PoolExecutor(plan, Store(tmp_path / "runs"))
    try:
        pids: set[int] = set()
        for _ in range(10):  # until both workers have run one (one may start much later than the other)
            pids |= {f.result(timeout=60) for f in [ex.pool.submit(_pid_after, 1.0) for _ in range(2)]}
            if len(pids) == 2:
                break
        stopped, ended = sorted(pids)
        procs = ex.pool._processes  # pid -> multiprocessing.Process
        os.kill(stopped, signal.SIGHUP)  # a closed terminal: left to the driver, which stops the workers
        os.kill(stopped, STOP)  # idle: starts no more groups, but stays for the pool's own shutdown
        time.sleep(0.5)
        assert procs[stopped].is_alive()
        os.kill(ended, signal.SIGTERM)
        procs[ended].join(timeout=20)
        assert procs[ended].exitcode == 128 + signal.SIGTERM, "an idle worker ignored SIGTERM"
    finally:
        ex.broken = True  # a worker is gone: end the rest as after a crash
        ex.close()
    assert not any(p.is_alive() for p in procs.values())

    # Busy: the first signal interrupts the group; a second, while its `stopped` rows are written, does not.
    w = _Worker(None)
    w._busy = True  # inside a group
    with pytest.raises(KeyboardInterrupt):
        w.on_signal(signal.SIGTERM, None)
    w.on_signal(signal.SIGTERM, None)  # returns: the group is already stopping
    w.on_signal(STOP, None)


@pytest.mark.slow
def test_ray_worker_killed_retry_resumes_from_checkpoint(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    spec = _spec("kill-ray", (0.4,))
    want = _reference(spec, tmp_path / "ref")
    root = tmp_path / "runs"
    # Ray's workers must import this checkout's groklab, whatever their working directory.
    src = str(Path(groklab.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    killer = Killer(root, sorted(_targets(3)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        killer.start()
        report = run_sweep(spec, store=Store(root), backend="ray", max_retries=3)
        killer.stop.set()
        # A storage path the user names (e.g. on NFS): each group keeps its own store there while
        # it runs, and the driver copies metrics and checkpoint into its store at the end.
        shared = tmp_path / "shared"
        named = run_sweep(spec, store=Store(tmp_path / "named"), backend="ray", storage=shared)
    finally:
        killer.stop.set()
        ray.shutdown()
    killer.join()
    assert not named.failed
    (gid,) = [o.group_id for o in named.outcomes]
    assert (shared / gid / "groklab.db").exists() and (shared / gid / "groups" / gid).exists()
    named_store = Store(tmp_path / "named")
    (named_row,) = named_store.list()
    assert named_row["group_id"] == gid and named_row["status"] == "finished"
    _assert_same(_by_name(named_store)[named_row["name"]], want[named_row["name"]])
    assert len(killer.killed) == 3 and len({pid for pid, _ in killer.killed}) == 3  # three workers died
    assert not report.failed, [o.error for o in report.failed]
    store = Store(root)
    (row,) = store.list()
    assert row["status"] == "finished"
    # Each retry resumed from the checkpoint its killed predecessor wrote to the driver's store:
    # no worker after the first ever showed a last-logged step below the first checkpoint.
    first = killer.killed[0][0]
    later = {pid: step for pid, step in killer.lowest.items() if pid != first}
    assert len(later) >= 3 and min(later.values()) >= 15, killer.lowest
    _assert_same(_by_name(store)[row["name"]], want[row["name"]])


@pytest.mark.parametrize("stop", ["sigterm", "hangup", "sigterm-storage"])
def test_stopping_a_ray_sweep_leaves_its_runs_stopped(tmp_path, stop):
    """The driver of a Ray sweep on a local cluster, stopped as `timeout` does (SIGTERM to it) or
    by a closed terminal (SIGHUP to its whole process group): the running tasks mark their runs
    `stopped` at the last checkpoint and every Ray process is gone. Before, Ray's own SIGTERM
    handler exited the driver at once, and the hang-up killed the raylet and the tasks with it:
    both left the runs `running` (lost)."""
    import sys

    pytest.importorskip("ray")
    root = tmp_path / "runs"
    sets = [a for s in SET[:-1] + ["train.steps=100000", "train.checkpoint_every=10", "train.eval_every=10", CPU]
            for a in ("--set", s)]
    src = str(Path(groklab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    shared = tmp_path / "shared"  # with `--storage`, each group trains into a store of its own there
    storage = ["--storage", str(shared)] if stop.endswith("storage") else []
    cmd = [sys.executable, "-m", "groklab", "sweep", "quickstart", "--grid", "data.frac_train=0.3,0.4", "--name", "rs",
           "--backend", "ray", "--store", str(root), *storage, *sets]
    store, how = Store(root), stop.removesuffix("-storage")
    code, err, left = stop_command(cmd, lambda: _past_a_checkpoint(store, shared if storage else None), how, env=env)
    assert code == STOPS[how], err[-2000:]
    rows = store.list(sweep="rs")
    assert [r["status"] for r in rows] == ["stopped", "stopped"], err[-2000:]
    if storage:  # the group's own store holds its rows, stopped too, and the checkpoint to resume
        assert {o["status"] for r in rows for o in Store(shared / r["group_id"]).list()} == {"stopped"}
    kept = {r["id"]: (Store(shared / r["group_id"]) if storage else store).paths.checkpoint(r["group_id"])
            for r in rows}
    assert all(path.exists() for path in kept.values()), (
        [(r["summary"], store.metrics(r["id"])["step"].tolist()) for r in rows],
        {i: sorted(p.name for p in path.parent.glob("*")) if path.parent.exists() else None for i, path in kept.items()},
        err[-3000:])
    assert not left, left  # the local cluster went with the driver


def _past_a_checkpoint(store: Store, shared: Path | None) -> bool:
    """Both runs of the Ray sweep `rs` have logged an evaluation at step 20 or later, so their
    checkpoints at steps 10 and 20 (`train.checkpoint_every=10`) are due: in the driver's store,
    or with `--storage` in their groups' own stores under `shared`. Counting evaluations instead
    was wrong: the log-spaced ones come at steps 0, 1, 2, …, and a stop that arrived before step 10
    (on a loaded machine) left a run rightly `stopped` without a checkpoint, and the test failing."""
    rows = store.list(sweep="rs") if store.exists() else []
    if len(rows) != 2:
        return False
    for r in rows:
        where = Store(shared / r["group_id"]) if shared is not None else store
        own = [o for o in where.list() if o["name"] == r["name"]] if where.exists() else []
        steps = where.metrics(own[0]["id"]).get("step") if own else None
        if steps is None or steps.empty or steps.max() < 20:
            return False
    return True


def test_a_stopped_ray_sweep_marks_the_groups_no_task_holds(tmp_path):
    """One CPU, two groups: one trains, the other waits. A stop cancels the waiting task before it
    starts; its rows, which the driver made, were left `running` (lost) until the driver marked
    every row no live task holds `stopped`."""
    ray = pytest.importorskip("ray")
    from groklab.sweep.backends import RayExecutor
    from groklab.sweep.plan import Resources, plan_sweep

    spec = load_spec({"name": "rp", "base": "quickstart", "axes": {"data.frac_train": [0.3, 0.4]},
                      "set": SET[:-1] + ["train.steps=100000", "train.checkpoint_every=10", CPU]})
    store = Store(tmp_path / "runs")
    plan = plan_sweep("rp", expand(spec), store, resources=Resources(1), pack=1, threads=1)
    assert len(plan.groups) == 2
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with RayExecutor(plan, store) as executor:
            for group in plan.groups:
                executor.submit(group)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(len(store.metrics(r["id"])) > 2 for r in store.list()):
                time.sleep(0.2)
            executor.stop()
    finally:
        ray.shutdown()
    rows = store.list(sweep="rp")
    assert sorted(len(store.metrics(r["id"])) > 2 for r in rows) == [False, True]  # one trained, one waited
    assert [r["status"] for r in rows] == ["stopped", "stopped"]


def test_a_stopped_ray_sweep_marks_the_rows_a_task_that_ended_left_running(tmp_path):
    """A task that has ended holds no rows, though the Ray worker that ran it lives on for the next
    task. Rows it left `running` (a stop that reached the task as it started, after training had
    taken the rows over and before it could mark them) named that live worker as their owner, so the
    driver's stop left them `running` — shown `lost` once the cluster went. Here the ended task's
    row is made to name a live process, as that worker would be."""
    import subprocess

    ray = pytest.importorskip("ray")
    from groklab.sweep.backends import RayExecutor
    from groklab.sweep.plan import Resources, plan_sweep

    spec = load_spec({"name": "re", "base": "quickstart", "axes": {"data.frac_train": [0.3]},
                      "set": SET[:-1] + ["train.steps=20", CPU]})
    store = Store(tmp_path / "runs")
    plan = plan_sweep("re", expand(spec), store, resources=Resources(1), pack=1, threads=1)
    worker = subprocess.Popen(["sleep", "60"])  # stands in for the idle worker
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with RayExecutor(plan, store) as executor:
            (outcome,) = executor.completed([executor.submit(plan.groups[0])])
            assert outcome.statuses == ["finished"]
            store.conn.execute("UPDATE runs SET status='running', owner_pid=?, owner_start=NULL", (worker.pid,))
            executor.stop()
    finally:
        ray.shutdown()
        worker.kill()
        worker.wait()
    assert [r["status"] for r in store.list(sweep="re")] == ["stopped"]
