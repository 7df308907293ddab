"""Decoder-only Transformer that reads the answer at the last position (Power et al.; Nanda et al.).

Only the last position's output feeds the loss, so the final block computes queries, the MLP and
the unembedding for that one position (keys/values still see the whole sequence).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelCfg
from ..data.tasks import TaskData
from ..registry import ConfigError
from .base import MODELS, MemberModel
from .layers import (ACTIVATIONS, HookPoint, MDropout, MEmbedding, MLayerNorm, MLinear, MPositional, embed_std,
                     MSinusoidal)


# Below this length, attention as broadcast products beats SDPA and batched matmuls: the task
# sequences are 4-6 tokens, where thousands of 4x4 matmuls are all overhead. Measured on CPU
# (~4x) and on an H100 (nanda2023 solo 1 170 vs 534 steps/s with fused SDPA; 64 members 2 283
# vs 684 member-steps/s).
SHORT_SEQ = 16


def _use_broadcast(t: int) -> bool:
    return t <= SHORT_SEQ


def _short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                     hook: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh)) v for short sequences; q (B, Tq, H, dh), k/v (B, T, H, dh) -> (B, Tq, H, dh).

    Token-major layout throughout: the projections' outputs are used as they come (views), so
    neither direction copies a transposed tensor. `hook` sees the pattern as (B, H, Tq, T), a
    permuted view, and what it returns is used (a hook may edit the pattern).
    """
    scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) * q.shape[-1] ** -0.5   # (B, Tq, T, H)
    if causal:
        t = k.shape[1]
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask.unsqueeze(-1), float("-inf"))
    pattern = hook(torch.softmax(scores, dim=2).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # views, no copy
    return (pattern.unsqueeze(-1) * v.unsqueeze(1)).sum(2)


class Attention(nn.Module):
    """Multi-head attention with a leading member dimension.

    `hook_pattern` sees the attention pattern (softmax over keys) as (N, B, H, Tq, T): member,
    example, head, query position, key position; each row sums to 1 over T. Tq is 1 in the last
    block (only the answer position's query is computed). It is called on sequences of up to
    SHORT_SEQ tokens (every built-in task); longer ones go through fused SDPA, which never forms
    the pattern, and the hook is not called there.
    """

    def __init__(self, n: int, d_model: int, n_heads: int, causal: bool):
        super().__init__()
        self.n, self.n_heads, self.causal = n, n_heads, causal
        self.q = MLinear(n, d_model, d_model)
        self.kv = MLinear(n, d_model, 2 * d_model)
        self.o = MLinear(n, d_model, d_model)
        self.hook_pattern = HookPoint()

    def _pattern(self, pattern: torch.Tensor) -> torch.Tensor:
        # (N·B, H, Tq, T) -> the hook's (N, B, H, Tq, T) and back: views unless a hook replaces it.
        return self.hook_pattern(pattern.unflatten(0, (self.n, -1))).flatten(0, 1)

    def forward(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        n, b, t, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        q_in = x[:, :, -1:] if last_only else x
        tq = q_in.shape[2]
        q = self.q(q_in).view(n * b, tq, h, dh)
        # Keys and values as views of the projection's output: unbinding copies their gradients
        # back together once, where a transposed (B, H, T, dh) layout would copy each direction.
        k, v = self.kv(x).view(n * b, t, 2, h, dh).unbind(2)
        # The last query may attend to every key, so causality only matters for full queries.
        causal = self.causal and not last_only
        if _use_broadcast(t):
            out = _short_attention(q, k, v, causal, self._pattern)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=causal).transpose(1, 2)
        return self.o(out.reshape(n, b, tq, d))


class Block(nn.Module):
    """One decoder block. `model.norm` places its layer norms, `model.dropout_at` its dropout:

    pre:  x ← x + drop_a(attn(ln1(x))),  x ← x + drop_f(ffn(ln2(x)))
    post: x ← ln1(x + drop_a(attn(x))),  x ← ln2(x + drop_f(ffn(x)))

    drop_a is off (p = 0, no mask drawn) when dropout_at = "ffn".
    """

    def __init__(self, cfg: ModelCfg, n: int):
        super().__init__()
        d = cfg.d_model
        self.post = cfg.norm == "post"
        self.ln1 = MLayerNorm(n, d) if cfg.layer_norm else nn.Identity()
        self.attn = Attention(n, d, cfg.n_heads, cfg.causal)
        self.ln2 = MLayerNorm(n, d) if cfg.layer_norm else nn.Identity()
        self.fc_in = MLinear(n, d, cfg.d_mlp)
        self.fc_out = MLinear(n, cfg.d_mlp, d)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop_attn = MDropout(cfg.dropout if cfg.dropout_at == "all" else 0.0)
        self.drop = MDropout(cfg.dropout)
        self.hook_attn_out = HookPoint()
        self.hook_mlp_post = HookPoint()

    def forward(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        if self.post:
            a = self.hook_attn_out(self.attn(x, last_only))
            x = self.ln1((x[:, :, -1:] if last_only else x) + self.drop_attn(a))
            m = self.hook_mlp_post(self.act(self.fc_in(x)))
            return self.ln2(x + self.drop(self.fc_out(m)))
        a = self.hook_attn_out(self.attn(self.ln1(x), last_only))
        x = (x[:, :, -1:] if last_only else x) + self.drop_attn(a)
        m = self.hook_mlp_post(self.act(self.fc_in(self.ln2(x))))
        return x + self.drop(self.fc_out(m))


@MODELS.register("transformer", doc="decoder-only Transformer, answer read at the last position")
class Transformer(MemberModel):
    accepts = ("tokens",)
    width_field = "d_mlp"  # the widest hidden layer, for the sweep planner's memory estimate

    @staticmethod
    def validate(run_cfg) -> None:
        m = run_cfg.model
        if m.d_model % m.n_heads:
            raise ConfigError(f"model.d_model={m.d_model} must be divisible by model.n_heads={m.n_heads}")

    def __init__(self, cfg: ModelCfg, task: TaskData, n_members: int):
        super().__init__(cfg, task, n_members)
        n, d = n_members, cfg.d_model
        std = embed_std(cfg)
        self.embed = MEmbedding(n, task.vocab, d, std=std)
        if cfg.positions == "sinusoidal":
            self.pos = MSinusoidal(task.seq_len, d)
        else:
            self.pos = MPositional(n, task.seq_len, d, std=std)
        self.drop = MDropout(cfg.dropout if cfg.dropout_at == "all" else 0.0)
        self.blocks = nn.ModuleList(Block(cfg, n) for _ in range(cfg.n_layers))
        # Post-norm blocks end normalized; Power et al.'s decoder has no final norm.
        final_norm = cfg.layer_norm and cfg.norm == "pre"
        self.ln_f = MLayerNorm(n, d) if final_norm else nn.Identity()
        self.unembed = MLinear(n, d, task.n_out, bias=False)
        self.hook_embed = HookPoint()
        self.hook_resid_final = HookPoint()

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.hook_embed(self.pos(self.embed(tokens))))    # (N, B, T, d)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=i == last)                            # last block: (N, B, 1, d)
        x = self.hook_resid_final(self.ln_f(x[:, :, -1]))                 # (N, B, d)
        return self.unembed(x)                                            # (N, B, n_out)
