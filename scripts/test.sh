#!/usr/bin/env bash
# Set up (CPU torch pinned so no CUDA build is pulled) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# The report's browser test drives Debian's chromium through its chromedriver (never a downloaded browser).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
    else
        echo "scripts/test.sh: chromium and chromium-driver are missing and cannot be installed here" \
             "(not root); the browser test will be skipped unless CI is set" >&2
    fi
fi
python3 -m pip install -q torch==2.13.0 -e '.[test]'
# One xdist worker per core, at most 4: every test trains on one torch thread, so a serial run
# leaves the second core of a 2-core machine idle (884 s serial vs 512 s on 2 workers there).
# The tests that start processes or a Ray cluster share one worker (conftest.PROCESSES).
# GROKLAB_TEST_WORKERS=0 runs the tests in this process.
workers=${GROKLAB_TEST_WORKERS:-$(python3 -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}
# The xdist workers share the cores: a test on two threads beside the other worker runs 1.6x faster
# when OpenMP's idle threads sleep at once (benchmarks/bench_threads.py; alone it costs ~0.7x).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
python3 -m pytest tests -n "$workers" --dist loadgroup "$@"
