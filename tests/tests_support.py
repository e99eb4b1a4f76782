"""Helpers shared by test modules in several directories (tests/ is on sys.path)."""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def example_documents() -> list[dict[str, Any]]:
    """Every object in examples/*.yaml, in file order."""
    return [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def example_spec(kind: str) -> dict[str, Any]:
    """A copy of the spec of the example of `kind`."""
    return copy.deepcopy(next(doc["spec"] for doc in example_documents() if doc["kind"] == kind))


def version_files(root: Path) -> dict[str, bytes]:
    """A dataset version's files by relative path, but the manifest (it records when it was made)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "manifest.json"}


def install_crds(cluster) -> None:
    """Apply crds/ and wait until the API server serves them. Established is not yet served:
    until a new CRD's watch cache is ready, lists are answered 429 "storage is (re)initializing",
    and an operator started then backs off its watches (a first test once waited 90 s for a
    controller that never saw its objects)."""
    from strata.api import KINDS
    from strata.constants import GROUP

    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds"))
    kinds = ",".join(f"{info.plural}.{GROUP}" for info in KINDS)
    wait_for(lambda: cluster.kubectl("get", kinds, "--all-namespaces", check=False).returncode == 0,
             timeout=60, what="the CRDs to serve lists")


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll until predicate() returns something truthy; fail with what it last saw."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last saw: {last!r}")


def wait_until_empty(remaining: Callable[[], list[Any]], timeout: float = 60, interval: float = 0.5,
                     what: str = "nothing to remain") -> None:
    """Poll until remaining() is empty; fail naming what was still there."""
    deadline = time.monotonic() + timeout
    left = remaining()
    while left and time.monotonic() < deadline:
        time.sleep(interval)
        left = remaining()
    if left:
        pytest.fail(f"timed out after {timeout}s waiting for {what}; still there: {left!r}")


def get_json(cluster, *args: str) -> dict[str, Any] | None:
    """`kubectl get ... -o json`, or None when it does not exist."""
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def temporary_namespace(cluster, prefix: str):
    """A fixture body: a fresh namespace on `cluster`, deleted (without waiting) afterwards."""
    import uuid
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def running_cluster(cluster, what: str):
    """A fixture body: `cluster` started (the test fails, never skips, saying why it could not
    start) and stopped afterwards."""
    from strata.devcluster import BuildError, DevClusterError
    try:
        cluster.start()
    except (DevClusterError, BuildError) as error:
        pytest.fail(f"{what} failed to start:\n{error}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def operator_process(cluster, namespaces: list[str], env: dict[str, str] | None = None):
    """A fixture body: the operator as its own process (`strata run`) against `cluster`,
    watching `namespaces` (globs allowed), stopped afterwards; its log is shown on failure.

    A process rather than kopf's in-process runner: the API client is per process, so this
    operator cannot get mixed up with another cluster's operator in the same test session.
    """
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    log = tempfile.NamedTemporaryFile("w+", prefix="strata-operator-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "strata.cli", "run", "--kubeconfig", str(cluster.kubeconfig), "--metrics-port", "0"]
    for namespace in namespaces:
        command += ["--namespace", namespace]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    process.log_path = log.name  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        text = Path(log.name).read_text()
        tracebacks = [line for line in text.splitlines() if "Traceback" in line]
        assert not tracebacks, f"the operator logged tracebacks:\n{text[-6000:]}"


def sidecar_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment to start the sidecar with: its compiled gRPC front end, built from this
    checkout (cached by the sources' hash), unless the config keeps gRPC in Python."""
    env = dict(os.environ)
    if config.get("grpcFrontEnd", "compiled") == "compiled":
        from strata.devcluster.binaries import sidecar_grpc_binary
        from strata_workloads.serve.grpc_front_end import BINARY_ENV

        env[BINARY_ENV] = str(sidecar_grpc_binary())
    return env
