"""`strata demo`: the whole loop on one machine.

Starts the dev cluster (detached) with its real node and the workload images, installs the
CRDs generated from the models, waits until the API server serves them, runs the operator in
the background, and runs the loop (demo_loop.py: data -> training in pods -> serving ->
feedback -> retraining -> promotion), printing how long each stage took and
`kubectl get strata`. With --examples PATH it applies those manifests instead and waits until
the operator has reported on each. `strata demo --down` stops it all. A failure part-way
stops what that run started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from strata.api import KINDS
from strata.api.crd import render_crd_files
from strata.conditions import status_is_current
from strata.constants import GROUP, VERSION
from strata.devcluster import BuildError, DevClusterError, down, free_port, kubectl_path, running_components, up
from strata.devcluster.binaries import find_binaries
from strata.devcluster.processes import ManagedProcess, find_running, terminate
from strata.validate import validate_files

OPERATOR = "operator"


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


def default_examples() -> Path:
    """The examples shipped with Strata: examples/ of the source tree the package is loaded
    from (a checkout, an editable install), else the copy a wheel installs as data files."""
    source_tree = Path(__file__).resolve().parents[2] / "examples"
    installed = Path(sys.prefix) / "share" / "strata" / "examples"
    return source_tree if source_tree.is_dir() or not installed.is_dir() else installed


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 120) -> str:
    try:
        result = subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(kubeconfig), *args],
            input=input, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise DemoError(f"kubectl {' '.join(args)} did not finish within {timeout:.0f}s") from error
    if result.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result.stdout


def _operator_process(state_dir: Path) -> ManagedProcess:
    return ManagedProcess(
        OPERATOR,
        Path(sys.executable),
        [],
        state_dir / "logs" / "operator.log",
        state_dir / "run" / "operator.pid",
    )


def running_operator(state_dir: Path) -> int | None:
    """The pid of the demo's operator for the cluster in `state_dir`, if it runs."""
    state_dir = Path(state_dir).resolve()
    return find_running(OPERATOR, Path(sys.executable).name, _operator_process(state_dir).pid_path, state_dir)


def _start_operator(state_dir: Path, kubeconfig: Path, env: dict[str, str] | None = None) -> tuple[int, int]:
    _stop_operator(state_dir)  # a rerun replaces the previous demo's operator
    process = _operator_process(state_dir)
    process.env = env
    metrics_port = free_port()
    process.args = [
        "-m", "strata.cli", "run", "--kubeconfig", str(kubeconfig),
        "--liveness", f"http://127.0.0.1:{free_port()}/healthz", "--metrics-port", str(metrics_port),
    ]
    process.start(cwd=state_dir, detached=True)
    return process.pid, metrics_port


def _stop_operator(state_dir: Path) -> bool:
    pid = running_operator(state_dir)
    if pid is None:
        return False
    process = _operator_process(state_dir)
    process.pid = pid
    terminate([process], 10)
    return True


def _wait_until_served(kubeconfig: Path, timeout: float) -> None:
    """Until each kind's list and watch are served: a CRD is Established before its storage
    is ready, and the operator's first watches would otherwise get 429 (re)initializing."""
    deadline = time.monotonic() + timeout
    for info in KINDS:
        path = f"/apis/{GROUP}/{VERSION}/{info.plural}"
        for query in ("limit=1", "limit=1&resourceVersion=0", "watch=1&timeoutSeconds=1"):
            while True:
                try:
                    _kubectl(kubeconfig, "get", "--raw", f"{path}?{query}", timeout=30)
                    break
                except DemoError:
                    if time.monotonic() > deadline:
                        raise DemoError(f"the API server did not serve {info.plural} within {timeout:.0f}s") from None
                    time.sleep(0.5)


def _all_reported(kubeconfig: Path) -> bool:
    items = json.loads(_kubectl(kubeconfig, "get", "strata", "-A", "-o", "json"))["items"]
    return bool(items) and all(map(status_is_current, items))


def _missing_binaries() -> list[str]:
    return [name for name, path in find_binaries().items() if path is None]


# Images the demo imports into the real node: the pod sandbox and the workloads the loop runs.
LOOP_IMAGES = ("pause", "data", "trainer", "sidecar", "triton", "embedder")
# With --examples: the pod sandbox, and the operator's (a small Python image to try pods with).
EXAMPLES_IMAGES = ("pause", "operator")
LOOP_NAMESPACE = "strata-demo"


def default_loop() -> Path:
    return default_examples() / "loop" / "loop.yaml"


def run_demo(state_dir: Path, examples: Path | None = None, timeout: float = 120,
             real_node: bool = True) -> int:
    if examples is None:
        if not real_node:
            print("The loop runs pods: it needs the real node (drop --no-real-node, or pass --examples).",
                  file=sys.stderr)
            return 2
        return run_loop_demo(state_dir.resolve())
    state_dir = state_dir.resolve()
    examples = examples.resolve()
    if not examples.exists():
        print(f"No examples at {examples}: pass the manifests to apply with --examples PATH.", file=sys.stderr)
        return 2
    # Refuse bad manifests before starting anything.
    problems = [problem for report in validate_files([examples]) for problem in report.problems]
    if problems:
        print("\n".join(["The examples are not valid:", *problems]), file=sys.stderr)
        return 2

    cluster_was_running = bool(running_components(state_dir))
    try:
        if not cluster_was_running:
            missing = _missing_binaries()
            if missing:
                print(f"Building {', '.join(missing)} first (once; many minutes on two cores), "
                      f"then starting the dev cluster in {state_dir}...")
            else:
                print(f"Starting the dev cluster in {state_dir}...")
            up(state_dir, real_node=real_node, images=EXAMPLES_IMAGES)
        kubeconfig = state_dir / "kubeconfig"
        _install_crds(kubeconfig)

        pid, metrics_port = _start_operator(state_dir, kubeconfig)
        print(f"Operator running (pid {pid}), logs in {state_dir / 'logs' / 'operator.log'}")

        print(f"Applying {examples}...")
        print(_kubectl(kubeconfig, "apply", "-f", str(examples)), end="")

        deadline = time.monotonic() + timeout
        while not _all_reported(kubeconfig):
            if running_operator(state_dir) is None:
                raise DemoError(f"the operator exited; see {state_dir / 'logs' / 'operator.log'}")
            if time.monotonic() > deadline:
                raise DemoError(f"the operator did not report on every resource within {timeout:.0f}s; "
                                f"see {state_dir / 'logs' / 'operator.log'}")
            time.sleep(1)
    except (DemoError, DevClusterError, BuildError, KeyboardInterrupt) as error:
        _give_up(state_dir, error, cluster_was_running)
        return 130 if isinstance(error, KeyboardInterrupt) else 1

    print()
    print(_kubectl(kubeconfig, "get", "nodes"), end="")
    print()
    print(_kubectl(kubeconfig, "get", "strata", "-A"), end="")
    print()
    print(f"export KUBECONFIG={kubeconfig}")
    print(f"Operator metrics: http://127.0.0.1:{metrics_port}/metrics")
    print(f"Stop everything with: strata demo --down --state-dir {state_dir}")
    return 0


def _install_crds(kubeconfig: Path) -> None:
    print("Installing the Strata CRDs...")
    _kubectl(kubeconfig, "apply", "--server-side", "-f", "-", input="---\n".join(render_crd_files().values()))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
             "app.kubernetes.io/part-of=strata")
    _wait_until_served(kubeconfig, timeout=60)


def run_loop_demo(state_dir: Path) -> int:
    from strata.demo_loop import LoopError, run_loop, stage_table

    loop = default_loop()
    cluster_was_running = bool(running_components(state_dir))
    started = time.monotonic()
    try:
        if not cluster_was_running:
            missing = _missing_binaries()
            print(f"Building {', '.join(missing)} first (once; many minutes on two cores), then starting"
                  if missing else "Starting", f"the dev cluster in {state_dir} with the images {', '.join(LOOP_IMAGES)}...")
            up(state_dir, real_node=True, images=LOOP_IMAGES)
        kubeconfig = state_dir / "kubeconfig"
        refs = json.loads((state_dir / "cluster.json").read_text()).get("images") or {}
        absent = [name for name in LOOP_IMAGES if name not in refs]
        if absent:
            raise DemoError(f"the running dev cluster lacks the images {', '.join(absent)}; "
                            f"stop it (strata demo --down) and run strata demo again")
        setup = time.monotonic() - started
        _install_crds(kubeconfig)
        pid, metrics_port = _start_operator(state_dir, kubeconfig, {
            "STRATA_DATA_IMAGE": refs["data"], "STRATA_TRAINER_IMAGE": refs["trainer"],
            "STRATA_SIDECAR_IMAGE": refs["sidecar"], "STRATA_TRITON_IMAGE": refs["triton"],
            "STRATA_EMBEDDER_IMAGE": refs["embedder"],
            "STRATA_FEEDBACK_EVALUATION_SECONDS": "10", "STRATA_PROGRESS_SECONDS": "5",
        })
        print(f"Operator running (pid {pid}), logs in {state_dir / 'logs' / 'operator.log'}")
        print(f"Cluster ready in {setup:.0f}s. Running the loop in namespace {LOOP_NAMESPACE} ({loop})...")
        print(f"  watch it: kubectl --kubeconfig {kubeconfig} get strata -n {LOOP_NAMESPACE} -w")
        try:
            _kubectl(kubeconfig, "create", "namespace", LOOP_NAMESPACE)
        except DemoError:
            pass  # a rerun: it exists (the loop's objects are applied again)

        def kubectl(*args: str, input: str | None = None) -> str:
            return _kubectl(kubeconfig, *args, input=input)

        def report(stage) -> None:
            print(f"  {stage.name:<10} {stage.seconds:5.0f}s  {stage.detail}", flush=True)

        stages = run_loop(kubectl, LOOP_NAMESPACE, loop, report)
    except (DemoError, LoopError, DevClusterError, BuildError, KeyboardInterrupt) as error:
        _give_up(state_dir, error, cluster_was_running)
        return 130 if isinstance(error, KeyboardInterrupt) else 1

    print()
    print(stage_table(stages))
    print()
    print(_kubectl(kubeconfig, "get", "strata", "-n", LOOP_NAMESPACE), end="")
    print()
    print(f"export KUBECONFIG={kubeconfig}")
    print(f"Operator metrics: http://127.0.0.1:{metrics_port}/metrics")
    print(f"Stop everything with: strata demo --down --state-dir {state_dir}")
    return 0


def _give_up(state_dir: Path, error: BaseException, cluster_was_running: bool) -> None:
    """Stop what this run started, and say what is left and how to stop it."""
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else str(error)
    print(f"strata demo failed: {reason}", file=sys.stderr)
    stopped = ["the operator"] if _stop_operator(state_dir) else []
    if not cluster_was_running:
        stopped += down(state_dir)
    if stopped:
        print(f"Stopped what this run started: {', '.join(stopped)}. Logs are in {state_dir / 'logs'}.",
              file=sys.stderr)
    if cluster_was_running:
        print(f"The dev cluster was already running and is left running; stop it with: "
              f"strata demo --down --state-dir {state_dir}", file=sys.stderr)


def stop_demo(state_dir: Path) -> int:
    state_dir = state_dir.resolve()
    stopped = ["operator"] if _stop_operator(state_dir) else []
    stopped += down(state_dir)
    print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing was running.")
    return 0
