"""Fixtures for testing the CRDs and the operator against the real local control plane."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from strata.devcluster import free_port
from tests_support import example_documents, get_json, wait_for  # noqa: F401 - re-exported to test modules

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
TEST_NAMESPACE_PREFIX = "t-"
RESYNC_SECONDS = 3


@pytest.fixture(scope="session")
def crds_installed(dev_cluster):
    dev_cluster.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
    dev_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD_DIR))
    return dev_cluster


@pytest.fixture
def namespace(crds_installed):
    name = f"{TEST_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", name)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def operator(crds_installed):
    """The real operator (all four controllers) run in-process by kopf's test runner."""
    from kopf.testing import KopfRunner

    metrics_port, health_port = free_port(), free_port()
    overrides = {
        "KUBECONFIG": str(crds_installed.kubeconfig),
        "STRATA_METRICS_PORT": str(metrics_port),
        # Resync fast so level-based repair is observable within a test.
        "STRATA_RESYNC_SECONDS": str(RESYNC_SECONDS),
        # FeedbackPolicies' evaluation timer (their spec.evaluationInterval still applies).
        "STRATA_FEEDBACK_EVALUATION_SECONDS": str(RESYNC_SECONDS),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    # Only the test namespaces (t-*): other tests run their own operator elsewhere.
    args = ["run", f"--namespace={TEST_NAMESPACE_PREFIX}*",
            f"--liveness=http://127.0.0.1:{health_port}/healthz", "-m", "strata.controllers"]
    try:
        with KopfRunner(args, timeout=60) as runner:
            runner.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            runner.health_url = f"http://127.0.0.1:{health_port}/healthz"
            yield runner
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None, runner.exception
