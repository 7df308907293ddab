"""Bring another store's runs into this one: `groklab merge SOURCE`.

For runs trained elsewhere — a GPU machine's store, a colleague's, the `$OUT` a device run hands
back, one of several stores written side by side — so that one store holds them for `ls`,
`analyze`, `report` and `reproduce`. A group (ensemble or solo run) is the unit: its rows (status,
config, summary, sweep, versions, owner), every metric, and its folder (checkpoint, snapshots,
hooks) come over under new run ids, or it is left with a reason. The source is only read. A
group already here is skipped (merging twice adds nothing) unless it trained on there since it
came over — resumed after a stop or a timeout, further than here and not complete here: then its
rows, metrics and folder here are refreshed from the source (the same ids; a group complete here,
or as far along here, is never overwritten). A group still training in another process, or whose
checkpoint does not verify, is left out. A sweep's reuse of a run trained outside it
(`Store.reuse`) comes over with the run.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError
from .store import Store, trained_elsewhere


@dataclass
class MergeReport:
    """What `merge` did: `merged` maps each source run id it copied to the run's id here, `groups`
    counts the groups copied, `refreshed` maps the source ids of groups that trained on there to
    their ids here (`refreshed_groups` counts them), `skipped` names each group left out and why."""

    source: str
    merged: dict[int, int] = field(default_factory=dict)
    groups: int = 0
    refreshed: dict[int, int] = field(default_factory=dict)
    refreshed_groups: int = 0
    skipped: dict[str, str] = field(default_factory=dict)


def merge(source: str | Path, store: Store, sweep: str | None = None) -> MergeReport:
    """Copy the groups of the store at `source` (only those with runs of `sweep`, if given) into
    `store`; see the module docstring for what is skipped. Raises ConfigError when `source` is not
    a store, is this store, or has no runs of `sweep`."""
    src = Store(source, read_only=True)
    if not src.exists():
        raise ConfigError(f"no store at {str(source)!r} (no {src.paths.db.name} there) to merge from")
    if store.paths.root.resolve() == src.paths.root.resolve():
        raise ConfigError(f"{str(source)!r} is the store being merged into; name another store")
    try:
        rows = src.list(sweep=sweep)
        if sweep is not None and not rows:
            sweeps = sorted({r["sweep"] for r in src.list() if r["sweep"]})
            raise ConfigError(f"sweep {sweep!r} has no runs in {str(source)!r}; its sweeps: "
                              f"{', '.join(sweeps) or 'none'}")
        # Whole groups (members outside `sweep` too), in id order: a run's parent, an earlier
        # group, is merged before it.
        groups = {gid: src.group(gid) for gid in dict.fromkeys(r["group_id"] for r in rows)}
        report = MergeReport(source=str(source))
        known: dict[int, int] = {}  # source id -> id here, of runs copied now or before (for parents)
        for gid, members in groups.items():
            reason, refresh = _merge_group(src, store, gid, members, known)
            if reason:
                report.skipped[gid] = reason
            elif refresh:
                report.refreshed_groups += 1
                report.refreshed.update({r["id"]: known[r["id"]] for r in members})
            else:
                report.groups += 1
                report.merged.update({r["id"]: known[r["id"]] for r in members})
        # The runs the source's sweeps reuse (`Store.reuse`) stay theirs here.
        for name, rid in src.reused():
            if rid in known and sweep in (None, name):
                store.reuse(name, [known[rid]])
        return report
    finally:
        src.close()


def _merge_group(src: Store, dst: Store, gid: str, members: list[dict], ids: dict[int, int]) -> tuple[str | None, bool]:
    """Merge one group (copy it, or refresh it here when it trained on there), recording its ids
    in `ids`; (the reason it was left out or None, whether it was already here)."""
    from .train.checkpoint import CheckpointError, read_checkpoint

    here = dst.group(gid)
    if here:
        ids.update({r["id"]: h["id"] for r in members for h in here if h["member"] == r["member"]})
        why_not = _not_newer(src, dst, members, here)
        if why_not:
            return why_not, True
    live = [r for r in members if trained_elsewhere(r)]
    if live:
        return (f"run {live[0]['id']} is training (process {live[0]['owner_pid']} on {live[0]['owner_host']}); "
                "merge again when it ends"), bool(here)
    folder, target = src.paths.group_dir(gid), dst.paths.group_dir(gid)
    if target.exists() and not here:
        return f"{target} exists with no runs of this store naming it; move it away to merge this group", False
    ckpt = src.paths.checkpoint(gid)
    if ckpt.exists():
        try:
            read_checkpoint(ckpt)
        except CheckpointError as e:
            return f"its checkpoint does not verify ({e})", bool(here)
    old = _place_folder(folder, target) if folder.is_dir() else None
    metrics = src.metrics_long([r["id"] for r in members])
    by_run = {rid: list(zip(m["step"], m["key"], m["value"])) for rid, m in metrics.groupby("run_id")}
    try:
        if here:
            dst.replace_runs({ids[r["id"]]: r for r in members},
                             {ids[r["id"]]: by_run.get(r["id"], []) for r in members})
        else:
            rows = [{**r, "parent": ids.get(r.get("parent"))} for r in members]
            new = dst.add_rows(rows, [by_run.get(r["id"], []) for r in members])
            ids.update({r["id"]: n for r, n in zip(members, new)})
    except BaseException:
        # no folder without the rows that name it; a refreshed group gets its own folder back
        shutil.rmtree(target, ignore_errors=True)
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return None, bool(here)


def _not_newer(src: Store, dst: Store, theirs: list[dict], ours: list[dict]) -> str | None:
    """Why a group already here is not refreshed from the source (None: it trained on there).
    Refreshed only when no process here trains it, it is not complete here (some member not
    finished or diverged), and the source has it further: a later last step, or as far and
    complete there."""
    from .store import TERMINAL

    there_s, here_s = [r["status"] for r in theirs], [h["status"] for h in ours]
    last_there, last_here = (st.last_step(r["id"] for r in rows) for st, rows in ((src, theirs), (dst, ours)))
    newer = (sorted(r["member"] for r in theirs) == sorted(h["member"] for h in ours)
             and not all(s in TERMINAL for s in here_s) and not any(trained_elsewhere(h) for h in ours)
             and (last_there > last_here or (last_there == last_here and all(s in TERMINAL for s in there_s))))
    if newer:
        return None
    return "already in this store" + ("" if there_s == here_s and last_there == last_here else
                                      f" (there: {', '.join(there_s)} at step {last_there}; here: "
                                      f"{', '.join(here_s)} at step {last_here}; not overwritten)")


def _place_folder(folder: Path, target: Path) -> Path | None:
    """Copy a group's folder into place whole: beside its place first, then renamed into it. An
    existing folder there is renamed aside and returned (deleted once the rows are in, put back
    if they fail)."""
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".merge-{target.name}-{tag}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, tmp)
    old = None
    if target.exists():
        old = target.parent / f".merge-old-{target.name}-{tag}"
        os.replace(target, old)
    os.replace(tmp, target)
    return old
