"""Recurrent networks (vanilla RNN, GRU, LSTM) that read the answer from the final hidden state.

The RNN/LSTM study and the reproduction study train these on the token sequences of
`data/algorithmic.py` (``op``, ``seq`` and k-wise formats alike), e.g.::

    groklab run lstm-add97 --set train.steps=20000

nn.RNN/GRU/LSTM cannot hold a member dimension, so the cells are written out here with PyTorch's
gate layouts (LSTM: i, f, g, o; GRU: r, z, n) and init (every weight and bias uniform in
±1/sqrt(d_hidden)). Each layer projects the whole input sequence in one batched matmul
(N, T·B, d) @ (N, d, G·h); only h @ W_hh stays inside the time loop. Weights are stored as
(N, d_in, G·h), the transpose of nn.LSTM's (G·h, d_in) per member. Activations run time-major,
(N, T, B, ·), so each member's (B, ·) block of a time step is contiguous; the hooks see them so.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ..config import ModelCfg
from ..data.tasks import TaskData
from ..registry import ConfigError
from .base import MODELS, MemberModel
from .layers import Gens, HookPoint, MDropout, MEmbedding, MLayerNorm, MLinear, _fill_uniform, embed_std

RNN_ACTIVATIONS = ("tanh", "relu")

# Members per chunk of the time loop: a chunk's gate tensor (members·B·G·h floats) stays near this
# size, so each step's elementwise chain runs in cache. Without it an 8-member lstm-add97 ran at
# ~0.65x the member-steps/s of solo runs on CPU (8 MB gate tensors); small members still share
# one chunk, keeping the kernel count of one run.
CHUNK_FLOATS = 1 << 18


class RecurrentLayer(nn.Module):
    """One recurrent layer of N members; subclasses define the cell (`gates`, `cell`).

    Parameters (PyTorch's names, transposed per member): weight_ih (N, d_in, G·h),
    weight_hh (N, h, G·h), bias_ih and bias_hh (N, 1, G·h).
    """

    gates: ClassVar[int] = 1
    fold_hh_bias: ClassVar[bool] = True  # b_hh may join b_ih outside the loop (not for the GRU)

    def __init__(self, n: int, d_in: int, d_hidden: int):
        super().__init__()
        g = self.gates * d_hidden
        self.d_hidden = d_hidden
        self.weight_ih = nn.Parameter(torch.empty(n, d_in, g))
        self.weight_hh = nn.Parameter(torch.empty(n, d_hidden, g))
        self.bias_ih = nn.Parameter(torch.empty(n, 1, g))
        self.bias_hh = nn.Parameter(torch.empty(n, 1, g))
        self.hook_out = HookPoint()

    def reset(self, gens: Gens) -> None:
        bound = 1.0 / math.sqrt(self.d_hidden)  # nn.RNNBase.reset_parameters
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            _fill_uniform(p, bound, gens)

    def forward(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        """x (N, T, B, d_in) → outputs (N, T, B, h), or only the final state (N, B, h)."""
        n, _, b, _ = x.shape
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        size = max(1, CHUNK_FLOATS // (b * self.weight_hh.shape[-1]))
        if size >= n:
            out = self._sequence(x, *params, last_only)
        else:
            # split, not indexing: the parameters' backward is then one cat, not a zero-fill per chunk.
            parts = zip(x.split(size), *(p.split(size) for p in params))
            out = torch.cat([self._sequence(*part, last_only) for part in parts])
        return out if last_only else self.hook_out(out)

    def _sequence(self, x, w_ih, w_hh, b_ih, b_hh, last_only: bool) -> torch.Tensor:
        n, t, b, d = x.shape
        bias = b_ih + b_hh if self.fold_hh_bias else b_ih
        # All time steps' input projections in one batched matmul.
        xp = torch.baddbmm(bias, x.reshape(n, t * b, d), w_ih).view(n, t, b, -1)       # (N, T, B, G·h)
        state = None
        outs = []
        # unbind rather than indexing: its backward is one stack, where each indexed slice's
        # backward would zero-fill a tensor of the whole size.
        for xp_t in xp.unbind(1):
            h, state = self.cell(xp_t, state, w_hh, b_hh)                              # (N, B, h)
            if not last_only:
                outs.append(h)
        return h if last_only else torch.stack(outs, dim=1)

    def cell(self, xp: torch.Tensor, state, w_hh: torch.Tensor, b_hh: torch.Tensor):
        """One step from the input projection xp (N, B, G·h) and the previous state (None at t=0)."""
        raise NotImplementedError


class RNNLayer(RecurrentLayer):
    """h' = act(x W_ih + b_ih + h W_hh + b_hh) (nn.RNN)."""

    def __init__(self, n: int, d_in: int, d_hidden: int, activation: str):
        super().__init__(n, d_in, d_hidden)
        self.act = torch.tanh if activation == "tanh" else torch.relu

    def cell(self, xp, h, w_hh, b_hh):
        # The initial state is zero, so step 0 needs no recurrent matmul.
        pre = xp if h is None else torch.baddbmm(xp, h, w_hh)
        h = self.act(pre)
        return h, h


class LSTMLayer(RecurrentLayer):
    """nn.LSTM's cell, gates i, f, g, o; the state is (h, c)."""

    gates = 4

    def cell(self, xp, state, w_hh, b_hh):
        k = self.d_hidden
        pre = xp if state is None else torch.baddbmm(xp, state[0], w_hh)  # (N, B, 4h)
        i_f, g, o = pre.split([2 * k, k, k], dim=-1)
        i, f = torch.sigmoid(i_f).chunk(2, dim=-1)
        g, o = torch.tanh(g), torch.sigmoid(o)
        c = i * g if state is None else torch.addcmul(i * g, f, state[1])
        h = o * torch.tanh(c)
        return h, (h, c)


class GRULayer(RecurrentLayer):
    """nn.GRU's cell, gates r, z, n: n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))."""

    gates = 3
    fold_hh_bias = False  # b_hn sits inside r ⊙ (·)

    def cell(self, xp, h, w_hh, b_hh):
        k = self.d_hidden
        hp = b_hh if h is None else torch.baddbmm(b_hh, h, w_hh)  # (N, B|1, 3h)
        x_rz, x_n = xp.split([2 * k, k], dim=-1)
        h_rz, h_n = hp.split([2 * k, k], dim=-1)
        r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)
        cand = torch.tanh(torch.addcmul(x_n, r, h_n))
        h = (1 - z) * cand if h is None else torch.lerp(cand, h, z)  # (1 - z) n + z h
        return h, h


class _Recurrent(MemberModel):
    """Embedding → n_layers recurrent layers → final hidden state → linear head.

    Dropout acts between layers (as nn.LSTM's `dropout`); layer norm, when on, normalizes each
    layer's outputs (the last layer's final state only, which is all the head reads).
    """

    accepts = ("tokens",)

    def __init__(self, cfg: ModelCfg, task: TaskData, n_members: int):
        super().__init__(cfg, task, n_members)
        self.check_config(cfg)
        n, h = n_members, cfg.d_hidden
        self.embed = MEmbedding(n, task.vocab, cfg.d_model, std=embed_std(cfg))
        widths = [cfg.d_model] + [h] * cfg.n_layers
        self.layers = nn.ModuleList(self.make_layer(cfg, n, a, h) for a in widths[:-1])
        self.norms = nn.ModuleList(MLayerNorm(n, h) if cfg.layer_norm else nn.Identity()
                                   for _ in range(cfg.n_layers))
        self.drop = MDropout(cfg.dropout)
        self.head = MLinear(n, h, task.n_out)
        self.hook_embed = HookPoint()
        self.hook_hidden = HookPoint()

    @classmethod
    def validate(cls, run_cfg) -> None:
        """Config-boundary check (config validation calls it): settings this architecture cannot honour."""
        cls.check_config(run_cfg.model)

    @staticmethod
    def check_config(cfg: ModelCfg) -> None:
        """Raise ConfigError for settings this architecture cannot honour."""

    @staticmethod
    def make_layer(cfg: ModelCfg, n: int, d_in: int, d_hidden: int) -> RecurrentLayer:
        raise NotImplementedError

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.hook_embed(self.embed(tokens.transpose(1, 2)))              # (N, T, B, d)
        last = len(self.layers) - 1
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            out = norm(layer(x, last_only=i == last))                         # (N, T, B, h); last: (N, B, h)
            if i < last:
                x = self.drop(out, batch_dim=2)  # time-major (N, T, B, h)
        return self.head(self.hook_hidden(out))                               # (N, B, n_out)


@MODELS.register("rnn", doc="vanilla RNN (tanh or relu), answer from the final hidden state")
class RNN(_Recurrent):
    @staticmethod
    def check_config(cfg: ModelCfg) -> None:
        if cfg.activation not in RNN_ACTIVATIONS:
            raise ConfigError(f"model.activation={cfg.activation!r} must be one of "
                              f"{', '.join(map(repr, RNN_ACTIVATIONS))} for model.name='rnn'")

    @staticmethod
    def make_layer(cfg, n, d_in, d_hidden):
        return RNNLayer(n, d_in, d_hidden, cfg.activation)


@MODELS.register("gru", doc="GRU (PyTorch gate layout), answer from the final hidden state")
class GRU(_Recurrent):
    @staticmethod
    def make_layer(cfg, n, d_in, d_hidden):
        return GRULayer(n, d_in, d_hidden)


@MODELS.register("lstm", doc="LSTM (PyTorch gate layout), answer from the final hidden state")
class LSTM(_Recurrent):
    @staticmethod
    def make_layer(cfg, n, d_in, d_hidden):
        return LSTMLayer(n, d_in, d_hidden)
