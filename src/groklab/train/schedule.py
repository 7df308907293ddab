"""When things happen: learning-rate factor, evaluation steps, phase lookup."""
from __future__ import annotations

import math

import numpy as np

from ..config import OptimCfg, Phase, TrainCfg


def lr_factor(cfg: OptimCfg, step: int, total: int) -> float:
    """Multiplier of the peak lr at `step` (0-based): 1) linear warm-up, 2) the schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = step - cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = min(1.0, t / max(1, total - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.step_gamma ** (t // cfg.step_every)
    return 1.0


def eval_steps(cfg: TrainCfg) -> list[int]:
    """Steps (updates done) at which to evaluate: 0, log-spaced, every `eval_every`, phase
    starts and the last step — smooth on a log axis without paying for per-step evaluation."""
    steps = {0, cfg.steps}
    if cfg.eval_log_points:
        steps.update(np.unique(np.geomspace(1, cfg.steps, cfg.eval_log_points).round().astype(int)).tolist())
    steps.update(range(cfg.eval_every, cfg.steps + 1, cfg.eval_every))
    steps.update(ph.start for ph in cfg.phases)
    return sorted(s for s in steps if 0 <= s <= cfg.steps)


def phase_at(phases: tuple[Phase, ...], step: int) -> int:
    """Index of the phase in force at `step` (-1 before the first phase)."""
    idx = -1
    for i, ph in enumerate(phases):
        if ph.start <= step:
            idx = i
    return idx
