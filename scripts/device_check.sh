#!/usr/bin/env bash
# The GPU check, as one script: CUDA tests, the GPU benchmark, the whole suite with
# train.device = auto, and a stored nanda2023 Fourier run. Logs go to $OUT (or ./device-out).
#   bash scripts/device_check.sh [cuda|bench|suite|fourier ...]   # default: cuda bench
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
parts=${*:-cuda bench}
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv 2>&1 | tee "$OUT/smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
for part in $parts; do
  case $part in
    cuda)    timeout "${CUDA_TIMEOUT:-240}" python3 -m pytest -m cuda tests/test_cuda.py -q -s -p no:cacheprovider \
               2>&1 | tee "$OUT/cuda_tests.log" ;;
    bench)   timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench_gpu.log" ;;
    suite)   timeout "${SUITE_TIMEOUT:-240}" python3 -m pytest tests -q -p no:cacheprovider -n "${SUITE_WORKERS:-12}" \
               2>&1 | tee "$OUT/suite.log" ;;
    fourier) rm -rf /tmp/fourier-store
             timeout "${FOURIER_TIMEOUT:-150}" python3 -m groklab.cli fourier nanda2023 --store /tmp/fourier-store \
               --json -q -o "$OUT/fourier-nanda2023.png" 2>&1 | tee "$OUT/fourier.log"
             tar -czf "$OUT/fourier-store.tgz" -C /tmp fourier-store ;;
  esac
done
