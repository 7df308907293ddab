"""Interventions: every knob the grokking literature turns, as configuration.

Each entry names its config fields, default and source; `groklab interventions` prints them.
The gradient transforms live here whole: their math as pure functions on (N, P)
member-by-parameter tensors (testable on known sequences), and each as a :class:`GradTransform`
that says when it is on, which per-member columns it reads and what state it keeps, registered in
`GRAD_TRANSFORMS` in the order the optimizer's step applies them. A new one is its fields in
`config.OptimCfg` (and `config.MEMBER_FIELDS` for those members may set differently) plus an
entry and a class here: the engine, the optimizer and the checkpoint take it from the registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Mapping, Sequence

import torch

from ..config import MEMBER_FIELDS, OptimCfg
from ..registry import Registry

if TYPE_CHECKING:
    from .optim import MemberHParams


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


# ---------------------------------------------------------------- gradient transforms

class GradTransform:
    """One transform of the (N, P) gradient between backward and the update (`train/optim.py`),
    for all members at once. The class says when it is on (`wanted`), the per-member fields it
    reads (`columns`: `hp.columns[field]` is an (N, 1) column, built by the engine), its state
    (`buffers`: checkpoint key → the dim that indexes members) and whether a CUDA graph can replay
    it (`graphable`: False when a step needs host values)."""

    columns: ClassVar[tuple[str, ...]] = ()
    buffers: ClassVar[Mapping[str, int]] = {}
    graphable: ClassVar[bool] = True

    def __init__(self, cfg: OptimCfg, data: torch.Tensor):
        self.cfg = cfg

    @staticmethod
    def wanted(cfg: OptimCfg) -> bool:
        raise NotImplementedError

    def __call__(self, g: torch.Tensor, w: torch.Tensor, hp: MemberHParams, t: int,
                 slices: Sequence[slice]) -> None:
        """Transform `g` in place at step t (1-based); `w` the weights, `slices` each weight
        tensor's columns of the flat buffer."""
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """The buffers by their checkpoint keys (those of `buffers`)."""
        return {}


GRAD_TRANSFORMS: Registry[type[GradTransform]] = Registry("gradient transform", "gradient transform")
"""Registered in the order a step applies them (the order of this file)."""


@GRAD_TRANSFORMS.register("grokfast_ema")
class GrokfastEMA(GradTransform):
    """Step 2: Grokfast-EMA amplifies the slow gradient component (:func:`grokfast_ema`)."""

    columns = ("optim.grokfast_alpha", "optim.grokfast_lamb")
    buffers = {"opt.grokfast_ema": 0}

    def __init__(self, cfg: OptimCfg, data: torch.Tensor):
        super().__init__(cfg, data)
        self.ema = torch.zeros_like(data)

    @staticmethod
    def wanted(cfg: OptimCfg) -> bool:
        return cfg.grokfast == "ema"

    def __call__(self, g, w, hp, t, slices) -> None:
        grokfast_ema(g, self.ema, hp.columns["optim.grokfast_alpha"], hp.columns["optim.grokfast_lamb"])

    def state(self) -> dict[str, torch.Tensor]:
        return {"opt.grokfast_ema": self.ema}


@GRAD_TRANSFORMS.register("grokfast_ma")
class GrokfastMA(GradTransform):
    """Step 2: Grokfast-MA, the moving average of the last W gradients (:func:`grokfast_ma`). Its
    ring position is a host counter, so a CUDA graph cannot replay it."""

    columns = ("optim.grokfast_lamb",)
    buffers = {"opt.grokfast_window": 1}  # (W, N, P): members on dim 1
    graphable = False

    def __init__(self, cfg: OptimCfg, data: torch.Tensor):
        super().__init__(cfg, data)
        self.window = torch.zeros((cfg.grokfast_window,) + tuple(data.shape), dtype=data.dtype, device=data.device)

    @staticmethod
    def wanted(cfg: OptimCfg) -> bool:
        return cfg.grokfast == "ma"

    def __call__(self, g, w, hp, t, slices) -> None:
        grokfast_ma(g, self.window, t, hp.columns["optim.grokfast_lamb"])

    def state(self) -> dict[str, torch.Tensor]:
        return {"opt.grokfast_window": self.window}


@GRAD_TRANSFORMS.register("orthograd")
class OrthoGrad(GradTransform):
    """Step 3: ⊥Grad per weight tensor, as in the paper's implementation (:func:`orthogonal_grad`)."""

    @staticmethod
    def wanted(cfg: OptimCfg) -> bool:
        return cfg.orthograd

    def __call__(self, g, w, hp, t, slices) -> None:
        for sl in slices:
            g[:, sl] = orthogonal_grad(g[:, sl], w[:, sl])


@GRAD_TRANSFORMS.register("grad_clip")
class GradClip(GradTransform):
    """Step 4: each member's gradient clipped to norm `optim.grad_clip`."""

    @staticmethod
    def wanted(cfg: OptimCfg) -> bool:
        return cfg.grad_clip > 0

    def __call__(self, g, w, hp, t, slices) -> None:
        norm = g.norm(dim=1, keepdim=True)
        g.mul_(torch.clamp(self.cfg.grad_clip / (norm + 1e-6), max=1.0))


def grad_transforms(cfg: OptimCfg, data: torch.Tensor) -> list[GradTransform]:
    """The transforms `cfg` turns on, in step order, with their state shaped like `data`."""
    return [cls(cfg, data) for cls in map(GRAD_TRANSFORMS.get, GRAD_TRANSFORMS) if cls.wanted(cfg)]


def member_dims() -> dict[str, int]:
    """Every transform's checkpoint keys → the dim that indexes members."""
    return {k: d for name in GRAD_TRANSFORMS for k, d in GRAD_TRANSFORMS.get(name).buffers.items()}
