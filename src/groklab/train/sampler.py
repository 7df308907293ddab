"""Per-member minibatches as index draws on the run's device: (N, B) indices and weights.

Member i draws B examples without replacement from its own training set at every step: each of
its examples gets a 32-bit hash of (member key, step, position) and the B smallest win (a random
permutation's first B). No host work, no generator state, and member i's draw does not depend on
the other members or the device — see `groklab.rng`. A member whose set is smaller than the
batch (full batch, or a shrunk ungrokking subset) takes all its examples and pads with
zero-weight rows.
"""
from __future__ import annotations

import torch

from ..rng import SAMPLE, hash_bits, member_keys

_POS_BITS = 24                 # positions below 2**24 make every int64 sort key unique (no ties)
_PAD = 1 << 62                 # sorts after every real key


class Sampler:
    def __init__(self, train_sets: list[torch.Tensor], batch_size: int | str, seeds: list[int],
                 device: torch.device):
        sizes = [len(s) for s in train_sets]
        if max(sizes) >= 1 << _POS_BITS:
            raise ValueError(f"training sets above {1 << _POS_BITS} examples are not supported")
        self.full = batch_size == "full" or all(int(batch_size) >= m for m in sizes)
        self.b = max(sizes) if self.full else int(batch_size)
        n, m = len(train_sets), max(sizes)
        table = torch.zeros(n, m, dtype=torch.long)
        valid = torch.zeros(n, m, dtype=torch.bool)
        for i, s in enumerate(train_sets):
            table[i, :len(s)] = s
            valid[i, :len(s)] = True
        self.table, self.valid = table.to(device), valid.to(device)
        self.ragged = len(set(sizes)) > 1          # members' sets differ in size: mask the padding
        self.short = min(sizes) < self.b            # some member pads its batch: weights needed
        self.positions = torch.arange(m, dtype=torch.int32, device=device)
        self.keys = member_keys(seeds, SAMPLE, device)
        if self.full:
            self._fixed = (self.table, self.valid.float() if self.ragged else None)

    def draw(self, step: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Indices (N, B) into the task's examples and weights (N, B), or None when all are real."""
        if self.full:
            return self._fixed
        bits = hash_bits(self.keys, step, 0, self.positions).long() + (1 << 31)   # (N, M) in [0, 2**32)
        key = (bits << _POS_BITS) | self.positions
        if self.ragged:
            key = key.masked_fill(~self.valid, _PAD)
        order = key.topk(self.b, dim=1, largest=False, sorted=True).indices  # (N, B)
        idx = self.table.gather(1, order)
        return idx, (self.valid.gather(1, order).float() if self.short else None)
