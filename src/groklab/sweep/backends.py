"""Backends execute a plan's groups behind one interface: an :class:`Executor` takes a group
(`submit(group) -> Job`) and reports outcomes as groups finish (`completed(jobs)`); `stop()` is
Ctrl-C. :data:`BACKENDS` names them (`--backend`).

- **local** (default): with several workers, a `ProcessPoolExecutor` (spawn) with one worker per
  core (per GPU on a GPU), each worker on one torch thread. Every worker opens the store itself
  and trains with it (SQLite WAL serializes the writers), so an interrupted group keeps its
  checkpoint and resumes. With one worker the groups run in this process (no pool: tests,
  debugging, a single GPU).
- **ray**: each group is a Ray task declaring `num_cpus` / `num_gpus`. The driver creates the
  group's rows before submitting it, so every attempt of the task trains the same group and a
  retry (worker lost, node preempted, exception) resumes from the group's last checkpoint instead
  of step 0. Where the task writes (:func:`_ray_root`): on a cluster whose nodes all run on this
  host, straight into the driver's store, as the local backend does; with ``storage=DIR`` (a path
  every node sees, e.g. NFS), into a store of the group's own under ``DIR/<group>``, copied into
  the driver's store when the group ends (:func:`record_result`); on a remote cluster without
  ``storage``, into a throw-away store, so there a retry starts over. Tasks failing every retry
  (`max_retries`) are reported and stored as `failed` — never dropped.

Ctrl-C stops cleanly: pending groups are cancelled, running workers are told to stop (the engine
marks their runs `stopped` at the last checkpoint), and re-running the sweep resumes them. So do
SIGTERM and a closed terminal (SIGHUP), on Ray too (:func:`_driver_signals_kept`).
"""
from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..config import RunCfg
from ..registry import Registry
from ..store import TERMINAL
from .plan import Group, Plan

__all__ = ["GroupOutcome", "Job", "Executor", "BACKENDS", "record_result", "execute"]

STOP_GRACE_S = 30.0  # how long stopping workers may take to write their `stopped` rows
# The driver's "stop" to its pool workers; SIGTERM stays "end" (see _Worker). POSIX; elsewhere SIGTERM.
STOP = getattr(signal, "SIGUSR1", signal.SIGTERM)


@dataclass
class GroupOutcome:
    """What became of one group: its stored run ids, per-run status/summary, or an error."""

    group: Group
    group_id: str | None = None
    run_ids: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    summaries: list[dict] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and all(s in TERMINAL for s in self.statuses)

    def line(self) -> str:
        """One progress line: `<sweep>: N run(s) trained (S s)` or why it did not finish."""
        why = (self.error or ", ".join(self.statuses)).strip().splitlines() or [""]
        how = "trained" if self.ok else f"did not finish: {why[-1][:200]}"
        return f"  {self.group.sweep}: {len(self.group)} run(s) {how} ({self.seconds:.0f} s)"


OnDone = Callable[[GroupOutcome], None]


@dataclass
class Job:
    """A submitted group: `handle` is the backend's own (a future, a Ray object ref, or None for
    a group that runs when `completed` reaches it)."""

    group: Group
    handle: Any = None
    started: float = field(default_factory=time.perf_counter)


class Executor:
    """Runs groups: `submit` each, then iterate `completed` for their outcomes as they finish.
    `stop` (on Ctrl-C) cancels what has not started and stops what runs; `close` releases the
    backend. Use as a context manager."""

    def submit(self, group: Group) -> Job:
        raise NotImplementedError

    def completed(self, jobs: Sequence[Job]) -> Iterator[GroupOutcome]:
        raise NotImplementedError

    def stop(self) -> None:
        """Cancel pending groups and stop running ones, leaving them resumable."""

    def close(self) -> None:
        """Release workers and connections."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BACKENDS: Registry[Callable[..., Executor]] = Registry("backend", "--backend")
"""Backend name → `factory(plan, store, **options) -> Executor` (options: address, max_retries, storage)."""


def execute(plan: Plan, store, backend: str = "local", on_done: OnDone = lambda o: None,
            address: str | None = None, max_retries: int = 2, storage: str | Path | None = None
            ) -> list[GroupOutcome]:
    """Run a plan's groups on `backend` (a name in :data:`BACKENDS`); one outcome per group."""
    if not plan.groups:
        return []
    factory = BACKENDS.get(backend)
    outcomes: list[GroupOutcome] = []
    with factory(plan, store, address=address, max_retries=max_retries, storage=storage) as executor:
        try:
            jobs = [executor.submit(g) for g in plan.groups]
            for outcome in executor.completed(jobs):
                outcomes.append(outcome)
                on_done(outcome)
        except KeyboardInterrupt:
            executor.stop()
            raise
    return outcomes


# ---------------------------------------------------------------- one group, in any process

def _train_group(root: str, group: Group, device: str | None = None, worker: "_Worker | None" = None) -> dict:
    """Train one group into the store at `root` (in a pool worker, or in this process when
    `worker` is None); a failure is stored against the group's rows and returned."""
    from ..protocols.hooks import build_hooks
    from ..store import Store
    from ..train import engine, train  # looked up at call time: tests replace `groklab.train.train`

    if worker is not None and worker.stopping:
        return {"error": "cancelled", "stopped": True}
    t0 = time.perf_counter()
    cfgs = list(group.cfgs)
    if device:
        cfgs = [replace(c, train=replace(c.train, device=device)) for c in cfgs]
    store = Store(root)
    gid = group.group_id
    if gid is None:  # create the rows here, so a failure can be recorded against them
        gid, _ = engine.create_group(store, cfgs, group.sweep)
    hooks = build_hooks(store, group_hooks(store, group))
    try:
        with worker.busy() if worker is not None else _nothing():
            results = train(cfgs, store=store, hooks=hooks, progress=False, sweep=group.sweep, group=gid)
    except KeyboardInterrupt:
        if worker is None:
            raise
        return {"group_id": gid, "error": "stopped", "stopped": True}
    except Exception as e:  # recorded and reported; the next run of the sweep retries it
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        rows = store.group(gid)
        store.update_runs({r["id"]: ("failed", {**r["summary"], "error": err}) for r in rows
                           if r["status"] not in TERMINAL})
        return {"group_id": gid, "error": err}
    finally:
        store.close()
    return {"group_id": gid, "run_ids": [r.run_id for r in results], "statuses": [r.status for r in results],
            "summaries": [r.summary for r in results], "seconds": time.perf_counter() - t0}


def group_hooks(store, group: Group) -> tuple:
    """The hooks `group` trains with, as specs (`protocols.hooks.hook_specs`): a new group's from
    the plan, a resumed one's from what its folder in `store` records (`hooks.json`)."""
    from ..protocols.hooks import hook_specs, restore_hooks
    if group.resume and group.group_id is not None:
        return hook_specs(restore_hooks(store, group.group_id)) or ()
    return group.hooks


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _outcome(group: Group, out: dict) -> GroupOutcome:
    return GroupOutcome(group, out.get("group_id"), out.get("run_ids", []), out.get("statuses", []),
                        out.get("summaries", []), out.get("error"), seconds=out.get("seconds", 0.0))


# ---------------------------------------------------------------- local backend

class InProcessExecutor(Executor):
    """Groups trained one after another in this process, each when `completed` reaches it; Ctrl-C
    interrupts the group in training (the engine marks its runs `stopped`)."""

    def __init__(self, plan: Plan, store, **_):
        self.root = str(store.paths.root)

    def submit(self, group: Group) -> Job:
        return Job(group)

    def completed(self, jobs: Sequence[Job]) -> Iterator[GroupOutcome]:
        for job in jobs:
            yield _outcome(job.group, _train_group(self.root, job.group))


class _Worker:
    """A pool worker process: its GPU and its signals; the object is the process's handler (signal
    handlers are per process), which is how a task finds it.

    - the driver's stop (Ctrl-C; :data:`STOP`): inside a group, training is interrupted (rows
      `stopped`, checkpoint intact); between groups, it starts no more;
    - SIGTERM (a kill from outside, or the pool ending its workers after one died, which Python
      >= 3.12 does with `terminate()` and then joins them): a group is stopped the same way, an idle
      worker exits (ignoring it there would hang that join forever).
    A second signal while a group is stopping is ignored, so it cannot cut the `stopped` rows short."""

    def __init__(self, device: str | None):
        self.device, self.stopping, self._busy = device, False, False

    def on_signal(self, signum, frame) -> None:
        if self._busy:
            if not self.stopping:
                self.stopping = True
                raise KeyboardInterrupt  # the engine marks its runs `stopped`, checkpoint intact
            return
        self.stopping = True
        if signum == signal.SIGTERM:
            raise SystemExit(128 + signum)

    @contextmanager
    def busy(self) -> Iterator[None]:
        self._busy = True  # from here a signal interrupts
        try:
            if self.stopping:  # told to stop while the rows were being created: leave them resumable
                raise KeyboardInterrupt
            yield
        finally:
            self._busy = False

    @classmethod
    def current(cls) -> "_Worker":
        handler = signal.getsignal(STOP)
        return handler.__self__  # installed by _init_worker


def _init_worker(devices, pids) -> None:
    """Pool worker start-up: one thread, Ctrl-C and a closed terminal's SIGHUP left to the driver
    (which stops the workers itself), STOP and SIGTERM handled, own GPU; tell the driver this
    process's id (so it can stop it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    worker = _Worker(f"cuda:{devices.get()}" if devices is not None else None)
    signal.signal(STOP, worker.on_signal)
    signal.signal(signal.SIGTERM, worker.on_signal)
    pids.put(os.getpid())


def _pool_task(root: str, group: Group) -> dict:
    worker = _Worker.current()
    return _train_group(root, group, worker.device, worker)


class PoolExecutor(Executor):
    """Groups on a pool of `plan.workers` spawned processes (see the module docstring)."""

    def __init__(self, plan: Plan, store, **_):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.root = str(store.paths.root)
        ctx = mp.get_context("spawn")
        devices = None
        if plan.resources.kind == "gpu":  # each worker claims one GPU for its lifetime
            devices = ctx.Queue()
            for i in range(plan.workers):
                devices.put(i % max(1, plan.resources.gpus))
        self._pids_queue, self._pids = ctx.Queue(), set()
        self.pool = ProcessPoolExecutor(max_workers=plan.workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(devices, self._pids_queue))
        self.futures: list = []
        self.broken = False

    def submit(self, group: Group) -> Job:
        job = Job(group, self.pool.submit(_pool_task, self.root, group))
        self.futures.append(job.handle)
        return job

    def completed(self, jobs: Sequence[Job]) -> Iterator[GroupOutcome]:
        from concurrent.futures import as_completed

        by_future = {job.handle: job for job in jobs}
        for fut in as_completed(by_future):
            yield self._collect(by_future[fut].group, fut)

    def _collect(self, group: Group, fut) -> GroupOutcome:
        try:
            return _outcome(group, fut.result())
        except Exception as e:  # the worker process died (killed, out of memory): rows stay resumable
            from concurrent.futures.process import BrokenProcessPool
            self.broken |= isinstance(e, BrokenProcessPool)  # the pool fails every pending group with it
            return GroupOutcome(group, group.group_id, error=f"worker died: {type(e).__name__}: {e}")

    def _workers(self) -> set[int]:
        """The process ids the workers reported so far."""
        import queue
        while True:
            try:
                self._pids.add(self._pids_queue.get_nowait())
            except queue.Empty:
                return self._pids

    def stop(self) -> None:
        """Cancel queued groups, ask the workers to stop (:data:`STOP`), kill those that hang."""
        from concurrent.futures import wait

        for fut in self.futures:
            fut.cancel()
        told: set[int] = set()
        deadline = time.monotonic() + STOP_GRACE_S
        while True:  # a worker still starting reports its id late: tell it too
            new = self._workers() - told
            _signal_all(new, STOP)  # → KeyboardInterrupt inside train → rows marked `stopped`
            told |= new
            running = [f for f in self.futures if not f.done()]
            if not running or time.monotonic() > deadline:
                break
            wait(running, timeout=0.2)
        _signal_all(told, signal.SIGKILL)  # done with them (or they hang); the pool reaps them on shutdown

    def close(self) -> None:
        if self.broken:
            self._end_workers()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _end_workers(self) -> None:
        """After a worker died abruptly the pool ends the others itself (SIGTERM, then a join that
        waits for each). One that was training stops its group and then sits idle, where only
        another SIGTERM ends it: repeat it until every worker is gone, SIGKILL after the grace."""
        deadline = time.monotonic() + STOP_GRACE_S
        while (left := {pid for pid in self._workers() if _exists(pid)}) and time.monotonic() < deadline:
            _signal_all(left, signal.SIGTERM)
            time.sleep(0.2)
        _signal_all(left, signal.SIGKILL)


def _exists(pid: int) -> bool:
    """Whether process `pid` still exists (a zombie not yet joined by the pool counts)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone (or its pid reused by someone else's process)
        return False
    return True


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):  # already gone
            pass


@BACKENDS.register("local", doc="this machine: a process pool, or this process with one worker")
def local_executor(plan: Plan, store, **options) -> Executor:
    return PoolExecutor(plan, store) if plan.workers > 1 else InProcessExecutor(plan, store)


# ---------------------------------------------------------------- writing results (Ray driver)

def record_result(store, results, *, sweep: str | None = None, group: str | None = None,
                  checkpoint: bytes | None = None, env: dict | None = None,
                  files: dict[str, bytes] | None = None) -> list[int]:
    """Write runs trained elsewhere (e.g. `train(cfgs, store=None)`) into `store`.

    Args:
        store: the :class:`groklab.store.Store` to write.
        results: the `RunResult`s of one group (config, status, summary, metrics history).
        sweep: tag new rows with this sweep name.
        group: write into this stored group's rows (replacing their metrics) instead of
            creating rows — how a rerun of an interrupted group lands without duplicates.
        checkpoint: the group's checkpoint file contents, stored as the group's checkpoint.
        env: versions/git sha recorded with new rows (default: this process's).
        files: the group folder's other files (what its hooks wrote: snapshots, `hooks.json`), by
            path relative to the folder.
    Returns:
        The run ids, in member order.
    """
    from ..train.engine import create_group

    results = list(results)
    if group is not None and store.group(group):
        ids = [r["id"] for r in store.group(group)]
        if len(ids) != len(results):
            raise ValueError(f"group {group} has {len(ids)} runs but {len(results)} results were given")
        store.truncate_metrics(ids, -1)
    else:
        group, ids = create_group(store, [r.config for r in results], sweep, env, group)
    rows = []
    for run_id, res in zip(ids, results):
        for rec in res.metrics.to_dict("records"):
            step = int(rec.pop("step"))
            for key, value in rec.items():
                if value is None or (key == "phase" and value != value):  # phase NaN = no phase
                    continue
                rows.append((run_id, step, key, float(value)))
    store.log_metrics(rows)
    from ..train.checkpoint import atomic_write, drop_ledgers
    folder = store.paths.group_dir(group).resolve()
    for rel, data in sorted((files or {}).items()):
        path = (folder / rel).resolve()
        if not path.is_relative_to(folder):  # a task's file list names files inside its group only
            raise ValueError(f"group {group}: file {rel!r} lies outside the group's folder")
        atomic_write(path, data, what="group file")
    if checkpoint is not None:
        atomic_write(store.paths.checkpoint(group), checkpoint, what="checkpoint")
        drop_ledgers(store.paths.checkpoint(group))  # a finished group's checkpoint is whole
    store.update_runs({i: (r.status, r.summary) for i, r in zip(ids, results)})
    return ids


def _record_failure(store, group: Group, error: str) -> tuple[str, list[int]]:
    """Store a group that failed on Ray as `failed` rows: reported, and retried next time."""
    if group.group_id is not None:
        rows = store.group(group.group_id)
        store.update_runs({r["id"]: ("failed", {"error": error}) for r in rows})
        return group.group_id, [r["id"] for r in rows]
    from ..train.engine import create_group
    gid, ids = create_group(store, group.cfgs, group.sweep)
    store.update_runs({i: ("failed", {"error": error}) for i in ids})
    return gid, ids


# ---------------------------------------------------------------- Ray backend

def _ray_train(root: str | None, sweep: str, cfgs: list[RunCfg], gid: str, copy_back: bool,
               hooks: tuple = ()) -> dict:
    """A Ray task: train group `gid` with `hooks` (specs) into the store at `root` (None: a
    throw-away one), resuming the checkpoint an earlier attempt left there; return what the driver
    needs to report (and, with `copy_back`, to store: metric histories, the checkpoint and the
    files the hooks wrote in the group's folder)."""
    import tempfile

    from ..protocols.hooks import build_hooks, hook_specs, restore_hooks
    from ..store import Store
    from ..train import train
    from ..train.engine import create_group, environment

    try:  # SIGTERM (Ray stopping the worker, a preempted node) stops like Ctrl-C: rows `stopped`
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread of the worker: Ray's own handling stays
        previous = None
    tmp = tempfile.TemporaryDirectory(prefix="groklab-ray-") if root is None else None
    st = Store(tmp.name if tmp else root)
    try:
        if not st.group(gid):
            create_group(st, cfgs, sweep, group=gid)
        # A group resumed from a store of its own (`storage`) finds its hooks there if the driver's
        # copy of its folder has none yet (it is copied back when the group ends).
        hooks = hooks or hook_specs(restore_hooks(st, gid)) or ()
        results = train(cfgs, store=st, hooks=build_hooks(st, hooks), progress=False, sweep=sweep, group=gid)
        out = {"runs": [{"status": r.status, "summary": r.summary,
                         "metrics": r.metrics.to_dict("records") if copy_back else []} for r in results],
               "checkpoint": None, "files": {}, "env": environment()}
        if copy_back:
            ckpt = st.paths.checkpoint(gid)
            out["checkpoint"] = ckpt.read_bytes() if ckpt.exists() else None
            out["files"] = _hook_files(st.paths.group_dir(gid))
        return out
    finally:
        st.close()
        if tmp is not None:
            tmp.cleanup()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _hook_files(folder: Path) -> dict[str, bytes]:
    """A group folder's files besides its checkpoint (and ledgers): what its hooks wrote."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("checkpoint") and ".tmp" not in p.name}


def _raise_interrupt(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a repeat would cut the `stopped` rows short
    raise KeyboardInterrupt


def _ray_is_local(ray) -> bool:
    """Do all of the cluster's live nodes run on this host (so they see the driver's files)?"""
    here = ray.util.get_node_ip_address()
    return all(n.get("NodeManagerAddress") == here for n in ray.nodes() if n.get("Alive"))


def _ray_root(store, storage: str | Path | None, local: bool, gid: str) -> tuple[str | None, bool]:
    """(the store a group's task writes, whether the driver copies its results back)."""
    if storage is not None:
        return str(Path(storage).resolve() / gid), True
    if local:
        return str(store.paths.root.resolve()), False
    return None, True


def _ray_gpu_free() -> int:
    import torch
    return int(torch.cuda.mem_get_info()[0])


def ray_resources():
    """The running Ray cluster's CPUs, GPUs and (probed by a tiny task) free memory of one GPU."""
    import ray

    from .plan import Resources
    total = ray.cluster_resources()
    cpus, gpus = int(total.get("CPU", 1)), int(total.get("GPU", 0))
    free = ray.get(ray.remote(num_gpus=1)(_ray_gpu_free).remote()) if gpus else 0
    return Resources(cpus, gpus, free)


@contextmanager
def _driver_signals_kept() -> Iterator[None]:
    """Around `ray.init` on the driver. Ray replaces the SIGTERM handler with one that exits at
    once (SystemExit), so a `timeout` or scheduler stop left the sweep's rows `running` (lost):
    the driver's handler is put back. The local cluster's processes start with SIGHUP ignored
    (they inherit it): a closed terminal hangs up its whole foreground process group, which
    killed the raylet and the tasks before the driver could stop them (rows lost again); now only
    the driver hears it, and stops the tasks like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():  # only it may set handlers
        yield
        return
    hup = getattr(signal, "SIGHUP", None)  # POSIX only
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, hup) if sig is not None}
    if hup is not None:
        signal.signal(hup, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextmanager
def ray_session(address: str | None = None):
    """Use the running Ray instance, or connect to `address` (None: start a local one) and
    shut it down on exit. Ray is imported here only: it is an optional dependency."""
    try:
        import ray
    except ImportError:
        from ..config import ConfigError
        raise ConfigError("--backend ray needs Ray: pip install 'groklab[ray]'") from None
    if ray.is_initialized():
        yield ray
        return
    kwargs = {"include_dashboard": False} if address is None else {}
    with _driver_signals_kept():
        ray.init(address=address, log_to_driver=False, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


@BACKENDS.register("ray", doc="a Ray cluster: one task per group, retried from its checkpoint")
class RayExecutor(Executor):
    """Groups as Ray tasks; every result reaches `store` (see the module docstring).

    Uses the running Ray instance if there is one, else connects to `address` (None starts a
    local instance, shut down on `close`). `storage`: a directory every node sees, where tasks
    keep each group's store and checkpoints while they run (default: the driver's store when the
    cluster runs on this host).
    """

    def __init__(self, plan: Plan, store, address: str | None = None, max_retries: int = 2,
                 storage: str | Path | None = None, **_):
        self._session = ExitStack()
        self.ray = self._session.enter_context(ray_session(address))
        self.store, self.max_retries, self.storage = store, max_retries, storage
        self.gpu = plan.resources.kind == "gpu"
        self.task = self.ray.remote(_ray_train)
        self.local = storage is None and _ray_is_local(self.ray)
        self.refs: list = []
        self.groups: list[str] = []  # the group ids submitted, whose rows the driver made

    def submit(self, group: Group) -> Job:
        hooks = group_hooks(self.store, group)  # before the rows exist: a new group's are the plan's
        if group.group_id is None:  # the driver makes the rows: every attempt trains the same group
            from ..train.engine import create_group
            group = replace(group, group_id=create_group(self.store, group.cfgs, group.sweep)[0])
        root, copy_back = _ray_root(self.store, self.storage, self.local, group.group_id)
        opts = dict(num_cpus=1, num_gpus=1 if self.gpu else 0, max_retries=self.max_retries, retry_exceptions=True)
        ref = self.task.options(**opts).remote(root, group.sweep, list(group.cfgs), group.group_id, copy_back,
                                               hooks)
        self.refs.append(ref)
        self.groups.append(group.group_id)
        return Job(group, (ref, copy_back))

    def completed(self, jobs: Sequence[Job]) -> Iterator[GroupOutcome]:
        by_ref = {job.handle[0]: job for job in jobs}
        pending = list(by_ref)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            job = by_ref[ready[0]]
            outcome = self._outcome(job, ready[0])
            outcome.seconds = time.perf_counter() - job.started
            yield outcome

    def _outcome(self, job: Job, ref) -> GroupOutcome:
        import pandas as pd

        from ..train.engine import RunResult

        g, copy_back = job.group, job.handle[1]
        try:
            out = self.ray.get(ref)
        except Exception as e:  # retries exhausted: report and store as failed
            lines = str(e).strip().splitlines()
            err = f"{type(e).__name__}: {lines[-1] if lines else ''} (after {self.max_retries + 1} attempt(s))"
            gid, ids = _record_failure(self.store, g, err)
            return GroupOutcome(g, gid, ids, ["failed"] * len(ids), error=err)
        results = [RunResult(None, c, r["status"], r["summary"], pd.DataFrame(r["metrics"]))
                   for c, r in zip(g.cfgs, out["runs"])]
        if copy_back:
            ids = record_result(self.store, results, sweep=g.sweep, group=g.group_id,
                                checkpoint=out["checkpoint"], env=out["env"], files=out["files"])
        else:  # the task wrote the driver's store itself
            ids = [r["id"] for r in self.store.group(g.group_id)]
        return GroupOutcome(g, g.group_id, ids, [r.status for r in results], [r.summary for r in results])

    def stop(self) -> None:
        # A plain cancel drops a task not yet started and raises KeyboardInterrupt inside a running
        # one: the engine marks its rows `stopped` at the last checkpoint, as a pool worker's do.
        # Tasks still going after the grace period are killed (rows resumable from the checkpoint).
        if not self.refs:
            return
        _, live = self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        for ref in live:
            self._cancel(ref, force=False)
        _, left = self.ray.wait(live, num_returns=len(live), timeout=STOP_GRACE_S) if live else ([], [])
        for ref in left:
            self._cancel(ref, force=True)
        if left:  # a forced cancel kills the worker asynchronously: until it is gone its rows look held
            self.ray.wait(left, num_returns=len(left), timeout=10)
        # Rows no live task holds are marked here: those of a task cancelled before it started (the
        # driver made them), of one killed after the grace period, and the driver's copies of the
        # rows of a task with a store of its own (`storage`, a remote cluster), which marked its
        # rows there and updates these only when the group ends. A task that has ended holds none,
        # though the worker that ran it lives on for the next task: rows it left `running` (a stop
        # that met it as it took them over) would otherwise look held until shutdown.
        from ..store import trained_elsewhere
        ended = set(self.ray.wait(self.refs, num_returns=len(self.refs), timeout=0)[0])
        for ref, gid in zip(self.refs, self.groups):
            rows = [r for r in self.store.group(gid)
                    if r["status"] == "running" and (ref in ended or not trained_elsewhere(r))]
            if rows:
                self.store.update_runs({r["id"]: ("stopped", r["summary"]) for r in rows})

    def _cancel(self, ref, force: bool) -> None:
        try:
            self.ray.cancel(ref, force=force)
        except Exception:  # noqa: BLE001 - already finished
            pass

    def close(self) -> None:
        self._session.close()
