"""The HTML report at scale: 100 runs × 200 evaluations, generated in < 10 s and < ~10 MB.

    python benchmarks/bench_report.py                 # 100 runs × ~200 evaluations
    python benchmarks/bench_report.py --runs 300      # more
    python benchmarks/bench_report.py --browser       # also time Chromium opening the page

Synthetic runs (grokking-shaped curves, a fraction × weight-decay × seed sweep) are written
straight into a temporary store, so the figure measures the report, not training. Timed:
`groklab report --sweep` (every run, the three sweep analyses) as a fresh process, start-up
included, then in this process (imports done) with `--sweep` and with the same runs by id.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from groklab.cli import main
from groklab.report.synthetic import synthetic_sweep
from groklab.store import Store


def timed(fn) -> float:
    t0 = time.perf_counter()
    assert fn() == 0
    return time.perf_counter() - t0


def browser_seconds(page: Path) -> float | None:
    """Seconds until the page's script has drawn the table, overlay and sweep charts."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        t0 = time.perf_counter()
        d.get(page.as_uri())
        while not d.execute_script("return document.body.getAttribute('data-ready') === '1'"):
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        d.quit()


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--evals", type=int, default=200)
    ap.add_argument("--browser", action="store_true", help="also time headless Chromium loading the sweep page")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="groklab-bench-report-"))
    try:
        store = Store(tmp / "runs")
        t0 = time.perf_counter()
        ids = synthetic_sweep(store, n_runs=args.runs, n_evals=args.evals, steps=10_000, sweep="bench")
        n_evals = len(store.metrics(ids[0]))
        print(f"store: {len(ids)} runs × {n_evals} evaluations written in {time.perf_counter() - t0:.1f} s")
        sweep_page, ids_page = tmp / "sweep.html", tmp / "runs.html"
        root = str(store.paths.root)
        # what a user waits for: a fresh `groklab report` process, interpreter start-up and imports included
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "groklab.cli", "report", "--sweep", "bench", "-o", str(sweep_page),
                        "--store", root], check=True, capture_output=True)
        t_cold = time.perf_counter() - t0
        timed(lambda: main(["report", "--sweep", "bench", "-o", str(sweep_page), "--store", root]))  # imports
        t_sweep = timed(lambda: main(["report", "--sweep", "bench", "-o", str(sweep_page), "--store", root]))
        t_ids = timed(lambda: main(["report", *map(str, ids), "-o", str(ids_page), "--store", root]))
        for label, t, page in (("`groklab report --sweep` as a new process", t_cold, sweep_page),
                               ("report --sweep in-process (analyses included)", t_sweep, sweep_page),
                               ("report of the same runs by id, in-process", t_ids, ids_page)):
            mb = os.path.getsize(page) / 1e6
            print(f"{label}: {t:.2f} s, {mb:.2f} MB   (goal: < 10 s, < ~10 MB)")
        if args.browser:
            t = browser_seconds(sweep_page)
            print("headless Chromium, sweep page ready: " + (f"{t:.2f} s" if t is not None else "no chromium"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main_()
