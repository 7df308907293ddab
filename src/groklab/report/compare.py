"""`groklab compare`: several runs on one figure, and the config fields they differ in.

    views = collect_runs(store, [3, 4])
    print(diff_table(views)); overlay_figure(views, "overlay.png")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from matplotlib.figure import Figure

from .data import RunView, differing_fields

FORMATS = (".png", ".svg", ".pdf")


def config_diff(views: Sequence[RunView]) -> dict[str, list[Any]]:
    """{dotted field: [value in each run]} for every field the runs differ in, in config order."""
    return {f: [v.config.get(f) for v in views] for f in differing_fields([v.config for v in views])}


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "-" if v is None else str(v)


def diff_table(views: Sequence[RunView], width: int = 28) -> str:
    """The config diff as an aligned text table: one row per differing field, one column per run."""
    diff = config_diff(views)
    if not diff:
        return "the runs' configs are identical (apart from names and execution fields)"
    heads = [f"run {v.run_id}" for v in views]
    rows = [(f, [_text(x) for x in vals]) for f, vals in diff.items()]
    kw = max(len("field"), *(len(f) for f, _ in rows))
    cw = [min(width, max(len(h), len(v.name), *(len(r[1][i]) for r in rows)))
          for i, (h, v) in enumerate(zip(heads, views))]
    cut = lambda s, w: s if len(s) <= w else s[:w - 1] + "…"  # noqa: E731
    lines = [f"{'field':<{kw}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(heads, cw)),
             f"{'name':<{kw}}  " + "  ".join(f"{cut(v.name, w):>{w}}" for v, w in zip(views, cw))]
    lines += [f"{f:<{kw}}  " + "  ".join(f"{cut(c, w):>{w}}" for c, w in zip(cells, cw)) for f, cells in rows]
    return "\n".join(lines)


def overlay_figure(views: Sequence[RunView], path: str | Path | None = None) -> Figure:
    """Accuracy (top) and loss (bottom) of every run against a log step axis: one colour per
    run, validation solid, train dotted; a dot marks each run's step to 99 % validation. Each
    run's label gives the config fields the runs differ in."""
    fig = Figure(figsize=(8, 6.5))
    ax_acc, ax_loss = fig.subplots(2, 1, sharex=True)
    colors = [f"C{i % 10}" for i in range(len(views))]
    diff = config_diff(views)
    for i, (v, c) in enumerate(zip(views, colors)):
        h = v.history[v.history["step"] > 0] if "step" in v.history else v.history
        if h.empty:
            continue
        # Runs of one preset share a name: the legend says what sets each apart.
        apart = ", ".join(f"{f.rsplit('.', 1)[-1]}={_text(vals[i])}" for f, vals in diff.items())
        label = f"{v.run_id}: {v.name}" + (f" ({apart})" if apart else "")
        name = (label if len(label) <= 90 else label[:89] + "…").replace("$", r"\$")  # "$" would start mathtext
        for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
            if f"val_{key}" in h:
                ax.plot(h["step"], h[f"val_{key}"], color=c, lw=1.5, label=name if key == "acc" else None)
            if f"train_{key}" in h:
                ax.plot(h["step"], h[f"train_{key}"], color=c, lw=1, ls=":")
        if v.metrics and v.metrics.t_val99:
            ax_acc.plot([v.metrics.t_val99], [v.metrics.threshold], "o", color=c, ms=4)
    ax_acc.set_ylabel("accuracy (solid: val, dotted: train)")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.set_xscale("log")
    ax_loss.set_xlabel("optimization step")
    ax_acc.legend(fontsize=8, loc="upper left")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3, which="both", lw=0.4)
    fig.suptitle("runs " + ", ".join(str(v.run_id) for v in views))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
