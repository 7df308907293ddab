"""Loss registry. Each loss maps outputs (N, B, C) and targets (N, B) to per-example losses (N, B).

The engine averages with per-example weights, so padded or masked examples cost nothing.
Regression targets (float y) use the output's single column.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..config import loss_fields
from ..registry import LOSSES, ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Losses that normalize the logits themselves (softmax / StableMax): an output head in front of
# them (model.output = sigmoid or softmax) would normalize twice, so config validation rejects it.
NORMALIZING = frozenset({"ce", "ce64", "mse", "stablemax"})


@LOSSES.cross_check
def _no_head_before_normalizing(run_cfg) -> None:
    output = run_cfg.model.output
    if output == "linear":
        return
    for path, loss in loss_fields(run_cfg):
        if loss in NORMALIZING:
            raise ConfigError(
                f"model.output={output!r} cannot feed {path}={loss!r}, which normalizes the logits itself; use "
                f"model.output='linear' or {path}='mse_linear' (MSE between the head's outputs and one-hot targets)")


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    n, b, c = out.shape
    return F.cross_entropy(out.reshape(n * b, c), y.reshape(-1), reduction="none").view(n, b)


def _onehot(y: torch.Tensor, c: int, like: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, c).to(like.dtype)


@LOSSES.register("ce", doc="cross-entropy, float32")
def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ce(out, y)


@LOSSES.register("ce64", doc="cross-entropy accumulated in float64 (avoids softmax collapse)")
def cross_entropy64(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ce(out.double(), y).to(out.dtype)


@LOSSES.register("mse", doc="MSE between softmax probabilities and one-hot targets (sum over classes)")
def mse_softmax(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():
        return (out[..., 0] - y) ** 2
    prob = torch.softmax(out, dim=-1)
    return (prob - _onehot(y, out.shape[-1], prob)).square().sum(-1)


@LOSSES.register("mse_linear", doc="MSE between raw outputs and one-hot targets (Omnigrok), sum over classes")
def mse_linear(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if y.is_floating_point():
        return (out[..., 0] - y) ** 2
    return (out - _onehot(y, out.shape[-1], out)).square().sum(-1)


def stablemax_s(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) otherwise (Prieto et al. 2025)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - torch.clamp(x, max=0)))


@LOSSES.register("stablemax", doc="StableMax cross-entropy (Prieto et al. 2025), float64")
def stablemax_ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    s = stablemax_s(out.double())
    prob = s / s.sum(-1, keepdim=True)
    return -torch.log(prob.gather(-1, y.unsqueeze(-1)).squeeze(-1)).to(out.dtype)


def correct(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example correctness (N, B): argmax for classes, rounding for regression targets."""
    if y.is_floating_point():
        return (out[..., 0].round() == y.round()).float()
    return (out.argmax(-1) == y).float()
