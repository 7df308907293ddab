"""Sweeps: a spec of axes over config fields, a planner that packs and resumes, and backends.

    groklab sweep mlp-fraction                       # a sweep preset (see `groklab sweep --list`)
    groklab sweep quickstart --grid data.frac_train=0.3,0.4,0.5 --seeds 2 --dry-run
    groklab sweep my-sweep.toml --backend ray --address auto
    groklab analyze mlp-fraction --kind critical -o dcrit.png

From Python::

    from groklab.sweep import run_sweep, runs_table
    report = run_sweep("mlp-fraction", store="runs")
    table = runs_table(report.store, report.plan.sweep)
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from .backends import BACKENDS, Executor, GroupOutcome, Job, execute, record_result
from .plan import Group, Plan, Resources, join_plans, local_resources, pack_groups, plan_sweep, run_key
from .spec import SweepSpec, expand, list_sweep_presets, load_spec, parse_grid
from .table import runs_table

__all__ = ["SweepSpec", "load_spec", "parse_grid", "expand", "list_sweep_presets", "Plan", "Group", "Resources",
           "plan_sweep", "pack_groups", "run_key", "local_resources", "execute", "record_result", "GroupOutcome",
           "runs_table", "run_sweep", "run_sweeps", "join_plans", "SweepReport", "BACKENDS", "Executor", "Job"]


@dataclass
class SweepReport:
    """What a sweep did: its plan, one outcome per executed group, and the wall time."""

    spec: SweepSpec
    plan: Plan
    store: Any
    outcomes: list[GroupOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[GroupOutcome]:
        return [o for o in self.outcomes if not o.ok]


def run_sweep(source: str | dict | SweepSpec, *, grid: dict[str, Sequence] | None = None,
              overrides: Sequence[str] = (), name: str | None = None, seeds: Any = None,
              store=None, backend: str = "local", pack: int | None = None, workers: int | None = None,
              address: str | None = None, max_retries: int = 2, storage=None, dry_run: bool = False,
              reuse: bool = True, on_plan: Callable[[Plan], None] | None = None,
              on_done: Callable[[GroupOutcome], None] = lambda o: None) -> SweepReport:
    """Plan and execute a sweep (the Python side of `groklab sweep`).

    Args:
        source: sweep preset name, sweep TOML path, run preset/path (with `grid`), spec dict or
            :class:`SweepSpec`.
        grid: extra axes, field → values.
        overrides: base overrides, e.g. ``["train.steps=2000"]``.
        name, seeds: replace the spec's sweep name and seeds.
        store: store root or :class:`groklab.store.Store` (default ``./runs``).
        backend: ``"local"`` or ``"ray"``.
        pack, workers: members per ensemble and parallel workers (default: per device).
        address: Ray cluster address (``"auto"`` joins a running cluster; None starts one).
        max_retries: Ray task retries before a group is reported failed.
        storage: Ray: a directory every node sees for the groups' stores and checkpoints while
            they run (default: the driver's store when the cluster runs on this host).
        dry_run: plan only.
        reuse: count finished runs stored outside the sweep with a point's exact config as the
            sweep's own instead of training them again (:func:`plan_sweep`).
        on_plan, on_done: callbacks with the plan and with each finished group.
    Returns:
        A :class:`SweepReport`.
    """
    spec = source if isinstance(source, SweepSpec) else load_spec(
        source, grid={k: tuple(v) for k, v in (grid or {}).items()}, overrides=list(overrides), name=name,
        seeds=seeds)
    return run_sweeps([spec], store=store, backend=backend, pack=pack, workers=workers, address=address,
                      max_retries=max_retries, storage=storage, dry_run=dry_run, reuse=reuse, on_plan=on_plan,
                      on_done=on_done)[0]


def run_sweeps(specs: Sequence[SweepSpec], *, store=None, backend: str = "local", pack: int | None = None,
               workers: int | None = None, address: str | None = None, max_retries: int = 2, storage=None,
               dry_run: bool = False, reuse: bool = True, on_plan: Callable[[Plan], None] | None = None,
               on_done: Callable[[GroupOutcome], None] = lambda o: None) -> list[SweepReport]:
    """Plan several sweeps, each against the store, and execute their groups together
    (:func:`groklab.sweep.plan.join_plans`): the workers serve every sweep, so sweeps of one run
    each (a claim's arms) train at once rather than one after the other. Specs that share a name
    are planned as one sweep (their common runs train once). Arguments as for :func:`run_sweep`;
    `on_plan` is called with each sweep's plan. Returns one report per spec, in order."""
    from ..store import Store

    st = store if isinstance(store, Store) else Store(store)
    by_name: dict[str, list[SweepSpec]] = {}
    for spec in specs:
        by_name.setdefault(spec.name, []).append(spec)
    cfgs = {name: [c for spec in same for c in expand(spec)] for name, same in by_name.items()}
    with ExitStack() as stack:
        options = {}
        if backend == "ray" and not dry_run:
            from .backends import ray_resources, ray_session
            stack.enter_context(ray_session(address))
            options = {"resources": ray_resources(), "threads": 1}
        hooks = {name: tuple(sorted({h for spec in same for h in spec.hooks})) for name, same in by_name.items()}
        pending: dict[str, str] = {}  # run key -> the sweep that trains it: a point two sweeps share trains once
        plans = {name: plan_sweep(name, c, st, pack=pack, workers=workers, hooks=hooks[name], reuse=reuse,
                                  pending=pending, **options) for name, c in cfgs.items()}
        joint = join_plans(list(plans.values()), workers)
        executed = {name: replace(plan, groups=[g for g in joint.groups if g.sweep == name], workers=joint.workers,
                                  threads=joint.threads) for name, plan in plans.items()}
        reports = {name: SweepReport(by_name[name][0], plan, st) for name, plan in executed.items()}
        for plan in executed.values():
            if on_plan is not None:
                on_plan(plan)
        if not dry_run:
            for name, plan in plans.items():
                if plan.reused:
                    st.reuse(name, [r["id"] for r in plan.reused])
            t0 = time.perf_counter()
            for outcome in execute(joint, st, backend, on_done, address=address, max_retries=max_retries,
                                   storage=storage):
                reports[outcome.group.sweep].outcomes.append(outcome)
            _record_shared(st, plans.values())
            for report in reports.values():
                report.seconds = time.perf_counter() - t0
    return [reports[spec.name] for spec in specs]


def _record_shared(store, plans: Sequence[Plan]) -> None:
    """Record each sweep's points that another sweep of the pass trained (`Plan.shared`) as its
    own, those that finished there (one that failed or stopped is trained by a later pass)."""
    from ..store import TERMINAL
    from .plan import row_key

    for plan in plans:
        owners = {owner for _, owner in plan.shared}
        if not owners:
            continue
        trained = {row_key(r): r["id"] for owner in owners for r in store.list(sweep=owner) if r["status"] in TERMINAL}
        store.reuse(plan.sweep, [trained[key] for key, _ in plan.shared if key in trained])
