#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a GPU machine (torch + CUDA present):
#
#   tests/benchmarks/gpu_check.sh [bench|tests|all]        (default: all, benchmark first)
#
# 1. installs the carried wheels from .gpu-wheels/ (tests/benchmarks/gpu_wheels.sh makes them;
#    carry the folder with the working tree) offline into /tmp/site, each exactly as carried
#    (--no-deps: no resolver decision can stop the call), ahead of the machine's own packages;
# 2. bench: tests/benchmarks/bench_trainer.py --gpu-only (plain PyTorch, then the trainer in each
#    of BENCH_VARIANTS: tokens/s, ratio, MFU, peak memory on packed documents);
# 3. tests: pytest -m gpu tests/workloads/test_trainer_gpu.py (every family, bf16/fp16,
#    ZeRO-2/3, compile, recomputation, resume, export after GPU training) and
#    tests/workloads/test_embedding_drift.py (the embedding Job on CUDA agrees with the CPU;
#    skipped, naming the package, where sentence-transformers or the model's wheel is absent).
#
# Rehearse it here first (no CUDA): `tests/benchmarks/gpu_check.sh rehearse` runs the same
# steps with the benchmark's --cpu-rehearsal, and the gpu tests are reported NOT RUN.
#
# Logs go to $OUT (default /tmp/gpu-check): environment.log, install.log, benchmark.log,
# gpu-tests.log, and summary.txt with the benchmark table and the pytest summary. Time limits
# (seconds) BENCH_TIMEOUT (default 240) and TESTS_TIMEOUT (default 330) keep one call inside a
# 10-minute command limit; the exit status is non-zero if any part failed. BENCH_VARIANTS (default
# default,compile) and BENCH_ARGS (e.g. "--gpu-micro-batch 16") shape the benchmark; GPU_TESTS_K
# selects tests by pytest -k expression, for a rerun of some.
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

if [ -d .gpu-wheels ] && [ "$part" != rehearse ]; then
  if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .gpu-wheels/*.whl > "$OUT/install.log" 2>&1; then
    echo "installing the carried wheels failed:"; tail -25 "$OUT/install.log"; exit 3
  fi
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
if ! python3 -c 'import deepspeed, pyarrow, pydantic, pytest' >> "$OUT/install.log" 2>&1; then
  echo "missing packages (carry .gpu-wheels/, made by tests/benchmarks/gpu_wheels.sh):"; tail -5 "$OUT/install.log"
  exit 3
fi

: > "$OUT/summary.txt"
rehearsal=()
[ "$part" = rehearse ] && rehearsal=(--cpu-rehearsal --gpu-steps 8)
if [ "$part" = all ] || [ "$part" = bench ] || [ "$part" = rehearse ]; then
  timeout "${BENCH_TIMEOUT:-240}" python3 tests/benchmarks/bench_trainer.py --gpu-only --gpu-steps "${GPU_STEPS:-25}" \
    --variants "${BENCH_VARIANTS:-default,compile}" ${BENCH_ARGS:-} "${rehearsal[@]}" \
    > "$OUT/benchmark.log" 2>&1 || { echo "benchmark failed (status $?)" >> "$OUT/summary.txt"; tail -30 "$OUT/benchmark.log" >> "$OUT/summary.txt"; status=1; }
  sed -n '/^GPU:/,$p; /NOT measured/p' "$OUT/benchmark.log" >> "$OUT/summary.txt"
fi
if [ "$part" = all ] || [ "$part" = tests ] || [ "$part" = rehearse ]; then
  timeout "${TESTS_TIMEOUT:-330}" python3 -m pytest tests/workloads/test_trainer_gpu.py \
    tests/workloads/test_embedding_drift.py -m gpu -p no:cacheprovider \
    -v -rfEs --timeout 540 --durations=0 ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} > "$OUT/gpu-tests.log" 2>&1 || { echo "gpu tests failed (status $?)" >> "$OUT/summary.txt"; status=1; }
  # each test's line as it ends (-v), so a run cut short by the timeout still says which passed
  grep -E ' (PASSED|FAILED|ERROR)|^(FAILED|ERROR) |passed|failed|NOT RUN|[0-9.]+s (call|setup)' "$OUT/gpu-tests.log" \
    | cut -c1-300 >> "$OUT/summary.txt"
fi
cat "$OUT/summary.txt"
exit $status
