"""The task interface: a whole dataset as tensors, plus how a config splits it.

Every task (algorithmic or real) produces a :class:`TaskData` — all examples at once, so the
engine draws batches as index tensors on the device and evaluates every example in one pass —
and a seeded train/validation split from its own generator (never the init seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from ..config import DataCfg
from ..registry import TASKS  # noqa: F401  (re-exported: tasks register here)


@dataclass(frozen=True)
class TaskData:
    """All examples of a task. Token tasks: x (M, T) long; feature tasks: x (M, F) float."""

    x: torch.Tensor
    y: torch.Tensor                  # (M,) long class ids, or (M,) float targets when regression
    n_out: int                       # width of the model's output
    inputs: Literal["tokens", "features"]
    vocab: int = 0                   # token vocabulary (tokens)
    operand_pos: tuple[int, ...] = ()  # positions of the operands in a token sequence (MLP input)
    regression: bool = False
    token_names: tuple[str, ...] = ()

    @property
    def seq_len(self) -> int:
        return self.x.shape[1] if self.inputs == "tokens" else 0

    @property
    def n_features(self) -> int:
        return self.x.shape[1] if self.inputs == "features" else 0

    def to(self, device: torch.device | str) -> "TaskData":
        from dataclasses import replace
        return replace(self, x=self.x.to(device), y=self.y.to(device))


class Task(Protocol):
    """What a registered task provides (`@TASKS.register(name)` on a class; docs/extending.md).

    Optional: `validate(run_cfg)` (a staticmethod raising ConfigError: rules that need the task,
    run at config validation) and `shared_fields` (member fields that ensemble members of this
    task must share, e.g. ``("data.split_seed",)`` when preprocessing reads the training rows).
    """

    inputs: str  # "tokens" or "features": which models can take it (`MemberModel.accepts`)

    def build(self, cfg: DataCfg) -> TaskData: ...

    def split(self, cfg: DataCfg, data: TaskData) -> tuple[torch.Tensor, torch.Tensor]: ...


def fraction_split(n: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle 0..n-1 with the split's own generator; the first round(frac·n) train."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_train = max(1, min(n - 1, round(frac * n)))
    return perm[:n_train].sort().values, perm[n_train:].sort().values


def subset(train_idx: torch.Tensor, frac: float, seed: int) -> torch.Tensor:
    """A seeded random subset (fraction `frac`) of a training index set (ungrokking phases)."""
    keep, _ = fraction_split(len(train_idx), frac, seed) if frac < 1 else (torch.arange(len(train_idx)), None)
    return train_idx[keep]


def noisy_labels(y: torch.Tensor, train_idx: torch.Tensor, frac: float, n_classes: int,
                 seed: int) -> torch.Tensor:
    """Replace a fraction of the training labels with random classes (fixed per seed)."""
    if frac <= 0:
        return y
    gen = torch.Generator().manual_seed(seed + 7919)  # distinct stream from the split's
    n_noisy = round(frac * len(train_idx))
    which = train_idx[torch.randperm(len(train_idx), generator=gen)[:n_noisy]]
    out = y.clone()
    out[which] = torch.randint(0, n_classes, (n_noisy,), generator=gen)
    return out

