"""Backends execute a plan's groups: `local` (process pool on this machine) or `ray` (a cluster).

- **local** (default): a `ProcessPoolExecutor` (spawn) with one worker per core (per GPU on a
  GPU), each worker on one torch thread. Every worker opens the store itself and trains with it
  (SQLite WAL serializes the writers), so an interrupted group keeps its checkpoint and resumes.
  With one worker the groups run in this process (no pool: tests, debugging, a single GPU).
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
marks their runs `stopped` at the last checkpoint), and re-running the sweep resumes them.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..config import RunCfg
from ..store import TERMINAL
from .plan import Group, Plan

__all__ = ["GroupOutcome", "run_local", "run_ray", "record_result", "execute"]

STOP_GRACE_S = 30.0  # how long stopping workers may take to write their `stopped` rows


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


OnDone = Callable[[GroupOutcome], None]


# ---------------------------------------------------------------- local backend

_STOP = False   # set in a worker by SIGTERM: finish the current group as `stopped`, start no more
_BUSY = False


def _on_sigterm(signum, frame) -> None:
    global _STOP
    _STOP = True
    if _BUSY:
        raise KeyboardInterrupt  # the engine marks its runs `stopped`, checkpoint intact


def _init_worker(devices) -> None:
    """Pool worker start-up: one thread, Ctrl-C left to the driver, SIGTERM = stop, own GPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    if devices is not None:
        os.environ["GROKLAB_SWEEP_DEVICE"] = f"cuda:{devices.get()}"


def _train_group(root: str, sweep: str, group: Group, in_worker: bool = True) -> dict:
    """Train one group into the store at `root` (runs in a pool worker or in-process)."""
    global _BUSY
    from ..store import Store
    from ..train import train
    from ..train.engine import create_group

    if _STOP:
        return {"error": "cancelled", "stopped": True}
    t0 = time.perf_counter()
    cfgs = list(group.cfgs)
    device = os.environ.get("GROKLAB_SWEEP_DEVICE") if in_worker else None
    if device:
        cfgs = [replace(c, train=replace(c.train, device=device)) for c in cfgs]
    store = Store(root)
    gid = group.group_id
    if gid is None:  # create the rows here, so a failure can be recorded against them
        gid, _ = create_group(store, cfgs, sweep)
    _BUSY = True
    try:
        if _STOP:  # told to stop while the rows were being created: leave them resumable
            raise KeyboardInterrupt
        results = train(cfgs, store=store, progress=False, sweep=sweep, group=gid)
    except KeyboardInterrupt:
        if not in_worker:
            raise
        return {"group_id": gid, "error": "stopped", "stopped": True}
    except Exception as e:  # recorded and reported; the next run of the sweep retries it
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        rows = store.group(gid)
        store.update_runs({r["id"]: ("failed", {**r["summary"], "error": err}) for r in rows
                           if r["status"] not in TERMINAL})
        return {"group_id": gid, "error": err}
    finally:
        _BUSY = False
        store.close()
    return {"group_id": gid, "run_ids": [r.run_id for r in results], "statuses": [r.status for r in results],
            "summaries": [r.summary for r in results], "seconds": time.perf_counter() - t0}


def _outcome(group: Group, out: dict) -> GroupOutcome:
    return GroupOutcome(group, out.get("group_id"), out.get("run_ids", []), out.get("statuses", []),
                        out.get("summaries", []), out.get("error"), seconds=out.get("seconds", 0.0))


def run_local(plan: Plan, root: str | Path, on_done: OnDone = lambda o: None) -> list[GroupOutcome]:
    """Execute the plan on this machine (see the module docstring)."""
    root = str(root)
    if plan.workers <= 1:
        outcomes = []
        for g in plan.groups:
            outcomes.append(_outcome(g, _train_group(root, plan.sweep, g, in_worker=False)))
            on_done(outcomes[-1])
        return outcomes

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = mp.get_context("spawn")
    devices = None
    if plan.resources.kind == "gpu":  # each worker claims one GPU for its lifetime
        devices = ctx.Queue()
        for i in range(plan.workers):
            devices.put(i % max(1, plan.resources.gpus))
    pool = ProcessPoolExecutor(max_workers=plan.workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(devices,))
    futures = {}
    outcomes: list[GroupOutcome] = []
    try:
        futures = {pool.submit(_train_group, root, plan.sweep, g): g for g in plan.groups}
        for fut in as_completed(futures):
            outcomes.append(_collect(futures[fut], fut))
            on_done(outcomes[-1])
    except KeyboardInterrupt:
        _stop_pool(pool, futures)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def _collect(group: Group, fut) -> GroupOutcome:
    try:
        return _outcome(group, fut.result())
    except Exception as e:  # the worker process died (killed, out of memory): rows stay resumable
        return GroupOutcome(group, group.group_id, error=f"worker died: {type(e).__name__}: {e}")


def _stop_pool(pool, futures: dict) -> None:
    """Cancel queued groups, ask running workers to stop (SIGTERM), kill those that hang."""
    for fut in futures:
        fut.cancel()
    procs = list(getattr(pool, "_processes", {}).values())  # the executor's own worker handles
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM → KeyboardInterrupt inside train → rows marked `stopped`
    deadline = time.monotonic() + STOP_GRACE_S
    for fut in futures:
        if not fut.cancelled():
            try:
                fut.result(timeout=max(0.1, deadline - time.monotonic()))
            except BaseException:  # noqa: BLE001 - any end is fine here: we are stopping
                pass
    for p in procs:
        if p.is_alive():
            p.kill()


# ---------------------------------------------------------------- writing results (Ray driver)

def record_result(store, results, *, sweep: str | None = None, group: str | None = None,
                  checkpoint: bytes | None = None, env: dict | None = None) -> list[int]:
    """Write runs trained elsewhere (e.g. `train(cfgs, store=None)`) into `store`.

    Args:
        store: the :class:`groklab.store.Store` to write.
        results: the `RunResult`s of one group (config, status, summary, metrics history).
        sweep: tag new rows with this sweep name.
        group: write into this stored group's rows (replacing their metrics) instead of
            creating rows — how a rerun of an interrupted group lands without duplicates.
        checkpoint: the group's checkpoint file contents, stored as the group's checkpoint.
        env: versions/git sha recorded with new rows (default: this process's).
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
    if checkpoint is not None:
        from ..train.checkpoint import atomic_write
        atomic_write(store.paths.checkpoint(group), checkpoint, what="checkpoint")
    store.update_runs({i: (r.status, r.summary) for i, r in zip(ids, results)})
    return ids


def _record_failure(store, sweep: str, group: Group, error: str) -> tuple[str, list[int]]:
    """Store a group that failed on Ray as `failed` rows: reported, and retried next time."""
    if group.group_id is not None:
        rows = store.group(group.group_id)
        store.update_runs({r["id"]: ("failed", {"error": error}) for r in rows})
        return group.group_id, [r["id"] for r in rows]
    from ..train.engine import create_group
    gid, ids = create_group(store, group.cfgs, sweep)
    store.update_runs({i: ("failed", {"error": error}) for i in ids})
    return gid, ids


# ---------------------------------------------------------------- Ray backend

def _ray_train(root: str | None, sweep: str, cfgs: list[RunCfg], gid: str, copy_back: bool) -> dict:
    """A Ray task: train group `gid` into the store at `root` (None: a throw-away one), resuming
    the checkpoint an earlier attempt left there; return what the driver needs to report (and,
    with `copy_back`, to store: metric histories and the checkpoint)."""
    import tempfile

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
        results = train(cfgs, store=st, progress=False, sweep=sweep, group=gid)
        out = {"runs": [{"status": r.status, "summary": r.summary,
                         "metrics": r.metrics.to_dict("records") if copy_back else []} for r in results],
               "checkpoint": None, "env": environment()}
        ckpt = st.paths.checkpoint(gid)
        if copy_back and ckpt.exists():
            out["checkpoint"] = ckpt.read_bytes()
        return out
    finally:
        st.close()
        if tmp is not None:
            tmp.cleanup()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame) -> None:
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
    ray.init(address=address, log_to_driver=False, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(plan: Plan, store, on_done: OnDone = lambda o: None, address: str | None = None,
            max_retries: int = 2, storage: str | Path | None = None) -> list[GroupOutcome]:
    """Execute the plan as Ray tasks; every result reaches `store` (see the module docstring).

    Uses the running Ray instance if there is one, else connects to `address` (None starts a
    local instance, shut down afterwards). `storage`: a directory every node sees, where tasks
    keep each group's store and checkpoints while they run (default: the driver's store when the
    cluster runs on this host).
    """
    with ray_session(address) as ray:
        return _run_ray(ray, plan, store, on_done, max_retries, storage)


def _run_ray(ray, plan: Plan, store, on_done: OnDone, max_retries: int,
             storage: str | Path | None = None) -> list[GroupOutcome]:
    import pandas as pd

    from ..train.engine import RunResult, create_group

    gpu = plan.resources.kind == "gpu"
    task = ray.remote(_ray_train)
    refs: dict = {}
    outcomes: list[GroupOutcome] = []
    local = storage is None and _ray_is_local(ray)
    try:
        for g in plan.groups:
            g = g if g.group_id else replace(g, group_id=create_group(store, g.cfgs, plan.sweep)[0])
            root, copy_back = _ray_root(store, storage, local, g.group_id)
            opts = dict(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=max_retries, retry_exceptions=True)
            ref = task.options(**opts).remote(root, plan.sweep, list(g.cfgs), g.group_id, copy_back)
            refs[ref] = (g, time.perf_counter(), copy_back)
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            g, t0, copy_back = refs[ready[0]]
            try:
                out = ray.get(ready[0])
            except Exception as e:  # retries exhausted: report and store as failed
                lines = str(e).strip().splitlines()
                err = f"{type(e).__name__}: {lines[-1] if lines else ''} (after {max_retries + 1} attempt(s))"
                gid, ids = _record_failure(store, plan.sweep, g, err)
                outcome = GroupOutcome(g, gid, ids, ["failed"] * len(ids), error=err)
            else:
                results = [RunResult(None, c, r["status"], r["summary"], pd.DataFrame(r["metrics"]))
                           for c, r in zip(g.cfgs, out["runs"])]
                if copy_back:
                    ids = record_result(store, results, sweep=plan.sweep, group=g.group_id,
                                        checkpoint=out["checkpoint"], env=out["env"])
                else:  # the task wrote the driver's store itself
                    ids = [r["id"] for r in store.group(g.group_id)]
                outcome = GroupOutcome(g, g.group_id, ids, [r.status for r in results], [r.summary for r in results])
            outcome.seconds = time.perf_counter() - t0
            outcomes.append(outcome)
            on_done(outcome)
    except KeyboardInterrupt:
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        raise
    return outcomes


def execute(plan: Plan, store, backend: str = "local", on_done: OnDone = lambda o: None,
            address: str | None = None, max_retries: int = 2, storage: str | Path | None = None
            ) -> list[GroupOutcome]:
    """Run a plan's groups on `backend` ('local' or 'ray'); return one outcome per group."""
    if not plan.groups:
        return []
    if backend == "local":
        return run_local(plan, store.paths.root, on_done)
    if backend == "ray":
        return run_ray(plan, store, on_done, address=address, max_retries=max_retries, storage=storage)
    from ..config import ConfigError
    raise ConfigError(f"--backend={backend!r} must be one of 'local', 'ray'")

