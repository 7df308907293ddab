"""The training function: N members of one architecture at once; a single run is N = 1.

    from groklab import load_config
    from groklab.train import train
    results = train([load_config("quickstart")])

Members may differ in the fields of `config.MEMBER_FIELDS` (seed, split, fraction, lr, weight
decay, noise scales, init scale, Grokfast λ); everything else must match. Each member draws its
initialization, batches and noise from its own generators, so a member reproduces the solo run of
its config.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch

from .. import __version__
from ..config import MEMBER_FIELDS, ConfigError, RunCfg, config_json, get_field, to_dict
from ..data import TASKS, TaskData, noisy_labels, subset
from ..models import MemberModel, build_model
from ..store import Store
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import LOSSES, correct
from .optim import FlatParams, MemberHParams, MemberOptimizer
from .schedule import eval_steps, lr_factor, phase_at

THRESHOLD = 0.99
EVAL_CHUNK = 16384  # member-examples per evaluation forward pass (bounds memory)


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


def check_ensemble(cfgs: Sequence[RunCfg]) -> None:
    """Members must agree on every field outside MEMBER_FIELDS."""
    base = _flat(cfgs[0])
    for i, cfg in enumerate(cfgs[1:], 1):
        for key, value in _flat(cfg).items():
            if key not in MEMBER_FIELDS and base.get(key) != value:
                raise ConfigError(f"ensemble member {i} differs in {key} ({base.get(key)!r} vs {value!r}); members may "
                                  f"differ only in: {', '.join(sorted(MEMBER_FIELDS))}")


def _flat(cfg: RunCfg) -> dict:
    out = {}

    def walk(d, prefix):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = v if not isinstance(v, list) else repr(v)
    walk(to_dict(cfg), "")
    return out


def _col(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_threads(cfg: RunCfg) -> None:
    threads = cfg.train.threads
    n = (os.cpu_count() or 1) if threads == "auto" else threads
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def environment() -> dict[str, str | None]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(__file__)).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        sha = None
    return {"groklab_version": __version__, "torch_version": torch.__version__, "git_sha": sha}


class Sampler:
    """Per-member minibatches as index draws: (N, B) indices and (N, B) weights.

    Member i draws without replacement from its own training set with its own generator. A
    member whose set is smaller than the batch (full batch, or a shrunk ungrokking subset) takes
    all its examples and pads with zero-weight rows.
    """

    def __init__(self, train_sets: list[torch.Tensor], batch_size: int | str, gens: list[torch.Generator],
                 device: torch.device):
        self.sets, self.gens, self.device = train_sets, gens, device
        sizes = [len(s) for s in train_sets]
        self.full = batch_size == "full" or all(int(batch_size) >= m for m in sizes)
        self.b = max(sizes) if self.full else int(batch_size)
        if self.full:
            self._fixed = self._pad([s for s in train_sets])

    def _pad(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.zeros(len(rows), self.b, dtype=torch.long)
        w = torch.zeros(len(rows), self.b)
        for i, r in enumerate(rows):
            idx[i, :len(r)] = r
            w[i, :len(r)] = 1.0
        return idx.to(self.device), w.to(self.device)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full:
            return self._fixed
        rows = [s[torch.randperm(len(s), generator=g)[: self.b]] for s, g in zip(self.sets, self.gens)]
        if all(len(r) == self.b for r in rows):
            return torch.stack(rows).to(self.device), None
        return self._pad(rows)


def _member_gens(cfgs: Sequence[RunCfg], offset: int) -> list[torch.Generator]:
    # Distinct, reproducible streams per purpose (init / data / noise) derived from each seed.
    return [torch.Generator().manual_seed(c.train.seed * 1_000_003 + offset) for c in cfgs]


@torch.no_grad()
def evaluate(model: MemberModel, task: TaskData, labels: torch.Tensor, masks: dict[str, torch.Tensor],
             loss_fn) -> dict[str, torch.Tensor]:
    """Loss and accuracy of every member on every example, reduced over each mask -> (N,)."""
    was_training = model.training
    model.eval()
    n, m = labels.shape
    sums = {f"{k}_{q}": torch.zeros(n, device=labels.device) for k in masks for q in ("loss", "acc")}
    chunk = max(256, EVAL_CHUNK // n)  # bound activation memory for large ensembles
    for a in range(0, m, chunk):
        x = task.x[a:a + chunk]
        out = model(x.unsqueeze(0).expand(n, *x.shape))
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
        self.t_train99: list[int | None] = [None] * n
        self.t_val99: list[int | None] = [None] * n
        self.hold = [0] * n
        self.early = [False] * n

    def to_json(self) -> list[dict]:
        return [dict(status=s, t_train99=a, t_val99=b, hold=h, early=e) for s, a, b, h, e in
                zip(self.status, self.t_train99, self.t_val99, self.hold, self.early)]

    @classmethod
    def from_json(cls, items: list[dict]) -> "_Members":
        out = cls(len(items))
        for i, d in enumerate(items):
            out.status[i], out.t_train99[i], out.t_val99[i] = d["status"], d["t_train99"], d["t_val99"]
            out.hold[i], out.early[i] = d["hold"], d["early"]
        return out


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
    c0, n = cfgs[0], len(cfgs)
    set_threads(c0)
    device = resolve_device(c0.train.device)
    torch.manual_seed(c0.train.seed)  # global stream: dropout masks only

    # 1) data: the whole table on the device; per-member splits and labels
    task_def = TASKS.get(c0.data.task)()
    if getattr(task_def, "split_dependent", False) and len({(c.data.split_seed, c.data.n_train) for c in cfgs}) > 1:
        raise ConfigError(f"data.task={c0.data.task!r} preprocesses with training-set statistics: ensemble members "
                          "must share data.split_seed and data.n_train")
    task = task_def.build(c0.data).to(device)
    splits = [task_def.split(c.data, task) for c in cfgs]
    labels = torch.stack([noisy_labels(task.y, tr.to(device), c.data.label_noise, task.n_out, c.data.split_seed)
                          for c, (tr, _) in zip(cfgs, splits)])
    m_all = len(task.y)

    def mask_of(idx_sets: list[torch.Tensor]) -> torch.Tensor:
        mask = torch.zeros(n, m_all, device=device)
        for i, s in enumerate(idx_sets):
            mask[i, s.to(device)] = 1.0
        return mask

    val_mask = mask_of([va for _, va in splits])

    # 2) model, flat parameters, optimizer
    model = build_model(c0.model, task, n).to(device)
    model.reset_parameters(_member_gens(cfgs, 0), torch.tensor([c.model.init_scale for c in cfgs]))
    flat = FlatParams(model, n)
    data_gens, noise_gens = _member_gens(cfgs, 1), _member_gens(cfgs, 2)
    opt = MemberOptimizer(flat, c0.optim, noise_gens)
    base = dict(lr=[c.optim.lr for c in cfgs], wd=[c.optim.weight_decay for c in cfgs])
    hp = MemberHParams(
        lr=_col(base["lr"], device), weight_decay=_col(base["wd"], device),
        update_noise=_col([c.optim.update_noise for c in cfgs], device),
        weight_noise=_col([c.optim.weight_noise for c in cfgs], device),
        grokfast_lamb=_col([c.optim.grokfast_lamb for c in cfgs], device),
        grokfast_alpha=_col([c.optim.grokfast_alpha for c in cfgs], device),
        active=torch.ones(n, 1, device=device))
    weight_noise = any(c.optim.weight_noise > 0 for c in cfgs)

    # 3) store rows (or the checkpoint of a stored group)
    members, start, wall_before = _Members(n), 0, 0.0
    history: list[list[dict]] = [[] for _ in range(n)]
    run_ids: list[int | None] = [None] * n
    counts = model.param_counts()
    if store is not None:
        if group is None:
            group = uuid.uuid4().hex[:12]
            run_ids = store.create_runs([config_json(c) for c in cfgs], [c.name for c in cfgs], group,
                                        environment(), sweep)
        else:
            run_ids = [r["id"] for r in store.group(group)]
            ckpt = store.paths.checkpoint(group)
            if ckpt.exists():
                meta = load_checkpoint(ckpt, flat, opt, data_gens, noise_gens)
                start, wall_before = meta["step"], meta["wall"]
                members = _Members.from_json(meta["members"])
                hp.active.copy_(_col([1.0 if s == "running" else 0.0 for s in members.status], device))
            store.truncate_metrics(run_ids, start if ckpt.exists() else -1)
            store.update_runs({r: ("running", {}) for r, s in zip(run_ids, members.status) if s == "running"})
            for i, r in enumerate(run_ids):
                old = store.metrics(r)
                history[i] = old.to_dict("records") if len(old) else []

    # 4) phases: recomputed from the base values, so a resumed run lands in the same state
    train_sets = [tr for tr, _ in splits]
    state = {"phase": None, "loss": LOSSES.get(c0.train.loss), "train_mask": mask_of(train_sets),
             "sampler": Sampler(train_sets, c0.train.batch_size, data_gens, device)}

    def enter_phase(k: int) -> None:
        lr, wd, kind, loss, sets = list(base["lr"]), list(base["wd"]), c0.optim.decay_kind, c0.train.loss, train_sets
        for j, ph in enumerate(c0.train.phases[:k + 1]):
            lr = [ph.lr] * n if ph.lr is not None else lr
            wd = [ph.weight_decay] * n if ph.weight_decay is not None else wd
            kind, loss = ph.wd_kind or kind, ph.loss or loss
            if ph.train_frac is not None:  # a subset of the *original* training set
                sets = [subset(tr, ph.train_frac, c.data.split_seed + 1 + j) for tr, c in zip(train_sets, cfgs)]
        hp.weight_decay.copy_(_col(wd, device))
        base_lr[:] = lr
        opt.decay_kind = kind
        if sets is not state.get("sets"):
            state["sets"] = sets
            state["train_mask"] = mask_of(sets)
            state["sampler"] = Sampler(sets, c0.train.batch_size, data_gens, device)
        state.update(phase=k, loss=LOSSES.get(loss))

    base_lr = list(base["lr"])
    state["sets"] = train_sets
    steps = c0.train.steps
    evals = set(eval_steps(c0.train))
    t0 = time.perf_counter()
    bar = _progress(progress, steps, start)
    tstate = TrainState(start, model, cfgs, run_ids=run_ids, group=group)

    def do_eval(step: int) -> bool:
        """5) evaluate, record thresholds and stops, log; True once every member has stopped."""
        k = phase_at(c0.train.phases, step)
        if k != state["phase"]:  # a boundary's evaluation already reports the new phase
            enter_phase(k)
        res = evaluate(model, task, labels, {"train": state["train_mask"], "val": val_mask}, state["loss"])
        norms = flat.data.norm(dim=1)
        wall = wall_before + time.perf_counter() - t0
        cols = {k: v.tolist() for k, v in res.items()}
        norms_l, lrs, wds = norms.tolist(), hp.lr.view(-1).tolist(), hp.weight_decay.view(-1).tolist()
        sizes = state["train_mask"].sum(1).tolist()
        layer_norms = ({f"norm.{name}": flat.data[:, sl].norm(dim=1).tolist() for name, sl in zip(flat.names, flat.slices)}
                       if c0.train.log_layer_norms else {})
        # A model may report its own per-member figures (the mixture's w_mem, w_gen), logged like the rest.
        layer_norms.update({k: v.tolist() for k, v in getattr(model, "eval_metrics", dict)().items()})
        rows = []
        tstate.step, tstate.last = step, []
        for i in range(n):
            if members.status[i] != "running":
                tstate.last.append({})
                continue
            rec = {"step": step, **{k: cols[k][i] for k in cols}, "param_norm": norms_l[i], "lr": lrs[i],
                   "weight_decay": wds[i], "train_size": sizes[i], "wall_time": wall,
                   "phase": state["phase"] + 1,  # 0 = the base config, k = the k-th phase
                   **{k: v[i] for k, v in layer_norms.items()}}
            if not (math.isfinite(rec["train_loss"]) and math.isfinite(rec["param_norm"])):
                members.status[i] = "diverged"
                hp.active[i] = 0.0
            else:
                if members.t_train99[i] is None and rec["train_acc"] >= THRESHOLD:
                    members.t_train99[i] = step
                if members.t_val99[i] is None and rec["val_acc"] >= THRESHOLD:
                    members.t_val99[i] = step
                if c0.train.early_stop:
                    members.hold[i] = members.hold[i] + 1 if rec["val_acc"] >= c0.train.early_stop_acc else 0
                    if members.hold[i] >= c0.train.early_stop_patience:
                        members.status[i], members.early[i] = "finished", True
                        hp.active[i] = 0.0
            history[i].append(rec)
            tstate.last.append(rec)
            if run_ids[i] is not None:
                rows += [(run_ids[i], step, k, float(v)) for k, v in rec.items() if k != "step"]
        if store is not None and rows:
            store.log_metrics(rows)
        for hook in hooks:
            hook(step, tstate)
        _update_bar(bar, step, tstate.last, steps, start, t0)
        return all(s != "running" for s in members.status)

    def checkpoint(step: int) -> None:
        if store is not None:
            save_checkpoint(store.paths.checkpoint(group), flat, opt, data_gens, noise_gens,
                            {"step": step, "wall": wall_before + time.perf_counter() - t0,
                             "members": members.to_json()})

    step, done = start, False
    try:
        enter_phase(phase_at(c0.train.phases, step))
        if step == 0:
            done = do_eval(0)
        model.train()
        while step < steps and not done:
            # 1) phase and learning rate for this step
            k = phase_at(c0.train.phases, step)
            if k != state["phase"]:
                enter_phase(k)
            hp.lr.copy_(_col([lr * lr_factor(c0.optim, step, steps) for lr in base_lr], device))
            # 2) batch: (N, B) index draws from each member's training set
            idx, w = state["sampler"].draw()
            x, y = task.x[idx], labels.gather(1, idx)
            # 3) forward/backward (at noisy weights if weight noise is on)
            if weight_noise:
                noise = opt.noise(hp.weight_noise * hp.active)
                flat.data.add_(noise)
            out = model(x)
            per_ex = state["loss"](out, y)
            loss = per_ex.mean(1) if w is None else (per_ex * w).sum(1) / w.sum(1)
            # A diverged member's NaN must not reach the others (their gradients are separate).
            torch.where(hp.active.view(-1) > 0, loss, torch.zeros_like(loss)).sum().backward()
            if weight_noise:
                flat.data.sub_(noise)
            # 4) update
            opt.step(hp)
            flat.zero_grad()
            step += 1
            if step in evals:
                done = do_eval(step)
            if step % c0.train.checkpoint_every == 0 or step == steps or done:
                checkpoint(step)
    except KeyboardInterrupt:
        # The last checkpoint stays consistent; `groklab resume` continues from it.
        if store is not None:
            store.update_runs({r: ("stopped", _summary(members, i, history[i], step, start, t0, wall_before, counts))
                               for i, r in enumerate(run_ids) if members.status[i] == "running"})
        raise
    finally:
        if bar is not None:
            bar.close()

    results = []
    final = {}
    for i, cfg in enumerate(cfgs):
        if members.status[i] == "running":
            members.status[i] = "finished"
        summary = _summary(members, i, history[i], step, start, t0, wall_before, counts)
        final[run_ids[i]] = (members.status[i], summary)
        results.append(RunResult(run_ids[i], cfg, members.status[i], summary, pd.DataFrame(history[i])))
    if store is not None:
        checkpoint(step)
        store.update_runs(final)
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
        "step_train_99": members.t_train99[i], "step_val_99": members.t_val99[i],
        "early_stopped": members.early[i],
        "wall_seconds": round(wall_before + elapsed, 3),
        "steps_per_second": round((step - start) / elapsed, 3) if elapsed > 0 and step > start else None,
        **counts,
    }


def _progress(enabled: bool, total: int, start: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, file=sys.stderr, unit="step", dynamic_ncols=True, leave=True)


def _update_bar(bar, step: int, last: list[dict], total: int, start: int, t0: float) -> None:
    if bar is None:
        return
    bar.update(step - bar.n)
    live = [r for r in last if r]
    if live:
        mean = lambda k: sum(r[k] for r in live) / len(live)  # noqa: E731
        rate = (step - start) / max(1e-9, time.perf_counter() - t0)
        bar.set_postfix_str(f"train {mean('train_acc'):.3f} val {mean('val_acc'):.3f} {rate:.1f} step/s", refresh=False)
