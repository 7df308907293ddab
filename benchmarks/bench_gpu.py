"""GPU benchmarks, printed as one table of figures measured in this run.

    python benchmarks/bench_gpu.py              # the default sections, on a CUDA machine (~5 min on an H100)
    python benchmarks/bench_gpu.py --all        # every section but profile and fusion (~20 min: the long ones below)
    python benchmarks/bench_gpu.py --only sweep,streams
    python benchmarks/bench_gpu.py --quick      # tiny step counts (also runs on the CPU, to check the script)

Default sections (the issue's one command, <= 8 min; ~5 min by the rates its parts measured in
earlier leases, not yet timed as one call):
0. roofline: per member-step of `nanda2023` and `repro-transformer` in fp32 and bf16, the counted
   matmul FLOPs, the bytes its matmuls read and write (no fusion removes them) and the bytes all its
   eager ops read and write (`ByteCounter`; counted on the CPU, the same on any device);
1. solo: steps/s of `quickstart`, `power2022-add97`, `nanda2023` with CUDA graphs and eagerly;
2. plain: `power2022-add97` solo vs a plain PyTorch loop on the same card (the same model sizes,
   torch.optim.AdamW, device-side minibatches, evaluation every 100 steps), two alternations each;
3. ensemble: member-steps/s of N members (nanda2023 N = 64, 256; power2022-add97 N = 32;
   quickstart N = 256) against the solo rate and as TFLOP/s of counted matmul work (`step_flops`);
4. grok: nanda2023 solo to val 99 % (early stop), wall seconds and step;
and with each configuration its peak GPU memory; the card and the torch version.

Long sections (by name in --only, or --all):
- attention: nanda2023 N = 64 with attention as SDPA vs broadcast products (~1.5 min);
- sweep: `repro-fraction` (13 fractions x 3 seeds of a p = 97 Transformer) as one ensemble, steps/s
  under fp32, tf32 (compile off and on) and bf16 + compile, and the minutes its 1e5-step cap would
  take (~2.5 min);
- streams: the sweep's tail (its 6 runs at fractions 0.2 / 0.25, then 12 with 0.3 / 0.35) as one
  ensemble's CUDA graph, or split into sub-ensembles whose graphs replay side by side on their own
  streams: training steps only, member-steps/s per split (does the tail gain from concurrency?);
- precision: 8 nanda2023 seeds in one ensemble under fp32, tf32 and bf16: steps to val 99 % (~7.5 min);
- compile: nanda2023 N = 64 member-steps/s with `train.compile` off and on, per precision, and
  N = 256 bf16 (~4 min);
- profile (only by name): the top CUDA kernels of a nanda2023 N = 64 step, eager, in fp32 without
  and with compile and in bf16 with compile;
- fusion (only by name; needs no GPU, ~3 min of compiling on 2 CPU cores): the roofline's presets
  again, the bytes per member-step of the eager step against the step with `train.compile`,
  whose compiled graphs' traffic and kernels are inductor's own estimate (`compiled_step_counts`).
Rates exclude start-up: they are measured between the first evaluation after `WARM` steps and the last.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(__file__))
from bench_core import RefTransformer  # noqa: E402  (the same plain model the CPU benchmark uses)

from groklab import load_config, with_overrides  # noqa: E402
from groklab.data import TASKS, fraction_split  # noqa: E402
from groklab.models import transformer as tmod  # noqa: E402
from groklab.train import train  # noqa: E402
from groklab.train.engine import _Run, numerics  # noqa: E402  (the streams section drives steps directly)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DEFAULT = ("roofline", "solo", "plain", "ensemble", "grok")  # the one command of the issue, <= 8 min
SECTIONS = (*DEFAULT, "attention", "sweep", "streams", "precision", "compile", "profile", "fusion")
NAMED_ONLY = {"profile", "fusion"}  # not in --all: a profile, and a CPU count that needs no card


class Clock:
    """Hook: wall time at each evaluation, to time steps after start-up (capture, first eval)."""

    def __init__(self, warm: int):
        self.warm, self.marks = warm, []

    def __call__(self, step, state):
        if step >= self.warm:
            self.marks.append((step, time.perf_counter()))

    def rate(self) -> float:
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")


def timed(cfgs, warm: int) -> tuple[float, list, float]:
    """(steps/s after warm-up, results, peak GB) of one training call."""
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    clock = Clock(warm)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = train(cfgs, progress=False, hooks=[clock])
    # A failed capture falls back to eager steps: the rate below is then not a graph's rate.
    for w in caught:
        if "capture failed" in str(w.message):
            print(f"  ({len(cfgs)} member(s): {w.message})", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE == "cuda" else float("nan")
    return clock.rate(), res, peak


def cfg_for(preset: str, steps: int, *extra: str) -> object:
    return load_config(preset, [f"train.device={DEVICE}", f"train.steps={steps}", "train.eval_every=100",
                                "train.eval_log_points=0", "train.early_stop=false", "train.threads=1", *extra])


def _on_one_step(cfg, probe) -> None:
    """Train one CPU step of one member of `cfg` (eager, no graph), calling `probe(step, real)` in
    place of the step, where `real(step)` trains it."""
    from groklab.train import step as step_mod
    real = step_mod.TrainStep._step
    step_mod.TrainStep._step = lambda self: probe(self, real)
    try:
        train(with_overrides(cfg, {"train.steps": 1, "train.device": "cpu", "train.compile": False,
                                   "train.cuda_graphs": False}), progress=False)
    finally:
        step_mod.TrainStep._step = real


def _one_step_under(cfg, mode):
    """Train one CPU step of one member of `cfg` inside the dispatch mode that `mode()` makes;
    return that mode."""
    modes = []

    def counted(step, real):
        with mode() as m:
            real(step)
        modes.append(m)
    _on_one_step(cfg, counted)
    return modes[-1]


_FLOPS: dict[str, float] = {}


def step_flops(cfg) -> float:
    """Matmul FLOPs of one member's training step (forward + backward), counted once per preset by
    torch's FlopCounterMode around one step on the CPU (the count is the same on any device and in
    any precision): what each member-step asks of the card's matmul units."""
    from torch.utils.flop_counter import FlopCounterMode
    if cfg.name not in _FLOPS:
        _FLOPS[cfg.name] = _one_step_under(cfg, lambda: FlopCounterMode(display=False)).get_total_flops()
    return _FLOPS[cfg.name]


class ByteCounter(TorchDispatchMode):
    """Bytes each aten op of a step reads and writes (its tensor inputs and outputs), view ops left
    out: for matmuls alone, the traffic no fusion can remove (each reads its operands and writes
    its result once); for all ops, the traffic of the eager step (an upper bound: caches serve
    some re-reads)."""

    MATMULS = frozenset({"mm", "bmm", "addmm", "baddbmm"})
    VIEWS = frozenset({"view", "_unsafe_view", "detach", "transpose", "unsqueeze", "squeeze", "slice", "expand",
                       "permute", "t", "select", "as_strided", "alias", "unbind", "split", "split_with_sizes",
                       "reshape", "_reshape_alias", "unflatten", "flatten", "movedim", "lift_fresh"})

    def __init__(self):
        super().__init__()
        self.matmul = self.total = 0
        self.ops = self.matmul_ops = 0  # non-view ops: the kernels an eager step launches

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if name in self.VIEWS:
            return out
        tensors = [a for a in (*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else [out]))
                   if isinstance(a, torch.Tensor)]
        n = sum(t.numel() * t.element_size() for t in tensors)
        self.total += n
        self.ops += 1
        if name in self.MATMULS:
            self.matmul += n
            self.matmul_ops += 1
        return out


def step_bytes(cfg) -> tuple[int, int]:
    """(matmul, all-op) bytes read and written by one member's eager training step in `cfg`'s
    precision, counted on the CPU (see ByteCounter)."""
    m = _one_step_under(cfg, ByteCounter)
    return m.matmul, m.total


def compiled_step_counts(cfg) -> dict[str, int]:
    """Bytes read and written, and kernels launched, by one member's training step, eager and with
    `train.compile`. The compiled figures are the eager step with the part `train.compile` compiles
    (forward and loss) and its backward replaced by inductor's own counts for its compiled graphs:
    each fused kernel's and each matmul's reads and writes (`torch._inductor.metrics`), and the
    kernels it generated plus the matmuls it calls. Compiled for the CPU here: inductor's scheduler
    fuses for CUDA the same way in the main, not in every choice (an estimate, not a count of the
    CUDA kernels). `eager_rest_ops`: the kernels left outside the compiled part (batch draw, loss
    reduction, optimizer update)."""
    import logging

    import torch._inductor.config as inductor_cfg
    from torch._inductor import metrics
    from torch._inductor.compile_fx import inductor_metrics_log
    got = {}

    def counted(step, real):
        with ByteCounter() as whole:
            real(step)
        idx, _ = step.inputs.sampler.draw(step.step_t)
        x, y = step.task.x[idx], step.labels.gather(1, idx)
        with ByteCounter() as part:
            step._forward_loss(x, y).sum().backward()
        metrics.reset()
        level = inductor_metrics_log.level
        inductor_metrics_log.setLevel(logging.INFO)  # inductor counts bytes only while this log is on (it prints nothing)
        try:
            with inductor_cfg.patch(fx_graph_cache=False):  # a graph from the cache would not be counted
                torch.compile(step._forward_loss, dynamic=False)(x, y).sum().backward()
        finally:
            inductor_metrics_log.setLevel(level)
        step.flat.zero_grad()
        rest = whole.ops - part.ops
        got.update(eager_bytes=whole.total, compiled_bytes=whole.total - part.total + metrics.num_bytes_accessed,
                   eager_ops=whole.ops, eager_rest_ops=rest,
                   compiled_ops=rest + metrics.generated_kernel_count + part.matmul_ops)
    _on_one_step(cfg, counted)
    return got


def tflops(cfg, member_steps: float) -> str:
    """`member_steps` per second as TFLOP/s of counted matmul work (see `step_flops`)."""
    return f"{member_steps * step_flops(cfg) / 1e12:.3g} TFLOP/s"


def split_rate(cfgs, parts: int, steps: int, warm: int) -> float:
    """Member-steps/s of `cfgs` trained as `parts` sub-ensembles, each its own step program (a CUDA
    graph on a GPU), replayed round-robin on one stream each: training steps only, no evaluation."""
    k = len(cfgs) // parts
    with numerics(cfgs[0].train):
        runs = [_Run(cfgs[i * k:(i + 1) * k], None, None, None) for i in range(parts)]
        streams = [torch.cuda.Stream() if DEVICE == "cuda" else None for _ in runs]
        for run in runs:
            run.sync_phase(0)
        _sync()  # the runs' tensors were made on the default stream, which the others do not wait for

        def steps_of(n: int) -> None:
            for _ in range(n):
                for run, stream in zip(runs, streams):
                    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                        run.train_step()
        steps_of(warm)  # warm-up and capture
        _sync()
        t = time.perf_counter()
        steps_of(steps)
        _sync()
        return steps * len(cfgs) / (time.perf_counter() - t)


def members(cfg, n: int):
    return [with_overrides(cfg, {"train.seed": s}) for s in range(n)]


def plain_loop(cfg, steps: int) -> float:
    """A plain single-model loop on the device (like the public peers'): steps/s after 100 warm-up steps."""
    task = TASKS.get(cfg.data.task)().build(cfg.data).to(DEVICE)
    tr, va = (i.to(DEVICE) for i in fraction_split(len(task.y), cfg.data.frac_train, 0))
    model = RefTransformer(task.vocab, task.seq_len, cfg.model.d_model, cfg.model.n_heads, cfg.model.d_mlp,
                           cfg.model.n_layers, task.n_out).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                            weight_decay=cfg.optim.weight_decay)
    x_tr, y_tr = task.x[tr], task.y[tr]
    t0 = None
    for step in range(steps + 100):
        if step == 100:
            _sync()
            t0 = time.perf_counter()
        idx = torch.randperm(len(x_tr), device=DEVICE)[:cfg.train.batch_size]
        loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            with torch.no_grad():
                model.eval()
                (model(task.x[va]).argmax(-1) == task.y[va]).float().mean().item()
                (model(x_tr).argmax(-1) == y_tr).float().mean().item()
                model.train()
    _sync()
    return steps / (time.perf_counter() - t0)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny step counts (checks the script, e.g. on a CPU)")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    ap.add_argument("--only", default="", help="comma-separated sections to run: " + ",".join(SECTIONS))
    ap.add_argument("--all", action="store_true", help="every section but " + " and ".join(sorted(NAMED_ONLY)))
    ap.add_argument("--compile", action="store_true", help="train.compile=true in the grok and precision sections")
    args = ap.parse_args()
    run = set(args.only.split(",")) if args.only else set(SECTIONS) - NAMED_ONLY if args.all else set(DEFAULT)
    unknown = run - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    skip = set(SECTIONS) - run | set(args.skip.split(","))
    comp = [f"train.compile={str(args.compile).lower()}"]
    q = args.quick
    solo_steps, warm = (300, 100) if q else (2500, 500)
    ens_steps, ens_warm = (200, 100) if q else (700, 200)
    rows: list[tuple[str, str]] = []

    def out(name, value):
        rows.append((name, value))
        print(f"{name}: {value}", flush=True)

    card = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (no CUDA)"
    out("device", f"{card}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    if "roofline" not in skip:
        # What one member-step asks of the card, counted on the CPU (the same on any device).
        for preset in ("nanda2023", "repro-transformer"):
            for precision in ("fp32", "bf16"):
                cfg = cfg_for(preset, 1, f"train.precision={precision}")
                mm, total = step_bytes(cfg)
                out(f"{preset} {precision}: per member-step",
                    f"{step_flops(cfg) / 1e9:.2f} GFLOP; matmul I/O {mm / 1e6:.0f} MB; "
                    f"all eager ops' I/O {total / 1e6:.0f} MB")

    if "fusion" not in skip:
        # What fusion leaves of that traffic: the step with its forward and loss compiled.
        for preset in ("nanda2023", "repro-transformer"):
            for precision in ("fp32", "bf16"):
                c = compiled_step_counts(cfg_for(preset, 1, f"train.precision={precision}"))
                out(f"{preset} {precision}: per member-step, eager vs compiled",
                    f"{c['eager_bytes'] / 1e6:.0f} vs {c['compiled_bytes'] / 1e6:.0f} MB (at 3.35 TB/s at most "
                    f"{3.35e12 / c['compiled_bytes']:,.0f} member-steps/s compiled); kernels per step "
                    f"{c['eager_ops']} vs {c['compiled_ops']}, {c['eager_rest_ops']} of them outside the compiled part")

    solo = {}
    if "solo" not in skip:
        for preset in ("quickstart", "power2022-add97", "nanda2023"):
            for graphs in (True, False):
                rate, _, peak = timed(cfg_for(preset, solo_steps, f"train.cuda_graphs={str(graphs).lower()}"), warm)
                label = "CUDA graph" if graphs else "eager"
                out(f"{preset} solo steps/s ({label})", f"{rate:.0f}  (peak {peak:.2f} GB)")
                if graphs:
                    solo[preset] = rate

    if "plain" not in skip:
        pw = cfg_for("power2022-add97", solo_steps)
        ours, plain = [], []
        for _ in range(2):  # alternate, so drifting clocks hit both alike
            ours.append(timed(pw, warm)[0])
            plain.append(plain_loop(pw, solo_steps - warm))
        out("power2022-add97 solo: groklab vs plain loop (steps/s)",
            f"{' '.join(f'{x:.0f}' for x in ours)} vs {' '.join(f'{x:.0f}' for x in plain)} "
            f"({statistics.mean(ours) / statistics.mean(plain):.2f}x)")

    if "ensemble" not in skip:
        for preset, n in (("nanda2023", 64), ("nanda2023", 256), ("power2022-add97", 32), ("quickstart", 256)):
            n = min(n, 4) if q else n
            cfg = cfg_for(preset, ens_steps)
            rate, _, peak = timed(members(cfg, n), ens_warm)
            base = solo.get(preset, float("nan"))
            out(f"{preset} N={n} member-steps/s", f"{rate * n:.0f} ({rate * n / base:.1f}x solo; "
                                                  f"{tflops(cfg, rate * n)}; peak {peak:.1f} GB)")

    if "attention" not in skip:
        n, rates, saved = (4 if q else 64), {}, tmod._use_broadcast
        try:
            for name, choice in (("broadcast", True), ("SDPA", False)):
                tmod._use_broadcast = lambda t_, c=choice: c  # looked up at call time by Attention
                rates[name] = n * timed(members(cfg_for("nanda2023", ens_steps), n), ens_warm)[0]
        finally:
            tmod._use_broadcast = saved
        out(f"nanda2023 N={n} attention: SDPA vs broadcast (member-steps/s)",
            f"{rates['SDPA']:.0f} vs {rates['broadcast']:.0f}")
    if "sweep" not in skip:
        # repro-fraction / mystery-semigrok: 13 fractions x 3 seeds of a p = 97 Transformer, one ensemble,
        # up to 1e5 steps (the fractions that never generalize keep the ensemble running to the cap)
        reps, (steps, w) = (3, (200, 100)) if q else (39, (600, 200))
        for precision, on in (("fp32", "false"), ("tf32", "false"), ("tf32", "true"), ("bf16", "true")):
            fr = [with_overrides(cfg_for("repro-transformer", steps, f"train.precision={precision}",
                                         f"train.compile={on}"),
                                 {"train.seed": i % 3, "data.frac_train": 0.2 + 0.05 * (i // 3)}) for i in range(reps)]
            t = time.perf_counter()
            rate, _, peak = timed(fr, w)
            out(f"repro-fraction as one ensemble ({reps} runs), {precision} compile={on}: steps/s",
                f"{rate:.0f} = {rate * reps:.0f} member-steps/s ({tflops(fr[0], rate * reps)}; "
                f"1e5 steps: {1e5 / rate / 60:.1f} min; "
                f"peak {peak:.1f} GB; call {time.perf_counter() - t:.0f} s)")

    if "streams" not in skip:
        # The sweep's tail sets its wall time (fourth lease: 6-12 members at ~200 steps/s for 60 000+
        # steps, where a solo graph runs ~725): one ensemble, or sub-ensembles on their own streams.
        steps, w = (20, 5) if q else (600, 50)
        for n, splits in ((6, (1, 2, 3, 6)), (12, (1, 2, 4, 12))):
            tail = [with_overrides(cfg_for("repro-transformer", 10 ** 5),
                                   {"train.seed": i % 3, "data.frac_train": 0.2 + 0.05 * (i // 3)}) for i in range(n)]
            rates = {parts: split_rate(tail, parts, steps, w) for parts in splits}
            out(f"repro-fraction tail, {n} runs: member-steps/s as 1 ensemble / split on streams",
                " / ".join(f"{parts}x{n // parts}: {r:.0f}" for parts, r in rates.items())
                + f" ({max(rates.values()) / rates[1]:.2f}x best vs one ensemble)")

    if "grok" not in skip:
        cfg = load_config("nanda2023", [f"train.device={DEVICE}", "train.early_stop=true", "train.threads=1", *comp]
                          + (["data.p=23", "train.steps=3000"] if q else []))
        t = time.perf_counter()
        (res,) = train(cfg, progress=False)
        s = res.summary
        m = res.metrics
        hit = m[m["val_acc"] >= 0.99]
        wall = float(hit["wall_time"].iloc[0]) if len(hit) else float("nan")
        out("nanda2023 solo: train 99% / val 99% step; wall s to val 99%",
            f"{s['step_train_99']} / {s['step_val_99']}; {wall:.1f} s (total {time.perf_counter() - t:.1f} s, "
            f"{s['steps_per_second']:.0f} steps/s incl. evaluation)")

    if "precision" not in skip:
        n = 2 if q else 8
        for precision in ("fp32", "tf32", "bf16"):
            cfg = load_config("nanda2023", [f"train.device={DEVICE}", "train.early_stop=true", "train.threads=1",
                                            f"train.precision={precision}", "train.steps=25000", *comp]
                              + (["data.p=23", "train.steps=2000"] if q else []))
            t = time.perf_counter()
            res = train(members(cfg, n), progress=False)
            hits = [r.summary["step_val_99"] for r in res]
            ok = [h for h in hits if h is not None]
            spread = f"{statistics.mean(ok):.0f} ± {statistics.stdev(ok):.0f}" if len(ok) > 1 else "-"
            out(f"nanda2023 {n} seeds, {precision}: val 99% steps (mean ± sd)",
                f"{hits} -> {spread} ({time.perf_counter() - t:.0f} s)")

    if "compile" not in skip:
        n, steps, w = (4, 200, 100) if q else (64, 450, 150)
        for precision, on in (("fp32", "false"), ("fp32", "true"), ("tf32", "true"), ("bf16", "false"),
                              ("bf16", "true")):
            t = time.perf_counter()
            cfg = cfg_for("nanda2023", steps, f"train.precision={precision}", f"train.compile={on}")
            rate, _, peak = timed(members(cfg, n), w)
            out(f"nanda2023 N={n} {precision} compile={on} member-steps/s",
                f"{rate * n:.0f} ({tflops(cfg, rate * n)}; peak {peak:.1f} GB; "
                f"call {time.perf_counter() - t:.0f} s incl. compile)")
        if not q:
            cfg = cfg_for("nanda2023", steps, "train.precision=bf16", "train.compile=true")
            rate, _, peak = timed(members(cfg, 256), w)
            out("nanda2023 N=256 bf16 compile=true member-steps/s",
                f"{rate * 256:.0f} ({tflops(cfg, rate * 256)}; peak {peak:.1f} GB)")

    if "profile" not in skip:
        from torch.profiler import ProfilerActivity, profile
        n = 4 if q else 64
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
        # bf16 + compile: the fastest mode, at 7 % of its peak (where does its step go?)
        for precision, on in (("fp32", "false"), ("fp32", "true"), ("bf16", "true")):
            cfgs = members(cfg_for("nanda2023", 30, "train.cuda_graphs=false", f"train.compile={on}",
                                   f"train.precision={precision}"), n)
            train(cfgs, progress=False)  # compile, allocator warm-up
            with profile(activities=acts) as prof:
                train(cfgs, progress=False)
            key = "self_device_time_total" if DEVICE == "cuda" else "self_cpu_time_total"
            print(f"\nprofile: nanda2023 N={n} eager, {precision}, compile={on}, 30 steps + 1 evaluation")
            print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=70))

    width = max(len(r[0]) for r in rows)
    print("\ngroklab GPU benchmarks")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
