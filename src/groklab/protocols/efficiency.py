"""Model-efficiency protocol (the "mystery" study §5.2, fig. 6): norm against training-set size.

    groklab efficiency --arch mlp --fractions 0.3,0.4,0.5,0.6 -o eff.png --quick

For each training fraction, C_gen (true labels) and C_mem (every training label random) of the
same architecture train with the base run's optimizer and weight decay; at every evaluation the
engine logs the parameter norm and a hook the mean correct-class logit on the training points.
Each run is read at the first evaluation where its training loss is <= `loss` (C_gen: with
validation accuracy >= 0.99 too, so it is read as a generalizer, not during its memorizing
phase); a run that never gets there is read at its last evaluation and marked `reached = False`.
The study's prediction: C_mem needs a larger norm as the set grows, C_gen's stays flat.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import pandas as pd

from ..api import RunRecord
from ..config import with_overrides
from ..store import Store
from .base import base_config
from .components import MissingRun, ensure_run, mem_config
from .hooks import CorrectLogitHook


# C_mem must reach the loss target at every size to be read there. Under the MLP base's weight
# decay 1.0 a random-label MLP stalls instead (measured on the quick problem: train loss 0.08 and
# 0.47 after 4000 steps at 50 / 70 %; its efficiency falls through the loss, not the norm), so
# C_mem trains with weight decay 0.1.
MEM_OVERRIDES = ("optim.weight_decay=0.1",)


@dataclass(frozen=True)
class EfficiencyPoint:
    kind: str             # "C_mem" or "C_gen"
    frac_train: float
    n_train: int
    run_id: int
    reached: bool         # the loss (and, for C_gen, 99 % validation) target was met
    step: int
    param_norm: float
    correct_logit: float
    train_loss: float
    val_acc: float
    reused: bool

    @property
    def efficiency(self) -> float:
        """Correct-class logit per unit of parameter norm."""
        return self.correct_logit / self.param_norm


def read_point(rec: RunRecord, kind: str, loss: float, reused: bool) -> EfficiencyPoint:
    m = rec.metrics
    ok = m["train_loss"] <= loss
    if kind == "C_gen":
        ok &= m["val_acc"] >= 0.99
    hit = m[ok]
    row = hit.iloc[0] if len(hit) else m.iloc[-1]
    return EfficiencyPoint(kind, rec.config.data.frac_train, int(row["train_size"]), rec.run_id, bool(len(hit)),
                           int(row["step"]), float(row["param_norm"]), float(row["correct_logit"]),
                           float(row["train_loss"]), float(row["val_acc"]), reused)


def run_efficiency(arch: str = "mlp", fractions: Sequence[float] = (0.3, 0.4, 0.5, 0.6), *, store: Store,
                   quick: bool = False, loss: float = 0.05, overrides: Sequence[str] = (),
                   mem_overrides: Sequence[str] = MEM_OVERRIDES, progress: bool = False,
                   train_missing: bool = True) -> list[EfficiencyPoint]:
    """Train (or reuse) C_mem and C_gen at each fraction; return one point per run.

    Args:
        overrides: dotted overrides for every run (`--set`).
        mem_overrides: further overrides for C_mem only (default `MEM_OVERRIDES`).
        train_missing: False: read the store only (a missing run raises `MissingRun`).
    """
    base = base_config(arch, quick, overrides)
    base = with_overrides(base, {"train.early_stop": False})  # read at the loss target, not at val 99 %

    def has_logit(row: dict) -> bool:  # a run trained without the hook cannot be read
        return "correct_logit" in store.metrics(row["id"]).columns

    points, missing = [], []
    for frac in fractions:
        sized = replace(with_overrides(base, {"data.frac_train": frac}), name=f"{base.name}-f{frac:g}")
        gen = replace(sized, name=f"{sized.name}-Cgen", description="C_gen: generalizing solution (efficiency)")
        mem = mem_config(with_overrides(sized, list(mem_overrides)), "random")
        for kind, cfg in (("C_gen", gen), ("C_mem", mem)):
            hook = CorrectLogitHook(store)  # fresh: it caches the run's data on first use
            try:
                rec, reused = ensure_run(cfg, store, hooks=[hook], progress=progress, accept=has_logit,
                                         train_missing=train_missing)
            except MissingRun as e:  # the runs are independent: name every missing one
                missing.append(e)
                continue
            points.append(read_point(rec, kind, loss, reused))
    if missing:
        raise MissingRun.of(missing)
    return points


def points_frame(points: Sequence[EfficiencyPoint]) -> pd.DataFrame:
    rows = [{**p.__dict__, "efficiency": p.efficiency} for p in points]
    return pd.DataFrame(rows)


def trend(points: Sequence[EfficiencyPoint], kind: str) -> dict:
    """Norm at the smallest and largest set of one kind (reached points only), and their ratio."""
    sel = sorted((p for p in points if p.kind == kind and p.reached), key=lambda p: p.n_train)
    if len(sel) < 2:
        return {"kind": kind, "points": len(sel)}
    a, b = sel[0], sel[-1]
    return {"kind": kind, "points": len(sel), "n_small": a.n_train, "n_large": b.n_train,
            "norm_small": a.param_norm, "norm_large": b.param_norm, "norm_ratio": b.param_norm / a.param_norm}
