"""A protocol's runs trained as sweep groups, stage by stage, over the sweep workers.

A protocol asked with ``train_missing=False`` raises :class:`~.components.MissingRun` naming every
run it needs next (a mixture's runs build on each other, so one stage at a time: C_gen, the C_mem
probe, C_mem, the mixture; the efficiency protocol's are independent, so all at once), each with
the hooks it trains with as specs another process rebuilds. :func:`train_stages` trains those as
one-run sweep specs (their hooks carried by `SweepSpec.hooks`), asks again, and repeats until
nothing is missing; then the protocol itself, called as usual, finds every run in the store. On
two cores the efficiency protocol's eight quick runs take 40 s this way against 97 s one after
another in one process (`benchmarks/bench_sweep.py`, section 8), with the same figures.

A run the store holds in another form is trained or resumed as a sweep group too where that can
be done (:func:`needs`): an interrupted group of a sweep resumes from its checkpoint on the workers
(the protocol alone resumes only solo runs, and would train a packed group's runs anew, one after
another), and a finished run the protocol refused (trained without its hook) is trained again with
it. A run training in another process is left to the protocol, which then says so
(:class:`~.components.RunBusy`) rather than train a second copy, and no round trains a run twice,
so the rounds end.

On Ray the rounds share one cluster session, and each run's hooks train with it on the cluster: a
task writing a store of its own (``storage``, a remote cluster) sends the files its hooks wrote
(snapshots, ``hooks.json``) back with the metrics and the checkpoint.
"""
from __future__ import annotations

from typing import AbstractSet as Set, Any, Callable, Sequence

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
    from ..sweep.plan import run_key

    tried: set[str] = set()  # the runs a round trained or resumed: never twice
    pending, todo = needs(calls, store, tried)
    reports: list = []
    with ExitStack() as stack:
        if (first or todo) and options.get("backend") == "ray" and not options.get("dry_run"):
            stack.enter_context(ray_session(options.get("address")))  # one session for every round
        while first or todo:
            tried |= {run_key(spec.base) for spec in todo}
            done = run_sweeps([*first, *todo], store=store, **options)
            reports += {id(r): r for r in done}.values()  # specs sharing a name share one report
            first, (pending, todo) = (), needs(pending, store, tried)
    return reports


def needs(calls: Sequence[Call], store, tried: Set[str] = frozenset()) -> tuple[list[Call], list]:
    """The calls still waiting for runs, and those runs as one-run sweep specs (a run two calls
    need once, under the first one's name). Per run (by `sweep.plan.run_key`), from what the
    store holds of it:

    - nothing: a new run, in the call's sweep;
    - an interrupted run (stopped, failed, or its process gone) of a sweep: that sweep, whose
      planner resumes its group from the checkpoint (the protocol itself resumes only solo runs);
    - finished runs the protocol refused (trained without its hook): a new run, in the call's sweep;
    - a run training in another process, a run without a sweep to resume it in, or one that a
      round of this call (keys in `tried`) already trained: left to the protocol, so the rounds end."""
    from ..sweep import SweepSpec
    from ..sweep.plan import run_key
    from .components import ComponentError, MissingRun

    if not calls:
        return [], []
    rows: dict[str, list[dict]] = {}
    for row in store.list() if store.exists() else []:
        try:
            rows.setdefault(run_key(from_dict(RunCfg, row["config"])), []).append(row)
        except ConfigError:  # written by another groklab version
            continue
    specs: dict[str, SweepSpec] = {}
    waiting: list[Call] = []
    for name, call in calls:
        try:
            call(False)
        except MissingRun as e:
            keyed = [(run_key(cfg), cfg, hooks) for cfg, hooks in e.needs if hooks is not None]
            fresh = [(key, cfg, hooks, sweep) for key, cfg, hooks in keyed
                     if (sweep := _sweep_for(rows.get(key, []), name, key in tried))]
            for key, cfg, hooks, sweep in fresh:
                specs.setdefault(key, SweepSpec(name=sweep, base=cfg, hooks=hooks, run_names="base"))
            if fresh:
                waiting.append((name, call))
        except ComponentError:  # a component missed its target: the protocol's own call reports it
            continue
    return waiting, list(specs.values())


def _sweep_for(rows: list[dict], name: str, tried: bool) -> str | None:
    """The sweep to train or resume a needed run in, from its stored `rows` (see :func:`needs`)."""
    from ..store import TERMINAL, trained_elsewhere

    if tried or any(trained_elsewhere(r) for r in rows):
        return None
    stalled = [r for r in rows if r["status"] not in TERMINAL]
    if stalled:
        return stalled[0]["sweep"]
    return name
