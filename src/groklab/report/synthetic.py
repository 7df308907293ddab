"""Synthetic runs written straight into a store: grokking-shaped curves without training, for
the report's benchmark, its browser test and demos.

    ids = synthetic_sweep(Store(tmp), n_runs=100, n_evals=200, sweep="synthetic")
"""
from __future__ import annotations

from dataclasses import replace
from itertools import product
from typing import Sequence

import numpy as np

from ..config import load_config
from ..store import Store
from ..train.engine import create_group


def eval_steps(n_evals: int, steps: int) -> np.ndarray:
    """Exactly n_evals evaluation steps (when steps allow): 0, log-spaced from 1, plus an even
    cadence, like the engine's schedule."""
    log = set(np.round(np.geomspace(1, steps, max(n_evals // 2, 1))).astype(int).tolist()) | {0}
    k, every = max(n_evals - len(log), 0), set(log)
    while len(every) < n_evals and k <= 4 * n_evals:
        cadence = set(np.round(np.linspace(steps / max(k, 1), steps, k)).astype(int).tolist())
        every = log | cadence
        k += 1
    extra = sorted(every - log)[:-1]  # drop overshoot from the cadence, never the last step
    drop = set(extra[:: max(1, len(extra) // max(len(every) - n_evals, 1))][:max(len(every) - n_evals, 0)])
    return np.array(sorted(every - drop))


def _curves(steps: np.ndarray, t_train: float, t_val: float | None, rng: np.random.Generator) -> dict:
    ls = np.log10(np.maximum(steps, 1))
    train = 1 / (1 + np.exp(-(ls - np.log10(t_train)) * 12))
    val = 0.02 + 0.98 / (1 + np.exp(-(ls - np.log10(t_val)) * 14)) if t_val else 0.02 + 0.1 * train
    noise = rng.normal(0, 0.004, (2, len(steps)))
    train, val = np.clip(train + noise[0], 0, 1), np.clip(val + noise[1], 0, 1)
    return {"train_acc": train, "val_acc": val, "train_loss": -np.log(np.clip(train, 1e-3, 0.999)) + 1e-3,
            "val_loss": -np.log(np.clip(val, 1e-3, 0.999)) + 1e-3,
            "param_norm": 60 - 20 * (val - 0.02) + rng.normal(0, 0.2, len(steps))}


def synthetic_sweep(store: Store, n_runs: int = 100, n_evals: int = 200, *, steps: int = 10_000,
                    sweep: str | None = "synthetic", names: Sequence[str] = (), seed: int = 0) -> list[int]:
    """Write `n_runs` finished runs (fractions × weight decays × seeds) with ~`n_evals` evaluations each.

    Runs at small fractions or zero weight decay never generalize, the rest grok later the less
    data they have, so the sweep analyses have something to find. `names` overrides the first
    runs' names (e.g. a hostile one for the escaping test). Returns the run ids.
    """
    rng = np.random.default_rng(seed)
    fracs, wds = (0.2, 0.3, 0.4, 0.5, 0.6), (0.0, 0.1, 0.3, 1.0)
    grid = list(product(range(max(1, -(-n_runs // (len(fracs) * len(wds))))), wds, fracs))[:n_runs]
    at = eval_steps(n_evals, steps)
    ids = []
    for i, (s, wd, frac) in enumerate(grid):
        name = names[i] if i < len(names) else f"syn-f{frac}-wd{wd}-s{s}"
        cfg = load_config("quickstart", [f"data.frac_train={frac}", f"optim.weight_decay={wd}", f"train.seed={s}",
                                         f"train.steps={steps}"])
        t_train = 300 * (1 + rng.uniform(-0.2, 0.2))
        t_val = None if frac < 0.3 or wd == 0 else t_train * (1 + 8 * (0.6 - frac) / 0.3 / (wd ** 0.3))
        c = _curves(at, t_train, t_val, rng)
        _, [rid] = create_group(store, [replace(cfg, name=name)], sweep, {"groklab_version": "synthetic"},
                                group=f"syn{seed}-{i}")
        store.log_metrics((rid, int(st), k, float(v[j])) for k, v in c.items() for j, st in enumerate(at))
        hit_t, hit_v = np.flatnonzero(c["train_acc"] >= 0.99), np.flatnonzero(c["val_acc"] >= 0.99)
        store.update_runs({rid: ("finished", {
            "steps": steps, "train_acc": float(c["train_acc"][-1]), "val_acc": float(c["val_acc"][-1]),
            "step_train_99": int(at[hit_t[0]]) if len(hit_t) else None,
            "step_val_99": int(at[hit_v[0]]) if len(hit_v) else None,
            "wall_seconds": round(float(rng.uniform(20, 40)), 1)})})
        ids.append(rid)
    return ids
