"""How OpenMP's wait policy decides a multi-threaded run's speed when its cores are shared.

    python benchmarks/bench_threads.py            # ~3 minutes on 2 cores
    python benchmarks/bench_threads.py --steps 600

`quickstart` on all cores (`train.threads = auto`), each run in a fresh process with one way for
GNU OpenMP's idle threads to wait: unset (spin 300 000 times, then sleep), GOMP_SPINCOUNT=2000,
OMP_WAIT_POLICY=PASSIVE (sleep at once); first alone, then beside a single-thread groklab run
training on one of the cores (a second run, a sweep worker, a test). Printed: steps/s of each and
the ratios to the unset default, measured in this one run. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

RUN = """
import time
from groklab import load_config
from groklab.train import train
cfg = load_config("quickstart", ["train.steps={steps}", "train.early_stop=false", "train.eval_every=100",
                                 "train.device=cpu"])
train(load_config("quickstart", ["train.steps=20", "train.device=cpu"]), progress=False)  # warm-up
t = time.perf_counter(); train(cfg, progress=False); print({steps} / (time.perf_counter() - t))
"""

BUSY = """
from groklab import load_config
from groklab.train import train
train(load_config("quickstart", ["train.steps=1000000", "train.early_stop=false", "train.threads=1",
                                 "train.device=cpu"]), progress=False)
"""
WAYS = {"unset": {}, "GOMP_SPINCOUNT=2000": {"GOMP_SPINCOUNT": "2000"},
        "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}


def steps_per_s(way: dict, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(way)
    out = subprocess.run([sys.executable, "-c", RUN.format(steps=steps)], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    rows = {}
    for shared in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", BUSY]) if shared else None
        try:
            time.sleep(5.0 if shared else 0.0)  # the neighbour past its start-up
            for name, way in WAYS.items():
                rows[shared, name] = [steps_per_s(way, args.steps) for _ in range(args.repeats)]
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print(f"quickstart, train.threads = auto ({os.cpu_count()} cores), {args.steps} steps, best of {args.repeats}:")
    best = {k: max(v) for k, v in rows.items()}
    for shared in (False, True):
        base = best[shared, "unset"]
        cells = "  ".join(f"{name} {best[shared, name]:6.1f} ({best[shared, name] / base:4.2f}x)" for name in WAYS)
        print(f"  {'beside a 1-thread run' if shared else 'alone':<22} {cells}")


if __name__ == "__main__":
    main()
