"""One optimizer for N members at once, over a flat (N, P) parameter buffer.

All of a model's parameters are re-pointed into one (N, P) tensor (and their gradients into a
second), so an update is a handful of kernels whatever the number of layers, and every
per-member hyper-parameter (lr, weight decay, noise scale, Grokfast λ) is an (N, 1) column.
The order of operations on a step, between backward and the next forward:

1. coupled L2 (wd_kind = l2, which a phase may switch on or off) adds λ·w to the gradient;
2-4. the gradient transforms `cfg` turns on, in the order of their registry
   (`interventions.GRAD_TRANSFORMS`): Grokfast (EMA / MA) amplifies the slow component; ⊥Grad
   removes the component parallel to each weight tensor; per-member clipping;
5. the Adam(W) / SGD update, scaled by each member's lr;
6. decoupled decay toward 0 or toward the initial weights;
7. Gaussian update noise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import OptimCfg
from .interventions import grad_transforms, member_dims


# Member slices of the flat buffer are strided views by design; autograd still accumulates into them
# in place (tested), it only warns that the layout is not the one it would have picked.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class FlatParams:
    """Re-points every parameter of `model` (leading dim N) into one (N, P) buffer."""

    def __init__(self, model: nn.Module, n: int):
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        self.slices: list[slice] = []
        params = list(model.named_parameters())
        off = 0
        for name, p in params:
            k = p.numel() // n
            self.names.append(name)
            self.shapes.append(p.shape)
            self.slices.append(slice(off, off + k))
            off += k
        self.data = torch.cat([p.detach().reshape(n, -1) for _, p in params], dim=1)
        self.grad = torch.zeros_like(self.data)
        for (name, p), sl in zip(params, self.slices):
            # Splitting the contiguous last dim of a (N, P) slice is a valid view.
            p.data = self.data[:, sl].view(p.shape)
            p.grad = self.grad[:, sl].view(p.shape)  # autograd accumulates in place

    def zero_grad(self) -> None:
        self.grad.zero_()


@dataclass
class MemberHParams:
    """Per-member hyper-parameters as (N, 1) columns (changed by phases and schedules)."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    update_noise: torch.Tensor
    weight_noise: torch.Tensor
    active: torch.Tensor  # 1.0 while a member trains; 0.0 once stopped or diverged
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    """The gradient transforms' own columns, by config field (`GradTransform.columns`)."""

    def select(self, pos: torch.Tensor) -> MemberHParams:
        """The rows of the members at `pos` (members leaving the batched model)."""
        return MemberHParams(self.lr[pos], self.weight_decay[pos], self.update_noise[pos], self.weight_noise[pos],
                             self.active[pos], {k: v[pos] for k, v in self.columns.items()})


class MemberOptimizer:
    """Adam / AdamW / SGD with the interventions above, vectorized over members."""

    def __init__(self, flat: FlatParams, cfg: OptimCfg, noise_gens: list[torch.Generator], update_noise: bool = False):
        self.flat, self.cfg = flat, cfg
        self.step_count = 0
        data = flat.data
        self.m = torch.zeros_like(data)
        self.v = torch.zeros_like(data) if cfg.name != "sgd" else None
        self.init = data.clone()  # for decay toward init
        self.transforms = grad_transforms(cfg, data)
        self.noise_gens = noise_gens
        self.decay_kind = cfg.decay_kind
        self.update_noise = update_noise
        # Steps taken, on the device: bias corrections read it there, so a step needs no host
        # value and can be captured in a CUDA graph (float64: exact for any realistic count).
        self.t = torch.zeros((), dtype=torch.float64, device=data.device)

    # 1-7 as in the module docstring
    def step(self, hp: MemberHParams) -> None:
        cfg, w, g = self.cfg, self.flat.data, self.flat.grad
        self.step_count += 1  # host copy for transforms that are not graphable (Grokfast-MA's ring)
        self.t += 1
        if self.decay_kind == "l2":
            g.addcmul_(hp.weight_decay, w)
        for transform in self.transforms:
            transform(g, w, hp, self.step_count, self.flat.slices)
        lr = hp.lr * hp.active
        if cfg.name == "sgd":
            if cfg.momentum > 0:
                self.m.mul_(cfg.momentum).add_(g)
                update = self.m
            else:
                update = g
        else:
            b1, b2 = cfg.betas
            self.m.lerp_(g, 1 - b1)
            self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.v.sqrt() / torch.sqrt(1 - b2 ** self.t).float()).add_(cfg.eps)
            update = self.m / denom
            lr = lr / (1 - b1 ** self.t).float()
        if self.decay_kind == "decoupled":
            w.mul_(1 - hp.lr * hp.active * hp.weight_decay)
        elif self.decay_kind == "to_init":
            w.sub_(hp.lr * hp.active * hp.weight_decay * (w - self.init))
        w.sub_(lr * update)
        if self.update_noise:
            w.add_(self.noise(hp.update_noise * hp.active))

    def noise(self, scale: torch.Tensor) -> torch.Tensor:
        """Gaussian noise (N, P), member i's drawn from its own generator (member == solo)."""
        p = self.flat.data.shape[1]
        # CPU generators: the same stream on every device (one host draw per member and step).
        eps = torch.stack([torch.randn(p, generator=gen) for gen in self.noise_gens])
        return eps.to(self.flat.data, non_blocking=True) * scale

    def state(self) -> dict[str, torch.Tensor]:
        out = {"opt.m": self.m, "opt.init": self.init,
               "opt.step": self.t.to(torch.int64).view(1)}
        if self.v is not None:
            out["opt.v"] = self.v
        for transform in self.transforms:
            out.update(transform.state())
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.m.copy_(state["opt.m"])
        self.init.copy_(state["opt.init"])
        self.step_count = int(state["opt.step"][0])
        self.t.fill_(self.step_count)
        if self.v is not None:
            self.v.copy_(state["opt.v"])
        for transform in self.transforms:
            for key, buf in transform.state().items():
                buf.copy_(state[key])


def member_dim(key: str) -> int | None:
    """The dim of a checkpoint tensor (`params`, `MemberOptimizer.state`) that indexes members;
    None for state all members share."""
    return {"opt.step": None, **member_dims()}.get(key, 0)


def merge_rows(ledger: dict[str, torch.Tensor], pos: torch.Tensor, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """New tensors: `ledger`'s with the members at positions `pos` replaced by `rows` (state all
    members share is taken from `rows`); the inverse of `member_rows`."""
    return {k: v if (d := member_dim(k)) is None else ledger[k].index_copy(d, pos, v) for k, v in rows.items()}


def member_rows(state: dict[str, torch.Tensor], pos: torch.Tensor) -> dict[str, torch.Tensor]:
    """The members at positions `pos` of every tensor in `state`."""
    return {k: v if (d := member_dim(k)) is None else v.index_select(d, pos) for k, v in state.items()}
