"""Per-run grokking metrics from a metric history, and seed aggregation with t confidence intervals."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd

# Two-sided 95 % Student-t critical values t_{0.975, df}. scipy is not a dependency, so the
# quantile comes from this standard table; between tabulated df values (and towards df = inf,
# where t -> z = 1.960) we interpolate linearly in 1/df, which is accurate to about 1e-4.
_T975_DF = np.array([*range(1, 31), 40, 60, 120, np.inf])
_T975 = np.array([
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    2.021, 2.000, 1.980, 1.960,
])


def first_step_at(history: pd.DataFrame, col: str, threshold: float) -> int | None:
    """First evaluation step at which ``history[col] >= threshold``.

    Args:
        history: one row per evaluation with a ``step`` column and ``col``.
        col: the metric column, e.g. ``"val_acc"``.
        threshold: the level to reach (inclusive).

    Returns:
        The step as an int, or None if the metric never reaches the threshold.
    """
    h = history.sort_values("step", kind="stable")
    hit = pd.to_numeric(h[col], errors="coerce").to_numpy(dtype=float) >= threshold  # NaN -> False
    if not hit.any():
        return None
    return int(h["step"].to_numpy()[int(np.argmax(hit))])


@dataclass(frozen=True)
class GrokMetrics:
    """Summary of one run's grokking behaviour.

    ``t_*`` are the first evaluation steps at which an accuracy reached a level (None if never).
    A run that never generalized is *censored*: its steps-to-generalize is only known to be
    greater than ``steps``, so sweep analyses must count it rather than drop it.
    """

    t_train99: int | None
    t_val99: int | None
    t_val95: int | None
    delay_ratio: float | None
    delay_steps: int | None
    final_train_acc: float
    final_val_acc: float
    max_val_acc: float
    steps: int
    generalized: bool
    censored: bool
    threshold: float = 0.99  # the level behind t_train99 / t_val99

    def as_dict(self) -> dict:
        """The metrics as a plain dict (one row of a runs table)."""
        return asdict(self)


def grokking_metrics(history: pd.DataFrame, threshold: float = 0.99) -> GrokMetrics:
    """Compute :class:`GrokMetrics` from one run's metric history.

    Args:
        history: one row per evaluation with ``step``, ``train_acc``, ``val_acc`` (other
            columns are ignored).
        threshold: accuracy level for ``t_train99`` / ``t_val99`` (``t_val95`` always uses 0.95).

    Returns:
        The run's GrokMetrics.

    Raises:
        ValueError: if the history has no rows.
    """
    if len(history) == 0:
        raise ValueError("empty metric history")
    h = history.sort_values("step", kind="stable")
    t_train = first_step_at(h, "train_acc", threshold)
    t_val = first_step_at(h, "val_acc", threshold)
    both = t_train is not None and t_val is not None
    # A ratio against step 0 is meaningless (train accuracy at initialisation), hence > 0.
    ratio = t_val / t_train if both and t_train > 0 else None
    val = pd.to_numeric(h["val_acc"], errors="coerce")
    return GrokMetrics(
        t_train99=t_train,
        t_val99=t_val,
        t_val95=first_step_at(h, "val_acc", 0.95),
        delay_ratio=ratio,
        delay_steps=t_val - t_train if both else None,
        final_train_acc=float(h["train_acc"].iloc[-1]),
        final_val_acc=float(h["val_acc"].iloc[-1]),
        max_val_acc=float(val.max()),
        steps=int(h["step"].iloc[-1]),
        generalized=t_val is not None,
        censored=t_val is None,
        threshold=float(threshold),
    )


@dataclass(frozen=True)
class Lapse:
    """One episode in which the training accuracy, having reached the threshold, fell below it."""

    step: int
    """The first evaluation below the threshold."""
    lowest_train_acc: float
    highest_train_loss: float | None


def fit_lapses(history: pd.DataFrame, threshold: float = 0.99) -> list[Lapse]:
    """The episodes after the fit in which training accuracy fell back below `threshold`: the
    loss spikes of Thilak et al.'s slingshot, or of softmax collapse once they cost accuracy.

    Args:
        history: one row per evaluation with ``step``, ``train_acc`` (and ``train_loss``, for each
            episode's highest loss).
        threshold: the fit's accuracy level.

    Returns:
        One :class:`Lapse` per episode, in order (none if the run never fitted).
    """
    h = history.sort_values("step", kind="stable")
    acc = pd.to_numeric(h["train_acc"], errors="coerce").to_numpy(dtype=float)
    fitted = acc >= threshold
    if not fitted.any():
        return []
    first = int(np.argmax(fitted))
    below = ~fitted & ~np.isnan(acc)
    below[:first] = False
    loss = pd.to_numeric(h["train_loss"], errors="coerce").to_numpy(dtype=float) if "train_loss" in h else None
    steps, out, i = h["step"].to_numpy(), [], first
    while i < len(acc):
        if not below[i]:
            i += 1
            continue
        j = i
        while j < len(acc) and below[j]:
            j += 1
        worst = None if loss is None or np.isnan(loss[i:j]).all() else float(np.nanmax(loss[i:j]))
        out.append(Lapse(int(steps[i]), float(acc[i:j].min()), worst))
        i = j
    return out


def loss_spikes(history: pd.DataFrame, floor: float = 1e-5, factor: float = 1000.0) -> int | None:
    """Episodes in which the training loss, once it has fallen to `floor`, jumps back to at least
    `factor` times its lowest value so far (softmax collapse, Prieto et al. 2025, counts them at
    the defaults); None if the loss never reaches `floor`.

    Args:
        history: one row per evaluation with ``step`` and ``train_loss``.
        floor: the loss level after which spikes are counted.
        factor: how far above its running minimum the loss must jump.
    """
    loss = history[["step", "train_loss"]].dropna().sort_values("step")["train_loss"].to_numpy(dtype=float)
    low = (loss <= floor).nonzero()[0]
    if not len(low):
        return None
    after = loss[low[0]:]
    up = after >= factor * np.minimum.accumulate(after)
    return int(up[0]) + int((up[1:] & ~up[:-1]).sum())


def t_critical_95(df: float) -> float:
    """Two-sided 95 % Student-t critical value ``t_{0.975, df}`` (table + 1/df interpolation).

    Args:
        df: degrees of freedom (>= 1; may be non-integer or inf).

    Returns:
        The critical value, or NaN when ``df < 1``.
    """
    if not df >= 1:  # also catches NaN
        return math.nan
    # np.interp needs increasing abscissae: 1/df runs from 0 (df = inf) up to 1 (df = 1).
    return float(np.interp(1.0 / df, (1.0 / _T975_DF)[::-1], _T975[::-1]))


def _summary(values: pd.Series) -> dict:
    """mean, std, n and 95 % t interval of one group's values, NaN ignored."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    std = float(v.std(ddof=1)) if n > 1 else math.nan
    half = t_critical_95(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {"mean": mean, "std": std, "n": n, "ci95_lo": mean - half, "ci95_hi": mean + half}


def aggregate(table: pd.DataFrame, by: Sequence[str], value_cols: str | Sequence[str]) -> pd.DataFrame:
    """Mean, std, count and 95 % confidence interval of value columns per group.

    The interval is ``mean +/- t_{0.975, n-1} * std / sqrt(n)`` with the sample std (ddof=1);
    it is NaN for groups with fewer than two non-NaN values. NaN (and None) values are ignored,
    so e.g. ``t_val99`` is averaged over the runs that generalized only.

    Args:
        table: runs table, one row per run.
        by: columns to group on (may be empty: one row for the whole table).
        value_cols: column(s) to summarise.

    Returns:
        One row per group: the ``by`` columns, then for each value column ``c`` the columns
        ``c_mean``, ``c_std``, ``c_n``, ``c_ci95_lo``, ``c_ci95_hi``.
    """
    cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    by = list(by)
    groups = table.groupby(by, dropna=False, sort=True) if by else [((), table)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for c in cols:
            row.update({f"{c}_{k}": v for k, v in _summary(g[c]).items()})
        rows.append(row)
    columns = by + [f"{c}_{k}" for c in cols for k in ("mean", "std", "n", "ci95_lo", "ci95_hi")]
    return pd.DataFrame(rows, columns=columns)
