"""The standard grokking figure: accuracy (top) and loss (bottom) against step on a log axis,
train red and validation green, the 99 % thresholds and phase boundaries marked; optionally a
third panel with the parameter norm (Omnigrok's view of grokking as the norm falls).

Figures are bare :class:`matplotlib.figure.Figure` objects, rendered on save by the backend the
file's suffix picks, never through pyplot: importing this module leaves the matplotlib backend
as it was (as `analysis/plots.py` does)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.figure import Figure

TRAIN, VAL = "tab:red", "tab:green"


def grokking_figure(metrics: pd.DataFrame, *, title: str = "", thresholds: dict | None = None,
                    phases: Sequence[tuple[int, str]] = (), norm: bool = False, path: str | Path | None = None):
    """Draw one run's curves.

    Args:
        metrics: one row per evaluation with step, train/val acc and loss.
        thresholds: {"train": step, "val": step} of the first 99 % accuracy (None entries skipped).
        phases: (start step, label) of each phase, drawn as dashed vertical lines.
        norm: add a bottom panel with the total parameter L2 norm (`param_norm`).
        path: save to this .png or .svg file.
    Returns:
        The matplotlib Figure.
    """
    df = metrics[metrics["step"] > 0]  # a log axis has no 0
    fig = Figure(figsize=(7, 8 if norm else 6))
    axes = fig.subplots(3 if norm else 2, 1, sharex=True)
    ax_acc, ax_loss = axes[:2]
    ax_acc.plot(df["step"], df["train_acc"], color=TRAIN, label="train")
    ax_acc.plot(df["step"], df["val_acc"], color=VAL, label="validation")
    ax_loss.plot(df["step"], df["train_loss"], color=TRAIN, label="train")
    ax_loss.plot(df["step"], df["val_loss"], color=VAL, label="validation")
    if norm:
        axes[2].plot(df["step"], df["param_norm"], color="0.2")
        axes[2].set_ylabel("parameter norm")
    for key, color in (("train", TRAIN), ("val", VAL)):
        step = (thresholds or {}).get(key)
        if step:
            for ax in axes:
                ax.axvline(step, color=color, lw=0.8, ls=":")
            ax_acc.annotate(f"{key} 99% @ {step}", (step, 0.5 if key == "train" else 0.4), color=color,
                            fontsize=8, rotation=90, ha="right", va="center")
    for start, label in phases:
        if start > 0:
            for ax in axes:
                ax.axvline(start, color="0.3", lw=1, ls="--")
            ax_acc.annotate(label, (start, 1.02), fontsize=8, color="0.3", ha="left", va="bottom",
                            xycoords=("data", "axes fraction"))
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.set_xscale("log")
    axes[-1].set_xlabel("optimization step")
    ax_acc.legend(loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3, which="both", lw=0.4)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_run(record, path: str | Path | None = None, norm: bool = False):
    """The grokking figure of a stored run (:class:`groklab.RunRecord`); `norm` adds the norm panel."""
    phases = [(ph.start, ph.name or f"phase {i + 1}") for i, ph in enumerate(record.config.train.phases)]
    s = record.summary
    return grokking_figure(record.metrics, title=f"run {record.run_id}: {record.name}",
                           thresholds={"train": s.get("step_train_99"), "val": s.get("step_val_99")},
                           phases=phases, norm=norm, path=path)
