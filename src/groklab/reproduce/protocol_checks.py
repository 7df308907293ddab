"""Checks on protocol groups (:mod:`groklab.reproduce.protocols`): mixture curves, efficiency
norms, Fourier progress measures. Registered in the same `CRITERIA` registry as the run checks.

Each reads ``ev[group].runs`` (one :class:`ProtocolRun` per seed), judges each seed, and combines
the seeds: all agree → their verdict; any doubt → inconclusive; otherwise partial.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd

from .criteria import criterion
from .evidence import Evidence
from .verdict import INCONCLUSIVE, NOT_REPRODUCED, PARTIAL, REPRODUCED, Outcome


def _seeds(verdicts: Sequence[str]) -> str:
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return INCONCLUSIVE if INCONCLUSIVE in verdicts else PARTIAL


def _first(m: pd.DataFrame, mask: pd.Series) -> int | None:
    hit = m.loc[mask, "step"]
    return int(hit.iloc[0]) if len(hit) else None


def _loss_curve(m: pd.DataFrame, train_low: float) -> dict:
    """Key points of a mixture run's loss curves: start, peak, when train loss first <= train_low,
    and when val loss is first back below its start after its peak."""
    start = float(m["val_loss"].iloc[0])
    i_peak = m["val_loss"].idxmax()
    peak, t_peak = float(m.loc[i_peak, "val_loss"]), int(m.loc[i_peak, "step"])
    t_low = _first(m, m["train_loss"] <= train_low)
    t_back = _first(m, (m["step"] > t_peak) & (m["val_loss"] < start))
    val_at_low = None if t_low is None else float(m.loc[m["step"] == t_low, "val_loss"].iloc[0])
    return {"val_loss_start": start, "val_loss_peak": peak, "step_val_loss_peak": t_peak,
            "train_loss_start": float(m["train_loss"].iloc[0]), "train_loss_at_val_peak": float(m.loc[i_peak, "train_loss"]),
            "step_train_loss_low": t_low, "val_loss_at_train_low": val_at_low, "step_val_loss_back": t_back,
            "final_val_loss": float(m["val_loss"].iloc[-1]), "final_val_acc": float(m["val_acc"].iloc[-1]),
            "steps": int(m["step"].iloc[-1])}


@criterion("mixture_groks")
@dataclass(frozen=True)
class MixtureGroks:
    """The mixture groks (mystery study §5.1, fig. 5 first row): while the training loss falls the
    validation loss rises above its start (by more than `min_rise` of it), and it comes back below
    its start only after the training loss is near zero (<= `train_low`); validation accuracy ends
    >= `level`."""

    reads: ClassVar[str] = "mixture"  # the protocol whose groups it reads
    group: str = "main"
    train_low: float = 0.1
    min_rise: float = 0.1
    level: float = 0.99

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _judge(self, c: dict) -> tuple[str, str]:
        rose = c["val_loss_peak"] > (1 + self.min_rise) * c["val_loss_start"] \
            and c["train_loss_at_val_peak"] < c["train_loss_start"]
        text = (f"val loss {c['val_loss_start']:.3g} → peak {c['val_loss_peak']:.3g} at step {c['step_val_loss_peak']} "
                f"(train loss {c['train_loss_at_val_peak']:.3g} there); train loss <= {self.train_low:g} at step "
                f"{c['step_train_loss_low'] if c['step_train_loss_low'] is not None else 'never'}; val loss back "
                f"below its start at step {c['step_val_loss_back'] if c['step_val_loss_back'] is not None else 'never'}; "
                f"final val acc {c['final_val_acc']:.3f}")
        if not rose:
            return NOT_REPRODUCED, f"{text} (val loss did not rise)"
        if c["step_train_loss_low"] is None:
            return INCONCLUSIVE, f"{text} (train loss never near zero in {c['steps']} steps)"
        if c["step_val_loss_back"] is None:
            return INCONCLUSIVE, f"{text} (val loss still above its start after {c['steps']} steps)"
        if c["step_val_loss_back"] < c["step_train_loss_low"]:
            return NOT_REPRODUCED, f"{text} (val loss came down before train loss was near zero)"
        return (REPRODUCED if c["final_val_acc"] >= self.level else PARTIAL), text

    def evaluate(self, ev: Evidence) -> Outcome:
        curves = [_loss_curve(r.history, self.train_low) for r in ev[self.group].runs]
        judged = [self._judge(c) for c in curves]
        return Outcome(_seeds([v for v, _ in judged]), "; ".join(t for _, t in judged), {"curves": curves})


@criterion("losses_fall_together")
@dataclass(frozen=True)
class LossesFallTogether:
    """No grokking in the mixture (fig. 5 second row): the validation loss never rises above its
    start by more than `min_rise` of it, and it is below its start when the training loss first
    gets near zero (<= `train_low`)."""

    reads: ClassVar[str] = "mixture"  # the protocol whose groups it reads
    group: str = "main"
    train_low: float = 0.1
    min_rise: float = 0.1

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _judge(self, c: dict) -> tuple[str, str]:
        at_low = c["val_loss_at_train_low"]
        text = (f"val loss {c['val_loss_start']:.3g} → peak {c['val_loss_peak']:.3g} at step {c['step_val_loss_peak']}; "
                f"train loss <= {self.train_low:g} at step "
                f"{c['step_train_loss_low'] if c['step_train_loss_low'] is not None else 'never'}"
                + (f" with val loss {at_low:.3g}" if at_low is not None else "")
                + f"; final val acc {c['final_val_acc']:.3f}")
        if c["val_loss_peak"] > (1 + self.min_rise) * c["val_loss_start"]:
            return NOT_REPRODUCED, f"{text} (val loss rose)"
        if at_low is None:
            return INCONCLUSIVE, f"{text} (train loss never near zero in {c['steps']} steps)"
        return (REPRODUCED if at_low < c["val_loss_start"] else NOT_REPRODUCED), text

    def evaluate(self, ev: Evidence) -> Outcome:
        curves = [_loss_curve(r.history, self.train_low) for r in ev[self.group].runs]
        judged = [self._judge(c) for c in curves]
        return Outcome(_seeds([v for v, _ in judged]), "; ".join(t for _, t in judged), {"curves": curves})


def _slope(ns: Sequence[float], norms: Sequence[float]) -> float:
    """Least-squares slope of log norm against log training-set size."""
    return float(np.polyfit(np.log(ns), np.log(norms), 1)[0])


@criterion("norm_grows_with_data")
@dataclass(frozen=True)
class NormGrowsWithData:
    """Model efficiency (mystery study §5.2, fig. 6): read at a fixed training loss, C_mem's
    parameter norm grows at every larger training set while C_gen's grows by at most
    `gen_max_growth` (relative) from the smallest to the largest set. A point whose run never
    reached the loss target is not read; fewer than two read points of a kind cannot tell."""

    reads: ClassVar[str] = "efficiency"  # the protocol whose groups it reads
    group: str = "main"
    gen_max_growth: float = 0.05

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _judge(self, points: list[dict]) -> tuple[str, str, dict]:
        by = {k: sorted((p for p in points if p["kind"] == k and p["reached"]), key=lambda p: p["n_train"])
              for k in ("C_mem", "C_gen")}
        unread = [f"{p['kind']} at n={p['n_train']}" for p in points if not p["reached"]]
        parts, figs = [], {}
        for kind, sel in by.items():
            norms = [p["param_norm"] for p in sel]
            parts.append(f"{kind} norm " + " → ".join(f"{v:.1f}" for v in norms)
                         + (f" (n {sel[0]['n_train']} → {sel[-1]['n_train']})" if sel else ""))
            figs[kind] = {"n": [p["n_train"] for p in sel], "norm": norms}
            if len(sel) >= 2:
                figs[kind]["ratio"] = norms[-1] / norms[0]
                figs[kind]["slope"] = _slope(figs[kind]["n"], norms)
        text = "; ".join(parts)
        skipped = f" (not at the loss target: {', '.join(unread)})" if unread else ""
        if any(len(sel) < 2 for sel in by.values()):
            return INCONCLUSIVE, f"{text}{skipped}: fewer than two points of a kind reached the target", figs
        mem, gen = figs["C_mem"], figs["C_gen"]
        text += (f": C_mem ×{mem['ratio']:.3f} (log-log slope {mem['slope']:.2f}), "
                 f"C_gen ×{gen['ratio']:.3f} (slope {gen['slope']:.2f}){skipped}")
        grows = all(b > a for a, b in zip(mem["norm"], mem["norm"][1:]))
        flat = gen["ratio"] <= 1 + self.gen_max_growth
        if grows and flat:
            return REPRODUCED, text, figs
        if mem["ratio"] > 1 and mem["ratio"] > gen["ratio"]:
            return PARTIAL, text, figs
        return NOT_REPRODUCED, text, figs

    def evaluate(self, ev: Evidence) -> Outcome:
        judged = [self._judge(r.data["points"]) for r in ev[self.group].runs]
        return Outcome(_seeds([v for v, _, _ in judged]), "; ".join(t for _, t, _ in judged),
                       {"seeds": [f for _, _, f in judged]})


@criterion("fourier_progress")
@dataclass(frozen=True)
class FourierProgress:
    """Nanda et al.: the grokked model's embedding uses few key frequencies (at most
    `max_key_frac` of the p // 2 non-constant ones), and the restricted loss (logits kept on the
    key frequencies) falls to `restricted_frac` · ln p before validation accuracy reaches
    `val_level` (the circuit forms before the validation jump)."""

    reads: ClassVar[str] = "fourier"  # the protocol whose groups it reads
    group: str = "main"
    max_key_frac: float = 0.2
    restricted_frac: float = 0.5
    val_level: float = 0.5

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _judge(self, run) -> tuple[str, str, dict]:
        p, keys, prog, m = run.data["p"], run.data["key_freqs"], run.progress, run.history
        bound = self.restricted_frac * math.log(p)
        t_r = _first(prog, prog["restricted_loss"] <= bound)
        t_v = _first(m, m["val_acc"] >= self.val_level)
        last = prog.iloc[-1]
        few = len(keys) <= self.max_key_frac * (p // 2)
        figs = {"p": p, "key_freqs": keys, "n_keys": len(keys), "step_restricted_low": t_r, "step_val": t_v,
                "restricted_loss_last": float(last["restricted_loss"]), "excluded_loss_last": float(last["excluded_loss"])}
        text = (f"{len(keys)} key frequencies of {p // 2} ({', '.join(map(str, keys))}); restricted loss <= "
                f"{bound:.2f} ({self.restricted_frac:g}·ln p) at step {t_r if t_r is not None else 'never'}, val acc >= {self.val_level:g} "
                f"at step {t_v if t_v is not None else 'never'}; last snapshot: restricted "
                f"{figs['restricted_loss_last']:.3g}, excluded {figs['excluded_loss_last']:.3g}")
        if t_v is None:
            return INCONCLUSIVE, f"{text} (did not generalize within the budget)", figs
        before = t_r is not None and t_r < t_v
        if before and few:
            return REPRODUCED, text, figs
        return (PARTIAL if before or few else NOT_REPRODUCED), text, figs

    def evaluate(self, ev: Evidence) -> Outcome:
        judged = [self._judge(r) for r in ev[self.group].runs]
        return Outcome(_seeds([v for v, _, _ in judged]), "; ".join(t for _, t, _ in judged),
                       {"seeds": [f for _, _, f in judged]})
