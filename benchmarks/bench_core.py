"""Core benchmarks, printed as one table of figures measured in this run.

    python benchmarks/bench_core.py            # full (a few minutes on 2 cores)
    python benchmarks/bench_core.py --quick    # smaller step counts

1. fp32 matmul peak of this machine at the canonical shapes;
2. `power2022-add97` steps/s: groklab vs a plain PyTorch loop (nn.MultiheadAttention blocks over
   the whole sequence, torch.optim.AdamW, random minibatches, evaluation every 100 steps), and
   the FLOP rate each reaches as a fraction of the peak;
3. `quickstart`: wall seconds to validation accuracy >= 0.99;
4. ensembles of N small MLPs (N = 1, 8, 32) vs N sequential runs (member-steps/s), and N = 1
   vs a plain single-model MLP loop.
Run it alone: another torch process on the same cores distorts every figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from groklab import load_config, with_overrides
from groklab.data import TASKS, fraction_split
from groklab.train import train

THREADS = os.cpu_count() or 1


def matmul_peak(reps: int = 50) -> float:
    """Best fp32 GFLOP/s over the shapes the canonical Transformer uses (B·T = 2048 rows)."""
    best = 0.0
    for m, k, n in ((2048, 128, 512), (2048, 512, 128), (2048, 128, 384), (1024, 1024, 1024)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(5):
            a @ b
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9)
    return best


def transformer_flops(cfg, batch: int, last_only: bool) -> float:
    """Forward+backward FLOPs of one step (3× the forward matmul FLOPs)."""
    d, f, t, v, L = cfg.model.d_model, cfg.model.d_mlp, 4, cfg.data.p, cfg.model.n_layers
    per_pos = 2 * (4 * d * d + 2 * d * f)           # q,k,v,o projections + MLP, per position
    attn = 2 * 2 * t * d                            # scores + weighted sum, per query position
    if last_only:
        fwd = (L - 1) * t * (per_pos + attn) + t * 2 * 2 * d * d + (2 * 2 * d * d + 2 * 2 * d * f + attn) + 2 * d * v
    else:
        fwd = L * t * (per_pos + attn) + 2 * d * v
    return 3 * fwd * batch


class RefBlock(nn.Module):
    def __init__(self, d: int, h: int, f: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, h, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, f), nn.ReLU(), nn.Linear(f, d))

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class RefTransformer(nn.Module):
    def __init__(self, vocab, t, d, h, f, layers, out):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(t, d) / d ** 0.5)
        self.blocks = nn.ModuleList(RefBlock(d, h, f) for _ in range(layers))
        self.ln, self.unembed = nn.LayerNorm(d), nn.Linear(d, out, bias=False)
        self.register_buffer("mask", torch.triu(torch.full((t, t), float("-inf")), 1))

    def forward(self, x):
        h = self.embed(x) + self.pos
        for b in self.blocks:
            h = b(h, self.mask)
        return self.unembed(self.ln(h[:, -1]))


class RefMLP(nn.Module):
    def __init__(self, vocab, d, hidden, layers, out):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        dims = [2 * d] + [hidden] * layers
        self.net = nn.Sequential(*[m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                                 nn.Linear(dims[-1], out))

    def forward(self, x):
        return self.net(self.embed(x[:, [0, 2]]).flatten(1))


def plain_step(model: nn.Module, opt, x_tr, y_tr, batch: int) -> None:
    """One step of a plain loop: a random minibatch, cross-entropy, backward, optimizer step."""
    idx = torch.randperm(len(x_tr))[:batch]
    loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def reference_loop(cfg, model: nn.Module, steps: int) -> float:
    """A plain single-model loop: tensors, random minibatches, AdamW, eval every 100 steps."""
    task = TASKS.get(cfg.data.task)().build(cfg.data)
    tr, va = fraction_split(len(task.y), cfg.data.frac_train, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    x_tr, y_tr = task.x[tr], task.y[tr]
    t0 = time.perf_counter()
    for step in range(steps):
        plain_step(model, opt, x_tr, y_tr, cfg.train.batch_size)
        if (step + 1) % 100 == 0:
            with torch.no_grad():
                model.eval()
                (model(task.x[va]).argmax(-1) == task.y[va]).float().mean()
                (model(x_tr).argmax(-1) == y_tr).float().mean()
                model.train()
    return steps / (time.perf_counter() - t0)


def groklab_rate(cfg, steps: int) -> float:
    cfg = with_overrides(cfg, {"train.steps": steps, "train.eval_log_points": 0, "train.early_stop": False})
    (res,) = train(cfg, progress=False)
    return res.summary["steps_per_second"]


def ensemble_rate(cfg, n: int, steps: int) -> float:
    """Member-steps per second of an N-member ensemble."""
    cfgs = [with_overrides(cfg, {"train.seed": s, "train.steps": steps, "train.eval_log_points": 0,
                                 "train.early_stop": False}) for s in range(n)]
    t = time.perf_counter()
    train(cfgs, progress=False)
    return n * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    k = 1 if args.quick else 3
    rows = []
    peak = matmul_peak()
    rows.append(("fp32 matmul peak (GFLOP/s)", f"{peak:.0f}"))

    # 2) canonical Transformer: groklab vs plain loop
    pw = load_config("power2022-add97", [f"train.threads={THREADS}"])
    steps = 100 * k
    ref = RefTransformer(pw.data.p + 4, 4, 128, 4, 512, 2, pw.data.p)
    reference_loop(pw, ref, 10)
    ours, plain = groklab_rate(pw, steps), reference_loop(pw, ref, steps)
    full_flops = transformer_flops(pw, 512, last_only=False)
    our_flops = transformer_flops(pw, 512, last_only=True)
    rows += [("power2022-add97 steps/s, groklab", f"{ours:.1f}"),
             ("power2022-add97 steps/s, plain PyTorch loop", f"{plain:.1f}"),
             ("  ratio groklab / plain", f"{ours / plain:.2f}x"),
             ("  groklab GFLOP/s (FLOPs it computes) / % of peak", f"{ours * our_flops / 1e9:.0f} / {100 * ours * our_flops / 1e9 / peak:.0f}%"),
             ("  groklab GFLOP/s (full-model equivalent) / % of peak", f"{ours * full_flops / 1e9:.0f} / {100 * ours * full_flops / 1e9 / peak:.0f}%"),
             ("  plain loop GFLOP/s / % of peak", f"{plain * full_flops / 1e9:.0f} / {100 * plain * full_flops / 1e9 / peak:.0f}%")]

    # 3) quickstart to 99 % validation
    qs = load_config("quickstart", [f"train.threads={THREADS}"])
    t = time.perf_counter()
    (res,) = train(qs, progress=False)
    rows += [("quickstart: train 99% / val 99% step", f"{res.summary['step_train_99']} / {res.summary['step_val_99']}"),
             ("quickstart: wall s to val 99% (to early stop)", f"{_wall_at(res):.1f} ({time.perf_counter() - t:.1f})")]

    # 4) ensembles of small MLPs vs sequential runs (one process, THREADS threads)
    mlp = load_config("quickstart", [f"train.threads={THREADS}"])
    steps = 200 * k
    solo = ensemble_rate(mlp, 1, steps)
    plain_mlp = reference_loop(mlp, RefMLP(mlp.data.p + 4, 128, 256, 2, mlp.data.p), steps)
    rows += [("MLP N=1 member-steps/s (groklab) vs plain loop", f"{solo:.0f} vs {plain_mlp:.0f} ({solo / plain_mlp:.2f}x)")]
    for n in (8, 32):
        ens = ensemble_rate(mlp, n, max(20, steps // n * 4))
        rows.append((f"MLP N={n} ensemble vs {n} sequential (member-steps/s)", f"{ens:.0f} vs {solo:.0f} ({ens / solo:.2f}x)"))

    width = max(len(r[0]) for r in rows)
    print(f"groklab core benchmarks — torch {torch.__version__}, {THREADS} threads, {sys.platform}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _wall_at(res) -> float:
    m = res.metrics
    hit = m[m["val_acc"] >= 0.99]
    return float(hit["wall_time"].iloc[0]) if len(hit) else float("nan")


if __name__ == "__main__":
    main()
