#!/usr/bin/env bash
# The GPU check, as one script: CUDA tests, the GPU benchmark, the whole suite with
# train.device = auto, and a stored nanda2023 Fourier run. Logs go to $OUT (or ./device-out).
#   bash scripts/device_check.sh [cuda|capture|bench|<a bench_gpu section>|checkpoint|suite|fourier|fraction ...]
#   (default: cuda bench)
# fraction: the whole `repro-fraction` sweep (39 runs, early stop or 1e5 steps) end to end with its
# wall time; cut off, the same command resumes it (the store, $FRACTION_STORE or /tmp/rf, lives until the
# machine goes; FRACTION_ARGS adds sweep options, e.g. "--set train.precision=tf32", with its own store).
# Wheels in .whl/ (e.g. plotly, which the report tests need and the device image lacks) are
# installed first into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1  # absolute: CLI tests run subprocesses from other folders
parts=${*:-cuda bench}
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu --format=csv 2>&1 | tee "$OUT/smi.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
for part in $parts; do
  case $part in
    cuda)    timeout "${CUDA_TIMEOUT:-240}" python3 -m pytest -m cuda tests/test_cuda.py -q -s -p no:cacheprovider \
               2>&1 | tee "$OUT/cuda_tests.log" ;;
    capture) timeout 90 python3 -m pytest -m cuda tests/test_cuda.py -k label_noise -q -s -p no:cacheprovider \
               2>&1 | tee "$OUT/capture.log" ;;
    bench)   timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_gpu.py ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/bench_gpu.log" ;;
    roofline|attention|sweep|streams|precision|compile|profile|fusion)   # one bench section each, so a cut-off run still returns the earlier one
             # recompiles and graph breaks logged: a compile that fires inside the CUDA-graph capture
             # breaks it (pytorch/pytorch#185074), the suspect for the 39-member capture failure
             TORCH_LOGS="${TORCH_LOGS:-recompiles,graph_breaks}" timeout "${BENCH_TIMEOUT:-200}" \
               python3 benchmarks/bench_gpu.py --only "$part" 2>&1 | tee -a "$OUT/bench_gpu.log" ;;
    checkpoint)  # the background checkpoint writer on this host's disk and cores (bench_sweep section 6)
             timeout 120 python3 benchmarks/bench_sweep.py --only-checkpoint 2>&1 | tee -a "$OUT/checkpoint.log" ;;
    suite)   timeout "${SUITE_TIMEOUT:-240}" python3 -m pytest tests -v -rfEs --tb=short -p no:cacheprovider \
               -n "${SUITE_WORKERS:-12}" --timeout 150 --durations 15 \
               2>&1 | tee "$OUT/suite.log" ;;
    fraction) t0=$(date +%s) rf=${FRACTION_STORE:-/tmp/rf}
             timeout "${FRACTION_TIMEOUT:-540}" python3 -m groklab.cli sweep repro-fraction --store "$rf" \
               ${FRACTION_ARGS:-} 2>&1 | tail -60 | tee -a "$OUT/fraction.log"
             echo "sweep call: $(( $(date +%s) - t0 )) s wall" | tee -a "$OUT/fraction.log"
             python3 -m groklab.cli ls --store "$rf" 2>&1 | tail -45 | tee -a "$OUT/fraction.log"
             python3 -m groklab.cli analyze repro-fraction --store "$rf" --kind efficiency \
               -o "$OUT/repro-fraction.png" 2>&1 | tail -30 | tee -a "$OUT/fraction.log"
             tar -czf "$OUT/$(basename "$rf")-store.tgz" -C "$(dirname "$rf")" "$(basename "$rf")" ;;
    fourier) rm -rf /tmp/fourier-store
             timeout "${FOURIER_TIMEOUT:-150}" python3 -m groklab.cli fourier nanda2023 --store /tmp/fourier-store \
               --json -q -o "$OUT/fourier-nanda2023.png" 2>&1 | tee "$OUT/fourier.log"
             tar -czf "$OUT/fourier-store.tgz" -C /tmp fourier-store ;;
  esac
done
