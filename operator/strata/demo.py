"""`strata demo`: the whole loop on one machine.

Starts the dev cluster (detached), installs the CRDs generated from the models, runs the
operator in the background, applies examples/, waits until the operator has reported on
every resource, and prints `kubectl get strata`. `strata demo --down` stops it all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from strata.api.crd import render_crd_files
from strata.conditions import status_is_current
from strata.devcluster import down, free_port, kubectl_path, running_components, up
from strata.devcluster.processes import ManagedProcess, find_running, terminate

OPERATOR = "operator"


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [str(kubectl_path()), "--kubeconfig", str(kubeconfig), *args],
        input=input, capture_output=True, text=True, timeout=120,
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _operator_process(state_dir: Path) -> ManagedProcess:
    return ManagedProcess(
        OPERATOR,
        Path(sys.executable),
        [],
        state_dir / "logs" / "operator.log",
        state_dir / "run" / "operator.pid",
    )


def _start_operator(state_dir: Path, kubeconfig: Path) -> tuple[int, int]:
    _stop_operator(state_dir)  # a rerun replaces the previous demo's operator
    process = _operator_process(state_dir)
    metrics_port = free_port()
    process.args = [
        "-m", "strata.cli", "run", "--kubeconfig", str(kubeconfig),
        "--liveness", f"http://127.0.0.1:{free_port()}/healthz", "--metrics-port", str(metrics_port),
    ]
    process.start(cwd=state_dir, detached=True)
    return process.pid, metrics_port


def _stop_operator(state_dir: Path) -> bool:
    process = _operator_process(state_dir)
    pid = find_running(OPERATOR, Path(sys.executable).name, process.pid_path, state_dir)
    if pid is None:
        return False
    process.pid = pid
    terminate([process], 10)
    return True


def _all_reported(kubeconfig: Path) -> bool:
    items = json.loads(_kubectl(kubeconfig, "get", "strata", "-A", "-o", "json"))["items"]
    return bool(items) and all(map(status_is_current, items))


def run_demo(state_dir: Path, examples: Path, timeout: float = 120) -> int:
    state_dir = state_dir.resolve()
    if not running_components(state_dir):
        print(f"Starting the dev cluster in {state_dir} (the first run builds Kubernetes: many minutes)...")
        up(state_dir)
    kubeconfig = state_dir / "kubeconfig"

    print("Installing the Strata CRDs...")
    _kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input="---\n".join(render_crd_files().values()))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
             "app.kubernetes.io/part-of=strata")

    pid, metrics_port = _start_operator(state_dir, kubeconfig)
    print(f"Operator running (pid {pid}), logs in {state_dir / 'logs' / 'operator.log'}")

    print(f"Applying {examples}...")
    print(_kubectl(kubeconfig, "apply", "-f", str(examples)), end="")

    deadline = time.monotonic() + timeout
    while not _all_reported(kubeconfig):
        if time.monotonic() > deadline:
            print("The operator has not reported on every resource; see its log.", file=sys.stderr)
            return 1
        time.sleep(1)

    print()
    print(_kubectl(kubeconfig, "get", "strata", "-A"), end="")
    print()
    print(f"export KUBECONFIG={kubeconfig}")
    print(f"Operator metrics: http://127.0.0.1:{metrics_port}/metrics")
    print("Stop everything with: strata demo --down")
    return 0


def stop_demo(state_dir: Path) -> int:
    state_dir = state_dir.resolve()
    stopped = ["operator"] if _stop_operator(state_dir) else []
    stopped += down(state_dir)
    print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")
    return 0
