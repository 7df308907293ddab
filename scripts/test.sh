#!/usr/bin/env bash
# Set up (CPU torch pinned so no CUDA build is pulled) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0 -e '.[test]'
python3 -m pytest tests "$@"
