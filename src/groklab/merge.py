"""Bring another store's runs into this one: `groklab merge SOURCE`.

For runs trained elsewhere — a GPU machine's store, a colleague's, the `$OUT` a device run hands
back, one of several stores written side by side — so that one store holds them for `ls`,
`analyze`, `report` and `reproduce`. A group (ensemble or solo run) is the unit: its rows (status,
config, summary, sweep, versions, owner), every metric, and its folder (checkpoint, snapshots,
hooks) come over under new run ids, or it is left with a reason. Nothing in this store is
overwritten and the source is only read: a group already here is skipped (merging twice adds
nothing), as is one still training in another process or whose checkpoint does not verify. A
sweep's reuse of a run trained outside it (`Store.reuse`) comes over with the run.
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
    counts the groups copied, `skipped` names each group left out and why."""

    source: str
    merged: dict[int, int] = field(default_factory=dict)
    groups: int = 0
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
            reason = _merge_group(src, store, gid, members, known)
            if reason:
                report.skipped[gid] = reason
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


def _merge_group(src: Store, dst: Store, gid: str, members: list[dict], ids: dict[int, int]) -> str | None:
    """Merge one group, recording its ids in `ids`; the reason it was left out, or None."""
    from .train.checkpoint import CheckpointError, read_checkpoint

    here = dst.group(gid)
    if here:
        ids.update({r["id"]: h["id"] for r in members for h in here if h["member"] == r["member"]})
        theirs, ours = [r["status"] for r in members], [h["status"] for h in here]
        return "already in this store" + ("" if theirs == ours else
                                          f" (there: {', '.join(theirs)}; here: {', '.join(ours)}; not overwritten)")
    live = [r for r in members if trained_elsewhere(r)]
    if live:
        return (f"run {live[0]['id']} is training (process {live[0]['owner_pid']} on {live[0]['owner_host']}); "
                "merge again when it ends")
    folder, target = src.paths.group_dir(gid), dst.paths.group_dir(gid)
    if target.exists():
        return f"{target} exists with no runs of this store naming it; move it away to merge this group"
    ckpt = src.paths.checkpoint(gid)
    if ckpt.exists():
        try:
            read_checkpoint(ckpt)
        except CheckpointError as e:
            return f"its checkpoint does not verify ({e})"
    if folder.is_dir():  # a whole folder or none: copied beside its place, then renamed into it
        tmp = target.parent / f".merge-{gid}-{uuid.uuid4().hex[:8]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, tmp)
        os.replace(tmp, target)
    metrics = src.metrics_long([r["id"] for r in members])
    by_run = {rid: list(zip(m["step"], m["key"], m["value"])) for rid, m in metrics.groupby("run_id")}
    rows = [{**r, "parent": ids.get(r.get("parent"))} for r in members]
    try:
        new = dst.add_rows(rows, [by_run.get(r["id"], []) for r in members])
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no folder without the rows that name it
        raise
    ids.update({r["id"]: n for r, n in zip(members, new)})
    return None
