"""Layers with a leading member dimension: N independent networks computed as one.

Every parameter is (N, ...) and every activation (N, B, ...). Matmuls become batched matmuls,
attention runs over a merged (N·B) batch, so an ensemble of N members costs one set of kernels,
and N = 1 costs the same as a plain layer. (torch.func.vmap was measured slower than sequential
runs on CPU and blew up memory through attention; this layout avoids both.)

Initialization draws each member's values from that member's own (CPU) generator in a fixed
module order, so member i of an ensemble starts exactly like a solo run with member i's seed, on
any device (the engine initializes on the CPU, then moves the model). Dropout masks come from
counter-based hashes of (member, step, site, position) — see `groklab.rng` — for the same reason.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import DROPOUT, keep_mask, member_keys

Gens = list[torch.Generator]


def _fill_uniform(p: torch.Tensor, bound: float, gens: Gens) -> None:
    for i, g in enumerate(gens):
        p.data[i].uniform_(-bound, bound, generator=g)


def _fill_normal(p: torch.Tensor, std: float, gens: Gens) -> None:
    for i, g in enumerate(gens):
        p.data[i].normal_(0.0, std, generator=g)


class HookPoint(nn.Module):
    """Identity module marking an activation for analysis hooks (TransformerLens-style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class MLinear(nn.Module):
    """y = x W + b per member. weight (N, d_in, d_out); x (N, ..., d_in)."""

    def __init__(self, n: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n, 1, d_out)) if bias else None

    def reset(self, gens: Gens) -> None:
        bound = 1.0 / math.sqrt(self.d_in)  # nn.Linear's default bound
        _fill_uniform(self.weight, bound, gens)
        if self.bias is not None:
            _fill_uniform(self.bias, bound, gens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(shape[0], -1, shape[-1])  # (N, rows, d_in)
        out = torch.bmm(x2, self.weight) if self.bias is None else torch.baddbmm(self.bias, x2, self.weight)
        return out.view(*shape[:-1], self.d_out)


def embed_std(cfg) -> float | None:
    """Token-embedding std for `model.init`: None (the layer's N(0, 1/d)) or nn.Embedding's 1."""
    return 1.0 if cfg.init == "torch" else None


class MEmbedding(nn.Module):
    """Token embedding per member: weight (N, V, d); tokens (N, ...) → (N, ..., d)."""

    def __init__(self, n: int, vocab: int, d: int, std: float | None = None):
        super().__init__()
        self.vocab = vocab
        self.std = 1.0 / math.sqrt(d) if std is None else std  # None: N(0, 1/d); nn.Embedding: 1
        self.weight = nn.Parameter(torch.empty(n, vocab, d))

    def reset(self, gens: Gens) -> None:
        _fill_normal(self.weight, self.std, gens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        member = torch.arange(n, device=tokens.device).view(n, *[1] * (tokens.dim() - 1))
        if not self.weight.is_contiguous():
            # Members' tables are strided slices of the flat parameter buffer: index per member.
            return self.weight[member, tokens]
        # Offset each member's ids into one flat (N·V, d) table: a single gather for all members.
        return F.embedding(tokens + member * self.vocab, self.weight.view(-1, self.weight.shape[-1]))


class MPositional(nn.Module):
    """Learned positional embedding per member: (N, T, d), added to (N, B, T, d)."""

    def __init__(self, n: int, seq_len: int, d: int, std: float | None = None):
        super().__init__()
        self.std = 1.0 / math.sqrt(d) if std is None else std
        self.weight = nn.Parameter(torch.empty(n, seq_len, d))

    def reset(self, gens: Gens) -> None:
        _fill_normal(self.weight, self.std, gens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight.unsqueeze(1)


class MSinusoidal(nn.Module):
    """Fixed sinusoidal positions (Vaswani et al.): pe[t, 2i] = sin(t / 10000^(2i/d)), pe[t, 2i+1] =
    cos(...), the same for every member, added to (N, B, T, d). A buffer, not a parameter: it draws
    nothing at init, is not decayed or trained, and is not checkpointed (it is recomputed)."""

    def __init__(self, seq_len: int, d: int):
        super().__init__()
        t = torch.arange(seq_len, dtype=torch.float64).unsqueeze(1)
        freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float64) * (-math.log(10000.0) / d))
        pe = torch.zeros(seq_len, d, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(t * freq)
        pe[:, 1::2] = torch.cos(t * freq)[:, : d // 2]
        self.register_buffer("pe", pe.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe.to(x.dtype)


class MLayerNorm(nn.Module):
    """LayerNorm over the last dim with per-member affine parameters."""

    is_norm = True

    def __init__(self, n: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n, d))
        self.bias = nn.Parameter(torch.zeros(n, d))

    def reset(self, gens: Gens) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d = self.weight.shape
        view = (n,) + (1,) * (x.dim() - 2) + (d,)
        return torch.addcmul(self.bias.view(view), F.layer_norm(x, (d,)), self.weight.view(view))


class DropoutStream:
    """Shared by a model's dropout layers: member keys, the step counter and the call site.

    The engine binds one per run (`MemberModel.bind_dropout`); the model resets `site` at each
    forward, so the k-th dropout call of a step draws the k-th stream of every member.
    """

    def __init__(self, seeds: list[int], step: torch.Tensor):
        self.keys = member_keys(seeds, DROPOUT, step.device)
        self.step = step          # 0-dim int64 on the run's device, advanced by the engine
        self.site = 0


def _compiling() -> bool:
    """Whether torch.compile is tracing this call (torch >= 2.3 can say; older: never assumed)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _positions(x: torch.Tensor, batch_dim: int) -> torch.Tensor:
    """Batch-major position numbers of one member's activation `x[0]`, laid out like it."""
    shape = list(x.shape[1:])
    b = shape.pop(batch_dim - 1)
    pos = torch.arange(x[0].numel(), dtype=torch.int32, device=x.device).view(b, *shape)
    return pos.movedim(0, batch_dim - 1)


class MDropout(nn.Module):
    """Dropout whose mask of member i depends only on (seed_i, step, site, example, feature).

    Positions are numbered batch-major whatever the activation layout (`batch_dim` says where the
    batch sits), so a member's mask does not depend on how many members or padded rows share the
    batch: member i of an ensemble drops exactly what its solo run drops.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.stream: DropoutStream | None = None
        self._positions: dict[tuple, torch.Tensor] = {}

    def _position_table(self, x: torch.Tensor, batch_dim: int) -> torch.Tensor:
        if _compiling():
            # Traced into the compiled graph: a lookup in the cache would make dynamo guard on the
            # cache's contents and compile again once the cache fills (a second compile, or one
            # inside a CUDA-graph capture, which breaks the capture).
            return _positions(x, batch_dim)
        key = (tuple(x.shape[1:]), batch_dim, x.device)
        pos = self._positions.get(key)
        if pos is None:
            pos = self._positions[key] = _positions(x, batch_dim)
        return pos

    def forward(self, x: torch.Tensor, batch_dim: int = 1) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.stream is None:  # a model used outside the engine: plain dropout
            return F.dropout(x, self.p, True)
        s = self.stream
        s.site += 1
        mask = keep_mask(s.keys, s.step, s.site, self._position_table(x, batch_dim), self.p)
        return x * mask.to(x.dtype) * (1.0 / (1.0 - self.p))


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "quadratic": torch.square,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}

OUTPUTS = {
    "linear": lambda z: z,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=-1),
}
