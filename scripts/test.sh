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
python3 -m pytest tests "$@"
