"""The two solutions the "mystery" study explains grokking with, as stored runs of any architecture.

- C_gen: the base config trained (early stop on) until validation accuracy holds >= 0.99.
- C_mem, kind `random`: the same architecture on every training label random
  (`data.label_noise = 1.0`), a target only memorization fits (the study's and Varma et al.'s
  memorizer, used for model efficiency, §5.2).
- C_mem, kind `fit`: the same architecture on the *true* training labels without weight decay,
  trained only until it fits them, so validation stays low. The mixture model (§5.1) needs this
  one: its C_mem must be right on the training set, which a random-label network is not.

Every run goes to the store and is found again by its config, so asking twice trains once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Literal, Sequence

from ..api import RunRecord, load_run, resume
from ..config import ConfigError, RunCfg, with_overrides
from ..store import Store, StoreError, liveness, trained_elsewhere

MemKind = Literal["random", "fit"]


class MissingRun(LookupError):
    """A protocol asked only to read the store (``train_missing=False``) needs runs it lacks.

    `needs`: (config, hook specs or None) of each run it could say it needs now, so a caller can
    train them elsewhere (`reproduce` trains them beside the claims' sweeps); None where a hook
    cannot be rebuilt in another process."""

    def __init__(self, cfg: RunCfg, hooks: Sequence = ()):
        from .hooks import hook_specs

        super().__init__(f"no finished run of {cfg.name!r} ({cfg.description or cfg.model.name}) in the store")
        self.cfg = cfg
        self.needs: list[tuple[RunCfg, tuple | None]] = [(cfg, hook_specs(hooks))]

    @staticmethod
    def of(missing: Sequence["MissingRun"]) -> "MissingRun":
        """The first error, carrying every error's needs."""
        first = missing[0]
        first.needs = [need for e in missing for need in e.needs]
        return first


class RunBusy(MissingRun, StoreError):
    """The run a protocol needs is training in another live process (a second `reproduce` or
    protocol command on the same store): training a copy here would do its work twice. Asked again
    once it has finished, the protocol reads it. The CLI prints it as one line (exit 2)."""

    def __init__(self, cfg: RunCfg, row: dict):
        super().__init__(cfg)
        self.needs = []  # nothing to train elsewhere either: it is being trained
        where = f"pid {row.get('owner_pid')} on {row.get('owner_host')}"
        self.args = (f"run {row['id']} ({cfg.name}) is training in another process ({where}); "
                     "ask again when it has finished",)


class ComponentError(ConfigError):
    """C_gen did not generalize or C_mem did not memorize: the budget, not the input, is at fault."""


def _key(cfg: RunCfg | dict) -> str:
    """What a run computes (`sweep.plan.run_key`: name, threads, device and the like aside), so a
    run the sweep machinery trained on a worker (one thread, a named GPU) counts as the protocol's."""
    from ..sweep.plan import run_key
    return run_key(cfg)


def find_run(cfg: RunCfg, store: Store, accept: Callable[[dict], bool] = lambda row: True) -> RunRecord | None:
    """The oldest finished run of this config (what it computes: `_key`) that `accept`s.

    The oldest, so a protocol keeps naming the same runs (the mixture's config holds their ids)."""
    row = _first(cfg, store, accept, lambda r: r["status"] == "finished")
    return load_run(row["id"], store) if row is not None else None


def find_interrupted(cfg: RunCfg, store: Store, accept: Callable[[dict], bool] = lambda row: True) -> int | None:
    """The id of the oldest solo run of this config that was stopped, failed or lost (its process
    gone) and that `accept`s: a run to resume rather than train again."""
    def interrupted(row: dict) -> bool:
        return row["status"] in ("stopped", "failed") or (row["status"] == "running" and liveness(row) is False)

    row = _first(cfg, store, accept, interrupted)
    return None if row is None or len(store.group(row["group_id"])) != 1 else row["id"]


def _first(cfg: RunCfg, store: Store, accept: Callable[[dict], bool], status: Callable[[dict], bool]) -> dict | None:
    if not store.exists():
        return None
    key = _key(cfg)
    return next((row for row in store.list() if status(row) and _key(row["config"]) == key and accept(row)), None)


def ensure_run(cfg: RunCfg, store: Store, *, hooks: Sequence = (), progress: bool = False,
               accept: Callable[[dict], bool] = lambda row: True, train_missing: bool = True
               ) -> tuple[RunRecord, bool]:
    """Reuse a finished run of `cfg`, resume an interrupted one (with `hooks`) or train one (or,
    with `train_missing=False`, raise :class:`MissingRun`; :class:`RunBusy` when another live
    process is training it). Returns (record, reused)."""
    from ..train import train

    found = find_run(cfg, store, accept)
    if found is not None:
        return found, True
    if not train_missing:
        raise MissingRun(cfg, hooks)
    busy = _first(cfg, store, accept, trained_elsewhere)
    if busy is not None:
        raise RunBusy(cfg, busy)
    stopped = find_interrupted(cfg, store, accept)
    if stopped is not None:
        (rec,) = resume(stopped, store, progress=progress, hooks=hooks)
        return rec, False
    (res,) = train(cfg, store=store, hooks=hooks, progress=progress)
    return load_run(res.run_id, store), False


def gen_config(base: RunCfg) -> RunCfg:
    """C_gen: the base run, stopped once validation accuracy holds >= 0.99."""
    return replace(with_overrides(base, {"train.early_stop": True, "train.early_stop_acc": 0.99}),
                   name=f"{base.name}-Cgen", description="C_gen: generalizing solution")


def mem_config(base: RunCfg, kind: MemKind = "random", fit_steps: int | None = None) -> RunCfg:
    """C_mem of the same architecture (see the module docstring for the two kinds)."""
    if kind == "random":
        cfg = with_overrides(base, {"data.label_noise": 1.0, "train.early_stop": False})
        desc = "C_mem: every training label random"
    elif kind == "fit":
        over = {"optim.weight_decay": 0.0, "data.label_noise": 0.0, "train.early_stop": False}
        if fit_steps is not None:
            over["train.steps"] = fit_steps
        cfg = with_overrides(base, over)
        desc = "C_mem: true training labels, no weight decay, stopped after fitting"
    else:
        raise ConfigError(f"C_mem kind={kind!r} must be one of 'random', 'fit'")
    return replace(cfg, name=f"{base.name}-Cmem-{kind}", description=desc)


def check_gen(rec: RunRecord, min_val: float = 0.99) -> None:
    acc = rec.summary.get("val_acc") or 0.0
    if acc < min_val:
        raise ComponentError(f"C_gen run {rec.run_id} reached val acc {acc:.3f} < {min_val} in {rec.summary.get('steps')} "
                          f"steps; raise train.steps (or weight decay) with --set")


def check_mem(rec: RunRecord, max_val: float = 0.9) -> None:
    train_acc, val_acc = rec.summary.get("train_acc") or 0.0, rec.summary.get("val_acc") or 0.0
    if train_acc < 0.99 or val_acc > max_val:
        raise ComponentError(f"C_mem run {rec.run_id} is no memorizer (train acc {train_acc:.3f}, val acc "
                          f"{val_acc:.3f}); it must fit the training set (>= 0.99) and stay below "
                          f"{max_val} on validation: change train.steps with --set")
