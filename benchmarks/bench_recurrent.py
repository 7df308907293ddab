"""Recurrent-model throughput: `lstm-add97` solo, as an 8-member ensemble, and a plain nn.LSTM loop.

    python benchmarks/bench_recurrent.py              # 300 timed steps per figure (~5 min on 1 thread)
    python benchmarks/bench_recurrent.py --quick      # 100 timed steps
    python benchmarks/bench_recurrent.py --threads 2

Rates are marginal: each figure trains twice, for W and W + S steps, and divides S by the
difference in wall time, so model building and the evaluations that the engine always runs at
step 0 and at the last step (evaluation is otherwise off: eval_every > steps, no log points)
drop out. "8 sequential" is 8 solo runs one after another, i.e. the solo member-steps/s.
Run it alone: another torch process on the same cores distorts every figure.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

from groklab import load_config, with_overrides
from groklab.data import TASKS, fraction_split
from groklab.train import train

from bench_core import plain_step  # the same plain step as the core benchmark's reference loop

WARMUP = 20  # steps of the short run whose time is subtracted


def _timed_train(cfg, n: int, steps: int) -> float:
    cfgs = [with_overrides(cfg, {"train.seed": s, "train.steps": steps, "train.eval_every": steps + 1,
                                 "train.eval_log_points": 0, "train.early_stop": False}) for s in range(n)]
    t = time.perf_counter()
    train(cfgs, progress=False, store=None)
    return time.perf_counter() - t


def member_rate(cfg, n: int, steps: int) -> float:
    """Marginal member-steps per second of an N-member ensemble (N = 1: a solo run)."""
    short, long = _timed_train(cfg, n, WARMUP), _timed_train(cfg, n, WARMUP + steps)
    return n * steps / (long - short)


class PlainLSTM(nn.Module):
    def __init__(self, cfg, vocab: int, n_out: int):
        super().__init__()
        m = cfg.model
        self.embed = nn.Embedding(vocab, m.d_model)
        self.lstm = nn.LSTM(m.d_model, m.d_hidden, m.n_layers, batch_first=True, dropout=m.dropout)
        self.head = nn.Linear(m.d_hidden, n_out)

    def forward(self, x):
        return self.head(self.lstm(self.embed(x))[0][:, -1])


def plain_rate(cfg, steps: int) -> float:
    """Steps/s of a plain loop: nn.LSTM, torch.optim.AdamW, random minibatches, no evaluation."""
    task = TASKS.get(cfg.data.task)().build(cfg.data)
    tr, _ = fraction_split(len(task.y), cfg.data.frac_train, 0)
    model = PlainLSTM(cfg, task.vocab, task.n_out)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    x_tr, y_tr = task.x[tr], task.y[tr]

    def run(k: int) -> float:
        t = time.perf_counter()
        for _ in range(k):
            plain_step(model, opt, x_tr, y_tr, cfg.train.batch_size)
        return time.perf_counter() - t

    run(WARMUP)
    return steps / run(steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 timed steps instead of 300")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machines)")
    ap.add_argument("--members", type=int, default=8)
    args = ap.parse_args()
    steps = 100 if args.quick else 300
    torch.set_num_threads(args.threads)
    cfg = load_config("lstm-add97", [f"train.threads={args.threads}"])
    n = args.members

    solo = member_rate(cfg, 1, steps)
    ens = member_rate(cfg, n, max(WARMUP, steps // 2))  # N member-steps per step: fewer steps suffice
    plain = plain_rate(cfg, steps)
    rows = [
        ("lstm-add97 solo, steps/s", f"{solo:.1f}"),
        (f"lstm-add97 N={n} ensemble, steps/s", f"{ens / n:.2f}"),
        (f"  member-steps/s: ensemble vs {n} sequential", f"{ens:.1f} vs {solo:.1f} ({ens / solo:.2f}x)"),
        ("plain nn.LSTM loop (same sizes), steps/s", f"{plain:.1f}"),
        ("  ratio groklab solo / plain", f"{solo / plain:.2f}x"),
    ]
    width = max(len(r[0]) for r in rows)
    m = cfg.model
    print(f"bench_recurrent — torch {torch.__version__}, {args.threads} thread(s), {sys.platform}; lstm-add97: "
          f"{m.n_layers}x{m.d_hidden} hidden, batch {cfg.train.batch_size}, seq len 4, {steps} timed steps")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
