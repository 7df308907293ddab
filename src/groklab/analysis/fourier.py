"""Fourier analysis of models on x+y mod p (Nanda et al. 2023): spectra, key frequencies, progress measures.

Pure tensor functions (no training, no store)::

    B = fourier_basis(p)                       # (p, p) orthonormal: constant, cos k, sin k, ...
    norms = frequency_norms(W_E[:p])           # (p//2 + 1,) embedding norm per frequency k
    keys = key_frequencies(norms)              # the few k a grokked model uses
    restricted_loss(logits, labels, x, y, p, keys)   # logits kept on cos/sin(w_k (x+y)) only

Frequency k means w_k = 2πk/p; k = 0 is the constant; k and p−k are the same frequency.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F


def fourier_basis(p: int) -> tuple[torch.Tensor, list[int], list[str]]:
    """Orthonormal real Fourier basis of functions on Z_p.

    Returns:
        basis (p, p) in float64, one basis function per row; the frequency k of each row; a label
        per row ("const", "cos 3", "sin 3", ...).
    """
    x = torch.arange(p, dtype=torch.float64)
    rows, freqs, labels = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)], [0], ["const"]
    for k in range(1, p // 2 + 1):
        c = torch.cos(2 * math.pi * k * x / p)
        rows.append(c / c.norm())
        freqs.append(k)
        labels.append(f"cos {k}")
        if 2 * k != p:  # for even p, sin(πx) vanishes on the integers
            s = torch.sin(2 * math.pi * k * x / p)
            rows.append(s / s.norm())
            freqs.append(k)
            labels.append(f"sin {k}")
    return torch.stack(rows), freqs, labels


def frequency_norms(table: torch.Tensor) -> torch.Tensor:
    """Norm of a (p, d) table (e.g. the number tokens' embeddings) per frequency k = 0..p//2:
    the root of the summed squares of its cos k and sin k components (Parseval: their squares add
    up to the table's squared Frobenius norm)."""
    p = table.shape[0]
    basis, freqs, _ = fourier_basis(p)
    coeff = basis @ table.double()                         # (p, d): one row per basis function
    power = torch.zeros(p // 2 + 1, dtype=torch.float64)
    power.index_add_(0, torch.tensor(freqs), coeff.square().sum(1))
    return power.sqrt()


def key_frequencies(norms: torch.Tensor, rel_power: float = 0.1) -> list[int]:
    """Frequencies k >= 1 whose power (norm²) is at least `rel_power` of the strongest one's.

    A grokked model concentrates its embedding on a few frequencies, far above the rest; at
    initialization the spectrum is flat and this returns many.
    """
    power = norms[1:].square()
    keep = torch.nonzero(power >= rel_power * power.max()).view(-1) + 1
    return sorted(keep.tolist(), key=lambda k: -float(norms[k]))


def gini(values: torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all equal, → 1 when one holds everything."""
    v = values.double().flatten().sort().values
    n = v.numel()
    if n == 0 or float(v.sum()) == 0.0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * i - n - 1) * v).sum() / (n * v.sum()))


def _sum_directions(x: torch.Tensor, y: torch.Tensor, p: int, keys: Sequence[int]) -> torch.Tensor:
    """(2·len(keys), M) unit vectors cos/sin(w_k (x+y)) over the M examples (a full p×p table)."""
    s = ((x + y) % p).double()
    dirs = []
    for k in keys:
        for f in (torch.cos, torch.sin):
            d = f(2 * math.pi * k * s / p)
            dirs.append(d / d.norm())
    return torch.stack(dirs)


def split_logits(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, p: int,
                 keys: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split logits (M, C) over all p² pairs into (restricted, excluded).

    restricted: each class's logits projected onto cos/sin(w_k (x+y)) for the key frequencies,
    plus the class's mean (a constant bias); excluded: the logits with those components removed.
    The directions are orthonormal over the full table, so the projection is exact.
    """
    if logits.shape[0] != p * p:
        raise ValueError(f"need logits for all {p * p} pairs (x, y), got {logits.shape[0]}")
    z = logits.double()
    dirs = _sum_directions(x.to(z.device), y.to(z.device), p, keys)   # (2K, M)
    proj = dirs.T @ (dirs @ z)                                          # (M, C)
    mean = z.mean(0, keepdim=True)
    return proj + mean, z - proj


def restricted_excluded_loss(logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                             p: int, keys: Sequence[int], train: torch.Tensor) -> tuple[float, float]:
    """Nanda et al.'s progress measures: restricted loss (key-frequency logits only, all pairs) and
    excluded loss (key frequencies removed, training pairs). `train` indexes the training pairs."""
    restricted, excluded = split_logits(logits, x, y, p, keys)
    r = F.cross_entropy(restricted, labels)
    e = F.cross_entropy(excluded[train], labels[train])
    return float(r), float(e)
