"""A protocol's runs trained as sweep groups, stage by stage, over the sweep workers.

A protocol asked with ``train_missing=False`` raises :class:`~.components.MissingRun` naming every
run it needs next (a mixture's runs build on each other, so one stage at a time: C_gen, the C_mem
probe, C_mem, the mixture; the efficiency protocol's are independent, so all at once), each with
the hooks it trains with as specs another process rebuilds. :func:`train_stages` trains those as
one-run sweep specs (their hooks carried by `SweepSpec.hooks`), asks again, and repeats until
nothing is missing; then the protocol itself, called as usual, finds every run in the store. On
two cores the efficiency protocol's eight quick runs take 40 s this way against 97 s one after
another in one process (`benchmarks/bench_sweep.py`, section 8), with the same figures.

A run the store has started in any form (interrupted, training in another process, or finished
but refused by the protocol, e.g. trained without its hook) is left to the protocol, which
resumes it or trains its own: no round trains a run twice, so the rounds end.

On Ray the rounds share one cluster session, and each run's hooks train with it on the cluster: a
task writing a store of its own (``storage``, a remote cluster) sends the files its hooks wrote
(snapshots, ``hooks.json``) back with the metrics and the checkpoint.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..config import ConfigError, RunCfg, from_dict

Call = tuple[str, Callable[[bool], Any]]
"""A sweep name for the runs, and the protocol call `call(train_missing)`."""


def train_stages(calls: Sequence[Call], store, *, first: Sequence = (), **options) -> list:
    """Train what `calls` need, stage by stage, as sweeps named by each call; the sweep specs
    `first` train with the first stage. `options` go to :func:`groklab.sweep.run_sweeps`
    (workers, backend, on_plan, on_done, ...). Returns the sweep reports, one per sweep and stage."""
    from contextlib import ExitStack

    from ..sweep import run_sweeps
    from ..sweep.backends import ray_session

    pending, todo = needs(calls, store)
    todo = [*first, *todo]
    reports: list = []
    with ExitStack() as stack:
        if todo and options.get("backend") == "ray" and not options.get("dry_run"):
            stack.enter_context(ray_session(options.get("address")))  # one session for every round
        while todo:
            done = run_sweeps(todo, store=store, **options)
            reports += {id(r): r for r in done}.values()  # specs sharing a name share one report
            pending, todo = needs(pending, store)
    return reports


def needs(calls: Sequence[Call], store) -> tuple[list[Call], list]:
    """The calls still waiting for runs, and those runs as one-run sweep specs (a run two calls
    need once, under the first one's name) that this store has not started."""
    from ..sweep import SweepSpec
    from ..sweep.plan import run_key
    from .components import ComponentError, MissingRun

    if not calls:
        return [], []
    started = set()
    for row in store.list() if store.exists() else []:
        try:
            started.add(run_key(from_dict(RunCfg, row["config"])))
        except ConfigError:  # written by another groklab version
            continue
    specs: dict[str, SweepSpec] = {}
    waiting: list[Call] = []
    for name, call in calls:
        try:
            call(False)
        except MissingRun as e:
            fresh = [(cfg, hooks) for cfg, hooks in e.needs if hooks is not None and run_key(cfg) not in started]
            for cfg, hooks in fresh:
                specs.setdefault(run_key(cfg), SweepSpec(name=name, base=cfg, hooks=hooks, run_names="base"))
            if fresh:
                waiting.append((name, call))
        except ComponentError:  # a component missed its target: the protocol's own call reports it
            continue
    return waiting, list(specs.values())
