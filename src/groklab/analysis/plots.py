"""Figures for sweep analyses: data efficiency, critical data size and phase diagrams.

Figures are bare :class:`matplotlib.figure.Figure` objects, rendered by Agg (PNG) or the SVG
backend on save, never through pyplot: importing this module does not switch the user's
backend, needs no display, and figures are freed when the caller drops them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .sweeps import PHASES, CriticalSize, PhaseDiagram

PHASE_COLORS = {"comprehension": "tab:blue", "grokking": "tab:green",
                "memorization": "tab:orange", "confusion": "tab:gray"}
_FORMATS = {".png", ".svg"}


def _save(fig: Figure, path: str | Path | None) -> None:
    """Write ``fig`` to a .png or .svg file (parent folders created)."""
    if path is None:
        return
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"unsupported figure format {path.suffix!r}; use .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def _fmt_tick(v: Any) -> str:
    """Compact tick label; powers of ten as 1e-3 so log-spaced sweep values read naturally."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f > 0 and f != 1 and math.isclose(math.log10(f), round(math.log10(f)), abs_tol=1e-9):
        return f"1e{round(math.log10(f))}"
    return f"{f:.3g}"


def plot_data_efficiency(df: pd.DataFrame, path: str | Path | None = None, *, x: str | None = None,
                         group: str | None = None, title: str = "") -> Figure:
    """Steps-to-threshold against a swept field, from :func:`data_efficiency`.

    Exact medians are circles joined by a line; medians that are only lower bounds (most runs
    censored) are upward triangles at the bound, meaning "more than this".

    Args:
        df: output of :func:`groklab.analysis.data_efficiency`.
        path: save to this .png or .svg file.
        x: x column (default: the one recorded in ``df.attrs``, else ``data.frac_train``).
        group: column giving one curve each (default: the first recorded group, if any).
        title: figure title.

    Returns:
        The matplotlib Figure.
    """
    x = x or df.attrs.get("x", "data.frac_train")
    groups = df.attrs.get("group") or []
    group = group or (groups[0] if groups else None)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    curves = [(None, df)] if group is None else list(df.groupby(group, sort=True))
    # Curves censored at one budget would draw their triangles on top of each other: set them a
    # little apart along x (a fraction of the grid's spacing), in curve order.
    numeric = pd.api.types.is_numeric_dtype(df[x])
    xs = np.unique(df[x].to_numpy(dtype=float)) if numeric else np.array([])
    dodge = 0.5 * float(np.diff(xs).min()) / len(curves) if len(curves) > 1 and len(xs) > 1 else 0.0
    bound_labelled = False  # one legend entry for the triangles, whichever curve has them first
    for i, (gv, g) in enumerate(curves):
        g = g.sort_values(x)
        color = f"C{i}"
        label = "median" if group is None else str(gv) if group == "sweep" else f"{group}={_fmt_tick(gv)}"
        exact = g[~g["median_is_lower_bound"].astype(bool)]
        bound = g[g["median_is_lower_bound"].astype(bool)]
        ax.plot(g[x], g["median"], color=color, lw=1, alpha=0.5)
        ax.plot(exact[x], exact["median"], "o", color=color, label=label)
        ax.plot(bound[x] + (i - (len(curves) - 1) / 2) * dodge, bound["median"], "^", color=color, mfc="none", ms=8,
                label=None if bound_labelled or not len(bound) else "lower bound (censored)")
        bound_labelled = bound_labelled or bool(len(bound))
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"steps to {df.attrs.get('threshold_col', 't_val99')}")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_critical(table: pd.DataFrame, crit: CriticalSize, path: str | Path | None = None, *,
                  x: str = "data.frac_train", y: str = "final_val_acc", title: str = "") -> Figure:
    """Final validation accuracy against training fraction with the D_crit estimate.

    Args:
        table: runs table (one point per run, so seeds appear as a vertical scatter).
        crit: output of :func:`groklab.analysis.critical_fraction` on the same table.
        path: save to this .png or .svg file.
        x: training-fraction column.
        y: final validation accuracy column.
        title: figure title.

    Returns:
        The matplotlib Figure.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    d = table[[x, y]].apply(pd.to_numeric, errors="coerce").dropna()
    if crit.semi_grok_band is not None:
        lo, hi = crit.semi_grok_band
        pad = 0.01 * max(float(d[x].max() - d[x].min()), 1e-12)  # a one-point band stays visible
        ax.axvspan(lo - pad, hi + pad, color="tab:orange", alpha=0.15, label="semi-grokking")
    ax.scatter(d[x], d[y], s=14, color="0.3", alpha=0.7, label="runs")
    means = d.groupby(x, sort=True)[y].mean()
    if crit.params is not None:
        xs = np.linspace(float(d[x].min()), float(d[x].max()), 300)
        ax.plot(xs, crit.predict(xs), color="tab:blue", label="sigmoid fit")
    else:
        ax.plot(means.index, means.to_numpy(), color="tab:blue", label="mean")
    if crit.d_crit is not None:
        ax.axvline(crit.d_crit, color="tab:red", ls="--", label=f"D_crit = {crit.d_crit:.3g}")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_phase_diagram(pivot: pd.DataFrame | PhaseDiagram, path: str | Path | None = None, *,
                       title: str = "") -> Figure:
    """Categorical heatmap of the majority phase per sweep cell.

    Cells are drawn on an evenly spaced grid (sweeps are usually log-spaced), labelled with
    the sweep values, powers of ten as ``1e-3``; empty cells are left blank.

    Args:
        pivot: ``PhaseDiagram`` or its ``majority`` pivot (rows: y values, columns: x values).
        path: save to this .png or .svg file.
        title: figure title.

    Returns:
        The matplotlib Figure.
    """
    xname = pivot.x if isinstance(pivot, PhaseDiagram) else pivot.columns.name
    yname = pivot.y if isinstance(pivot, PhaseDiagram) else pivot.index.name
    pv = pivot.majority if isinstance(pivot, PhaseDiagram) else pivot
    code = {p: i for i, p in enumerate(PHASES)}
    grid = np.array([[code.get(v, np.nan) for v in row] for row in pv.to_numpy()], dtype=float)
    cmap = ListedColormap([PHASE_COLORS[p] for p in PHASES])
    norm = BoundaryNorm(np.arange(len(PHASES) + 1) - 0.5, cmap.N)
    # room for the legend on the right (about 2.2 in) plus ~0.6 in per column, 0.5 in per row
    fig = Figure(figsize=(3.4 + 0.6 * max(pv.shape[1], 4), 1.5 + 0.5 * max(pv.shape[0], 4)))
    ax = fig.subplots()
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    ax.set_xticks(range(pv.shape[1]), [_fmt_tick(v) for v in pv.columns], rotation=45, ha="right")
    ax.set_yticks(range(pv.shape[0]), [_fmt_tick(v) for v in pv.index])
    ax.set_xlabel(xname or "")
    ax.set_ylabel(yname or "")
    handles = [Patch(color=PHASE_COLORS[p], label=p) for p in PHASES]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
    return fig
