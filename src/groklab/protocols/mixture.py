"""Mixture-model protocol (the "mystery" study §5.1, fig. 5): is a training-speed gap necessary?

    groklab mixture --arch mlp --w-mem2 10 --w-gen2 1 -o mixture.png --quick
    groklab mixture --arch mlp --w-mem2 1 --w-gen2 1 -o mixture-eq.png --quick

1. C_gen and the fitting C_mem (see `components`) of the architecture, reused from the store;
2. a `mixture` run over them: only w_m1, w_m2, w_g1, w_g2 train, through the normal engine.

The mixture trains with plain SGD and L2 weight decay (`MIX_OPTIM`): Adam would normalize each
scalar's step to ~lr whatever its gradient, so the w's would grow at the same pace and settle at
the same ~1/λ, erasing both the speed gap that w_m2 sets and the efficiency gap weight decay
resolves (measured: with AdamW, (10, 1) ended with w_mem ≈ w_gen and val acc 0.4).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import pandas as pd

from ..api import RunRecord
from ..config import RunCfg, with_overrides
from ..store import Store
from .base import base_config
from .components import check_gen, check_mem, ensure_run, gen_config, mem_config

MIX_OPTIM = {"optim.name": "sgd", "optim.lr": 0.01, "optim.weight_decay": 0.25, "optim.wd_kind": "l2",
             "optim.momentum": 0.0, "optim.warmup_steps": 0, "optim.schedule": "constant", "optim.grad_clip": 0.0}
MIX_STEPS = {True: 3000, False: 10000}  # quick / full


@dataclass(frozen=True)
class MixtureResult:
    c_mem: RunRecord
    c_gen: RunRecord
    mix: RunRecord
    reused: dict[str, bool]

    def summary(self) -> dict:
        return {"c_mem": self.c_mem.run_id, "c_gen": self.c_gen.run_id, "mixture": self.mix.run_id,
                "reused": self.reused, **mixture_summary(self.mix.metrics),
                "w_mem2": self.mix.config.model.mix_w_mem2, "w_gen2": self.mix.config.model.mix_w_gen2}


def mixture_config(base: RunCfg, c_mem: int, c_gen: int, w_mem2: float, w_gen2: float, store: Store,
                   quick: bool, overrides: Sequence[str] = ()) -> RunCfg:
    """The mixture run: the components' data, the four scalars, SGD + L2 (see the module docstring)."""
    over = {"model.name": "mixture", "model.mix_mem": c_mem, "model.mix_gen": c_gen,
            "model.mix_store": str(store.paths.root.resolve()), "model.mix_w_mem2": float(w_mem2),
            "model.mix_w_gen2": float(w_gen2), "model.dropout": 0.0, "data.label_noise": 0.0,
            "train.steps": MIX_STEPS[quick], "train.early_stop": False, "train.phases": [], "model.init": "scaled",
            **MIX_OPTIM}
    cfg = with_overrides(base, over)
    # The user's --set again (it may tune the mixture run), less the components' embedding init: the
    # mixture has no embeddings of its own, and its components keep the init they were trained with.
    mine = [o for o in overrides if not o.replace(" ", "").startswith("model.init=")]
    cfg = with_overrides(cfg, mine) if mine else cfg
    return RunCfg(name=f"mixture-{w_mem2:g}-{w_gen2:g}", description="mixture w_mem·C_mem + w_gen·C_gen",
                  data=cfg.data, model=cfg.model, optim=cfg.optim, train=cfg.train)


def run_mixture(arch: str = "mlp", w_mem2: float = 10.0, w_gen2: float = 1.0, *, store: Store, quick: bool = False,
                overrides: Sequence[str] = (), mix_overrides: Sequence[str] = (),
                progress: bool = False, train_missing: bool = True) -> MixtureResult:
    """Train (or reuse) C_gen, C_mem and the mixture; return their records.

    With `train_missing=False` nothing trains: a run missing from the store raises
    :class:`~groklab.protocols.components.MissingRun` (a verdict read from the store only)."""
    base = base_config(arch, quick, overrides)
    gen, gen_reused = ensure_run(gen_config(base), store, progress=progress, train_missing=train_missing)
    check_gen(gen)
    # C_mem stops at the first evaluation where it fits the training set: a probe without weight
    # decay finds that step, and the same seed retraces the probe's path up to it. Trained longer,
    # its logits keep growing and it would out-compete C_gen in the mixture on scale alone.
    probe_cfg = mem_config(base, "fit", int(gen.summary.get("steps") or base.train.steps))
    probe, probe_reused = ensure_run(replace(probe_cfg, name=f"{base.name}-Cmem-probe"), store, progress=progress,
                          train_missing=train_missing)
    fit_steps = probe.summary.get("step_train_99") or probe.summary.get("steps")
    mem, mem_reused = ensure_run(mem_config(base, "fit", int(fit_steps)), store, progress=progress,
                                 train_missing=train_missing)
    check_mem(mem)
    cfg = mixture_config(base, mem.run_id, gen.run_id, w_mem2, w_gen2, store, quick, mix_overrides)
    mix, mix_reused = ensure_run(cfg, store, progress=progress, train_missing=train_missing)
    return MixtureResult(mem, gen, mix, {"c_gen": gen_reused, "c_mem_probe": probe_reused, "c_mem": mem_reused,
                                         "mixture": mix_reused})


def mixture_summary(m: pd.DataFrame, low: float = 0.1) -> dict:
    """Key steps of a mixture history: when train / val loss first fall below `low`, the peak of
    the validation loss, and the grokking gap between the two (0 when val comes first)."""
    def first_below(col: str):
        hit = m[m[col] <= low]
        return int(hit["step"].iloc[0]) if len(hit) else None

    peak = m.loc[m["val_loss"].idxmax()]
    t_train, t_val = first_below("train_loss"), first_below("val_loss")
    last = m.iloc[-1]
    return {"loss_threshold": low, "step_train_loss_low": t_train, "step_val_loss_low": t_val,
            "val_loss_start": float(m["val_loss"].iloc[0]), "val_loss_peak": float(peak["val_loss"]),
            "step_val_loss_peak": int(peak["step"]),
            "train_loss_at_val_peak": float(peak["train_loss"]),
            "val_loss_at_train_low": None if t_train is None else float(m.loc[m["step"] == t_train, "val_loss"].iloc[0]),
            "final": {k: float(last[k]) for k in ("train_loss", "val_loss", "train_acc", "val_acc", "w_mem", "w_gen")}}
