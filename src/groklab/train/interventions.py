"""Interventions: every knob the grokking literature turns, as configuration.

Each entry names its config fields, default and source; `groklab interventions` prints them.
The gradient transforms live here as pure functions on (N, P) member-by-parameter tensors, so
their math is testable on known sequences and the optimizer only sequences them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import MEMBER_FIELDS
from ..registry import Registry


@dataclass(frozen=True)
class Intervention:
    fields: tuple[str, ...]
    """The config fields that turn it (`field=value` where one value of a field selects it)."""
    default: str
    source: str

    @property
    def member_fields(self) -> tuple[str, ...]:
        """Its fields that members of one vectorized ensemble may set differently (from
        `config.MEMBER_FIELDS`, the one list of them)."""
        return tuple(f for f in (x.split("=")[0] for x in self.fields) if f in MEMBER_FIELDS)


INTERVENTIONS: Registry[Intervention] = Registry("intervention", "intervention")


def _reg(name: str, doc: str, fields: tuple[str, ...], default: str, source: str) -> None:
    INTERVENTIONS.register(name, doc=doc)(Intervention(fields, default, source))


_reg("weight decay to zero", "decoupled decay w ← w − lr·λ·w", ("optim.weight_decay", "optim.wd_kind=decoupled"),
     "λ = 0", "Loshchilov & Hutter 2019; Power et al. 2022")
_reg("weight decay to init", "decoupled decay toward the initial weights w ← w − lr·λ·(w − w0)",
     ("optim.weight_decay", "optim.wd_kind=to_init"), "off", "Power et al. 2022 (to_init)")
_reg("L2 in the loss", "coupled λ/2·||w||² (gradient += λ·w)", ("optim.weight_decay", "optim.wd_kind=l2"),
     "auto for adam/sgd", "the RNN/LSTM study, eq. 2")
_reg("dropout", "dropout on residual/hidden activations, between recurrent layers", ("model.dropout",), "0",
     "Srivastava et al. 2014; the mystery study")
_reg("update noise", "Gaussian noise of std σ added to every parameter after each update",
     ("optim.update_noise",), "0", "Neelakantan et al. 2015; the mystery study")
_reg("weight noise", "Gaussian noise of std σ on the weights for each forward/backward pass",
     ("optim.weight_noise",), "0", "the mystery study fig. 4")
_reg("label noise", "a fraction of training labels replaced by random classes, fixed per split seed",
     ("data.label_noise",), "0", "common robustness probe")
_reg("phases", "late weight decay, wd removal, lr/loss changes, ungrokking subsets from a step on",
     ("train.phases",), "none", "the RNN/LSTM study; the mystery study §5.3")
_reg("lr schedule", "linear warm-up then constant, cosine or step decay",
     ("optim.warmup_steps", "optim.schedule", "optim.min_lr_ratio", "optim.step_every", "optim.step_gamma"),
     "constant", "Power et al. 2022 (warm-up)")
_reg("losses", "cross-entropy (f32/f64), MSE on softmax, MSE on outputs, StableMax", ("train.loss",), "ce",
     "the mystery study; Omnigrok (Liu et al. 2023); Prieto et al. 2025")
_reg("grokfast", "amplify the slow gradient component: EMA (α, λ) or moving average (window, λ)",
     ("optim.grokfast", "optim.grokfast_alpha", "optim.grokfast_lamb", "optim.grokfast_window"), "none",
     "Lee et al. 2024, Grokfast")
_reg("orthograd", "⊥Grad: drop the gradient component parallel to each weight tensor, keep its norm",
     ("optim.orthograd",), "off", "Prieto et al. 2025")
_reg("gradient clipping", "clip each member's gradient norm", ("optim.grad_clip",), "0 (off)", "standard")
_reg("SGD momentum", "heavy-ball momentum for optim.name=sgd", ("optim.momentum",), "0", "standard")
_reg("init scale", "multiply initial weights by α", ("model.init_scale",), "1", "Omnigrok (Liu et al. 2023)")
_reg("logit scale", "multiply output logits by a constant", ("model.logit_scale",), "1",
     "Prieto et al. 2025 (softmax collapse)")
_reg("batch size", "minibatch size or full batch", ("train.batch_size",), "512", "the mystery study fig. 4")


def grokfast_ema(grad: torch.Tensor, ema: torch.Tensor, alpha: torch.Tensor | float,
                 lamb: torch.Tensor | float) -> None:
    """In place: h ← α·h + (1 − α)·g, then g ← g + λ·h (Grokfast-EMA, Lee et al. 2024, alg. 2)."""
    ema.mul_(alpha).add_((1 - alpha) * grad)
    grad.add_(lamb * ema)


def grokfast_ma(grad: torch.Tensor, window: torch.Tensor, t: int, lamb: torch.Tensor | float) -> None:
    """In place, at step t (1-based): store g in a ring of W past gradients; once W are stored,
    g ← g + λ·mean(ring) (Grokfast-MA, Lee et al. 2024, alg. 1)."""
    size = window.shape[0]
    window[(t - 1) % size].copy_(grad)
    if t >= size:
        # Summed slot by slot, not window.mean(0): torch's reduction over the leading dim picks its
        # order by the tensor's width, so a member's sum would depend on the ensemble's size.
        total = window[0].clone()
        for k in range(1, size):
            total.add_(window[k])
        grad.add_(lamb * (total / size))


def orthogonal_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """⊥Grad for rows of (N, K): g⊥ = g − (w·g / w·w)·w, rescaled to |g| (Prieto et al. 2025)."""
    proj = (weight * grad).sum(-1, keepdim=True) / ((weight * weight).sum(-1, keepdim=True) + 1e-30)
    orth = grad - proj * weight
    return orth * (grad.norm(dim=-1, keepdim=True) / (orth.norm(dim=-1, keepdim=True) + 1e-30))
