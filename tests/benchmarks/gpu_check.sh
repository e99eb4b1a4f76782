#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a GPU machine (torch + CUDA present):
#
#   tests/benchmarks/gpu_check.sh [bench|tests|all]        (default: all, benchmark first)
#
# 1. installs the carried wheels from .gpu-wheels/ (tests/benchmarks/gpu_wheels.sh makes them;
#    carry the folder with the working tree), offline, skipping what is already installed;
# 2. bench: tests/benchmarks/bench_trainer.py --gpu-only (trainer vs plain PyTorch tokens/s,
#    ratio, MFU, peak memory on packed documents);
# 3. tests: pytest -m gpu tests/workloads/test_trainer_gpu.py (every family, bf16/fp16,
#    ZeRO-2/3, compile, recomputation, resume, export after GPU training).
#
# Logs go to $OUT (default /tmp/gpu-check): environment.log, install.log, benchmark.log,
# gpu-tests.log, and summary.txt with the benchmark table and the pytest summary. Time limits
# (seconds) BENCH_TIMEOUT (default 240) and TESTS_TIMEOUT (default 420) keep one call inside a
# 10-minute command limit; the exit status is non-zero if any part failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
part=${1:-all}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/operator:$PWD/workloads${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
status=0

{
  date -u
  nvidia-smi || true
  python3 -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])'
} > "$OUT/environment.log" 2>&1

if [ -d .gpu-wheels ]; then
  if ! python3 -m pip install --no-index --find-links .gpu-wheels -r tests/benchmarks/gpu_requirements.txt \
      > "$OUT/install.log" 2>&1; then
    echo "installing the carried wheels failed:"; tail -25 "$OUT/install.log"; exit 3
  fi
fi
if ! python3 -c 'import deepspeed, pyarrow, pydantic, pytest' >> "$OUT/install.log" 2>&1; then
  echo "missing packages (carry .gpu-wheels/, made by tests/benchmarks/gpu_wheels.sh):"; tail -5 "$OUT/install.log"
  exit 3
fi

: > "$OUT/summary.txt"
if [ "$part" = all ] || [ "$part" = bench ]; then
  timeout "${BENCH_TIMEOUT:-240}" python3 tests/benchmarks/bench_trainer.py --gpu-only --gpu-steps "${GPU_STEPS:-25}" \
    > "$OUT/benchmark.log" 2>&1 || { echo "benchmark failed (status $?)" >> "$OUT/summary.txt"; status=1; }
  sed -n '/^GPU:/,$p; /NOT measured/p' "$OUT/benchmark.log" >> "$OUT/summary.txt"
fi
if [ "$part" = all ] || [ "$part" = tests ]; then
  timeout "${TESTS_TIMEOUT:-420}" python3 -m pytest tests/workloads/test_trainer_gpu.py -m gpu -p no:cacheprovider \
    -q -rA --timeout 540 > "$OUT/gpu-tests.log" 2>&1 || { echo "gpu tests failed (status $?)" >> "$OUT/summary.txt"; status=1; }
  grep -E '^(PASSED|FAILED|ERROR)|passed|failed|NOT RUN' "$OUT/gpu-tests.log" >> "$OUT/summary.txt"
fi
cat "$OUT/summary.txt"
exit $status
