"""The planner: which runs of a sweep are done, which resume, and how the rest are packed.

Runs that differ only in `config.MEMBER_FIELDS` (seed, split, fraction, lr, weight decay, noise
scales, init scale, Grokfast λ/α) can train as one vectorized ensemble; runs that differ in
anything else go to separate groups. How many members to pack comes from measurement:

- **CPU**: one worker process per core with one thread each (two 1-thread workers beat one
  2-thread run), the runs dealt evenly over the workers in ensembles of at most CPU_PACK members.
  An ensemble step of up to ~8 small members costs less than their sequential steps (README's
  benchmark table), a group starts once instead of once per run, and members that stop early
  leave their ensemble: measured on 2 cores, an early-stopping 8-run MLP fraction sweep took
  204.7 s packed 4 × 2 against 231.4 s one run per group, a 20-run tiny one 41.7 s against
  65.3 s, and `mlp-fraction` (18 runs, 10 000-step stragglers) 745 s against 763 s, with identical
  results. Packing never changes a CPU result: members equal their solo
  runs bitwise, except members that take their whole training set in a step (full batch, or a
  set no larger than the batch) beside a larger set (padding changes the rounding of their
  reductions), so on the CPU those runs pack only with runs of the same training fraction
  (:func:`takes_whole_set`).
- **GPU**: one worker per GPU, packing as many members as fit in half its free memory, by a
  deliberately simple estimate (:func:`member_bytes`): 8 copies of the parameters and the
  activations of one batch per member, plus one evaluation chunk per group; at most 256 members.

A run's identity is its sweep name plus its canonical config (:func:`run_key`), ignoring the
fields that only say how it executes (name, description, threads, device, checkpoint cadence).
Re-planning a sweep therefore skips runs that finished (or diverged), resumes the groups of
runs that were interrupted or failed, and creates rows only for runs never started. A group that
another live process is training (a second `groklab sweep` or `reproduce` on the same store) is
left to it: resuming it too would train it twice and truncate its metrics under it.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Sequence

from ..config import ConfigError, RunCfg, ensemble_signature, flatten, from_dict, member_fields
from ..data.tasks import subset
from ..store import TERMINAL, trained_elsewhere

__all__ = ["Resources", "Group", "Plan", "plan_sweep", "join_plans", "pack_groups", "run_key", "member_bytes", "default_pack",
           "local_resources", "takes_whole_set"]

# Fields that say how a run executes, not what it computes: never part of a run's identity.
EXEC_FIELDS = frozenset({"name", "description", "train.threads", "train.device", "train.checkpoint_every",
                         "train.cuda_graphs", "train.compile"})
MAX_GPU_PACK = 256                        # beyond this, one group's evaluation dominates anyway
CPU_PACK = 8                              # beyond ~8 small members an ensemble gains little on a CPU
GPU_BUDGET = 0.5                          # fraction of free GPU memory the estimate may fill


def run_key(cfg: RunCfg) -> str:
    """Canonical JSON of what a run computes (EXEC_FIELDS dropped): equal keys = same run."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in EXEC_FIELDS}
    return json.dumps(flat, sort_keys=True)


def pack_signature(cfg: RunCfg, exact: bool = False, built: dict | None = None) -> str:
    """Runs with equal signatures may share an ensemble (`config.ensemble_signature`, execution
    fields aside: the planner gives every run of a group the same threads and device). `exact`:
    only runs whose members equal their solo runs bitwise (on the CPU): a run that trains on its
    whole set at some phase (:func:`takes_whole_set`) packs only with runs of its own fraction,
    since beside a larger set it would be padded to it. `built`: tasks built so far, by data config."""
    sig = ensemble_signature(cfg, ignore=EXEC_FIELDS)
    if exact and takes_whole_set(cfg, built):
        sig = {**sig, "data.frac_train": cfg.data.frac_train}
    return json.dumps(sig, sort_keys=True)


def takes_whole_set(cfg: RunCfg, built: dict | None = None) -> bool:
    """Whether the sampler takes the run's whole training set at some phase: full batch, or a set
    (an ungrokking phase's subset too) no larger than the batch. Such a member, packed beside a
    larger set, is padded to it and drawn in another order: the same examples, other rounding.
    `built` caches the tasks this builds, by data config less the member fields (on which a build
    may not depend: an ensemble's members share one build)."""
    if cfg.train.batch_size == "full":
        return True
    built = {} if built is None else built
    skip = member_fields(cfg)
    key = json.dumps({k: v for k, v in flatten(cfg).items() if k.startswith("data.") and k not in skip},
                     sort_keys=True, default=str)
    if key not in built:
        try:
            built[key] = _build(cfg)
        except ConfigError:  # its data is missing: it fails at start, whatever it packs with
            return False
    task_def, task = built[key]
    train_idx = task_def.split(cfg.data, task)[0]
    sizes = [len(train_idx)] + [len(subset(train_idx, ph.frac_train, 0)) for ph in cfg.train.phases
                                if ph.frac_train is not None]
    return min(sizes) <= int(cfg.train.batch_size)


def _build(cfg: RunCfg) -> tuple[Any, Any]:
    """(task definition, built task data) of `cfg`."""
    from ..data import TASKS

    task_def = TASKS.get(cfg.data.task)()
    return task_def, task_def.build(cfg.data)


# ---------------------------------------------------------------- resources and pack size

@dataclass(frozen=True)
class Resources:
    """What the backend can run on."""

    cpus: int
    gpus: int = 0
    gpu_free_bytes: int = 0
    """Free memory of one GPU (the smallest, if several)."""

    @property
    def kind(self) -> str:
        return "gpu" if self.gpus else "cpu"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def local_resources(device: str = "auto") -> Resources:
    """This machine's cores and, when `device` resolves to CUDA, its GPUs and free memory."""
    cpus = cpu_count()
    if device == "cpu":
        return Resources(cpus)
    import torch
    if not torch.cuda.is_available():
        if device.startswith("cuda"):
            raise ConfigError(f"train.device={device!r} but no CUDA device is available")
        return Resources(cpus)
    ids = [torch.device(device).index or 0] if device.startswith("cuda:") else range(torch.cuda.device_count())
    free = min(torch.cuda.mem_get_info(i)[0] for i in ids)
    return Resources(cpus, len(ids), int(free))


def member_bytes(cfg: RunCfg) -> tuple[int, int]:
    """Rough GPU memory of an ensemble of `cfg`: (bytes per member, fixed bytes per group).

    Per member: ``8 × params × 4 B`` (weights, gradient, two Adam moments, init copy, filter,
    noise, slack) plus the activations kept for backward on one batch,
    ``batch × positions × layers × (8·d_model + 2·width) × 4 B`` (width = the widest hidden layer).
    Per group: one evaluation chunk, which holds EVAL_CHUNK member-examples whatever the member
    count, ``EVAL_CHUNK × positions × width × 4 B × 4``. Measured on an H100: 64 nanda2023 members
    took 6.5 GB (≈100 MB each); this estimates 132 MB each.
    """
    import torch

    from ..models import MODELS, build_model
    from ..train.engine import EVAL_CHUNK

    task_def, task = _build(cfg)
    with torch.device("meta"):  # count parameters without allocating them
        params = build_model(cfg.model, task, 1).param_counts()["params"]
    m, m_train = len(task.y), len(task_def.split(cfg.data, task)[0])
    batch = m_train if cfg.train.batch_size == "full" else min(int(cfg.train.batch_size), m_train)
    width = max(cfg.model.d_model, getattr(cfg.model, MODELS.get(cfg.model.name).width_field))
    positions = max(1, task.seq_len)
    train_act = batch * positions * cfg.model.n_layers * (8 * cfg.model.d_model + 2 * width) * 4
    eval_act = min(m, EVAL_CHUNK) * positions * width * 4 * 4
    return 8 * params * 4 + train_act, eval_act


def default_pack(cfg: RunCfg, res: Resources, n_runs: int = 1, workers: int | None = None) -> int:
    """Members per ensemble. CPU: `n_runs` dealt into a multiple of `workers` groups (default: one
    per core) of at most CPU_PACK members each; GPU: as many as the memory estimate allows."""
    if res.kind == "cpu":
        workers, n_runs = workers or res.cpus, max(1, n_runs)  # a re-run may have no new runs
        groups = workers * math.ceil(n_runs / (workers * CPU_PACK))
        return max(1, math.ceil(n_runs / groups))
    try:
        per_member, fixed = member_bytes(cfg)
    except ConfigError:  # the task cannot be built (its data is missing): its runs fail at start, one
        return 1         # by one and stored `failed` with this error, as on a CPU
    return max(1, min(MAX_GPU_PACK, int((GPU_BUDGET * res.gpu_free_bytes - fixed) // per_member)))


# ---------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Group:
    """Runs trained together as one ensemble (one task for a backend)."""

    cfgs: tuple[RunCfg, ...]
    group_id: str | None = None
    """The stored group to resume; None for a new group."""
    sweep: str = ""
    """The sweep its runs are stored under (groups of several sweeps may execute together)."""
    hooks: tuple[tuple[str, str], ...] = ()
    """Hooks a new group trains with, as `protocols.hooks.hook_specs` (a resumed group gets the
    ones it was started with back from its folder)."""

    @property
    def resume(self) -> bool:
        return self.group_id is not None

    def __len__(self) -> int:
        return len(self.cfgs)


@dataclass
class Plan:
    """What executing a sweep will do."""

    sweep: str
    groups: list[Group]
    n_runs: int
    """Runs in the spec (after removing duplicate points)."""
    done: list[dict] = field(default_factory=list)
    """Stored rows of runs already finished or diverged (skipped), those of `reused` among them."""
    reused: list[dict] = field(default_factory=list)
    """Finished runs stored outside the sweep (a `groklab run`, another sweep) with a point's config:
    executing the plan records them as the sweep's (`Store.reuse`) instead of training them."""
    pack: int = 1
    workers: int = 1
    resources: Resources = field(default_factory=lambda: Resources(1))
    threads: int | str = 1
    """Torch threads per run (1 whenever several runs share the machine)."""
    busy: list[dict] = field(default_factory=list)
    """Stored rows of runs another live process is training (left to it: neither resumed nor new)."""
    duplicates: int = 0
    stale: int = 0
    """Stored runs of this sweep that the spec no longer contains (left as they are)."""
    shared: list[tuple[str, str]] = field(default_factory=list)
    """(run key, sweep) of points another sweep planned in the same pass trains (`run_sweeps`):
    not trained here; once that sweep has finished them, they are recorded as this sweep's."""

    @property
    def n_resume(self) -> int:
        return sum(len(g) for g in self.groups if g.resume)

    @property
    def n_new(self) -> int:
        return sum(len(g) for g in self.groups if not g.resume)

    def describe(self, swept: Sequence[str] = (), backend: str = "local", detail: bool = False) -> str:
        """Counts, grouping and execution, as printed by `groklab sweep`."""
        r = self.resources
        where = f"{r.gpus} GPU(s)" if r.kind == "gpu" else f"{r.cpus} CPU core(s)"
        reused = f" ({len(self.reused)} of them stored outside the sweep, reused)" if self.reused else ""
        lines = [f"sweep {self.sweep}: {self.n_runs} runs — {len(self.done)} done (skipped){reused}, "
                 f"{self.n_resume} to resume, {self.n_new} to train"
                 + (f", {len(self.busy)} training in another process (left to it)" if self.busy else "")
                 + (f", {len(self.shared)} trained by {', '.join(sorted({s for _, s in self.shared}))} "
                    "in this pass (counted here)" if self.shared else "")
                 + (f"; {self.duplicates} duplicate point(s) dropped" if self.duplicates else "")]
        if self.stale:
            lines.append(f"  note: {self.stale} stored run(s) of sweep {self.sweep} are not in this spec "
                         f"(kept; `groklab analyze` includes them)")
        if self.groups:
            sizes = sorted({len(g) for g in self.groups})
            lines.append(f"  {len(self.groups)} group(s) of {'/'.join(map(str, sizes))} run(s) (pack ≤ {self.pack}); "
                         f"{backend} backend on {where}: {self.workers} worker(s) × {self.threads} thread(s)")
        if detail:
            for i, g in enumerate(self.groups):
                vals = [", ".join(f"{f.split('.')[-1]}={_get(c, f)}" for f in swept) or c.name for c in g.cfgs]
                tag = f"resume {g.group_id}" if g.resume else "new"
                shown = "; ".join(vals[:4]) + (f"; … (+{len(vals) - 4})" if len(vals) > 4 else "")
                lines.append(f"  [{i + 1:>3}] {len(g):>3} run(s) {tag:<20} {shown}")
        return "\n".join(lines)


def _get(cfg: RunCfg, dotted: str) -> Any:
    from ..config import get_field
    v = get_field(cfg, dotted)
    return f"{v:g}" if isinstance(v, float) else v


def pack_groups(cfgs: Sequence[RunCfg], pack: int, exact: bool = False) -> list[tuple[RunCfg, ...]]:
    """Split configs into ensembles of at most `pack` compatible members.

    Runs are bucketed by :func:`pack_signature` (first-seen order); each bucket is ordered point by
    point (a point: the config less its seed, first-seen order) and dealt into ``ceil(n / pack)``
    near-equal groups, run i to group i mod k. So a 10-run bucket with pack 8 becomes 5 + 5 rather
    than 8 + 2, and a sweep's points (say fractions, whose runs stop early at large ones and run to
    the cap at small ones) spread over the groups: parallel workers get balanced work while
    stopped members leave their ensembles.
    """
    if pack < 1:
        raise ConfigError(f"--pack={pack} must be at least 1")
    buckets: dict[str, list[RunCfg]] = {}
    built: dict = {}  # tasks built for exact signatures, once per data config
    for cfg in cfgs:
        buckets.setdefault(pack_signature(cfg, exact, built), []).append(cfg)
    groups = []
    for members in buckets.values():
        # point by point (first-seen order), each point's runs (its seeds) in their given order
        keys = [_point(c) for c in members]
        order = {key: i for i, key in reversed(list(enumerate(keys)))}  # a point's first position
        members = [c for _, _, c in sorted(zip(map(order.get, keys), range(len(keys)), members))]
        k = math.ceil(len(members) / pack)
        groups += [tuple(members[i::k]) for i in range(k)]
    return groups


def _point(cfg: RunCfg) -> str:
    return json.dumps({k: v for k, v in flatten(cfg).items() if k != "train.seed"}, sort_keys=True, default=str)


def _execution(cfg: RunCfg, threads: int | str) -> RunCfg:
    return cfg if cfg.train.threads == threads else replace(cfg, train=replace(cfg.train, threads=threads))


def plan_sweep(sweep: str, cfgs: Sequence[RunCfg], store=None, *, pack: int | None = None,
               workers: int | None = None, resources: Resources | None = None, threads: int | None = None,
               hooks: tuple[tuple[str, str], ...] = (), reuse: bool = True,
               pending: dict[str, str] | None = None) -> Plan:
    """Plan a sweep against what the store already holds.

    Args:
        sweep: the sweep name (stored with every run).
        cfgs: the sweep's configs (from :func:`groklab.sweep.spec.expand`).
        store: a :class:`groklab.store.Store` or None (plan everything as new).
        pack: members per ensemble (default: :func:`default_pack`).
        workers: parallel worker processes (default: cores on CPU, GPUs on GPU; never more than
            the number of groups).
        resources: what the backend runs on (default: this machine).
        threads: torch threads per run (default: 1 when several workers share the machine,
            else the config's own setting).
        hooks: hooks every new group trains with (`protocols.hooks.hook_specs`).
        reuse: count a finished run stored outside the sweep with a point's exact config (what
            it computes: :func:`run_key`) as done, rather than training the point again (not for
            a sweep with hooks: a run trained without them lacks what they write).
        pending: run key → the sweep that trains it, of the sweeps planned before this one in the
            same pass; with `reuse`, a new point found there is left to that sweep (`Plan.shared`)
            rather than trained twice at once, and this sweep's new and resumed points are added.
    Returns:
        The :class:`Plan`.
    """
    if not cfgs:
        raise ConfigError(f"sweep {sweep!r} has no runs")
    res = resources or local_resources(cfgs[0].train.device)
    unique: dict[str, RunCfg] = {}
    for cfg in cfgs:
        unique.setdefault(run_key(cfg), cfg)
    stored: dict[str, list[dict]] = {}
    for row in (store.list(sweep=sweep) if store is not None else []):
        try:
            key = run_key(from_dict(RunCfg, row["config"]))
        except ConfigError:  # written by another groklab version: not one of ours
            continue
        stored.setdefault(key, []).append(row)

    # A group with hooks needs what they write (snapshots, probes), which a run trained without them lacks.
    reusing = reuse and store is not None and not hooks
    outside = _finished_outside(store, sweep, set(unique) - set(stored)) if reusing else {}
    done, busy, resume_ids, new, shared = [], [], [], [], []
    for key, cfg in unique.items():
        rows = stored.get(key, [])
        finished = [r for r in rows if r["status"] in TERMINAL]
        if finished:
            done.append(finished[0])
        elif key in outside:
            done.append(outside[key])
        elif any(trained_elsewhere(r) for r in rows):
            busy.append(rows[0])
        elif rows:
            if rows[0]["group_id"] not in resume_ids:
                resume_ids.append(rows[0]["group_id"])
            if pending is not None:
                pending.setdefault(key, sweep)
        elif reusing and pending is not None and key in pending:
            shared.append((key, pending[key]))
        else:
            new.append(cfg)
            if pending is not None:
                pending.setdefault(key, sweep)

    limit = res.gpus if res.kind == "gpu" else res.cpus
    pack = pack or default_pack(next(iter(unique.values())), res, len(new), workers or limit)
    new_groups = pack_groups(new, pack, exact=res.kind == "cpu")
    n_groups = len(new_groups) + len(resume_ids)
    workers = max(1, min(workers or limit, n_groups or 1))
    if threads is None:
        threads = 1 if workers > 1 or res.kind == "gpu" else cfgs[0].train.threads
    groups = [Group(tuple(_execution(from_dict(RunCfg, r["config"]), threads) for r in store.group(gid)), gid, sweep)
              for gid in resume_ids]
    groups += [Group(tuple(_execution(c, threads) for c in g), sweep=sweep, hooks=hooks) for g in new_groups]
    return Plan(sweep=sweep, groups=groups, n_runs=len(unique), done=done, reused=list(outside.values()), busy=busy,
                pack=pack, workers=workers, resources=res, threads=threads, duplicates=len(cfgs) - len(unique),
                stale=sum(len(rows) for key, rows in stored.items() if key not in unique), shared=shared)


def _finished_outside(store, sweep: str, keys: set[str]) -> dict[str, dict]:
    """Run key → the first finished (or diverged) run stored outside `sweep` with it, for `keys`."""
    found: dict[str, dict] = {}
    if not keys:
        return found
    for row in store.list():
        if row["sweep"] == sweep or row["status"] not in TERMINAL:
            continue
        key = row_key(row)
        if key in keys:
            found.setdefault(key, row)
    return found


def row_key(row: dict) -> str | None:
    """The run key of a stored row's config; None for one written by another groklab version."""
    try:
        return _stored_key(json.dumps(row["config"], sort_keys=True))
    except ConfigError:  # not cached: a task registered later may fit
        return None


@lru_cache(maxsize=1 << 16)
def _stored_key(config_json: str) -> str:
    """The run key of a stored config. Cached: every sweep a `reproduce --all` plans reads the
    whole store's configs, parsed at ~1-4 ms each."""
    return run_key(from_dict(RunCfg, json.loads(config_json)))


def join_plans(plans: Sequence[Plan], workers: int | None = None) -> Plan:
    """One plan executing the groups of several sweeps' plans together (each group keeps its sweep),
    so that workers idle in one sweep take another's groups: a claim's two single-run arms train at
    once on two cores instead of one after the other. Workers and threads are chosen as
    :func:`plan_sweep` chooses them, over all the groups. One plan is returned as it is."""
    if len(plans) == 1:
        return plans[0]
    res = plans[0].resources
    groups = [g for p in plans for g in p.groups]
    n = max(1, min(workers or (res.gpus if res.kind == "gpu" else res.cpus), len(groups) or 1))
    if n > 1 or res.kind == "gpu":  # several runs share the machine: one thread each
        threads, groups = 1, [replace(g, cfgs=tuple(_execution(c, 1) for c in g.cfgs)) for g in groups]
    else:  # one after another, each group as its own plan set it
        threads = plans[0].threads
    return Plan(sweep=", ".join(p.sweep for p in plans), groups=groups,
                n_runs=sum(p.n_runs for p in plans), done=[r for p in plans for r in p.done],
                reused=[r for p in plans for r in p.reused], pack=max(p.pack for p in plans), workers=n,
                resources=res, threads=threads,
                busy=[r for p in plans for r in p.busy], duplicates=sum(p.duplicates for p in plans),
                stale=sum(p.stale for p in plans), shared=[x for p in plans for x in p.shared])
