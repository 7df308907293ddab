"""Sweep-level analyses on a runs table: data efficiency, critical data size, phase diagrams."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .grokking import GrokMetrics, first_step_at

PHASES: tuple[str, ...] = ("comprehension", "grokking", "memorization", "confusion")


# ----------------------------------------------------------------------------------------------
# data efficiency
# ----------------------------------------------------------------------------------------------

def _efficiency_cell(t: pd.Series, steps: pd.Series) -> dict:
    """Censoring-aware summary of steps-to-threshold for the runs of one cell."""
    t = pd.to_numeric(t, errors="coerce")
    cens = t.isna()
    n, n_c = len(t), int(cens.sum())
    done = t[~cens].to_numpy(dtype=float)
    # Censored runs rank above every generalized one (their time is > their budget, which in a
    # sweep with a common budget exceeds any observed time), so the sample median is known
    # exactly only while it falls on a generalized run: fewer than half censored. At exactly
    # half (even n) the median averages in a censored value, so it too is only a lower bound.
    lower = n > 0 and 2 * n_c >= n
    if lower:
        # Some censored run lies at or below the median, and its time exceeds its budget:
        # the smallest budget among censored runs (= steps trained, when shared) bounds it.
        median = float(pd.to_numeric(steps[cens], errors="coerce").min())
    else:
        ranked = np.concatenate([np.sort(done), np.full(n_c, np.inf)])
        median = float(np.median(ranked))
    return {
        "n_total": n,
        "n_censored": n_c,
        "frac_generalized": (n - n_c) / n if n else math.nan,
        "median_generalized": float(np.median(done)) if len(done) else math.nan,
        "mean_generalized": float(done.mean()) if len(done) else math.nan,
        "median": median,
        "median_is_lower_bound": bool(lower),
    }


def data_efficiency(table: pd.DataFrame, x: str = "data.frac_train", threshold_col: str = "t_val99",
                    group: str | Sequence[str] | None = None, steps_col: str = "steps") -> pd.DataFrame:
    """Steps needed to reach a threshold as a function of a swept field, over seeds.

    Runs whose ``threshold_col`` is missing (None/NaN) never reached it: they are *censored*
    (time-to-threshold > their ``steps_col``) and are counted, not dropped. ``median`` is the
    censoring-aware median over all runs of a cell: exact while fewer than half the runs are
    censored, otherwise ``median_is_lower_bound`` is True and the value is the steps trained
    (the smallest budget among the censored runs), below which the true median cannot lie.

    Args:
        table: runs table with ``x``, ``threshold_col``, ``steps_col`` and any ``group`` columns.
        x: the swept field on the curve's x axis.
        threshold_col: per-run steps-to-threshold, e.g. ``"t_val99"`` or ``"t_val95"``.
        group: extra column(s) giving one curve each (e.g. ``"optim.weight_decay"``).
        steps_col: per-run number of steps trained (the censoring time).

    Returns:
        One row per (group, x), sorted, with columns: the group columns, ``x``, ``n_total``,
        ``n_censored``, ``frac_generalized``, ``median_generalized``, ``mean_generalized``
        (over generalized runs only), ``median`` and ``median_is_lower_bound``. ``attrs``
        records ``x``, ``group`` and ``threshold_col`` for :func:`plot_data_efficiency`.
    """
    groups = [] if group is None else [group] if isinstance(group, str) else list(group)
    keys = groups + [x]
    steps = table[steps_col] if steps_col in table else pd.Series(np.nan, index=table.index)
    rows = []
    for key, g in table.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **_efficiency_cell(g[threshold_col], steps.loc[g.index])})
    out = pd.DataFrame(rows, columns=keys + ["n_total", "n_censored", "frac_generalized",
                                             "median_generalized", "mean_generalized", "median",
                                             "median_is_lower_bound"])
    out.attrs.update(x=x, group=groups, threshold_col=threshold_col)
    return out


# ----------------------------------------------------------------------------------------------
# critical data size
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CriticalSize:
    """Where final validation accuracy crosses a level as a function of the training fraction.

    Attributes:
        d_crit: the crossing point (None if the accuracy never crosses the level).
        width: the fitted sigmoid's scale ``w`` (None unless ``method == "sigmoid"``).
        semi_grok_band: (min, max) of ``semi_grok_fractions``, or None if there are none.
        semi_grok_fractions: x values whose mean final val accuracy is strictly middling.
        method: ``"sigmoid"`` (least-squares fit), ``"interpolation"`` (of the per-x mean,
            the fallback) or ``"none"`` (no crossing found).
        params: fitted ``(lo, hi, x0, w)`` of ``lo + (hi - lo) / (1 + exp(-(x - x0) / w))``,
            or None when the fit was not used.
        level: the accuracy level that defines ``d_crit``.
    """

    d_crit: float | None
    width: float | None
    semi_grok_band: tuple[float, float] | None
    semi_grok_fractions: list[float] = field(default_factory=list)
    method: str = "sigmoid"
    params: tuple[float, float, float, float] | None = None
    level: float = 0.5

    def predict(self, x: Any) -> np.ndarray:
        """The fitted sigmoid at ``x`` (NaN everywhere if no sigmoid was fitted)."""
        x = np.asarray(x, dtype=float)
        if self.params is None:
            return np.full_like(x, np.nan)
        lo, hi, x0, w = self.params
        return lo + (hi - lo) * _sigmoid((x - x0) / w)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # clip: exp overflows beyond ~709, and the sigmoid is already 0/1 to float precision at 50.
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _fit_given_shape(x: np.ndarray, y: np.ndarray, x0: float, w: float) -> tuple[float, float, float]:
    """Best (lo, hi) in [0, 1] for a fixed (x0, w). Returns (sse, lo, hi).

    The model ``lo * (1 - s) + hi * s`` is linear in (lo, hi), so the box-constrained least
    squares is solved exactly: the SSE is a convex quadratic, hence its box minimum is the
    unconstrained optimum if feasible, else the best of the clipped 1-D optima on the four
    edges. Accuracies live in [0, 1]; an unbounded fit overshoots on noisy plateaus and
    drags the crossing.
    """
    s = _sigmoid((x - x0) / w)
    u = 1.0 - s
    suu, sss, sus = float(u @ u), float(s @ s), float(u @ s)
    uy, sy = float(u @ y), float(s @ y)
    cands = []
    det = suu * sss - sus * sus
    if det > 1e-12 * max(suu * sss, 1e-300):
        cands.append(((sss * uy - sus * sy) / det, (suu * sy - sus * uy) / det))
    for edge in (0.0, 1.0):
        cands.append((edge, min(max((sy - edge * sus) / max(sss, 1e-300), 0.0), 1.0)))
        cands.append((min(max((uy - edge * sus) / max(suu, 1e-300), 0.0), 1.0), edge))
    best = (math.inf, 0.0, 1.0)
    for lo, hi in cands:
        if 0.0 <= lo <= 1.0 and 0.0 <= hi <= 1.0:
            r = y - lo * u - hi * s
            sse = float(r @ r)
            if sse < best[0]:
                best = (sse, float(lo), float(hi))
    return best


def _fit_sigmoid(x: np.ndarray, y: np.ndarray, rounds: int = 4) -> tuple[float, float, float, float]:
    """Least-squares sigmoid fit by a coarse (x0, log w) grid, then repeated zoomed grids.

    (lo, hi) are solved exactly for each grid point (variable projection, within [0, 1]), so
    only the two nonlinear parameters are searched. The smallest width is a fraction of the smallest gap
    between distinct x: a sharper sigmoid cannot be resolved by the data, and the floor makes a
    step function's fit land mid-gap (the symmetric optimum) instead of anywhere in the gap.
    """
    ux = np.unique(x)
    span = float(ux[-1] - ux[0])
    w_lo, w_hi = 0.05 * float(np.min(np.diff(ux))), span
    x0_grid = np.linspace(ux[0], ux[-1], 41)
    lw_grid = np.linspace(math.log(w_lo), math.log(w_hi), 25)
    best = (math.inf, 0.0, 1.0, float(x0_grid[0]), w_lo)
    for _ in range(rounds):
        for x0 in x0_grid:
            for lw in lw_grid:
                sse, lo, hi = _fit_given_shape(x, y, float(x0), math.exp(lw))
                if sse < best[0] - 1e-15:
                    best = (sse, lo, hi, float(x0), math.exp(lw))
        # zoom in around the best point: +/- two grid cells, finer by the same factor
        dx, dl = x0_grid[1] - x0_grid[0], lw_grid[1] - lw_grid[0]
        x0_grid = np.linspace(best[3] - 2 * dx, best[3] + 2 * dx, 21)
        lw_grid = np.clip(np.linspace(math.log(best[4]) - 2 * dl, math.log(best[4]) + 2 * dl, 21),
                          math.log(w_lo), math.log(w_hi))
    return best[1], best[2], best[3], best[4]


def _sigmoid_crossing(params: tuple[float, float, float, float], level: float) -> float | None:
    """x where the fitted sigmoid equals ``level``; None if it stays on one side."""
    lo, hi, x0, w = params
    if not lo < level < hi:
        return None
    return x0 - w * math.log((hi - lo) / (level - lo) - 1.0)


def _interp_crossing(xs: np.ndarray, ys: np.ndarray, level: float) -> float | None:
    """First x where the piecewise-linear curve through (xs, ys) rises through ``level``.

    None if it never does inside the swept range (including when it starts above ``level``:
    the crossing is then below the smallest x and cannot be located).
    """
    for i in range(len(xs) - 1):
        if ys[i] < level <= ys[i + 1]:
            return float(xs[i] + (level - ys[i]) * (xs[i + 1] - xs[i]) / (ys[i + 1] - ys[i]))
    return None


def critical_fraction(table: pd.DataFrame, x: str = "data.frac_train", y: str = "final_val_acc", *,
                      level: float = 0.5, semi_low: float = 0.1, semi_high: float = 0.9) -> CriticalSize:
    """Estimate the critical data fraction D_crit where final val accuracy crosses ``level``.

    Fits ``acc(x) = lo + (hi - lo) / (1 + exp(-(x - x0) / w))`` to all runs (seeds are separate
    points) by least squares and solves it for ``level``. If the fit is unusable (fewer than 4
    distinct x, a non-rising fit, or a crossing outside the swept range) the crossing of the
    linearly interpolated per-x mean is used instead.

    Args:
        table: runs table with columns ``x`` and ``y``.
        x: the swept data-size field.
        y: per-run final validation accuracy.
        level: accuracy level defining D_crit.
        semi_low: a fraction is semi-grokking if its mean ``y`` is strictly above this...
        semi_high: ...and strictly below this.

    Returns:
        A :class:`CriticalSize`.
    """
    d = table[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    xv, yv = d[x].to_numpy(dtype=float), d[y].to_numpy(dtype=float)
    means = d.groupby(x, sort=True)[y].mean()
    semi = [float(v) for v, m in means.items() if semi_low < m < semi_high]
    band = (min(semi), max(semi)) if semi else None
    common = dict(semi_grok_band=band, semi_grok_fractions=semi, level=level)
    if len(means) >= 4:
        params = _fit_sigmoid(xv, yv)
        cross = _sigmoid_crossing(params, level)
        if params[1] > params[0] and cross is not None and means.index[0] <= cross <= means.index[-1]:
            return CriticalSize(d_crit=cross, width=params[3], method="sigmoid", params=params, **common)
    cross = _interp_crossing(means.index.to_numpy(dtype=float), means.to_numpy(dtype=float), level)
    return CriticalSize(d_crit=cross, width=None, method="interpolation" if cross is not None else "none",
                        **common)


# ----------------------------------------------------------------------------------------------
# run classification and phase diagrams
# ----------------------------------------------------------------------------------------------

def _opt_step(v: Any) -> int | None:
    """A step from a metrics field / table cell: None and NaN mean 'never reached'."""
    if v is None or pd.isna(v):
        return None
    return int(v)


def _crossing_times(m: Any, train_thr: float, val_thr: float) -> tuple[int | None, int | None]:
    """(t_train, t_val) at the requested thresholds from a history, GrokMetrics or row."""
    if isinstance(m, pd.DataFrame):
        return first_step_at(m, "train_acc", train_thr), first_step_at(m, "val_acc", val_thr)
    get = (lambda k, default=None: getattr(m, k, default)) if isinstance(m, GrokMetrics) else \
        (lambda k, default=None: m.get(k, default))
    # Stored metrics only know crossing times at the threshold they were computed with (and
    # 0.95 for val); other thresholds need the history, so refuse rather than silently mix.
    thr = get("threshold", 0.99)
    thr = 0.99 if thr is None or pd.isna(thr) else float(thr)
    if not math.isclose(train_thr, thr):
        raise ValueError(f"metrics hold t_train at {thr}; pass the history to classify at train_thr={train_thr}")
    if math.isclose(val_thr, thr):
        t_val = get("t_val99")
    elif math.isclose(val_thr, 0.95):
        t_val = get("t_val95")
    else:
        raise ValueError(f"metrics hold t_val at {thr} and 0.95; pass the history for val_thr={val_thr}")
    return _opt_step(get("t_train99")), _opt_step(t_val)


def classify_run(m: GrokMetrics | Mapping | pd.Series | pd.DataFrame, *, train_thr: float = 0.99,
                 val_thr: float = 0.99, delay_factor: float = 2.0, min_delay_steps: int = 0) -> str:
    """Classify a run into one of the four learning phases.

    * ``confusion``: train accuracy never reaches ``train_thr``;
    * ``memorization``: train reaches it, validation never reaches ``val_thr``;
    * ``grokking``: both, with ``t_val >= delay_factor * t_train`` and the delay
      ``t_val - t_train`` larger than ``min_delay_steps`` (so that e.g. 10 -> 20 steps with
      ``min_delay_steps=100`` does not count as a delay);
    * ``comprehension``: both, with validation following train closely.

    Args:
        m: a :class:`GrokMetrics`, a runs-table row / mapping with ``t_train99``, ``t_val99``
            (and optionally ``t_val95``, ``threshold``), or a metric history DataFrame.
        train_thr: train accuracy level. With metrics/rows it must equal the level they were
            computed at (``threshold``, default 0.99); a history works at any level.
        val_thr: validation accuracy level (metrics/rows: their threshold or 0.95).
        delay_factor: minimum ratio ``t_val / t_train`` for grokking.
        min_delay_steps: the delay must exceed this many steps for grokking.

    Returns:
        One of ``"comprehension"``, ``"grokking"``, ``"memorization"``, ``"confusion"``.

    Raises:
        ValueError: if stored metrics cannot answer at the requested thresholds.
    """
    t_train, t_val = _crossing_times(m, train_thr, val_thr)
    if t_train is None:
        return "confusion"
    if t_val is None:
        return "memorization"
    if t_val >= delay_factor * t_train and t_val - t_train > min_delay_steps:
        return "grokking"
    return "comprehension"


@dataclass(frozen=True)
class PhaseDiagram:
    """Phase classes over a 2-D sweep grid.

    Attributes:
        majority: pivot with ``y`` values as the (ascending) index, ``x`` values as the columns
            and the majority phase of each cell's runs (None where a cell has no runs).
        fractions: one row per cell: ``y``, ``x``, ``n`` and the fraction of runs in each phase.
        x: name of the column-axis field.
        y: name of the row-axis field.
    """

    majority: pd.DataFrame
    fractions: pd.DataFrame
    x: str
    y: str


def _majority(phases: pd.Series) -> str:
    counts = phases.value_counts()
    # ties go to the earlier entry of PHASES, so the result does not depend on row order
    tied = set(counts.index[counts == counts.max()])
    return next(p for p in PHASES if p in tied)


def phase_diagram(table: pd.DataFrame, x: str = "optim.lr", y: str = "optim.weight_decay", *,
                  phase_col: str | None = None, **classify_kwargs: Any) -> PhaseDiagram:
    """Majority phase and phase fractions per (x, y) cell of a sweep, over seeds.

    Args:
        table: runs table with ``x``, ``y`` and either ``phase_col`` or the metric columns
            :func:`classify_run` needs (``t_train99``, ``t_val99``...).
        x: field for the diagram's columns (e.g. learning rate).
        y: field for the diagram's rows (e.g. weight decay).
        phase_col: column holding precomputed phases; if None each row is classified.
        **classify_kwargs: passed to :func:`classify_run`.

    Returns:
        A :class:`PhaseDiagram`.
    """
    if phase_col is None:
        phases = table.apply(lambda r: classify_run(r, **classify_kwargs), axis=1)
    else:
        phases = table[phase_col]
    t = pd.DataFrame({y: table[y].to_numpy(), x: table[x].to_numpy(), "phase": np.asarray(phases)})
    rows = []
    for (yv, xv), g in t.groupby([y, x], sort=True):
        n = len(g)
        frac = {f"frac_{p}": float((g["phase"] == p).sum()) / n for p in PHASES}
        rows.append({y: yv, x: xv, "n": n, "majority": _majority(g["phase"]), **frac})
    fractions = pd.DataFrame(rows, columns=[y, x, "n", "majority"] + [f"frac_{p}" for p in PHASES])
    majority = fractions.pivot(index=y, columns=x, values="majority").sort_index().sort_index(axis=1)
    majority = majority.astype(object).where(majority.notna(), None)
    return PhaseDiagram(majority=majority, fractions=fractions, x=x, y=y)
