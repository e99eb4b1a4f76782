"""Fixtures for testing the CRDs and the operator against the real local control plane."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from strata.devcluster import free_port
from tests_support import example_documents, get_json, install_crds, wait_for  # noqa: F401 - re-exported to test modules

REPO = Path(__file__).resolve().parents[2]
TEST_NAMESPACE_PREFIX = "t-"
RESYNC_SECONDS = 3


@pytest.fixture(scope="session")
def crds_installed(dev_cluster):
    install_crds(dev_cluster)
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


# --- The real node: one per host, shared by the modules that run real pods --------------------

REAL_NODE_NAMESPACE_PREFIX = "rn-"
REAL_NODE_IMAGES = ("pause", "data", "trainer", "sidecar", "triton", "embedder")


@pytest.fixture(scope="session")
def real_node_cluster(tmp_path_factory: pytest.TempPathFactory):
    """The dev cluster with its real node (kubelet, containerd) and the workload images.

    Session-scoped: only one real node can run on a host, and building and importing the
    images takes minutes; the training and serving modules share it.
    """
    from strata.devcluster import DevCluster
    from tests_support import running_cluster

    state_dir = tmp_path_factory.mktemp("real-node")
    cluster = DevCluster(state_dir, real_node=True, images=REAL_NODE_IMAGES, startup_timeout=900)
    for cluster in running_cluster(cluster, "the real node with the workload images"):
        install_crds(cluster)
        yield cluster
    # The unpacked images (about 9 GB): pytest keeps its last temporary directories, logs and all.
    shutil.rmtree(state_dir / "node" / "containerd", ignore_errors=True)


@pytest.fixture(scope="module")
def real_node_monitoring(real_node_cluster):
    """Prometheus and prometheus-adapter added to the running session real-node cluster for one
    module (`DevCluster.start_monitoring`), and stopped after it, APIServices removed. Prometheus
    scrapes the real pods' `*-metrics` ports at their pod IPs; its port is
    `real_node_cluster.monitoring_ports.prometheus`. Built on first use (root conftest)."""
    from strata.devcluster import BuildError, DevClusterError

    try:
        real_node_cluster.start_monitoring()
    except (DevClusterError, BuildError) as error:
        pytest.fail(f"monitoring could not start on the real-node cluster:\n{error}", pytrace=False)
    try:
        yield real_node_cluster
    finally:
        real_node_cluster.stop_monitoring()


@pytest.fixture(scope="session")
def real_node_operator(real_node_cluster):
    """`strata run` as its own process, with the locally built images, watching rn-* namespaces."""
    from tests_support import operator_process

    refs = real_node_cluster.image_refs
    yield from operator_process(real_node_cluster, [f"{REAL_NODE_NAMESPACE_PREFIX}*"], {
        "STRATA_DATA_IMAGE": refs["data"],
        "STRATA_TRAINER_IMAGE": refs["trainer"],
        "STRATA_TRITON_IMAGE": refs["triton"],
        "STRATA_SIDECAR_IMAGE": refs["sidecar"],
        "STRATA_EMBEDDER_IMAGE": refs["embedder"],
        # Fast enough that a short test run sees several progress reads.
        "STRATA_PROGRESS_SECONDS": "3",
        "STRATA_RESYNC_SECONDS": "10",
    })
