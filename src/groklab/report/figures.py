"""Sweep figures for the HTML report, as Plotly figure dicts (data + layout), computed by the
existing analyses: data efficiency, critical data size with its semi-grokking band, and the
phase diagram. Every user-derived label goes through :func:`markup.label`."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..analysis import PHASES, critical_fraction, data_efficiency, phase_diagram
from ..store import TERMINAL
from .data import RunView
from .markup import label

# matplotlib's tab10 colours, as in the PNG figures (analysis.plots.PHASE_COLORS)
PHASE_HEX = {"comprehension": "#1f77b4", "grokking": "#2ca02c", "memorization": "#ff7f0e", "confusion": "#7f7f7f"}
FRACTION = "data.frac_train"


def sweep_table(views: Sequence[RunView], fields: Sequence[str]) -> pd.DataFrame:
    """The analyses' runs table from report views: completed runs with metrics only."""
    rows = [{"run_id": v.run_id, "name": v.name, **{f: v.config.get(f) for f in fields}, **v.metrics.as_dict()}
            for v in views if v.status in TERMINAL and v.metrics is not None]
    return pd.DataFrame(rows)


def _layout(title: str, x: str, y: str, **extra: Any) -> dict:
    return {"title": {"text": label(title)}, "height": 380, "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
            "xaxis": {"title": {"text": label(x)}}, "yaxis": {"title": {"text": label(y)}},
            "legend": {"orientation": "h", "y": -0.2}, **extra}


def efficiency_figure(table: pd.DataFrame, x: str, group: str | None) -> tuple[dict, str]:
    """Median steps to 99 % validation against `x` (circles exact, triangles lower bounds), and
    every run behind them (crosses: never generalized, drawn at the steps they trained)."""
    eff = data_efficiency(table, x=x, threshold_col="t_val99", group=group)
    traces = []
    for key, g in (eff.groupby(group, sort=True) if group else [(None, eff)]):
        traces.append({"type": "scatter", "mode": "lines+markers", "x": g[x].tolist(), "y": g["median"].tolist(),
                       "name": label(f"median, {group} = {key}" if group else "median"),
                       "marker": {"size": 9, "symbol": ["triangle-up" if b else "circle"
                                                        for b in g["median_is_lower_bound"]]}})
    done = table[table["t_val99"].notna()]
    cens = table[table["t_val99"].isna()]
    traces.append({"type": "scatter", "mode": "markers", "x": done[x].tolist(), "y": done["t_val99"].tolist(),
                   "name": "run", "marker": {"color": "#999", "size": 5},
                   "text": [label(f"run {r}") for r in done["run_id"]]})
    if len(cens):
        traces.append({"type": "scatter", "mode": "markers", "x": cens[x].tolist(), "y": cens["steps"].tolist(),
                       "name": "run (never 99 %)", "marker": {"color": "#999", "symbol": "x", "size": 7},
                       "text": [label(f"run {r}") for r in cens["run_id"]]})
    note = (f"{len(table)} runs; median steps to 99 % validation accuracy per {x}; a triangle marks a median "
            f"that is only a lower bound (half or more of its runs never reached 99 %).")
    return {"data": traces, "layout": _layout("data efficiency", x, "steps to 99 % val acc",
                                              yaxis={"type": "log", "title": {"text": "steps to 99 % val acc"}})}, note


def critical_figure(table: pd.DataFrame, x: str) -> tuple[dict, str]:
    """Final validation accuracy against the fraction, the fitted sigmoid, D_crit and the band."""
    crit = critical_fraction(table, x=x)
    traces = [{"type": "scatter", "mode": "markers", "x": table[x].tolist(), "y": table["final_val_acc"].tolist(),
               "name": "run", "marker": {"color": "#2ca02c", "size": 7},
               "text": [label(f"run {r}") for r in table["run_id"]]}]
    xs = pd.to_numeric(table[x], errors="coerce").dropna()
    if crit.params is not None and len(xs):
        grid = np.linspace(float(xs.min()), float(xs.max()), 100)
        traces.append({"type": "scatter", "mode": "lines", "x": grid.tolist(), "y": crit.predict(grid).tolist(),
                       "name": "sigmoid fit", "line": {"color": "#444"}})
    shapes = []
    if crit.semi_grok_band:
        lo, hi = crit.semi_grok_band
        pad = 0.01 * (float(xs.max() - xs.min()) or 1.0)
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": lo - pad, "x1": hi + pad, "y0": 0, "y1": 1,
                       "fillcolor": "#ff7f0e", "opacity": 0.15, "line": {"width": 0}})
    if crit.d_crit is not None:
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": crit.d_crit, "x1": crit.d_crit,
                       "y0": 0, "y1": 1, "line": {"color": "#d62728", "dash": "dash"}})
    found = (f"D_crit = {crit.d_crit:.4g} ({crit.method}; final val acc crosses {crit.level})"
             if crit.d_crit is not None else f"D_crit not found: final val acc never crosses {crit.level} in the range")
    band = (f"semi-grokking band {x} ∈ [{crit.semi_grok_band[0]:g}, {crit.semi_grok_band[1]:g}] (shaded)"
            if crit.semi_grok_band else "no fraction with middling mean val acc")
    layout = _layout("critical data size", x, "final val acc", shapes=shapes)
    layout["yaxis"]["range"] = [-0.03, 1.03]
    return {"data": traces, "layout": layout}, f"{found}; {band}."


def _category(values: Sequence[Any]) -> list[str]:
    return [label(f"{v:g}" if isinstance(v, float) else v) for v in values]


def phase_figure(table: pd.DataFrame, x: str, y: str) -> tuple[dict, str]:
    """Majority phase per (x, y) cell, one marker trace per phase, on evenly spaced (categorical)
    axes in sorted order: sweep values are usually log-spaced."""
    pdg = phase_diagram(table, x=x, y=y)
    f = pdg.fractions
    traces = []
    for ph in PHASES:
        cell = f[f["majority"] == ph]
        if len(cell):
            traces.append({"type": "scatter", "mode": "markers", "x": _category(cell[x]), "y": _category(cell[y]),
                           "name": ph, "marker": {"color": PHASE_HEX[ph], "symbol": "square", "size": 26},
                           "text": [label(f"{ph}: {n} run(s)") for n in cell["n"]]})
    layout = _layout("phase diagram (majority phase per cell)", x, y)
    for axis, field_ in (("xaxis", x), ("yaxis", y)):
        layout[axis].update(type="category", categoryorder="array",
                            categoryarray=_category(sorted(f[field_].unique())))
    counts = f["majority"].value_counts()
    note = "cells: " + ", ".join(f"{counts[p]} {p}" for p in PHASES if p in counts) + "."
    return {"data": traces, "layout": layout}, note


def _numeric(table: pd.DataFrame, f: str) -> bool:
    return f in table and pd.to_numeric(table[f], errors="coerce").notna().all()


def sweep_figures(views: Sequence[RunView], swept: Sequence[str]) -> list[dict]:
    """The analyses that apply to a sweep, each {id, title, figure, note} (figure None with a note
    when it does not apply)."""
    axes = [f for f in swept if f != "train.seed"]
    table = sweep_table(views, axes)
    if table.empty:
        return [{"id": "sweep-none", "title": "sweep analyses", "figure": None,
                 "note": "no finished run with metrics yet: the analyses need completed runs."}]
    out = []
    if FRACTION in axes and _numeric(table, FRACTION):
        others = [f for f in axes if f != FRACTION and table[f].nunique() <= 6]
        fig, note = efficiency_figure(table, FRACTION, others[0] if others else None)
        out.append({"id": "sweep-efficiency", "title": "data efficiency", "figure": fig, "note": note})
        fig, note = critical_figure(table, FRACTION)
        out.append({"id": "sweep-critical", "title": "critical data size (D_crit)", "figure": fig, "note": note})
    else:
        out.append({"id": "sweep-efficiency", "title": "data efficiency", "figure": None,
                    "note": f"{FRACTION} is not swept here, so there is no data-efficiency curve or D_crit."})
    pair = ["optim.lr", "optim.weight_decay"] if {"optim.lr", "optim.weight_decay"} <= set(axes) else axes[:2]
    if len(pair) == 2 and all(table[f].nunique() >= 2 for f in pair) \
            and not any(table[f].map(lambda v: isinstance(v, (list, dict))).any() for f in pair):
        fig, note = phase_figure(table, *pair)
        out.append({"id": "sweep-phase", "title": "phase diagram", "figure": fig, "note": note})
    else:
        out.append({"id": "sweep-phase", "title": "phase diagram", "figure": None,
                    "note": "a phase diagram needs two swept fields besides the seed."})
    return out

