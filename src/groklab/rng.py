"""Counter-based random streams: integer hashes of (member key, counter, site, position).

Why not torch.Generator: a member of an ensemble must draw exactly what its solo run draws, on
any device and however a sweep packs members. Stateful generators give that only with one call
per member (N launches per draw on a GPU) and their streams differ between CPU and CUDA. A hash
of integers is the same number everywhere, vectorizes over members, needs no state to
checkpoint, and runs inside a CUDA graph when the counter is a device tensor.

Arithmetic is on int32 tensors, as the hardware does it: multiplication wraps modulo 2**32
and the shifts are made logical with a mask, on the CPU and on CUDA alike (int32 keeps the hash
at a few vectorized kernels: a dropout mask costs less than torch's own Bernoulli draw on a CPU).
Values are 32-bit patterns read as signed int32, uniform over [-2**31, 2**31).

    keys = member_keys([0, 1], purpose=SAMPLE)             # (N,) one key per member and purpose
    bits = hash_bits(keys, step, site=0, positions=idx)    # (N, R) int32, uniform
"""
from __future__ import annotations

from typing import Sequence

import torch

_MUL = 0x045D9F3B     # a well-mixing odd multiplier for the xorshift-multiply finalizer
_GOLDEN = 0x09E3779B  # spreads consecutive counters and positions before they are mixed
_LOW16 = 0xFFFF

# Purposes: each draws from its own streams.
SAMPLE, DROPOUT = 1, 2


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finalizer (xorshift-multiply, two rounds) on int32 tensors."""
    x = (x ^ ((x >> 16) & _LOW16)) * _MUL
    x = (x ^ ((x >> 16) & _LOW16)) * _MUL
    return x ^ ((x >> 16) & _LOW16)


def _mix_int(x: int) -> int:
    """mix32 on a Python int (unsigned 32-bit in and out)."""
    x &= 0xFFFFFFFF
    for _ in range(2):
        x = ((x ^ (x >> 16)) * _MUL) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _signed(x: int) -> int:
    return x - (1 << 32) if x >= 1 << 31 else x


def member_keys(seeds: Sequence[int], purpose: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N,) int32: one key per member seed and purpose."""
    return torch.tensor([_signed(_mix_int(_mix_int(s * 1_000_003 + 0x5BD1E995) ^ (purpose * _GOLDEN))) for s in seeds],
                        dtype=torch.int32, device=device)


def hash_bits(keys: torch.Tensor, counter: torch.Tensor | int, site: int, positions: torch.Tensor) -> torch.Tensor:
    """Uniform 32-bit values as int32 (N, *positions.shape) for member keys (N,), a counter (a
    step: int or 0-dim integer tensor), a site (which draw within the step) and positions (int32)."""
    counter = torch.as_tensor(counter, device=keys.device).to(torch.int32)
    stream = mix32(keys ^ mix32(counter * _GOLDEN + site * 0x2545F49))                   # (N,)
    # The positions' product in int64, cut to int32 by the cast: the same low 32 bits as int32's
    # wrapping product. Inductor folds an arange of positions into index arithmetic and emitted
    # int32's product as an int32 literal it could not hold ("Scalar 5308871520 is out of range for
    # type int32", Triton, a compiled dropout step on CUDA).
    spread = (positions.to(torch.int64) * _GOLDEN).to(torch.int32)
    return mix32(spread + stream.view(-1, *[1] * positions.dim()))


def keep_mask(keys: torch.Tensor, counter: torch.Tensor | int, site: int, positions: torch.Tensor,
              p: float) -> torch.Tensor:
    """Dropout keep-mask (N, *positions.shape): True with probability 1 − p."""
    return hash_bits(keys, counter, site, positions) >= -(1 << 31) + int(round(p * 2 ** 32))
