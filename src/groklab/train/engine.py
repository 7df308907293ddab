"""The training function: N members of one architecture at once; a single run is N = 1.

    from groklab import load_config
    from groklab.train import train
    results = train([load_config("quickstart")])

Members may differ in the fields of `config.MEMBER_FIELDS` (seed, split, fraction, lr, weight
decay, noise scales, init scale, Grokfast λ); everything else must match. Each member draws its
initialization and noise from its own generators and its batches and dropout masks from its own
counter-based streams (`groklab.rng`), so a member reproduces the solo run of its config — on the
CPU exactly, on CUDA within float rounding (see docs/gpu.md).

`train` reads top to bottom; `_Run` holds the state the loop touches (data, model, optimizer,
members' bookkeeping, store rows) and names each piece of work.
"""
from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import pandas as pd
import torch

from .. import __version__
from ..config import ConfigError, RunCfg, TrainCfg, check_ensemble, config_json, get_field
from ..data import TASKS, TaskData, noisy_labels, subset
from ..models import MemberModel, build_model
from ..store import Store
from .checkpoint import CheckpointWriter, Ledger, load_checkpoint
from .interrupts import deferred_interrupts
from .losses import LOSSES, correct
from .optim import FlatParams, MemberHParams, MemberOptimizer, member_rows
from .progress import progress_bar, update_bar
from .sampler import Sampler
from .schedule import eval_steps, lr_factor, phase_at
from .step import StepInputs, TrainStep, autocast

THRESHOLD = 0.99
EVAL_CHUNK = 16384  # member-examples per evaluation forward pass (bounds memory)
# Stopped members leave the batched model once the running ones are at most this share of it: a
# step costs about its member count, and each shrink costs a rebuild (a recapture on CUDA, a
# recompile with train.compile, hence the lower share there).
SHRINK_AT, SHRINK_AT_COMPILED = 0.75, 0.5


@dataclass
class RunResult:
    """What a trained member leaves: its id in the store (None without a store), status,
    summary figures and the metrics history (one row per evaluation)."""

    run_id: int | None
    config: RunCfg
    status: str
    summary: dict
    metrics: pd.DataFrame


@dataclass
class TrainState:
    """What hooks see at each evaluation."""

    step: int
    model: MemberModel
    cfgs: list[RunCfg]
    last: list[dict] = field(default_factory=list)  # latest metrics per member
    run_ids: list[int | None] = field(default_factory=list)  # store ids per member (None without a store)
    group: str | None = None  # the stored group: where a hook may keep files


Hook = Callable[[int, TrainState], None]


def _col(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but no CUDA device is available (use 'auto' or 'cpu')")
    if name.startswith("cuda:") and int(name[5:]) >= (count := torch.cuda.device_count()):
        # Caught here, not as "invalid device ordinal" from the first tensor moved there.
        raise ConfigError(f"train.device={name!r} but this machine has {count} CUDA device(s): "
                          f"{', '.join(repr(f'cuda:{i}') for i in range(count))}")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(cfg: TrainCfg) -> Iterator[None]:
    """torch's CPU threads for the run (`train.threads`); the caller's count is restored after."""
    saved = torch.get_num_threads()
    n = (os.cpu_count() or 1) if cfg.threads == "auto" else cfg.threads
    if saved != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)


@contextlib.contextmanager
def numerics(cfg: TrainCfg) -> Iterator[None]:
    """The run's arithmetic: TF32 matmuls on or off, deterministic algorithms; restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.precision == "tf32"
    if cfg.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it reads this when its handle is made.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.use_deterministic_algorithms(saved[2])


def environment() -> dict[str, str | None]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__)).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"groklab_version": __version__, "torch_version": torch.__version__, "git_sha": sha}


def create_group(store: Store, cfgs: Sequence[RunCfg], sweep: str | None = None, env: dict | None = None,
                 group: str | None = None, parents: Sequence[int] | None = None) -> tuple[str, list[int]]:
    """Create the rows of a new group of runs (status `running`); return (group id, run ids).

    Args:
        store: where the rows go.
        cfgs: one config per member.
        sweep: tag the rows with this sweep name.
        env: versions and git commit recorded with the rows (default: this process's).
        group: the group id (default: a new one), e.g. the driver's id in a Ray task's own store.
        parents: the run each member continues (`extend`), recorded with its row.
    """
    group = group or uuid.uuid4().hex[:12]
    ids = store.create_runs([config_json(c) for c in cfgs], [c.name for c in cfgs], group, env or environment(),
                            sweep, parents=list(parents) if parents is not None else None)
    return group, ids


def _member_gens(cfgs: Sequence[RunCfg], offset: int) -> list[torch.Generator]:
    # Distinct, reproducible CPU streams per purpose (init / noise) derived from each seed.
    return [torch.Generator().manual_seed(c.train.seed * 1_000_003 + offset) for c in cfgs]


@torch.no_grad()
def evaluate(model: MemberModel, task: TaskData, labels: torch.Tensor, masks: dict[str, torch.Tensor],
             loss_fn, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Loss and accuracy of every member on every example, reduced over each mask -> (N,)."""
    was_training = model.training
    model.eval()
    n, m = labels.shape
    sums = {f"{k}_{q}": torch.zeros(n, device=labels.device) for k in masks for q in ("loss", "acc")}
    chunk = max(256, EVAL_CHUNK // n)  # bound activation memory for large ensembles
    for a in range(0, m, chunk):
        x = task.x[a:a + chunk]
        with autocast(labels.device, precision):
            out = model(x.unsqueeze(0).expand(n, *x.shape)).float()
        y = labels[:, a:a + chunk]
        loss, ok = loss_fn(out, y), correct(out, y)
        for k, mask in masks.items():
            mk = mask[:, a:a + chunk]
            sums[f"{k}_loss"] += (loss * mk).sum(1)
            sums[f"{k}_acc"] += (ok * mk).sum(1)
    model.train(was_training)
    for k, mask in masks.items():
        count = mask.sum(1).clamp(min=1)
        sums[f"{k}_loss"] /= count
        sums[f"{k}_acc"] /= count
    return sums


class _Members:
    """Per-member bookkeeping: status, thresholds, early-stop counters."""

    def __init__(self, n: int):
        self.status = ["running"] * n
        self.step_train_99: list[int | None] = [None] * n
        self.step_val_99: list[int | None] = [None] * n
        self.hold = [0] * n
        self.early = [False] * n

    def to_json(self) -> list[dict]:
        return [dict(status=s, step_train_99=a, step_val_99=b, hold=h, early=e) for s, a, b, h, e in
                zip(self.status, self.step_train_99, self.step_val_99, self.hold, self.early)]

    @classmethod
    def from_json(cls, items: list[dict]) -> "_Members":
        out = cls(len(items))
        for i, d in enumerate(items):
            out.status[i], out.hold[i], out.early[i] = d["status"], d["hold"], d["early"]
            # Checkpoints written before the rename keep t_train99 / t_val99.
            out.step_train_99[i] = d["step_train_99"] if "step_train_99" in d else d["t_train99"]
            out.step_val_99[i] = d["step_val_99"] if "step_val_99" in d else d["t_val99"]
        return out

    def record(self, i: int, rec: dict, step: int, cfg: TrainCfg) -> bool:
        """Update member i from its evaluation; False once it stops training (diverged, early stop)."""
        if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["param_norm"])):
            self.status[i] = "diverged"
            return False
        if self.step_train_99[i] is None and rec["train_acc"] >= THRESHOLD:
            self.step_train_99[i] = step
        if self.step_val_99[i] is None and rec["val_acc"] >= THRESHOLD:
            self.step_val_99[i] = step
        if cfg.early_stop:
            self.hold[i] = self.hold[i] + 1 if rec["val_acc"] >= cfg.early_stop_acc else 0
            if self.hold[i] >= cfg.early_stop_patience:
                self.status[i], self.early[i] = "finished", True
                return False
        return True


def train(cfgs: RunCfg | Sequence[RunCfg], *, store: Store | None = None, hooks: Sequence[Hook] = (),
          progress: bool = True, sweep: str | None = None, group: str | None = None) -> list[RunResult]:
    """Train one run or an ensemble of compatible runs.

    Args:
        cfgs: one config, or several that differ only in `MEMBER_FIELDS`.
        store: where runs, metrics and checkpoints go (None: keep metrics in memory only).
        hooks: callables `hook(step, state)` run at every evaluation.
        progress: show a progress bar on stderr.
        sweep: tag the runs with this sweep name.
        group: resume this stored group from its last checkpoint instead of creating runs.
    Returns:
        One :class:`RunResult` per member, in order.
    """
    cfgs = [cfgs] if isinstance(cfgs, RunCfg) else list(cfgs)
    check_ensemble(cfgs)
    tc = cfgs[0].train
    with numerics(tc), torch_threads(tc):
        run = _Run(cfgs, store, sweep, group)
        evals, step, done, bar = set(eval_steps(tc)), run.start, False, None
        try:                                # from here on the rows exist: whatever ends the run marks them
            bar = progress_bar(progress, tc.steps, step)
            run.sync_phase(step)
            if step == 0:
                done = run.evaluate(0, hooks, bar)
            if not hooks:
                run.shrink()                # a resumed group's stopped members stay out
            while step < tc.steps and not done:
                run.sync_phase(step)        # 1) phase: lr, weight decay, loss, training subset
                run.train_step()            # 2) lr, batch, forward/backward, update (a CUDA graph on GPU)
                step += 1
                if step in evals:           # 3) evaluate every example, thresholds, stops, log
                    done = run.evaluate(step, hooks, bar)
                    if not hooks:           # 3b) stopped members leave the batched model (hooks
                        run.shrink()        #     index the whole group, so they keep it whole)
                if step % tc.checkpoint_every == 0 and step < tc.steps and not done:
                    run.checkpoint(step)    # 4) resumable state, written in the background
            run.writer.wait()               # the last such write is on disk; if it failed, it raises here
        except KeyboardInterrupt:
            _end(run, step, "stopped", bar)  # the last checkpoint stays consistent; `groklab resume` continues from it
            raise
        except Exception:
            _end(run, step, "failed", bar)   # likewise resumable; a sweep re-plans failed groups
            raise
        with deferred_interrupts():    # the work is done: a stop now waits for the final checkpoint and rows
            _close(bar)
            return run.finish(step)


def _end(run: "_Run", step: int, status: str, bar) -> None:
    """Mark the rows of a run that ends early. A second stop while they are written (Ctrl-C
    pressed again, or after a SIGTERM) waits for them: it used to cut the write short and leave
    the rows `running`."""
    with deferred_interrupts():
        run.mark(step, status)
        _close(bar)


def _close(bar) -> None:
    try:
        if bar is not None:
            bar.close()
    except OSError:  # its terminal has gone; the run's end is recorded either way
        pass


class _Run:
    """A group's training state: data, model, optimizer, step program, members and store rows."""

    def __init__(self, cfgs: list[RunCfg], store: Store | None, sweep: str | None, group: str | None):
        c0, n = cfgs[0], len(cfgs)
        self.cfgs, self.c0, self.n, self.store, self.group = cfgs, c0, n, store, group
        self.device = device = resolve_device(c0.train.device)

        # data: the whole table on the device; per-member splits and labels (drawn on the CPU)
        task_def = TASKS.get(c0.data.task)()
        self.task_cpu = task_cpu = task_def.build(c0.data)
        splits = [task_def.split(c.data, task_cpu) for c in cfgs]
        self.labels = torch.stack([noisy_labels(task_cpu.y, tr, c.data.label_noise, task_cpu.n_out, c.data.split_seed)
                                   for c, (tr, _) in zip(cfgs, splits)]).to(device)
        self.task = task_cpu.to(device)
        self.train_sets = [tr for tr, _ in splits]
        self.val_mask = self._mask([va for _, va in splits])

        # model: built and initialized on the CPU (the same weights on any device), then moved.
        # `live` lists the members the batched model holds, by index into cfgs: all of them until
        # stopped ones leave (`shrink`); device tensors with a member dim have one row per live member.
        self.live = list(range(n))
        self._ledger: Ledger | None = None  # every member's state when some last left
        model = build_model(c0.model, task_cpu, n)
        model.reset_parameters(_member_gens(cfgs, 0), torch.tensor([c.model.init_scale for c in cfgs]))
        self.step_t = torch.zeros((), dtype=torch.int64, device=device)  # the device's step counter
        self.noise_gens = _member_gens(cfgs, 2)
        self.update_noise = any(c.optim.update_noise > 0 for c in cfgs)
        self._place(model)
        self.opt = MemberOptimizer(self.flat, c0.optim, self.noise_gens, update_noise=self.update_noise)
        col = lambda key: _col([get_field(c, key) for c in cfgs], device)  # noqa: E731
        self.hp = MemberHParams(lr=col("optim.lr"), weight_decay=col("optim.weight_decay"),
                                update_noise=col("optim.update_noise"), weight_noise=col("optim.weight_noise"),
                                active=torch.ones(n, 1, device=device),
                                columns={f: col(f) for tr in self.opt.transforms for f in tr.columns})
        self.base_lr = self.hp.lr.clone()  # the phase's lr; the schedule multiplies it per step
        self.lr_table = torch.tensor([lr_factor(c0.optim, s, c0.train.steps) for s in range(c0.train.steps)],
                                     dtype=torch.float32, device=device)
        self.weight_noise = any(c.optim.weight_noise > 0 for c in cfgs)
        # Host randomness (noise) and host counters (Grokfast-MA) cannot live in a graph.
        graphs = (device.type == "cuda" and c0.train.cuda_graphs and not (self.weight_noise or self.update_noise)
                  and all(tr.graphable for tr in self.opt.transforms))
        self._make_step(graphs)

        # store rows, or the checkpoint of a stored group
        self.writer = CheckpointWriter()
        self.members, self.start, self.wall_before = _Members(n), 0, 0.0
        self.history: list[list[dict]] = [[] for _ in range(n)]
        self.run_ids: list[int | None] = [None] * n
        self.counts = self.model.param_counts()
        if store is not None:
            self._open_rows(sweep)
        self.step_t.fill_(self.start)
        self.phase: int | None = None
        self.sets: list[torch.Tensor] | None = None
        self.t0 = time.perf_counter()
        self.state = TrainState(self.start, self.model, cfgs, run_ids=self.run_ids, group=self.group)

    def _place(self, model: MemberModel) -> None:
        """Make `model` (one member per live member) the one that trains: on the device, in one flat
        buffer, its dropout keyed by the live members' seeds."""
        self.model = model.to(self.device).train()
        self.model.bind_dropout([self.cfgs[i].train.seed for i in self.live], self.step_t)
        self.flat = FlatParams(self.model, len(self.live))

    def _make_step(self, graphs: bool) -> None:
        self.train_step = TrainStep(self.model, self.flat, self.opt, self.hp, self.task, self.labels, self.step_t,
                                    self.lr_table, self.base_lr, self.weight_noise, self.c0.train.precision, graphs,
                                    self.c0.train.compile)

    def _mask(self, idx_sets: list[torch.Tensor]) -> torch.Tensor:
        mask = torch.zeros(len(idx_sets), len(self.task.y))
        for i, s in enumerate(idx_sets):
            mask[i, s] = 1.0
        return mask.to(self.device)

    def _open_rows(self, sweep: str | None) -> None:
        store, cfgs = self.store, self.cfgs
        if self.group is None:
            self.group, self.run_ids = create_group(store, cfgs, sweep)
            return
        self.run_ids = [r["id"] for r in store.group(self.group)]
        ckpt = store.paths.checkpoint(self.group)
        if ckpt.exists():
            meta = load_checkpoint(ckpt, self.flat, self.opt, self.noise_gens)
            self.start, self.wall_before = meta["step"], meta["wall"]
            self.members = _Members.from_json(meta["members"])
            # Finished at a step budget since raised (`api.extend`): train on; stopped early, only
            # if early stop is now off (`extend --no-early-stop`).
            for i, c in enumerate(cfgs):
                early = self.members.early[i] and c.train.early_stop
                if self.members.status[i] == "finished" and not early and self.start < c.train.steps:
                    self.members.status[i], self.members.early[i] = "running", False
            self.hp.active.copy_(_col([1.0 if s == "running" else 0.0 for s in self.members.status], self.device))
        store.truncate_metrics(self.run_ids, self.start if ckpt.exists() else -1)
        for i, r in enumerate(self.run_ids):
            old = store.metrics(r)
            self.history[i] = old.to_dict("records") if len(old) else []
        # Claimed last: from here to `train`'s try, which marks the rows whatever ends the run, a stop
        # would leave them `running` under this process.
        store.update_runs({r: ("running", {}) for r, s in zip(self.run_ids, self.members.status) if s == "running"})

    def sync_phase(self, step: int) -> None:
        """Enter the phase in force at `step` if it changed. Recomputed from the base config, so a
        resumed run lands in the same state as an uninterrupted one."""
        k = phase_at(self.c0.train.phases, step)
        if k == self.phase:
            return
        cfgs, n, c0 = self.cfgs, self.n, self.c0
        lr, wd = [c.optim.lr for c in cfgs], [c.optim.weight_decay for c in cfgs]
        kind, loss, sets = c0.optim.decay_kind, c0.train.loss, self.train_sets
        for j, ph in enumerate(c0.train.phases[:k + 1]):
            lr = [ph.lr] * n if ph.lr is not None else lr
            wd = [ph.weight_decay] * n if ph.weight_decay is not None else wd
            kind, loss = ph.wd_kind or kind, ph.loss or loss
            if ph.frac_train is not None:  # a subset of the *original* training set
                sets = [subset(tr, ph.frac_train, c.data.split_seed + 1 + j) for tr, c in zip(self.train_sets, cfgs)]
        self.hp.weight_decay.copy_(_col(wd, self.device))
        self.base_lr.copy_(_col(lr, self.device))
        self.opt.decay_kind = kind
        if sets is not self.sets:
            self.sets = sets
            self._use_sets()
        self.phase, self.loss = k, LOSSES.get(loss)
        self.train_step.set_inputs(StepInputs(self.sampler, self.loss))

    def _use_sets(self) -> None:
        """The live members' training masks and batch draws from the phase's training sets."""
        sets = [self.sets[i] for i in self.live]
        self.train_mask = self._mask(sets)
        self.sampler = Sampler(sets, self.c0.train.batch_size, [self.cfgs[i].train.seed for i in self.live],
                               self.device)

    def shrink(self) -> None:
        """Take the stopped members out of the batched model once the running ones are at most
        SHRINK_AT of it, so that the rest train at the cost of their own count (a sweep's early
        stops otherwise keep paying for every member to the last step).

        The leaving members' last parameters and optimizer state stay in a CPU ledger, written once
        beside the checkpoints that follow (they hold the live rows only), so the stored group reads
        as if they had stayed. The members that remain train exactly as before: their batches,
        dropout and noise are keyed by their seeds, not by their position (on the CPU a member
        still equals its solo run bitwise).
        """
        running = [j for j, i in enumerate(self.live) if self.members.status[i] == "running"]
        share = SHRINK_AT_COMPILED if self.c0.train.compile else SHRINK_AT
        if not running or len(running) > share * len(self.live):
            return
        pos = torch.tensor(running, device=self.device)
        old_flat, old_opt = self.flat, self.opt
        live = [self.live[j] for j in running]
        self._ledger = Ledger(self._state(), tuple(live))  # the whole group, before `live` changes
        self.live = live
        self._place(build_model(self.c0.model, self.task_cpu, len(self.live)))
        with torch.no_grad():
            self.flat.data.copy_(old_flat.data[pos])
        self.opt = MemberOptimizer(self.flat, self.c0.optim, [self.noise_gens[i] for i in self.live],
                                   update_noise=self.update_noise)
        self.opt.load_state(member_rows(old_opt.state(), pos))
        self.opt.decay_kind = old_opt.decay_kind
        self.hp = self.hp.select(pos)
        self.base_lr, self.labels, self.val_mask = self.base_lr[pos], self.labels[pos], self.val_mask[pos]
        self.state.model = self.model
        self._make_step(self.train_step.graphs)  # False after a failed capture: stays eager
        self._use_sets()
        self.train_step.set_inputs(StepInputs(self.sampler, self.loss))

    def _live_state(self) -> dict[str, torch.Tensor]:
        """Parameters and optimizer state of the members in the batched model, as CPU copies of
        their own (training goes on changing the live tensors)."""
        return {k: v.detach().to("cpu", copy=True) for k, v in {"params": self.flat.data, **self.opt.state()}.items()}

    def _state(self) -> dict[str, torch.Tensor]:
        """Parameters and optimizer state of every member of the group, as CPU tensors of their own."""
        state = self._live_state()
        return state if self._ledger is None else self._ledger.merge(state)

    def evaluate(self, step: int, hooks: Sequence[Hook], bar) -> bool:
        """Evaluate, record thresholds and stops, log; True once every member has stopped."""
        self.sync_phase(step)  # a boundary's evaluation already reports the new phase
        flat, hp, members = self.flat, self.hp, self.members
        res = evaluate(self.model, self.task, self.labels, {"train": self.train_mask, "val": self.val_mask},
                       self.loss, self.c0.train.precision)
        wall = self.wall_before + time.perf_counter() - self.t0
        cols = {**{k: v.tolist() for k, v in res.items()}, "param_norm": flat.data.norm(dim=1).tolist(),
                "lr": hp.lr.view(-1).tolist(), "weight_decay": hp.weight_decay.view(-1).tolist(),
                "train_size": self.train_mask.sum(1).tolist()}
        layer_norms = ({f"norm.{name}": flat.data[:, sl].norm(dim=1).tolist() for name, sl in
                        zip(flat.names, flat.slices)} if self.c0.train.log_layer_norms else {})
        # A model may report its own per-member figures (the mixture's w_mem, w_gen), logged like the rest.
        layer_norms.update({k: v.tolist() for k, v in getattr(self.model, "eval_metrics", dict)().items()})
        rows, self.state.step, self.state.last = [], step, []
        slot = {i: j for j, i in enumerate(self.live)}  # member -> its row in the batched model
        for i in range(self.n):
            if members.status[i] != "running":
                self.state.last.append({})
                continue
            j = slot[i]
            rec = {"step": step, **{k: v[j] for k, v in cols.items()}, "wall_time": wall,
                   "phase": self.phase + 1,  # 0 = the base config, k = the k-th phase
                   **{k: v[j] for k, v in layer_norms.items()}}
            if not members.record(i, rec, step, self.c0.train):
                hp.active[j] = 0.0
            self.history[i].append(rec)
            self.state.last.append(rec)
            if self.run_ids[i] is not None:
                rows += [(self.run_ids[i], step, k, float(v)) for k, v in rec.items() if k != "step"]
        if self.store is not None and rows:
            self.store.log_metrics(rows)
        for hook in hooks:
            hook(step, self.state)
        update_bar(bar, step, self.state.last, self.start, self.t0)
        return all(s != "running" for s in members.status)

    def checkpoint(self, step: int, final: bool = False) -> None:
        """Write the resumable state at `step` after the last one: in the background (training
        goes on while the file reaches the disk) with the live rows only once members have left,
        or, `final`, at once and whole (the merge copies the whole group: 0.25 s for 39 members of
        repro-transformer, once)."""
        if self.store is not None:
            self.writer.save(self.store.paths.checkpoint(self.group), self._live_state(), self.flat, self.noise_gens,
                             {"step": step, "wall": self.wall_before + time.perf_counter() - self.t0,
                              "members": self.members.to_json()}, background=not final, ledger=self._ledger,
                             whole=final)

    def _summary(self, i: int, step: int) -> dict:
        return _summary(self.members, i, self.history[i], step, self.start, self.t0, self.wall_before, self.counts)

    def mark(self, step: int, status: str) -> None:
        """Record the members still training as `status` (stopped, failed), and those that already
        ended (early stop, divergence) as what they are, with their summaries."""
        # A write still in flight lands first (a failed one leaves the previous checkpoint, which
        # a resume uses): none may land after the run has stopped and another process resumed it.
        self.writer.wait(raise_error=False)
        if self.store is not None:
            self.store.update_runs({r: (status if s == "running" else s, self._summary(i, step))
                                    for i, (r, s) in enumerate(zip(self.run_ids, self.members.status))})

    def finish(self, step: int) -> list[RunResult]:
        results, final = [], {}
        for i, cfg in enumerate(self.cfgs):
            if self.members.status[i] == "running":
                self.members.status[i] = "finished"
            summary = self._summary(i, step)
            final[self.run_ids[i]] = (self.members.status[i], summary)
            results.append(RunResult(self.run_ids[i], cfg, self.members.status[i], summary,
                                     pd.DataFrame(self.history[i])))
        if self.store is not None:
            self.checkpoint(step, final=True)  # on disk, whole, before the rows say finished
            self.store.update_runs(final)
        return results


def _summary(members: _Members, i: int, hist: list[dict], step: int, start: int, t0: float,
             wall_before: float, counts: dict) -> dict:
    last = hist[-1] if hist else {}
    elapsed = time.perf_counter() - t0
    return {
        "status": members.status[i], "steps": int(last.get("step", step)),
        "train_acc": last.get("train_acc"), "val_acc": last.get("val_acc"),
        "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
        "param_norm": last.get("param_norm"),
        "step_train_99": members.step_train_99[i], "step_val_99": members.step_val_99[i],
        "early_stopped": members.early[i],
        "wall_seconds": round(wall_before + elapsed, 3),
        "steps_per_second": round((step - start) / elapsed, 3) if elapsed > 0 and step > start else None,
        **counts,
    }
