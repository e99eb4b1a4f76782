"""False-alarm and detection rates of the drift monitor (strata_workloads.monitor.drift).

Windows drawn from the reference distribution measure false alarms; windows from a shifted
one measure detection. The baseline, measured in the same run, is PSI alone at the same
limit (the common practice the monitor improves on), so the table shows what gating PSI
with the two-sample test buys at each window size.

    python3 tests/benchmarks/bench_drift.py [--windows 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from strata_workloads.monitor import drift

MAX_PSI = 0.1


def rates(rng, window: int, shift: float, windows: int) -> tuple[float, float]:
    reference = {"x": rng.normal(0, 1, 5000)}
    monitor = baseline = 0
    for _ in range(windows):
        current = {"x": rng.normal(shift, 1, window)}
        monitor += drift.feature_drift(reference, current, MAX_PSI, 1, "w").breached
        baseline += drift.psi(reference["x"], current["x"]) > MAX_PSI
    return monitor / windows, baseline / windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    started = time.perf_counter()
    print(f"max PSI {MAX_PSI}, alpha {drift.DEFAULT_ALPHA}, reference 5000 values of N(0,1), "
          f"{args.windows} windows per row")
    print(f"{'window':>7} {'shift':>6} {'monitor alarms':>15} {'PSI-only alarms':>16} {'ratio':>6}")
    for window in (50, 100, 500, 2000):
        for shift in (0.0, 0.25, 0.5, 1.0):
            monitor, baseline = rates(rng, window, shift, args.windows)
            ratio = f"{monitor / baseline:.2f}" if baseline else "-"
            label = "false alarms" if shift == 0 else "detection"
            print(f"{window:>7} {shift:>6.2f} {monitor:>15.3f} {baseline:>16.3f} {ratio:>6}  {label}")
    print(f"{time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
