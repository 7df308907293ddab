"""Training hooks the protocols attach (plain callables `hook(step, state)`, run at each evaluation).

Each hook notes itself (name and arguments) in ``<store>/groups/<group>/hooks.json`` the first time
it runs, so `groklab resume` (and a protocol that finds its run interrupted) continues the run with
the same hooks: :func:`restore_hooks`.

- :class:`SnapshotHook` keeps the weights at log-spaced steps (safetensors, no pickle) under
  ``<store>/groups/<group>/snapshots/``, for analyses over training time (Fourier progress measures).
- :class:`CorrectLogitHook` logs the mean correct-class logit on the training points
  (`correct_logit`, relative to the mean logit; model efficiency, §5.2) next to the engine's metrics.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from ..store import Store
from ..train.checkpoint import atomic_write

SNAPSHOT_RE = re.compile(r"step-(\d+)\.safetensors$")


HOOKS_FILE = "hooks.json"


class RecordedHook:
    """A hook that notes itself in its group's `hooks.json` (see the module docstring).

    Subclasses set `name` (the key in `RESUMABLE`) and `args()` (the keyword arguments, besides the
    store, that rebuild them)."""

    name = ""

    def args(self) -> dict:
        return {}

    def record(self, store: Store, group: str | None) -> None:
        if group is None or getattr(self, "_recorded", None) == group:
            return
        path = store.paths.group_dir(group) / HOOKS_FILE
        notes = _read_notes(path)
        if notes.get(self.name) != self.args():
            notes[self.name] = self.args()
            atomic_write(path, json.dumps(notes, sort_keys=True).encode(), what="hooks note")
        self._recorded = group


def _read_notes(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def restore_hooks(store: Store, group: str) -> list:
    """The hooks a stored group was trained with, rebuilt from its `hooks.json` (none: [])."""
    notes = _read_notes(store.paths.group_dir(group) / HOOKS_FILE)
    return [RESUMABLE[name](store, **args) for name, args in sorted(notes.items()) if name in RESUMABLE]


def snapshot_dir(store: Store, group: str) -> Path:
    return store.paths.group_dir(group) / "snapshots"


def log_targets(steps: int, points: int) -> list[int]:
    """Step 0, `points` log-spaced steps in [1, steps] (duplicates merged) and the last step."""
    grid = np.unique(np.geomspace(1, steps, points).round().astype(int)).tolist() if points else []
    return sorted({0, steps, *grid})


class SnapshotHook(RecordedHook):
    """Save every member's parameters at the first evaluation at or after each log-spaced target.

    Args:
        store: the store the run is written to (snapshots sit in its group's folder).
        points: number of log-spaced targets between step 1 and the last step.
    """

    name = "snapshot"

    def __init__(self, store: Store, points: int = 30):
        self.store, self.points = store, points
        self._pending: list[int] | None = None

    def args(self) -> dict:
        return {"points": self.points}

    def __call__(self, step: int, state) -> None:
        if state.group is None:
            return  # not a stored run: nowhere to keep files
        self.record(self.store, state.group)
        if self._pending is None:  # resumed: the targets up to the last snapshot are done
            last = max((s for s, _ in list_snapshots(self.store, state.group)), default=-1)
            self._pending = [t for t in log_targets(state.cfgs[0].train.steps, self.points) if t > last]
        due = [t for t in self._pending if t <= step]
        if not due:
            return
        self._pending = [t for t in self._pending if t > step]
        tensors = {name: p.detach().cpu().contiguous() for name, p in state.model.named_parameters()}
        path = snapshot_dir(self.store, state.group) / f"step-{step:08d}.safetensors"
        atomic_write(path, save(tensors, metadata={"step": str(step), "format": "groklab-snapshot-1"}),
                     what="snapshot")


def list_snapshots(store: Store, group: str) -> list[tuple[int, Path]]:
    """(step, path) of a group's snapshots, by step."""
    folder = snapshot_dir(store, group)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := SNAPSHOT_RE.search(p.name))]
    return sorted(found)


def load_snapshot(path: Path, member: int) -> dict[str, torch.Tensor]:
    """One member's named weights (without the member dim) from a snapshot file."""
    return {k: v[member] for k, v in load_file(str(path)).items()}


class CorrectLogitHook(RecordedHook):
    """Log `correct_logit`: each member's mean over its training points of the correct class's logit
    minus the mean logit (the labels it is trained on: random ones for a random-label C_mem)."""

    name = "correct_logit"

    def __init__(self, store: Store | None = None):
        self.store = store
        self._data = None

    def _build(self, state):
        from ..data import TASKS, noisy_labels

        cfgs = state.cfgs
        task_def = TASKS.get(cfgs[0].data.task)()
        task = task_def.build(cfgs[0].data)
        device = next(state.model.parameters()).device
        rows, labels = [], []
        for c in cfgs:
            tr, _ = task_def.split(c.data, task)
            rows.append(tr)
            labels.append(noisy_labels(task.y, tr, c.data.label_noise, task.n_out, c.data.split_seed)[tr])
        self._data = (task.x.to(device), [r.to(device) for r in rows], [y.to(device) for y in labels])

    @torch.no_grad()
    def __call__(self, step: int, state) -> None:
        if self.store is not None:
            self.record(self.store, state.group)
        if self._data is None:
            self._build(state)
        x, rows, labels = self._data
        model = state.model
        was_training = model.training
        model.eval()
        out = []
        for i, (r, y) in enumerate(zip(rows, labels)):
            xi = x[r].unsqueeze(0).expand(model.n_members, *x[r].shape)  # every member sees member i's rows
            z = model(xi)[i]                                              # (B, C) for member i
            # Relative to the mean logit: cross-entropy ignores a shift shared by all classes.
            out.append(float((z.gather(1, y.view(-1, 1)).squeeze(1) - z.mean(1)).mean()))
        model.train(was_training)
        log = []
        for i, v in enumerate(out):
            if state.last and state.last[i]:
                state.last[i]["correct_logit"] = v
                if self.store is not None and state.run_ids and state.run_ids[i] is not None:
                    log.append((state.run_ids[i], step, "correct_logit", v))
        if log:
            self.store.log_metrics(log)


# The hooks `restore_hooks` can rebuild, by `RecordedHook.name`.
RESUMABLE: dict[str, type[RecordedHook]] = {h.name: h for h in (SnapshotHook, CorrectLogitHook)}

HookSpec = tuple[str, str]
"""A hook another process can rebuild: (`RecordedHook.name`, its `args()` as canonical JSON)."""


def hook_specs(hooks) -> tuple[HookSpec, ...] | None:
    """The specs of `hooks`, or None when one of them cannot be rebuilt elsewhere (not recorded)."""
    if any(not isinstance(h, RecordedHook) or h.name not in RESUMABLE for h in hooks):
        return None
    return tuple(sorted((h.name, json.dumps(h.args(), sort_keys=True)) for h in hooks))


def build_hooks(store: Store, specs: tuple[HookSpec, ...]) -> list:
    """The hooks `specs` name, built for `store`."""
    return [RESUMABLE[name](store, **json.loads(args)) for name, args in specs]
