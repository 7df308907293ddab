"""Fourier protocol (Nanda et al. 2023): key frequencies and progress measures of a stored run.

    groklab fourier 12 -o fourier.png                 # a stored run on x+y mod p
    groklab fourier nanda2023 --quick -o fourier.png  # train (or reuse) a small run with snapshots
                                                      # (the full nanda2023 run takes ~25 min on one thread)

For every snapshot the run kept at log-spaced steps (:class:`~groklab.protocols.hooks.SnapshotHook`;
a run without snapshots is read at its final checkpoint only): the embedding's norm per
frequency and its Gini coefficient, the restricted and excluded losses over the key frequencies of
the *last* snapshot, and the total weight norm, next to the stored train/val curves.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ..analysis.fourier import frequency_norms, gini, key_frequencies, restricted_excluded_loss
from ..api import RunRecord, load_run, load_weights
from ..config import ConfigError, RunCfg, load_config
from ..store import TERMINAL, Store
from .base import QUICK
from .hooks import SnapshotHook, list_snapshots, load_snapshot



@dataclass(frozen=True)
class FourierResult:
    run: RunRecord
    p: int
    key_freqs: list[int]
    spectrum: list[float]                 # final embedding norm per frequency k = 0..p//2
    progress: pd.DataFrame                # one row per snapshot
    snapshots: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        last = self.progress.iloc[-1]
        return {"run_id": self.run.run_id, "p": self.p, "key_freqs": self.key_freqs, "snapshots": self.snapshots,
                "gini_first": float(self.progress["gini"].iloc[0]), "gini_last": float(last["gini"]),
                "restricted_loss_last": float(last["restricted_loss"]),
                "excluded_loss_last": float(last["excluded_loss"]),
                "step_train_99": self.run.summary.get("step_train_99"),
                "step_val_99": self.run.summary.get("step_val_99"), **self.extra}


def check_run(cfg: RunCfg, weights: dict) -> None:
    if cfg.data.task != "modular" or cfg.data.op != "x+y":
        raise ConfigError(f"data.op={cfg.data.op!r} (data.task={cfg.data.task!r}): the Fourier analysis needs "
                          "data.task='modular' with data.op='x+y'")
    if "embed.weight" not in weights:
        raise ConfigError(f"model.name={cfg.model.name!r} has no token embedding (embed.weight); the Fourier "
                          "analysis needs a token-embedding model (transformer, mlp, rnn, gru, lstm)")


def _model_and_data(cfg: RunCfg):
    from ..data import TASKS
    from ..models import build_model

    task_def = TASKS.get(cfg.data.task)()
    task = task_def.build(cfg.data)
    train_idx, _ = task_def.split(cfg.data, task)
    model = build_model(cfg.model, task, 1).eval()
    a, b = task.operand_pos
    return model, task, train_idx, task.x[:, a], task.x[:, b]


@torch.no_grad()
def measures(cfg: RunCfg, weights_by_step: Sequence[tuple[int, dict]], keys: Sequence[int] | None = None
             ) -> tuple[pd.DataFrame, list[int], list[float]]:
    """Progress measures at each (step, weights); key frequencies from the last weights unless given."""
    model, task, train_idx, x, y = _model_and_data(cfg)
    p = cfg.data.p
    spectra = [frequency_norms(w["embed.weight"][:p]) for _, w in weights_by_step]
    keys = list(keys) if keys is not None else key_frequencies(spectra[-1])
    rows = []
    for (step, w), spec in zip(weights_by_step, spectra):
        for name, prm in model.named_parameters():
            prm.copy_(w[name].unsqueeze(0))
        logits = model(task.x.unsqueeze(0))[0]
        r, e = restricted_excluded_loss(logits, task.y, x, y, p, keys, train_idx)
        rows.append({"step": step, "restricted_loss": r, "excluded_loss": e, "gini": gini(spec[1:]),
                     "weight_norm": float(torch.sqrt(sum(v.double().square().sum() for v in w.values())))})
    return pd.DataFrame(rows), keys, spectra[-1].tolist()


# A finished run's analysis depends only on its stored files, and `reproduce` asks for it up to
# three times per claim (which runs are missing, the protocol's evidence, the verdict): 9.5 s each
# for the quick claim's run on 2 cores. Kept per process, keyed by whatever would change it.
_DONE: dict[tuple, FourierResult] = {}
_DONE_MAX = 16


def analyze_run(run_id: int, store: Store) -> FourierResult:
    """The Fourier analysis of a stored run (its snapshots, else its final weights)."""
    rec = load_run(run_id, store)  # first: a missing id is its error
    snaps = list_snapshots(store, rec.group)
    key = _analysis_key(store, store.get(run_id), snaps)
    if key in _DONE:
        return _fresh(_DONE[key])
    result = _analyze(rec, store, snaps)
    if key is not None:
        while len(_DONE) >= _DONE_MAX:
            _DONE.pop(next(iter(_DONE)))
        _DONE[key] = _fresh(result)
    return result


def _analysis_key(store: Store, row: dict, snaps: list[tuple[int, Path]]) -> tuple | None:
    """What a finished run's analysis depends on (None for a run that may still change): the
    store, the row as last written, and the files read (snapshots, else the checkpoint)."""
    if row["status"] not in TERMINAL:
        return None
    files = [path for _, path in snaps] or [store.paths.checkpoint(row["group_id"])]
    stats = tuple((f.name, st.st_size, st.st_mtime_ns) for f in files if (st := _stat(f)) is not None)
    return str(store.paths.db.resolve()), row["id"], row["status"], row["updated"], stats


def _stat(path: Path):
    try:
        return path.stat()
    except OSError:
        return None


def _fresh(result: FourierResult) -> FourierResult:
    """A copy a caller may change without changing the cached one."""
    return replace(result, key_freqs=list(result.key_freqs), spectrum=list(result.spectrum),
                   progress=result.progress.copy(), extra=dict(result.extra))


def _analyze(rec: RunRecord, store: Store, snaps: list[tuple[int, Path]]) -> FourierResult:
    if snaps:
        weights = [(step, load_snapshot(path, rec.member)) for step, path in snaps]
    else:
        weights = [(int(rec.summary.get("steps") or rec.config.train.steps), load_weights(rec.run_id, store))]
    check_run(rec.config, weights[-1][1])
    table, keys, spectrum = measures(rec.config, weights)
    m = rec.metrics
    if len(m):  # the curves at (or just before) each snapshot step
        cols = [c for c in ("train_loss", "val_loss", "train_acc", "val_acc") if c in m]
        table = pd.merge_asof(table.sort_values("step"), m[["step", *cols]].sort_values("step"), on="step")
    return FourierResult(rec, rec.config.data.p, keys, spectrum, table, len(snaps))


def run_fourier(source: str, *, store: Store, quick: bool = False, overrides: Sequence[str] = (),
                points: int = 30, progress: bool = False, train_missing: bool = True) -> FourierResult:
    """Analyse stored run `source` (an id), or train/reuse preset or TOML `source` with snapshots
    (with `train_missing=False` a run missing from the store raises `MissingRun`)."""
    from .components import ensure_run

    if str(source).isdigit():
        if overrides or quick:
            raise ConfigError("--set and --quick apply when RUN is a preset or TOML file, not a stored run id")
        return analyze_run(int(source), store)
    cfg = load_config(source, ["train.threads=1", *overrides])
    if quick:  # the architecture's small problem (protocols.base.QUICK), stopped at 99 % validation
        quick_set = [*QUICK.get(cfg.model.name, []), "train.early_stop=true"]
        cfg = load_config(source, ["train.threads=1", *quick_set, *overrides])
    if cfg.data.task != "modular" or cfg.data.op != "x+y":
        check_run(cfg, {})
    rec, reused = ensure_run(cfg, store, hooks=[SnapshotHook(store, points)], progress=progress,
                             accept=lambda row: bool(list_snapshots(store, row["group_id"])),
                             train_missing=train_missing)
    result = analyze_run(rec.run_id, store)
    return FourierResult(result.run, result.p, result.key_freqs, result.spectrum, result.progress,
                         result.snapshots, {"reused": reused})
