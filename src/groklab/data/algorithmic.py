"""Algorithmic tasks: Power et al.'s binary operations mod p and k-wise sums, as token tables.

Token ids: 0..p-1 are the numbers, then `op`, `=`, `<sos>`, `mod`. Formats (``data.fmt``):
``op`` = [x, op, y, =] (Power et al.), ``seq`` = [<sos>, x, +, y, mod, =] (the RNN/LSTM study);
k-wise sums are [x1, +, x2, +, …, xk, =].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..config import DataCfg, fail, is_prime
from ..registry import ConfigError, Registry
from .tasks import TASKS, TaskData, fraction_split


@dataclass(frozen=True)
class Op:
    """A binary operation mod p: fn(x, y, p) on int64 arrays; y ranges over 1..p-1 if nonzero_y."""

    fn: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    nonzero_y: bool = False
    needs_prime: bool = False


OPS: Registry[Op] = Registry("operation", "data.op")


def _reg(name: str, fn, **kw) -> None:
    OPS.register(name, doc=f"{name} mod p")(Op(fn, **kw))


_reg("x+y", lambda x, y, p: (x + y) % p)
_reg("x-y", lambda x, y, p: (x - y) % p)
_reg("x*y", lambda x, y, p: (x * y) % p)
# x / y = x · y^(p-2) mod p (Fermat), hence prime p and y != 0.
_reg("x/y", lambda x, y, p: (x * np.array([pow(int(v), p - 2, p) for v in y.ravel()]).reshape(y.shape)) % p,
     nonzero_y=True, needs_prime=True)
_reg("x^2+y^2", lambda x, y, p: (x * x + y * y) % p)
_reg("x^2+xy+y^2", lambda x, y, p: (x * x + x * y + y * y) % p)
_reg("x^2+xy+y^2+x", lambda x, y, p: (x * x + x * y + y * y + x) % p)
_reg("x^3+xy", lambda x, y, p: (x ** 3 + x * y) % p)
_reg("x^3+xy^2+y", lambda x, y, p: (x ** 3 + x * y * y + y) % p)


def special_tokens(p: int) -> dict[str, int]:
    return {"op": p, "=": p + 1, "<sos>": p + 2, "mod": p + 3}


def _names(p: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(p)) + ("op", "=", "<sos>", "mod")


@TASKS.register("modular", doc="binary operation x∘y mod p over all pairs (Power et al. 2022)")
class ModularTask:
    inputs = "tokens"

    @staticmethod
    def validate(run_cfg) -> None:
        d = run_cfg.data
        if OPS.get(d.op).needs_prime and not is_prime(d.p):
            fail("data.p", d.p, f"must be prime for data.op={d.op!r} (division needs inverses)")
        if d.fmt == "seq" and d.op != "x+y":
            fail("data.fmt", d.fmt, "(the RNN/LSTM study's `<sos> x + y mod =`) is defined for data.op='x+y' only")

    def build(self, cfg: DataCfg) -> TaskData:
        p, op = cfg.p, OPS.get(cfg.op)
        ys = np.arange(1 if op.nonzero_y else 0, p)
        x, y = (a.ravel().astype(np.int64) for a in np.meshgrid(np.arange(p), ys, indexing="ij"))
        ans = op.fn(x, y, p)
        t = special_tokens(p)
        n = len(x)
        if cfg.fmt == "op":
            cols = [x, np.full(n, t["op"]), y, np.full(n, t["="])]
            operands = (0, 2)
        else:  # seq: <sos> x + y mod =
            cols = [np.full(n, t["<sos>"]), x, np.full(n, t["op"]), y, np.full(n, t["mod"]), np.full(n, t["="])]
            operands = (1, 3)
        tokens = torch.from_numpy(np.stack(cols, axis=1))
        return TaskData(tokens, torch.from_numpy(ans), n_out=p, inputs="tokens", vocab=p + 4,
                        operand_pos=operands, token_names=_names(p))

    def split(self, cfg: DataCfg, data: TaskData):
        return fraction_split(len(data.y), cfg.frac_train, cfg.split_seed)


@TASKS.register("kwise", doc="k-wise sum x1+…+xk mod p over all k-tuples (the reproduction study)")
class KwiseTask:
    inputs = "tokens"

    def build(self, cfg: DataCfg) -> TaskData:
        p, k = cfg.p, cfg.k
        if p ** k > 5_000_000:
            raise ConfigError(f"data.p={p} with data.k={k} gives {p ** k} examples; keep p**k <= 5e6")
        grids = np.meshgrid(*[np.arange(p)] * k, indexing="ij")
        xs = [g.ravel().astype(np.int64) for g in grids]
        t = special_tokens(p)
        n = len(xs[0])
        cols = []
        for i, xi in enumerate(xs):
            cols.append(xi)
            cols.append(np.full(n, t["op"] if i < k - 1 else t["="]))
        tokens = torch.from_numpy(np.stack(cols, axis=1))
        ans = torch.from_numpy(np.sum(np.stack(xs), axis=0) % p)
        return TaskData(tokens, ans, n_out=p, inputs="tokens", vocab=p + 4,
                        operand_pos=tuple(range(0, 2 * k, 2)), token_names=_names(p))

    def split(self, cfg: DataCfg, data: TaskData):
        return fraction_split(len(data.y), cfg.frac_train, cfg.split_seed)
