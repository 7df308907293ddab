"""The Python API, mirroring the CLI: run, resume, extend, load_run."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from .config import ConfigError, RunCfg, from_dict, load_config, parse_seeds
from .store import Store


@dataclass(frozen=True)
class RunRecord:
    """A stored run: identity, config, status, summary and metrics (one row per evaluation)."""

    run_id: int
    name: str
    status: str
    config: RunCfg
    summary: dict
    metrics: pd.DataFrame
    group: str
    member: int
    created: str
    sweep: str | None = None
    parent: int | None = None  # the run this one continues (`extend`)


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def expand_seeds(cfg: RunCfg, seeds: Sequence[int] | None) -> list[RunCfg]:
    """One config per seed (an ensemble), names suffixed with the seed."""
    if not seeds:
        return [cfg]
    seeds = parse_seeds(list(seeds), "seeds")  # the CLI's checks: integers, none twice
    return [replace(cfg, name=f"{cfg.name}-s{s}", train=replace(cfg.train, seed=s)) for s in seeds]


def run(source: str | Path | dict | RunCfg, overrides: Sequence[str] = (), *, seeds: Sequence[int] | None = None,
        store: Store | str | Path | None = None, progress: bool = False, sweep: str | None = None
        ) -> RunRecord | list[RunRecord]:
    """Train a preset, TOML file, dict or config; store it; return its record(s).

    Args:
        source: preset name, TOML path, dict or :class:`RunCfg`.
        overrides: dotted overrides such as ``"optim.weight_decay=0.1"``.
        seeds: train these seeds as one vectorized ensemble (returns a list).
        store: store root or :class:`Store` (default ``./runs`` or ``$GROKLAB_STORE``).
    """
    from .config import with_overrides
    from .train import train

    cfg = with_overrides(source, list(overrides)) if isinstance(source, RunCfg) else load_config(source, list(overrides))
    cfgs = expand_seeds(cfg, seeds)  # checked before the store is opened: bad seeds write nothing
    st = _store(store)
    results = train(cfgs, store=st, progress=progress, sweep=sweep)
    records = [load_run(r.run_id, st) for r in results]
    return records if seeds else records[0]


def resume(run_id: int, store: Store | str | Path | None = None, progress: bool = False,
           device: str | None = None, hooks: Sequence | None = None) -> list[RunRecord]:
    """Continue the group (ensemble or solo run) of `run_id` from its last checkpoint.

    `device` moves it (a checkpoint written on a GPU continues on the CPU and back); the stored
    config keeps the device it was created with. `hooks` default to those the group was trained
    with (a protocol's snapshots or correct-logit log: `protocols.hooks.restore_hooks`).
    """
    from .config import with_overrides
    from .protocols.hooks import restore_hooks
    from .train import train

    st = _store(store)
    row = _get(st, run_id)
    rows = _idle_group(st, row, "resume")
    cfgs = [from_dict(RunCfg, r["config"]) for r in rows]
    if device is not None:
        cfgs = [with_overrides(c, {"train.device": device}) for c in cfgs]
    if hooks is None:
        hooks = restore_hooks(st, row["group_id"])
    results = train(cfgs, store=st, hooks=hooks, progress=progress, group=row["group_id"], sweep=row["sweep"])
    return [load_run(r.run_id, st) for r in results]


def extend(run_id: int, steps: int, store: Store | str | Path | None = None, progress: bool = False,
           device: str | None = None, past_early_stop: bool = False) -> list[RunRecord]:
    """Train the group (ensemble or solo run) of the finished run `run_id` on to `steps`, as a new
    group: the original's metrics and last checkpoint are copied and it stays as it was.

    Batches, dropout and noise are functions of the seed and step, so the new runs equal runs
    trained to `steps` from the start (the same config otherwise). Members that stopped early
    (`train.early_stop`) or diverged stay stopped, unless `past_early_stop`: then the new runs
    have early stop off and the early-stopped members train on too, as runs trained to `steps`
    without early stop would (in an ensemble, only when they stopped at the group's last step: the
    members of a group train in step). Protocol hooks (snapshots) are not carried.
    """
    from .config import with_overrides
    from .store import TERMINAL
    from .train import train
    from .train.checkpoint import atomic_write, read_checkpoint
    from .train.engine import create_group

    st = _store(store)
    row = _get(st, run_id)
    rows = _idle_group(st, row, "extend")
    for r in rows:
        if r["status"] not in TERMINAL:
            raise ConfigError(f"run {r['id']} is {r['status']}: `groklab resume {r['id']}` trains it to its "
                              f"budget first; extend trains a finished run further")
    cfgs = [from_dict(RunCfg, r["config"]) for r in rows]
    have = cfgs[0].train.steps
    if not isinstance(steps, int) or steps <= have:
        raise ConfigError(f"steps={steps!r} must be an integer above the run's train.steps ({have})")
    if cfgs[0].optim.schedule == "cosine":  # its lr at every step depends on the budget
        raise ConfigError("optim.schedule='cosine' decays over train.steps: a longer budget changes the lr of "
                          "every step, so the extension would not be this run continued (constant or step: yes)")
    ckpt = st.paths.checkpoint(row["group_id"])
    if not ckpt.exists():
        raise ConfigError(f"run {run_id} has no checkpoint ({ckpt}) to continue from")
    # A truncated, tampered or pickled file is refused before anything is written.
    at = json.loads(read_checkpoint(ckpt)[1]["meta"])["step"]
    early = [r for r in rows if r["summary"].get("early_stopped")]
    goes_on = [r for r in rows if r["status"] == "finished" and r["summary"].get("steps") == have]
    if past_early_stop:
        behind = [r for r in early if r["summary"].get("steps") != at]
        if behind:
            raise ConfigError(f"run {behind[0]['id']} stopped early at step {behind[0]['summary'].get('steps')}, "
                              f"before its group's last step ({at}): an ensemble's members train in step, so it "
                              "cannot go on from there; train its config again with train.early_stop=false")
        goes_on += early
    if not goes_on:
        raise ConfigError(f"run {run_id}'s group ended before its budget of {have} steps (early stop or "
                          "divergence): none of its runs has anything to train on"
                          + ("; --no-early-stop trains an early-stopped run on" if early and not past_early_stop
                             else ""))
    over = {"train.steps": steps, **({"train.device": device} if device is not None else {}),
            **({"train.early_stop": False} if past_early_stop else {})}
    new = [with_overrides(c, over) for c in cfgs]
    group = uuid.uuid4().hex[:12]
    atomic_write(st.paths.checkpoint(group), ckpt.read_bytes(), "checkpoint")  # before the rows name it
    group, ids = create_group(st, new, group=group, parents=[r["id"] for r in rows])
    st.copy_metrics(zip([r["id"] for r in rows], ids))
    results = train(new, store=st, progress=progress, group=group)
    return [load_run(r.run_id, st) for r in results]


def _idle_group(st: Store, row: dict, verb: str) -> list[dict]:
    """The rows of `row`'s group, none of them training in another process (two processes on one
    group would overwrite each other's checkpoint)."""
    from .store import trained_elsewhere

    rows = st.group(row["group_id"])
    live = [r for r in rows if trained_elsewhere(r)]
    if live:
        r = live[0]
        raise ConfigError(f"run {r['id']} is still running (process {r['owner_pid']} on {r['owner_host']}); stop it "
                          f"first (Ctrl-C or SIGTERM), then {verb}")
    return rows


def _get(st: Store, run_id: int) -> dict:
    try:
        return st.get(int(run_id)) if st.exists() else _missing(run_id, st)
    except KeyError:
        return _missing(run_id, st)


def _missing(run_id, st: Store):
    raise ConfigError(f"run {run_id} is not in the store at {st.paths.root}; see `groklab ls`")


def load_run(run_id: int, store: Store | str | Path | None = None) -> RunRecord:
    """Read a stored run (config, summary, metrics DataFrame)."""
    st = _store(store)
    row = _get(st, run_id)
    return RunRecord(run_id=row["id"], name=row["name"], status=row["status"],
                     config=from_dict(RunCfg, row["config"]), summary=row["summary"],
                     metrics=st.metrics(row["id"]), group=row["group_id"], member=row["member"],
                     created=row["created"], sweep=row["sweep"], parent=row["parent"])


def load_weights(run_id: int, store: Store | str | Path | None = None) -> dict:
    """The run's latest weights by parameter name (from its group's checkpoint)."""
    from .train.checkpoint import CheckpointError, member_weights

    st = _store(store)
    row = _get(st, run_id)
    path = st.paths.checkpoint(row["group_id"])
    if not path.exists():  # say why, not just which file: a run stopped before its first checkpoint
        every = row["config"].get("train", {}).get("checkpoint_every", "train.checkpoint_every")
        raise CheckpointError(f"run {run_id} ({row['status']}) has no saved weights yet: a run writes its "
                              f"checkpoint every {every} steps and at its end")
    return member_weights(path, row["member"])
