import itertools

import pytest
import torch

from groklab.config import DataCfg
from groklab.data import OPS, TASKS, fraction_split, special_tokens

BRUTE = {
    "x+y": lambda x, y, p: (x + y) % p,
    "x-y": lambda x, y, p: (x - y) % p,
    "x*y": lambda x, y, p: (x * y) % p,
    "x/y": lambda x, y, p: next(z for z in range(p) if (z * y) % p == x),
    "x^2+y^2": lambda x, y, p: (x**2 + y**2) % p,
    "x^2+xy+y^2": lambda x, y, p: (x**2 + x * y + y**2) % p,
    "x^2+xy+y^2+x": lambda x, y, p: (x**2 + x * y + y**2 + x) % p,
    "x^3+xy": lambda x, y, p: (x**3 + x * y) % p,
    "x^3+xy^2+y": lambda x, y, p: (x**3 + x * y**2 + y) % p,
}


def test_every_registered_op_has_a_brute_force_check():
    assert set(OPS.names()) == set(BRUTE)


@pytest.mark.parametrize("op", list(BRUTE))
def test_op_table_matches_brute_force(op):
    p = 13
    data = TASKS.get("modular")().build(DataCfg(op=op, p=p))
    t = special_tokens(p)
    pairs = [(x, y) for x in range(p) for y in range(p) if not (OPS.get(op).nonzero_y and y == 0)]
    assert len(data.y) == len(pairs)
    for row, ans, (x, y) in zip(data.x.tolist(), data.y.tolist(), pairs):
        assert row == [x, t["op"], y, t["="]]
        assert ans == BRUTE[op](x, y, p)


def test_seq_format_tokens():
    p = 7
    data = TASKS.get("modular")().build(DataCfg(p=p, fmt="seq"))
    t = special_tokens(p)
    assert data.x[3 * p + 5].tolist() == [t["<sos>"], 3, t["op"], 5, t["mod"], t["="]]
    assert data.y[3 * p + 5].item() == 1
    assert data.operand_pos == (1, 3)


def test_kwise_sums():
    p, k = 5, 3
    data = TASKS.get("kwise")().build(DataCfg(task="kwise", p=p, k=k))
    t = special_tokens(p)
    assert len(data.y) == p**k
    for row, ans, xs in zip(data.x.tolist(), data.y.tolist(), itertools.product(range(p), repeat=k)):
        assert row == [xs[0], t["op"], xs[1], t["op"], xs[2], t["="]]
        assert ans == sum(xs) % p


def test_split_is_seeded_disjoint_and_sized():
    tr, va = fraction_split(100, 0.3, seed=4)
    tr2, va2 = fraction_split(100, 0.3, seed=4)
    tr3, _ = fraction_split(100, 0.3, seed=5)
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and not torch.equal(tr, tr3)
    assert len(tr) == 30 and len(va) == 70 and not set(tr.tolist()) & set(va.tolist())
