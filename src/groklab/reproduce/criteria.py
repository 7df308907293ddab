"""The checks a claim may name: frozen dataclasses registered by name, judged on stored metrics.

Each check reads the runs of one or more named run groups (:class:`Evidence`) and returns an
:class:`Outcome`. Missing runs are handled before a check is called (verdict `not run`); a check
says `inconclusive` when the runs exist but cannot decide (e.g. nothing reached 99 % within the
budget of a quick size), and always reports the figure it measured.

    [[claims.check]]
    name = "delay_ratio"       # a registered check
    group = "main"             # the run group it reads
    min_ratio = 2.0            # its parameters, type-checked at load time
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, fields
from typing import Callable, Sequence, get_type_hints

import pandas as pd

from ..registry import ConfigError, Registry
from .evidence import Evidence, StoredRun
from .verdict import (INCONCLUSIVE, NEEDS_PROTOCOL, NOT_REPRODUCED, PARTIAL, REPRODUCED, Outcome)

CRITERIA: Registry[type] = Registry("check", "check.name")


def criterion(name: str) -> Callable[[type], type]:
    """Register a frozen dataclass with `groups()` and `evaluate(evidence)` as a check."""
    return CRITERIA.register(name)


def build_criterion(params: dict, where: str):
    """A check from its TOML table (`name` plus parameters); errors name `where` and the field."""
    if not isinstance(params, dict) or "name" not in params:
        raise ConfigError(f"{where}: a check needs name = \"...\" (one of: {', '.join(CRITERIA)})")
    name = params["name"]
    if name not in CRITERIA:
        raise ConfigError(f"{where}: {CRITERIA.unknown(name)}")
    cls = CRITERIA.get(name)
    hints = get_type_hints(cls)
    valid = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in params.items():
        if key == "name":
            continue
        if key not in valid:
            raise ConfigError(f"{where}: check {name!r} has no parameter {key!r}; valid: {', '.join(valid)}")
        kwargs[key] = _typed(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required parameter is missing
        raise ConfigError(f"{where}: check {name!r}: {e}") from None


def _typed(value, hint, where: str):
    want = {"float": float, "int": int, "str": str, "bool": bool}.get(getattr(hint, "__name__", str(hint)), None)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is None or isinstance(value, bool) != (want is bool) or not isinstance(value, want):
        raise ConfigError(f"{where}={value!r} must be of type {getattr(hint, '__name__', hint)}")
    return value


# ---------------------------------------------------------------- helpers

def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def _t_val(run: StoredRun, level: float) -> float:
    """First step with val acc >= level; +inf if never (censored)."""
    hit = run.history[run.history["val_acc"] >= level]
    return float(hit["step"].iloc[0]) if len(hit) else math.inf


def _fmt(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:g}"


def _at_or_after(history: pd.DataFrame, step: int) -> pd.Series | None:
    rows = history[history["step"] >= step]
    return rows.iloc[0] if len(rows) else None


def _share(votes: Sequence[bool]) -> str:
    n = sum(votes)
    return REPRODUCED if n == len(votes) else NOT_REPRODUCED if n == 0 else PARTIAL


# ---------------------------------------------------------------- the checks

@criterion("delay_ratio")
@dataclass(frozen=True)
class DelayRatio:
    """Validation reaches 99 % at least `min_ratio` times later than training (t_val99 / t_train99)."""

    min_ratio: float
    group: str = "main"

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def evaluate(self, ev: Evidence) -> Outcome:
        runs = ev[self.group].runs
        pairs = [(r.metrics.t_train99, r.metrics.t_val99, r.metrics.steps) for r in runs]
        if any(t is None for t, _, _ in pairs):
            return Outcome(INCONCLUSIVE, f"train acc never reached 99 % in {max(s for *_, s in pairs)} steps")
        ratios = [(v / t if v is not None and t > 0 else math.inf) for t, v, _ in pairs]
        censored = sum(v is None for _, v, _ in pairs)
        text = ", ".join(f"train 99 % at {t}, val 99 % at {v if v is not None else f'never (>{s})'}"
                         for t, v, s in pairs)
        med = _median(ratios)
        figures = {"t_train99": [p[0] for p in pairs], "t_val99": [p[1] for p in pairs], "ratio": ratios}
        if censored:
            return Outcome(INCONCLUSIVE, f"{text}: {censored} of {len(runs)} run(s) did not generalize within "
                                         "the budget", figures)
        return Outcome(_share([r >= self.min_ratio for r in ratios]), f"{text}: delay {med:.1f}× (median)", figures)


@dataclass(frozen=True)
class _ValWithin:
    """Shared by the two budget checks: one group, a step budget and an accuracy level."""

    steps: int
    group: str = "main"
    level: float = 0.99

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _times(self, ev: Evidence) -> tuple[list, list[float], int]:
        runs = ev[self.group].runs
        return runs, [_t_val(r, self.level) for r in runs], min(r.metrics.steps for r in runs)


@criterion("groks_within")
@dataclass(frozen=True)
class GroksWithin(_ValWithin):
    """Every run's validation accuracy reaches `level` within `steps` steps."""

    def evaluate(self, ev: Evidence) -> Outcome:
        runs, ts, budget = self._times(ev)
        text = f"val {self.level:.0%} at step {', '.join(_fmt(t) for t in ts)}; max val {max(r.metrics.max_val_acc for r in runs):.3f}"
        if all(math.isinf(t) for t in ts) and budget < self.steps:
            return Outcome(INCONCLUSIVE, f"{text} (ran {budget} of {self.steps} steps)", {"t_val": ts})
        return Outcome(_share([t <= self.steps for t in ts]), text, {"t_val": ts})


@criterion("never_groks")
@dataclass(frozen=True)
class NeverGroks(_ValWithin):
    """No run's validation accuracy reaches `level` within `steps` steps."""

    def evaluate(self, ev: Evidence) -> Outcome:
        runs, ts, budget = self._times(ev)
        text = f"max val {max(r.metrics.max_val_acc for r in runs):.3f} in {budget} steps"
        if any(t <= self.steps for t in ts):
            return Outcome(NOT_REPRODUCED, f"val {self.level:.0%} at step {min(ts):g}", {"t_val": ts})
        if budget < self.steps:
            return Outcome(INCONCLUSIVE, f"{text} (needs {self.steps})", {"t_val": ts})
        return Outcome(REPRODUCED, text, {"t_val": ts})


@criterion("ordering")
@dataclass(frozen=True)
class Ordering:
    """Median steps to `level` val accuracy falls (`decreasing`) or rises as config field `axis`
    grows; a run that never gets there counts as later than every run that does."""

    axis: str
    group: str = "main"
    direction: str = "decreasing"
    level: float = 0.99

    def __post_init__(self) -> None:
        if self.direction not in ("decreasing", "increasing"):
            raise ConfigError(f"direction={self.direction!r} must be 'decreasing' or 'increasing'")

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def evaluate(self, ev: Evidence) -> Outcome:
        from ..config import get_field

        by: dict = {}
        for r in ev[self.group].runs:
            by.setdefault(get_field(r.config, self.axis), []).append(_t_val(r, self.level))
        xs = sorted(by)
        meds = [_median(by[x]) for x in xs]
        text = ", ".join(f"{self.axis.split('.')[-1]}={x:g}: {_fmt(m)}" for x, m in zip(xs, meds))
        figures = {"x": xs, "median_t_val": meds}
        if len(xs) < 2 or all(math.isinf(m) for m in meds):
            return Outcome(INCONCLUSIVE, f"steps to val {self.level:.0%}: {text or 'no runs'}", figures)
        sign = -1 if self.direction == "decreasing" else 1
        votes = [sign * (meds[j] - meds[i]) > 0 for i in range(len(xs)) for j in range(i + 1, len(xs))
                 if not (math.isinf(meds[i]) and math.isinf(meds[j]))]
        return Outcome(_share(votes), f"steps to val {self.level:.0%}: {text}", figures)


@criterion("faster")
@dataclass(frozen=True)
class Faster:
    """Group `fast` reaches `level` val accuracy at least `min_factor` times sooner than `slow`
    (medians over seeds). When the slow median is censored, the factor is a lower bound: each slow
    run that never gets there counts as its run length, the others as their own step (so one seed
    that did get there early pulls the bound down)."""

    fast: str
    slow: str
    min_factor: float = 1.0
    level: float = 0.99

    def groups(self) -> tuple[str, ...]:
        return (self.fast, self.slow)

    def evaluate(self, ev: Evidence) -> Outcome:
        tf = _median([_t_val(r, self.level) for r in ev[self.fast].runs])
        slow = ev[self.slow].runs
        t_slow = [_t_val(r, self.level) for r in slow]
        ts = _median(t_slow)
        figures = {"t_fast": tf, "t_slow": ts}
        text = f"val {self.level:.0%}: {self.fast} at {_fmt(tf)}, {self.slow} at {_fmt(ts)}"
        if math.isinf(tf):
            return Outcome(INCONCLUSIVE if math.isinf(ts) else NOT_REPRODUCED, text, figures)
        bound = math.isinf(ts)
        floor = _median([r.metrics.steps if math.isinf(t) else t for r, t in zip(slow, t_slow)])
        factor = (floor if bound else ts) / tf
        figures["factor"] = factor
        text += f" ({'>' if bound else ''}{factor:.2f}×)"
        if factor >= self.min_factor:
            return Outcome(REPRODUCED, text, figures)
        return Outcome(INCONCLUSIVE if bound else PARTIAL if factor > 1 else NOT_REPRODUCED, text, figures)


@criterion("val_contrast")
@dataclass(frozen=True)
class ValContrast:
    """Final val accuracy of group `good` is >= `good_min` while that of `poor` is <= `poor_max`;
    when neither generalizes the runs cannot tell (inconclusive)."""

    good: str
    poor: str
    good_min: float = 0.95
    poor_max: float = 0.5

    def groups(self) -> tuple[str, ...]:
        return (self.good, self.poor)

    def evaluate(self, ev: Evidence) -> Outcome:
        g = _median([r.metrics.final_val_acc for r in ev[self.good].runs])
        p = _median([r.metrics.final_val_acc for r in ev[self.poor].runs])
        text = f"final val {self.good} {g:.3f}, {self.poor} {p:.3f}"
        ok_g, ok_p = g >= self.good_min, p <= self.poor_max
        if ok_p and not ok_g:  # neither generalized: the budget, not the intervention, may be why
            return Outcome(INCONCLUSIVE, f"{text} ({self.good} did not generalize either)", {"good": g, "poor": p})
        verdict = REPRODUCED if ok_g and ok_p else PARTIAL if g > p else NOT_REPRODUCED
        return Outcome(verdict, text, {"good": g, "poor": p})


_CHANCE: dict[str, float | None] = {}  # by data config: building a task once per claim table is enough


def chance(cfg) -> float | None:
    """Validation accuracy of a uniform guess for the run's task: 1 / classes (None for regression,
    or when the task's data cannot be built here)."""
    from ..config import to_dict
    from ..data import TASKS
    key = json.dumps(to_dict(cfg.data), sort_keys=True)
    if key not in _CHANCE:
        try:
            task = TASKS.get(cfg.data.task)().build(cfg.data)
            _CHANCE[key] = None if task.regression else 1.0 / task.n_out
        except Exception:  # noqa: BLE001 - a missing data file must not stop the verdict
            _CHANCE[key] = None
    return _CHANCE[key]


@criterion("val_drop")
@dataclass(frozen=True)
class ValDrop:
    """After the last phase starts, val accuracy falls from >= `before_min` to <= `after_max`
    (ungrokking); a drop of at least `min_drop` that stays above `after_max` is partial."""

    after_max: float
    group: str = "main"
    before_min: float = 0.95
    min_drop: float = 0.02

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def evaluate(self, ev: Evidence) -> Outcome:
        votes, parts, figs = [], [], []
        for r in ev[self.group].runs:
            if not r.config.train.phases:
                raise ConfigError(f"check val_drop: run {r.run_id} has no phase to read 'before' at")
            start = r.config.train.phases[-1].start
            before_rows = r.history[r.history["step"] <= start]
            before = float(before_rows["val_acc"].iloc[-1]) if len(before_rows) else math.nan
            after = r.metrics.final_val_acc
            figs.append((before, after))
            c = chance(r.config)  # a memorizer can end below it: it avoids the held-out answers
            parts.append(f"val {before:.3f} at step {start} → {after:.3f} at {r.metrics.steps}"
                         + (f" (chance {c:.3f})" if c is not None else ""))
            if not before >= self.before_min:
                votes.append(None)
            else:
                votes.append(REPRODUCED if after <= self.after_max else
                             PARTIAL if before - after >= self.min_drop else NOT_REPRODUCED)
        text = "; ".join(parts)
        figures = {"before": [b for b, _ in figs], "after": [a for _, a in figs]}
        if any(v is None for v in votes):
            return Outcome(INCONCLUSIVE, f"{text} (not grokked before the phase)", figures)
        verdict = votes[0] if len(set(votes)) == 1 else PARTIAL
        return Outcome(verdict, text, figures)


@criterion("loss_spikes")
@dataclass(frozen=True)
class LossSpikes:
    """Softmax collapse (Prieto et al. 2025): once the training loss has fallen to `floor`, it jumps
    back up to at least `factor` times its lowest value so far — in every run of `spiky`, and in no
    run of `smooth` (the same runs with a loss that does not collapse, e.g. float64)."""

    spiky: str
    smooth: str
    floor: float = 1e-5
    factor: float = 1000.0

    def groups(self) -> tuple[str, ...]:
        return (self.spiky, self.smooth)

    def evaluate(self, ev: Evidence) -> Outcome:
        from ..analysis import loss_spikes

        counts = {g: [loss_spikes(r.history, self.floor, self.factor) for r in ev[g].runs] for g in self.groups()}
        text = "; ".join(f"{g}: " + ", ".join("never ≤ " + f"{self.floor:g}" if c is None else f"{c} spike(s)"
                                                for c in cs) for g, cs in counts.items())
        if any(c is None for cs in counts.values() for c in cs):
            return Outcome(INCONCLUSIVE, f"{text} (the loss must first fall to {self.floor:g})", counts)
        spiky = [c > 0 for c in counts[self.spiky]]
        smooth = [c == 0 for c in counts[self.smooth]]
        verdict = NOT_REPRODUCED if not any(spiky) else REPRODUCED if all(spiky + smooth) else PARTIAL
        return Outcome(verdict, text, counts)


@criterion("value_in_band")
@dataclass(frozen=True)
class ValueInBand:
    """Metric `metric` (e.g. train_acc) at the first evaluation at or after `step` lies in [lo, hi]."""

    metric: str
    step: int
    lo: float = -math.inf
    hi: float = math.inf
    group: str = "main"

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def evaluate(self, ev: Evidence) -> Outcome:
        values, short = [], []
        for r in ev[self.group].runs:
            row = _at_or_after(r.history, self.step)
            if row is None:  # the run ended before `step`: report where it got to
                last = r.history.iloc[-1]
                short.append(f"{float(last.get(self.metric, math.nan)):.3f} at its last step {int(last['step'])}")
            values.append(math.nan if row is None or self.metric not in row else float(row[self.metric]))
        text = f"{self.metric} at step {self.step}: {', '.join(f'{v:.3f}' for v in values)}"
        if short:
            return Outcome(INCONCLUSIVE, f"{self.metric} {', '.join(short)} (the check reads step {self.step})",
                           {"values": values})
        if any(math.isnan(v) for v in values):
            return Outcome(INCONCLUSIVE, f"{text} ({self.metric} not logged)", {"values": values})
        return Outcome(_share([self.lo <= v <= self.hi for v in values]), text, {"values": values})


@criterion("norm_falls_while_val_rises")
@dataclass(frozen=True)
class NormFallsWhileValRises:
    """From the step train accuracy first reaches 99 % to the end, the parameter norm falls by at
    least `min_norm_fall` (relative) while val accuracy rises by at least `min_val_rise`."""

    min_norm_fall: float = 0.05
    min_val_rise: float = 0.05
    group: str = "main"
    min_window: int = 0
    """Fewer steps than this between train 99 % and the end cannot tell (inconclusive)."""

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def evaluate(self, ev: Evidence) -> Outcome:
        votes, parts = [], []
        for r in ev[self.group].runs:
            t = r.metrics.t_train99
            if t is None or "param_norm" not in r.history:
                return Outcome(INCONCLUSIVE, f"run {r.run_id}: train acc never reached 99 % (or no norm logged)")
            a, b = _at_or_after(r.history, t), r.history.iloc[-1]
            if int(b["step"]) - t < self.min_window:
                return Outcome(INCONCLUSIVE, f"run {r.run_id}: train 99 % at step {t}, only "
                                             f"{int(b['step']) - t} steps before the end (needs {self.min_window})")
            fall = 1 - float(b["param_norm"]) / float(a["param_norm"])
            rise = float(b["val_acc"]) - float(a["val_acc"])
            parts.append(f"steps {t}→{int(b['step'])}: norm {a['param_norm']:.1f}→{b['param_norm']:.1f}, "
                         f"val {a['val_acc']:.3f}→{b['val_acc']:.3f}")
            votes.append(fall >= self.min_norm_fall and rise >= self.min_val_rise)
        return Outcome(_share(votes), "; ".join(parts))


@criterion("final_in_band")
@dataclass(frozen=True)
class FinalInBand:
    """Final val accuracy lies in [lo, hi] for `any` run of the group (e.g. semi-grokking's
    middling accuracy near D_crit) or for `all` of them. With `any`, runs that all end on one
    side of the band did not straddle the transition: inconclusive.

    `hold` (a fraction of the run's steps) asks for a plateau, not a snapshot: at least `share` of
    the evaluations in the run's last `hold` of its steps lie in the band (every one by default).
    A run still climbing through the band when its budget ends (a late grokker) is then not
    counted. `share` below 1 forgives the few evaluations a loss spike after the fit takes down
    (training accuracy collapses for a step or two and validation dips with it); such a run must
    still end in the band (the median of its last `END` evaluations), so that one which climbs
    out of it in the last few percent of its steps is not counted either.
    """

    END = 5

    lo: float
    hi: float
    group: str = "main"
    mode: str = "any"
    hold: float = 0.0
    share: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in ("any", "all"):
            raise ConfigError(f"mode={self.mode!r} must be 'any' or 'all'")
        if not 0 <= self.hold < 1:
            raise ConfigError(f"hold={self.hold!r} must be in [0, 1) (a fraction of the run's steps)")
        if not 0 < self.share <= 1:
            raise ConfigError(f"share={self.share!r} must be in (0, 1] (a fraction of the held evaluations)")

    def groups(self) -> tuple[str, ...]:
        return (self.group,)

    def _inside(self, r) -> bool:
        h = r.history
        last = int(h["step"].iloc[-1])
        tail = h[h["step"] >= last * (1 - self.hold)]["val_acc"]
        held = ((tail >= self.lo) & (tail <= self.hi)).mean() >= self.share
        ends = self.share == 1 or self.lo <= h["val_acc"].iloc[-self.END:].median() <= self.hi  # 1: implied
        return bool(held and ends)

    def evaluate(self, ev: Evidence) -> Outcome:
        runs = ev[self.group].runs
        vals = [r.metrics.final_val_acc for r in runs]
        inside = [self._inside(r) for r in runs]
        held = "" if self.share == 1 else f" for >= {self.share:.0%} of the evaluations"
        over = f"{held} over the last {self.hold:.0%} of their steps" if self.hold else ""
        text = f"final val {', '.join(f'{v:.3f}' for v in vals)} ({sum(inside)} in [{self.lo:g}, {self.hi:g}]{over})"
        ok = any(inside) if self.mode == "any" else all(inside)
        verdict = REPRODUCED if ok else PARTIAL if any(inside) else NOT_REPRODUCED
        if self.mode == "any" and not ok and (all(v < self.lo for v in vals) or all(v > self.hi for v in vals)):
            # every run on one side: the grid did not straddle the transition, so it cannot tell
            return Outcome(INCONCLUSIVE, f"{text}: every run {'below' if vals[0] < self.lo else 'above'} the band",
                           {"final_val": vals})
        return Outcome(verdict, text, {"final_val": vals})


@criterion("shorter_delay")
@dataclass(frozen=True)
class ShorterDelay:
    """Group `short` groks with a smaller delay ratio t_val99 / t_train99 than group `long`."""

    short: str
    long: str

    def groups(self) -> tuple[str, ...]:
        return (self.short, self.long)

    def _ratio(self, ev: Evidence, group: str) -> float:
        rs = [r.metrics.delay_ratio for r in ev[group].runs]
        return _median([math.inf if r is None else r for r in rs])

    def evaluate(self, ev: Evidence) -> Outcome:
        a, b = self._ratio(ev, self.short), self._ratio(ev, self.long)
        text = f"delay {self.short} {_fmt(a) if math.isinf(a) else f'{a:.2f}×'}, " \
               f"{self.long} {_fmt(b) if math.isinf(b) else f'{b:.2f}×'}"
        if math.isinf(a):
            return Outcome(INCONCLUSIVE, f"{text} ({self.short} did not generalize within the budget)",
                           {"short": a, "long": b})
        return Outcome(REPRODUCED if a < b else NOT_REPRODUCED, text, {"short": a, "long": b})


@criterion("needs_protocol")
@dataclass(frozen=True)
class NeedsProtocol:
    """The claim needs an experiment `reproduce` cannot run yet (named in `protocol`)."""

    protocol: str

    def groups(self) -> tuple[str, ...]:
        return ()

    def evaluate(self, ev: Evidence) -> Outcome:
        return Outcome(NEEDS_PROTOCOL, f"needs: {self.protocol}")


from . import protocol_checks  # noqa: E402,F401  (registers the protocol groups' checks)
