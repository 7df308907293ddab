"""Figures of the mechanism protocols: mixture model (fig. 5), model efficiency (fig. 6), Fourier
spectrum and progress measures (Nanda et al.). Plain data in (DataFrames, lists), a file out.
Bare :class:`matplotlib.figure.Figure` objects, never pyplot: importing this module leaves the
matplotlib backend as it was."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

TRAIN, VAL = "tab:red", "tab:green"
MEM, GEN = "tab:orange", "tab:blue"


def _save(fig, path: str | Path | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_mixture(metrics: pd.DataFrame, *, title: str = "", path: str | Path | None = None):
    """Accuracy, loss (log) and the mixing weights w_mem, w_gen of a mixture run against step.

    The step axis is symlog (linear below 1) so step 0 shows: with the protocol's SGD the first
    update already moves w_mem most of the way, and a log axis would hide where it started."""
    df = metrics
    fig = Figure(figsize=(13, 3.6))
    ax_acc, ax_loss, ax_w = fig.subplots(1, 3)
    for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
        ax.plot(df["step"], df[f"train_{key}"], color=TRAIN, label="train")
        ax.plot(df["step"], df[f"val_{key}"], color=VAL, label="validation")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
    ax_loss.set_yscale("log")
    ax_w.plot(df["step"], df["w_mem"], color=MEM, label="w_mem")
    ax_w.plot(df["step"], df["w_gen"], color=GEN, label="w_gen")
    ax_w.set_ylabel("mixing weight")
    for ax in (ax_acc, ax_loss, ax_w):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both", lw=0.4)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_efficiency(points: pd.DataFrame, *, title: str = "", path: str | Path | None = None):
    """Parameter norm and mean correct-class logit of C_mem and C_gen against training-set size.
    Hollow markers: runs that never reached the loss target (read at their last evaluation)."""
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    for kind, color in (("C_mem", MEM), ("C_gen", GEN)):
        d = points[points["kind"] == kind].sort_values("n_train")
        for ax, col in zip(axes, ("param_norm", "correct_logit", "efficiency")):
            ax.plot(d["n_train"], d[col], color=color, lw=1, label=kind)
            hit, miss = d[d["reached"]], d[~d["reached"]]
            ax.scatter(hit["n_train"], hit[col], color=color, zorder=3)
            ax.scatter(miss["n_train"], miss[col], facecolors="none", edgecolors=color, zorder=3)
    for ax, label in zip(axes, ("parameter norm", "mean correct-class logit\n(minus mean logit)",
                                "efficiency (logit / norm)")):
        ax.set_xlabel("training-set size")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, lw=0.4)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_fourier(spectrum: list[float], keys: list[int], progress: pd.DataFrame, *, title: str = "",
                 path: str | Path | None = None):
    """Left: the final embedding norm per frequency, key frequencies marked. Middle: train/val loss,
    restricted and excluded loss against step. Right: Gini of the spectrum and total weight norm."""
    fig = Figure(figsize=(14, 3.8))
    ax_s, ax_l, ax_g = fig.subplots(1, 3)
    ks = list(range(len(spectrum)))
    ax_s.bar(ks, spectrum, color=["tab:purple" if k in keys else "0.6" for k in ks])
    ax_s.set_xlabel("frequency k")
    ax_s.set_ylabel("embedding norm")
    ax_s.set_title(f"key frequencies: {', '.join(map(str, sorted(keys)))}", fontsize=9)
    df = progress[progress["step"] > 0]
    for col, color, style in (("train_loss", TRAIN, "-"), ("val_loss", VAL, "-"),
                              ("restricted_loss", "tab:purple", "--"), ("excluded_loss", "0.3", ":")):
        if col in df:
            ax_l.plot(df["step"], df[col], color=color, ls=style, label=col.replace("_", " "))
    ax_l.set_yscale("log")
    ax_l.set_ylabel("loss")
    ax_l.legend(fontsize=8)
    ax_g.plot(df["step"], df["gini"], color="tab:purple", label="Gini of spectrum")
    ax_g.set_ylabel("Gini")
    ax_n = ax_g.twinx()
    ax_n.plot(df["step"], df["weight_norm"], color="0.3", ls="--", label="weight norm")
    ax_n.set_ylabel("total weight norm")
    ax_g.legend(loc="upper left", fontsize=8)
    ax_n.legend(loc="lower left", fontsize=8)
    for ax in (ax_l, ax_g):
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
