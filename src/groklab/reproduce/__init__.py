"""`groklab reproduce`: the studies' claims as data, each a command that measures it.

    groklab reproduce --list
    groklab reproduce quickstart-delay --quick
    groklab reproduce --all --quick --json
    groklab reproduce --report -o claims.md          # from the store only: no training
    groklab reproduce --all --quick --dry-run        # what would train: nothing trains or is written

From Python::

    from groklab.reproduce import get_claim, reproduce, evaluate, claims_table
    result = reproduce(get_claim("quickstart-delay"), "quick", store=Store("runs"))
    result.verdict, result.measured

A claim's run groups become sweeps named ``claim-<id>-<size>-<group>`` (so re-running reuses
finished runs and resumes interrupted ones), or protocol calls (mixture, efficiency, Fourier; see
:mod:`groklab.reproduce.protocols`) whose runs the protocols find again by config; a verdict is a
function of the stored metrics only. The runs a protocol needs train as sweep groups beside the
claims' sweeps, on the local backend's workers or on Ray (one stage at a time where they build on
each other).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from ..registry import ConfigError
from .claims import STUDIES, Claim, get_claim, load_claims, sweep_name
from .criteria import CRITERIA
from .evidence import Evidence, ProtocolEvidence, collect_group
from .verdict import INCONCLUSIVE, NEEDS_CLUSTER, NOT_RUN, VERDICTS, Outcome, combine

__all__ = ["Claim", "ClaimResult", "CRITERIA", "STUDIES", "VERDICTS", "check_protocols", "claims_table", "evaluate",
           "get_claim", "load_claims", "plan_claims", "ClaimPlan", "reproduce", "reproduce_claims", "specs", "sweep_name",
           "validate"]


@dataclass(frozen=True)
class ClaimResult:
    """A claim's verdict at one size, what was measured, and the runs behind it."""

    claim: Claim
    size: str
    outcome: Outcome
    runs: tuple[int, ...] = ()
    new_runs: int = 0
    """Runs trained (or resumed) by this call; 0 when everything came from the store."""
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return self.outcome.verdict

    @property
    def measured(self) -> str:
        return self.outcome.measured

    def as_dict(self) -> dict[str, Any]:
        c = self.claim
        return {"id": c.id, "study": c.study_name, "where": c.where + (f" ({c.source})" if c.source else ""),
                "claim": c.claim, "claimed": c.claimed, "note": c.note, "measured": self.measured, "verdict": self.verdict,
                "size": self.size, "runs": list(self.runs), "new_runs": self.new_runs,
                "seconds": round(self.seconds, 1), "figures": self.outcome.figures}


def specs(claim: Claim, size: str, overrides: tuple[str, ...] = ()) -> dict:
    """Group name → validated :class:`groklab.sweep.SweepSpec` of a claim at a size."""
    from ..sweep import load_spec

    out = {}
    for group in claim.sweep_groups:
        try:
            out[group] = load_spec(claim.group_spec(group, size), overrides=list(overrides))
        except ConfigError as e:
            raise ConfigError(f"{claim.file}: claim {claim.id!r}, runs.{group} ({size}): {e}") from None
    return out


def check_protocols(claim: Claim, size: str, overrides: tuple[str, ...] = ()) -> None:
    """Every protocol group's parameters and base configs at `size` validate (nothing trains)."""
    for group in claim.protocol_groups:
        params, sets, seeds = claim.protocol_call(group, size)
        try:
            for seed in seeds:
                params.check(size == "quick", [*sets, *overrides, f"train.seed={seed}"])
        except ConfigError as e:
            raise ConfigError(f"{claim.file}: claim {claim.id!r}, runs.{group} ({size}): {e}") from None


def validate(claim: Claim) -> None:
    """Build every group's spec at both sizes and expand it: presets exist, configs validate."""
    from ..sweep import expand

    for size in claim.sizes:
        for spec in specs(claim, size[0]).values():
            expand(spec)
        check_protocols(claim, size[0])


def _protocol_group(claim: Claim, group: str, size: str, store, overrides: tuple[str, ...],
                    train_missing: bool) -> ProtocolEvidence:
    """Run (or, with `train_missing=False`, only read) one protocol group, once per seed."""
    from ..protocols.components import ComponentError, MissingRun

    name = dict(claim.runs)[group].protocol
    calls = _protocol_calls(claim, group, size, store, overrides)
    runs, missing = [], ""
    for call in calls:
        try:
            runs.append(call(train_missing))
        except MissingRun as e:
            missing = missing or str(e)
        except ComponentError as e:  # a component missed its target within the size's budget
            return ProtocolEvidence(group, name, len(calls), tuple(runs), error=f"{group}: {e}")
    return ProtocolEvidence(group, name, len(calls), tuple(runs), missing=missing)


def evaluate(claim: Claim, size: str, store, overrides: tuple[str, ...] = ()) -> ClaimResult:
    """The verdict of `claim` at `size` from what `store` holds (no training)."""
    protocol = [c for c in claim.checks if c.groups() == ()]
    if protocol or not claim.runs:
        return ClaimResult(claim, size, combine([c.evaluate(Evidence()) for c in claim.checks]))
    groups = {g: collect_group(store, g, s) for g, s in specs(claim, size, overrides).items()}
    groups.update({g: _protocol_group(claim, g, size, store, overrides, train_missing=False)
                   for g in claim.protocol_groups})
    ev = Evidence(groups)
    errors = [g.error for g in groups.values() if getattr(g, "error", "")]
    if errors:
        return ClaimResult(claim, size, Outcome(INCONCLUSIVE, "; ".join(errors)), tuple(ev.run_ids))
    if ev.missing:
        have = ", ".join(f"{g} {n}/{m}" + (f" ({groups[g].missing})" if getattr(groups[g], "missing", "") else "")
                         + (f" ({groups[g].busy} training in another process)" if getattr(groups[g], "busy", 0) else "")
                         for g, (n, m) in ev.missing.items())
        return ClaimResult(claim, size, Outcome(NOT_RUN, f"runs in store: {have}"), tuple(ev.run_ids))
    return ClaimResult(claim, size, combine([c.evaluate(ev) for c in claim.checks]), tuple(ev.run_ids))


def _over_budget(claim: Claim, size: str, cpu_budget: float, backend: str) -> bool:
    sz = claim.size(size)
    if sz is None or backend != "local" or sz.cpu_minutes <= cpu_budget:
        return False
    import torch
    return not torch.cuda.is_available()


def reproduce(claim: Claim, size: str, store, *, backend: str = "local", workers: int | None = None,
              overrides: tuple[str, ...] = (), cpu_budget: float = 30.0, address: str | None = None,
              max_retries: int = 2, storage=None, reuse: bool = True,
              on_group: Callable[[str, Any], None] = lambda g, plan: None) -> ClaimResult:
    """Run (or reuse) what `claim` needs at `size`, then judge it from the store.

    Args:
        claim: the claim (see :func:`get_claim`).
        size: ``"quick"`` or ``"full"``.
        store: a :class:`groklab.store.Store`.
        backend, workers, address, max_retries, storage, reuse: as for :func:`groklab.sweep.run_sweep`
            (`reuse`: a finished run stored outside a claim's sweep with a run's exact config counts).
        overrides: dotted overrides for every run (they change which runs count).
        cpu_budget: minutes of one core; a size stated above it is not run on a CPU-only local
            backend (verdict ``needs GPU/cluster`` unless the store already holds its runs).
        on_group: called with each group's name and plan before it runs.
    Returns:
        A :class:`ClaimResult`.
    """
    return reproduce_claims([claim], size, store, backend=backend, workers=workers, overrides=overrides,
                            cpu_budget=cpu_budget, address=address, max_retries=max_retries, storage=storage,
                            reuse=reuse, on_group=lambda c, g, plan: on_group(g, plan))[0]


def reproduce_claims(claims: list[Claim], size: str, store, *, backend: str = "local", workers: int | None = None,
                     overrides: tuple[str, ...] = (), cpu_budget: float = 30.0, address: str | None = None,
                     max_retries: int = 2, storage=None, reuse: bool = True,
                     on_group: Callable[[Claim, str, Any], None] = lambda c, g, plan: None,
                     on_result: Callable[[ClaimResult], None] = lambda r: None,
                     on_done: Callable[[Any], None] = lambda outcome: None) -> list[ClaimResult]:
    """:func:`reproduce` for several claims, their sweep groups all at once over the workers (so
    `--all` keeps every core busy, not one per claim's group), then each claim's protocol groups
    and verdict, in order. The protocols' runs train as sweep groups too (on either backend): the
    runs they need first beside the claims' sweeps, then each next stage's (a mixture's runs build
    on each other) together, until the protocols find all they need in the store.
    `on_group(claim, group, plan)` before a sweep trains; `on_done` with each group's
    :class:`groklab.sweep.GroupOutcome` as it ends; `on_result` with each verdict. A claim's
    `seconds` run from the start to its verdict."""
    import time

    from ..protocols.stages import train_stages

    t0 = time.perf_counter()
    for claim in claims:
        if claim.runs and claim.size(size) is None:
            raise ConfigError(f"claim {claim.id!r} has no {size} size")
    over = {c.id: bool(c.runs) and _over_budget(c, size, cpu_budget, backend) for c in claims}
    groups = {}
    for claim in claims:
        check_protocols(claim, size, overrides)
        groups[claim.id] = {} if over[claim.id] else specs(claim, size, overrides)
    names = {spec.name: (claim, group) for claim in claims for group, spec in groups[claim.id].items()}
    names.update({sweep_name(claim.id, size, group): (claim, group) for claim in claims
                  for group in claim.protocol_groups})
    calls = [(sweep_name(claim.id, size, group), call) for claim in claims if not over[claim.id]
             for group in claim.protocol_groups for call in _protocol_calls(claim, group, size, store, overrides)]
    first = [spec for claim in claims for spec in groups[claim.id].values()]
    reports: dict[str, list] = {}
    for rep in train_stages(calls, store, first=first, backend=backend, workers=workers, address=address,
                            max_retries=max_retries, storage=storage, reuse=reuse, on_done=on_done,
                            on_plan=lambda plan: plan.sweep in names and on_group(*names[plan.sweep], plan)):
        reports.setdefault(rep.spec.name, []).append(rep)
    counted = set()  # a sweep that several claims share counts for the first of them
    results = []
    for claim in claims:
        mine = [spec.name for spec in groups[claim.id].values()]
        mine += [sweep_name(claim.id, size, group) for group in claim.protocol_groups]
        own = [rep for name in mine for rep in reports.get(name, [])]
        result = _judge(claim, size, store, overrides, cpu_budget, over[claim.id], own, counted, reuse)
        result = replace(result, seconds=time.perf_counter() - t0)
        on_result(result)
        results.append(result)
    return results


@dataclass(frozen=True)
class ClaimPlan:
    """What `reproduce` would do for one claim (`--dry-run`): each of its sweeps' plan against the
    store, its protocol groups (their runs are planned when they run: a protocol finds what it
    lacks by running), and whether its size is over the CPU budget (then nothing trains)."""

    claim: Claim
    size: str
    cpu_minutes: float
    over_budget: bool
    plans: tuple = ()
    protocol_groups: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"claim": self.claim.id, "size": self.size, "cpu_minutes": self.cpu_minutes,
                "over_budget": self.over_budget, "protocol_groups": list(self.protocol_groups),
                "sweeps": [{"sweep": p.sweep, "runs": p.n_runs, "stored": len(p.done), "reused": len(p.reused),
                            "resume": p.n_resume, "train": p.n_new, "shared": len(p.shared)} for p in self.plans]}


def plan_claims(claims: list[Claim], size: str, store, *, backend: str = "local", workers: int | None = None,
                overrides: tuple[str, ...] = (), cpu_budget: float = 30.0, reuse: bool = True) -> list[ClaimPlan]:
    """Plan what :func:`reproduce_claims` would train for `claims`, without training or writing
    anything: the claims' sweeps planned together against the store as that call plans them (a
    point two sweeps share is trained by the first: `Plan.shared`)."""
    from ..sweep import run_sweeps

    for claim in claims:
        if claim.runs and claim.size(size) is None:
            raise ConfigError(f"claim {claim.id!r} has no {size} size")
    over = {c.id: bool(c.runs) and _over_budget(c, size, cpu_budget, backend) for c in claims}
    groups = {c.id: {} if over[c.id] or c.size(size) is None else specs(c, size, overrides) for c in claims}
    first = [spec for claim in claims for spec in groups[claim.id].values()]
    reports = {r.spec.name: r for r in run_sweeps(first, store=store, workers=workers, reuse=reuse, dry_run=True)} \
        if first else {}
    return [ClaimPlan(claim, size, claim.size(size).cpu_minutes if claim.size(size) else 0.0, over[claim.id],
                      tuple(reports[spec.name].plan for spec in groups[claim.id].values()),
                      tuple(claim.protocol_groups)) for claim in claims]


def _protocol_calls(claim: Claim, group: str, size: str, store, overrides: tuple[str, ...]) -> list:
    """A protocol group's calls `call(train_missing)`, one per seed (see `protocols.stages`)."""
    params, sets, seeds = claim.protocol_call(group, size)
    return [lambda train_missing, seed=seed: params.run(store, size == "quick", [*sets, *overrides, f"train.seed={seed}"],
                                                        train_missing) for seed in seeds]


def _reuse_outside(claim: Claim, size: str, store, overrides: tuple[str, ...]) -> None:
    """For a claim not trained here: record as its sweeps' own the finished runs stored outside them
    with its runs' exact configs (a `groklab run` of one), as the sweep planner does before training."""
    from ..sweep import expand, plan_sweep

    for spec in specs(claim, size, overrides).values():
        plan = plan_sweep(spec.name, expand(spec), store, workers=1)
        if plan.reused:
            store.reuse(spec.name, [r["id"] for r in plan.reused])


def _judge(claim: Claim, size: str, store, overrides: tuple[str, ...], cpu_budget: float, over_budget: bool,
           reports: list, counted: set, reuse: bool = True) -> ClaimResult:
    """One claim's verdict once its sweeps ran (`reports`, the protocol runs trained as sweeps too):
    run what its protocol groups still lack, then judge."""
    if over_budget:
        if reuse:
            _reuse_outside(claim, size, store, overrides)
        result = evaluate(claim, size, store, overrides)
        if result.verdict != NOT_RUN:
            return result
        cost = claim.size(size).cpu_minutes
        return ClaimResult(claim, size, Outcome(NEEDS_CLUSTER, f"{size} size is stated at {cost:g} CPU-minutes, "
                                                               f"above --cpu-budget {cpu_budget:g}"), result.runs)
    new = 0
    for rep in reports:
        if id(rep) not in counted:
            counted.add(id(rep))
            new += rep.plan.n_new + rep.plan.n_resume
    for rep in reports:
        if rep.failed:  # e.g. a data file missing: say so in the row and go on with the next claim
            error = str(rep.failed[0].error or "a run did not finish").strip().splitlines()[-1][:300]
            result = evaluate(claim, size, store, overrides)
            return ClaimResult(claim, size, Outcome(NOT_RUN, f"{rep.spec.name}: {len(rep.failed)} group(s) failed: "
                                                             f"{error}"), result.runs, new)
    busy = []
    for group in claim.protocol_groups:  # in this process: whatever the protocols still lack
        ran = _protocol_group(claim, group, size, store, overrides, train_missing=True)
        new += sum(r.new_runs for r in ran.runs)
        if ran.missing:  # allowed to train, a protocol lacks only runs another process is training
            busy.append(f"{group}: {ran.missing}")
        if ran.error:
            break
    result = evaluate(claim, size, store, overrides)
    if busy and result.verdict == NOT_RUN:
        return ClaimResult(claim, size, Outcome(NOT_RUN, "; ".join(busy)), result.runs, new)
    return ClaimResult(claim, size, result.outcome, result.runs, new)


def claims_table(store) -> list[dict]:
    """Every claim's row from what `store` holds (the full size where its runs are stored, else
    the quick size): id, study, where, claim, claimed, measured, verdict, size, runs."""
    rows = []
    for claim in load_claims():
        if not claim.runs:
            rows.append(evaluate(claim, "quick", store).as_dict())
            continue
        full = evaluate(claim, "full", store)
        rows.append((full if full.verdict != NOT_RUN else evaluate(claim, "quick", store)).as_dict())
    return rows
