"""Sweep throughput: the default local backend vs one run at a time, and Ray's overhead.

    python benchmarks/bench_sweep.py            # 32 runs of a tiny MLP (p=23, 400 steps)
    python benchmarks/bench_sweep.py --quick    # 8 runs, 200 steps

Every mode trains the same runs (8 fractions × 4 seeds of `quickstart` at p = 23) into a fresh
store and is timed end to end, start-up included:

1. sequential: one process, one run after another, torch on every core (what a loop over
   `groklab run` does);
2. sequential, 1 thread: the same on one thread (the per-run cost the workers pay);
3. local: `groklab sweep` defaults (one spawn worker per core, one thread each, the runs dealt
   evenly over them in ensembles of at most 8);
4. ray: the same plan as Ray tasks (`ray.init(num_cpus=cores)`), with and without Ray's
   own start-up; the driver writes the store;
5. shrink: an early-stopping fraction sweep packed as one ensemble (p = 47, fractions 0.35-0.8,
   stopping at val 99 % or 3 000 steps), with stopped members leaving the batched model (the
   default) and with them kept to the end; both give the same results (checked);
6. checkpoint: how long one checkpoint of a 39-member `repro-transformer` ensemble (the GPU
   planner's `repro-fraction` group: 263 MB of parameters and Adam state, written every 1 000
   steps) holds up training, mean of 3: written at once (with its parts: digest, serialization,
   write, fsync) and handed to the background writer (the default), with the longest stall a
   Python loop saw while the writer worked; and again once all but 6 members have left the
   batched model (the sweep's tail: the first checkpoint after it writes the group once to a
   ledger file, the later ones hold the 6 live members only), with the bytes each writes;
7. joint: four sweeps of one run each (as a claim's arms, or `reproduce --all`'s claims), run
   one sweep after another (each plans a single group, so one worker, on the config's threads)
   and executed together (`run_sweeps`: their groups over all the workers, one thread each); the
   same runs and results (checked); with the runs pinned to one thread (as most claims' quick
   sizes pin them) and on `auto` threads;
8. protocol: the `efficiency-norm` claim's runs at its quick size (C_gen and C_mem at four
   fractions, with the correct-class-logit hook) trained by the protocol in this process, one
   after another (what `reproduce` did before the twenty-first session, and `groklab efficiency`
   does), and by `reproduce` as sweep groups over the workers, and (unless --no-ray) over a local
   Ray cluster's tasks (started before the clock); the same points (checked).

Run it alone: another torch process on the same cores distorts every figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from groklab.store import Store
from groklab.sweep import load_spec, run_sweep, run_sweeps
from groklab.sweep.plan import cpu_count


def spec(n_fracs: int, seeds: int, steps: int, threads: str):
    fracs = [round(0.3 + 0.05 * i, 2) for i in range(n_fracs)]
    return load_spec({"name": "bench", "base": "quickstart", "seeds": seeds, "axes": {"data.frac_train": fracs},
                      "set": ["data.p=23", f"train.steps={steps}", "train.eval_every=50", "train.batch_size=64",
                              "train.early_stop=false", f"train.threads={threads}"]})


def shrink_section(quick: bool) -> tuple[float, float]:
    """Wall seconds of one packed early-stopping ensemble with stopped members leaving, and kept."""
    from groklab import load_config, with_overrides
    from groklab.train import engine, train

    base = load_config("quickstart", ["data.p=47", "model.d_model=64", "model.d_hidden=128", "optim.lr=3e-3",
                                      "train.steps=3000", "train.threads=1", "train.batch_size=128",
                                      "train.eval_every=50", "train.early_stop=true", "train.early_stop_patience=2"])
    fracs, seeds = ([0.35, 0.5, 0.65, 0.8], 1) if quick else ([0.35 + 0.05 * i for i in range(10)], 2)
    cfgs = [with_overrides(base, {"data.frac_train": round(f, 2), "train.seed": s}) for f in fracs for s in range(seeds)]
    out, saved = {}, engine.SHRINK_AT
    try:
        for label, share in (("stopped members leave", saved), ("stopped members kept", 0.0)):
            engine.SHRINK_AT = share
            t0 = time.perf_counter()
            res = train(cfgs, progress=False)
            out[label] = (time.perf_counter() - t0, [r.summary["step_val_99"] for r in res])
            print(f"  {label + f' ({len(cfgs)} members)':<34} {out[label][0]:8.1f} s", flush=True)
    finally:
        engine.SHRINK_AT = saved
    (leave, a), (kept, b) = out.values()
    assert a == b, f"shrinking changed the results: {a} vs {b}"
    print(f"  val 99 % steps: {a}")
    return leave, kept


def _longest_pause(seconds: float) -> float:
    """Spin a Python loop for `seconds`; the longest gap between two of its turns: how long another
    thread held the GIL (a training loop's Python stalls as long)."""
    end = time.perf_counter() + seconds
    last = worst = 0.0
    while (now := time.perf_counter()) < end:
        worst, last = (max(worst, now - last) if last else 0.0), now
    return worst


def checkpoint_section(quick: bool) -> tuple[float, float]:
    """Seconds one ensemble checkpoint holds up training (mean of 3): written at once, with its
    parts (digest, serialization, write, fsync), and handed to the background writer."""
    from groklab import load_config, with_overrides
    from groklab.train import checkpoint
    from groklab.train.engine import _Run

    base = load_config("repro-transformer", ["train.device=cpu", "train.threads=1"])
    n, reps = (8 if quick else 39), 3
    cfgs = [with_overrides(base, {"train.seed": i % 3, "data.frac_train": 0.2 + 0.05 * (i // 3)}) for i in range(n)]
    parts = {"digest": (checkpoint, "_digest"), "serialize": (checkpoint, "_file_parts"),
             "write": (checkpoint, "_write_all"), "fsync": (checkpoint.os, "fsync")}
    spent = dict.fromkeys(["at once", "background", "after members left", *parts], 0.0)
    saved = {name: getattr(mod, attr) for name, (mod, attr) in parts.items()}

    def timing(name, fn):
        def timed_part(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return timed_part
    with tempfile.TemporaryDirectory() as tmp:
        run = _Run(cfgs, Store(f"{tmp}/s"), None, None)
        try:
            for name, (mod, attr) in parts.items():
                setattr(mod, attr, timing(name, saved[name]))
            for k in range(reps):
                t0 = time.perf_counter()
                run.checkpoint(1000 * (k + 1), final=True)
                spent["at once"] += time.perf_counter() - t0
        finally:
            for name, (mod, attr) in parts.items():
                setattr(mod, attr, saved[name])
        pauses = []
        for k in range(reps):  # as the training loop does: each waits for the one before
            t0 = time.perf_counter()
            run.checkpoint(1000 * (k + 1))
            spent["background"] += time.perf_counter() - t0
            pauses.append(_longest_pause(3.0))  # the training between two checkpoints
        run.writer.wait()
        size = run.store.paths.checkpoint(run.group).stat().st_size / 1e6
        # The sweep's tail: all but the 6 runs at the lowest fractions stopped and left the batched
        # model. The first checkpoint after it also writes the ledger (the whole group, once).
        for i in range(6, n):
            run.members.status[i] = "finished"
        run.sync_phase(0)
        run.shrink()
        tail_writes, write = [], checkpoint.write_tensors

        def counted(path, tensors, metadata, **kwargs):
            t0 = time.perf_counter()
            write(path, tensors, metadata, **kwargs)
            tail_writes.append((path.stat().st_size / 1e6, time.perf_counter() - t0))
        checkpoint.write_tensors = counted
        try:
            for k in range(reps + 1):
                t0 = time.perf_counter()
                run.checkpoint(1000 * (reps + k + 1))
                spent["after members left"] += (time.perf_counter() - t0) if k else 0.0
                time.sleep(3)
            run.writer.wait()
        finally:
            checkpoint.write_tensors = write
    out = {k: v / reps for k, v in spent.items()}
    print(f"  one checkpoint of {n} repro-transformer members ({size:.0f} MB), written at once: "
          f"{out['at once']:.2f} s (" + ", ".join(f"{k} {out[k]:.2f}" for k in parts)
          + f"); handed to the background writer: {out['background']:.2f} s, and while it wrote, a Python "
          f"loop stood still at most {max(pauses) * 1e3:.0f} ms at a time (the writer holding the GIL); "
          f"with {len(run.live)} of the {n} members left in the batched model: {out['after members left']:.2f} s; "
          f"the writer then wrote the ledger once ({tail_writes[0][0]:.0f} MB, {tail_writes[0][1]:.2f} s) and "
          f"each later checkpoint {tail_writes[-1][0]:.1f} MB in {tail_writes[-1][1]:.2f} s", flush=True)
    return out["at once"], out["background"]


def joint_section(quick: bool) -> dict[str, tuple[float, float]]:
    """Wall seconds of four one-run sweeps one after another, and executed together: with runs on
    one thread (as most claims' quick sizes pin them) and on `auto` threads."""
    steps = 1000 if quick else 8000  # long enough that the pool's start-up (~5 s) is not the story
    out = {}
    for threads in ("1", "auto"):
        specs = [load_spec({"name": f"arm{i}", "base": "quickstart", "seeds": [0],
                            "set": ["data.p=23", f"data.frac_train={0.3 + 0.1 * i:.1f}", f"train.steps={steps}",
                                    "train.eval_every=100", "train.batch_size=64", "train.early_stop=false",
                                    f"train.threads={threads}"]})
                 for i in range(4)]
        print(f"four sweeps of one run each (quickstart at p=23, {steps} steps, train.threads={threads}):", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            apart = timed("one sweep after another", lambda: [run_sweep(sp, store=Store(f"{tmp}/a")) for sp in specs])
            together = timed("together (run_sweeps)", lambda: run_sweeps(specs, store=Store(f"{tmp}/b")))
            final = lambda root: sorted((r["sweep"], r["summary"]["val_loss"]) for r in Store(root).list())  # noqa: E731
            assert final(f"{tmp}/a") == final(f"{tmp}/b"), "the same runs must give the same results"
        out[threads] = (apart, together)
    return out


def protocol_section(quick: bool, ray: bool = True) -> tuple[float, float, float | None]:
    """Wall seconds of a protocol's runs trained in this process, one after another, by
    `reproduce` as sweep groups over the workers, and by `reproduce` on Ray (section 8)."""
    from groklab.protocols.efficiency import run_efficiency
    from groklab.reproduce import get_claim, reproduce

    claim = get_claim("efficiency-norm")
    params, sets, _ = claim.protocol_call("main", "quick")
    extra = ("train.steps=1000",) if quick else ()
    args = dict(quick=True, loss=params.loss, overrides=[*sets, *extra, "train.seed=0"])
    print(f"efficiency-norm (quick): {2 * len(params.fractions)} runs"
          + (" of 1 000 steps" if quick else ""), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        apart = timed("the protocol, one run after another",
                      lambda: run_efficiency(params.arch, params.fractions, store=Store(f"{tmp}/a"), **args))
        together = timed("reproduce (sweep groups)", lambda: reproduce(claim, "quick", Store(f"{tmp}/b"), overrides=extra))
        on_ray = None
        if ray:
            import ray as ray_
            ray_.init(num_cpus=cpu_count(), include_dashboard=False, log_to_driver=False)
            try:
                on_ray = timed("reproduce --backend ray (tasks)", lambda: reproduce(
                    claim, "quick", Store(f"{tmp}/c"), overrides=extra, backend="ray", storage=f"{tmp}/shared"))
            finally:
                ray_.shutdown()
        read = lambda root: [(p.kind, p.frac_train, p.step, p.param_norm, p.correct_logit)  # noqa: E731
                             for p in run_efficiency(params.arch, params.fractions, store=Store(root),
                                                     train_missing=False, **args)]
        for other in ("b", "c") if ray else ("b",):
            assert read(f"{tmp}/a") == read(f"{tmp}/{other}"), "the same runs must give the same points"
    return apart, together, on_ray


def report_protocol(apart: float, together: float, on_ray: float | None) -> None:
    print(f"a protocol's runs as sweep groups vs one after another in the driver: {apart / together:.2f}x faster")
    if on_ray is not None:
        print(f"a protocol's runs as Ray tasks vs one after another in the driver: {apart / on_ray:.2f}x faster")


def report_joint(times: dict[str, tuple[float, float]]) -> None:
    for threads, (apart, together) in times.items():
        print(f"one-run sweeps executed together vs one after another (train.threads={threads}): "
              f"{apart / together:.2f}x faster")


def report_checkpoint(at_once: float, background: float) -> None:
    print(f"ensemble checkpoint: training held up {at_once / background:.1f}x less with the background writer")


def timed(label: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    print(f"  {label:<34} {dt:8.1f} s", flush=True)
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--only-shrink", action="store_true", help="only section 5")
    ap.add_argument("--only-checkpoint", action="store_true", help="only section 6")
    ap.add_argument("--only-joint", action="store_true", help="only section 7")
    ap.add_argument("--only-protocol", action="store_true", help="only section 8")
    args = ap.parse_args(argv)
    if args.only_protocol:
        report_protocol(*protocol_section(args.quick, not args.no_ray))
        return 0
    if args.only_joint:
        report_joint(joint_section(args.quick))
        return 0
    if args.only_checkpoint:
        report_checkpoint(*checkpoint_section(args.quick))
        return 0
    if args.only_shrink:
        leave, kept = shrink_section(args.quick)
        print(f"packed early-stopping sweep: members leaving vs kept: {kept / leave:.2f}x faster")
        return 0
    n_fracs, seeds, steps = (4, 2, 200) if args.quick else (8, 4, 400)
    cores = cpu_count()
    n = n_fracs * seeds
    print(f"{n} runs of quickstart at p=23, {steps} steps each; {cores} cores; load average "
          f"{os.getloadavg()[0]:.2f} at start", flush=True)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        res["seq"] = timed("sequential, auto threads", lambda: run_sweep(
            spec(n_fracs, seeds, steps, "auto"), store=Store(f"{tmp}/a"), workers=1, pack=1))
        res["seq1"] = timed("sequential, 1 thread", lambda: run_sweep(
            spec(n_fracs, seeds, steps, "1"), store=Store(f"{tmp}/b"), workers=1, pack=1))
        res["local"] = timed(f"local backend ({cores} workers × 1 thread)", lambda: run_sweep(
            spec(n_fracs, seeds, steps, "auto"), store=Store(f"{tmp}/c")))
        if not args.no_ray:
            import ray
            t0 = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            res["ray_init"] = time.perf_counter() - t0
            try:
                res["ray"] = timed("ray backend (Ray already started)", lambda: run_sweep(
                    spec(n_fracs, seeds, steps, "auto"), store=Store(f"{tmp}/d"), backend="ray"))
            finally:
                ray.shutdown()
            print(f"  {'ray.init':<34} {res['ray_init']:8.1f} s")
    print(f"local backend vs sequential (auto threads): {res['seq'] / res['local']:.2f}x faster "
          f"({n / res['local']:.2f} vs {n / res['seq']:.2f} runs/s)")
    print(f"local backend vs sequential (1 thread):     {res['seq1'] / res['local']:.2f}x faster")
    leave, kept = shrink_section(args.quick)
    print(f"packed early-stopping sweep: members leaving vs kept: {kept / leave:.2f}x faster")
    report_checkpoint(*checkpoint_section(args.quick))
    report_joint(joint_section(args.quick))
    report_protocol(*protocol_section(args.quick, not args.no_ray))
    if "ray" in res:
        print(f"ray vs local: {res['ray'] / res['local']:.2f}x the wall time "
              f"({res['ray'] - res['local']:+.1f} s; {res['ray'] + res['ray_init'] - res['local']:+.1f} s "
              f"counting ray.init)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
