"""Session-wide fixtures: the real local Kubernetes control plane (`dev_cluster`), and
per module a second one that runs Kueue's controller (`kueue_cluster`) or Prometheus with
prometheus-adapter (`monitoring_cluster`).

Tests that use `dev_cluster` are marked `cluster` automatically, so `-m "not cluster"`
skips them. The cluster is never skipped silently: if it can't be built or started,
every test that needs it fails with the component's log tail.
"""

from __future__ import annotations

import pytest

from strata.devcluster import BuildError, DevCluster, ensure_binaries, processes_using
from strata.devcluster import FakeNode, kueue, monitoring
from tests_support import running_cluster

_build_error: str | None = None
_kueue_build_error: str | None = None
_monitoring_build_error: str | None = None


def _uses_dev_cluster(item: pytest.Item) -> bool:
    return bool({"dev_cluster", "kueue_cluster", "monitoring_cluster"}
                & set(getattr(item, "fixturenames", ())))


def _uses_kueue(item: pytest.Item) -> bool:
    return "kueue_cluster" in getattr(item, "fixturenames", ())


def _uses_monitoring(item: pytest.Item) -> bool:
    return bool({"monitoring_cluster", "real_node_monitoring"} & set(getattr(item, "fixturenames", ())))


# Set when gpu-marked tests were collected but no CUDA device is visible: (count, reason).
_gpu_not_run: tuple[int, str] | None = None


def _cuda_visible() -> tuple[bool, str]:
    try:
        import torch  # only imported when gpu tests were collected: operator-only runs stay light
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device visible"
    return True, ""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection sees the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _gpu_not_run
    for item in items:
        if _uses_dev_cluster(item):
            item.add_marker(pytest.mark.cluster)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    visible, reason = _cuda_visible()
    if not visible:
        # Not skipped one by one: taken out, and said once in the summary.
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
        config.hook.pytest_deselected(items=gpu_items)
        _gpu_not_run = (len(gpu_items), reason)


def pytest_terminal_summary(terminalreporter) -> None:
    if _gpu_not_run is not None:
        count, reason = _gpu_not_run
        terminalreporter.write_line(
            f"gpu: {count} tests NOT RUN ({reason}); on a GPU machine run tests/benchmarks/gpu_check.sh",
            yellow=True, bold=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before any test runs, so a first-time build (many minutes)
    doesn't count against a test's timeout."""
    global _build_error, _kueue_build_error, _monitoring_build_error
    if session.config.option.collectonly or not any(map(_uses_dev_cluster, session.items)):
        return
    try:
        ensure_binaries()
    except BuildError as error:
        _build_error = str(error)
    if any(map(_uses_kueue, session.items)):
        try:
            kueue.ensure_binary()  # built only when a collected test needs it; cached afterwards
        except BuildError as error:
            _kueue_build_error = str(error)
    if any(map(_uses_monitoring, session.items)):
        try:
            monitoring.ensure_binaries()  # likewise: Prometheus and prometheus-adapter
        except BuildError as error:
            _monitoring_build_error = str(error)


@pytest.fixture(scope="session")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running DevCluster (2 CPU + 2 GPU kwok nodes), shared by the whole session.

    Use `.kubeconfig`, `.env()` (os.environ + KUBECONFIG) or `.kubectl(*args)`.
    """
    if _build_error is not None:
        pytest.fail(f"dev cluster binaries could not be built:\n{_build_error}", pytrace=False)
    state_dir = tmp_path_factory.mktemp("devcluster")
    cluster = DevCluster(state_dir)
    try:
        yield from running_cluster(cluster, "dev cluster")
    finally:
        leftovers = processes_using(cluster.state_dir)
        if leftovers:
            pytest.fail(f"dev cluster processes survived stop(): {leftovers}", pytrace=False)


@pytest.fixture(scope="module")
def kueue_host_before() -> dict:
    """What Kueue's hard-coded host path looked like before the module's cluster started."""
    return kueue.host_snapshot()


@pytest.fixture(scope="module")
def kueue_cluster(tmp_path_factory: pytest.TempPathFactory, kueue_host_before: dict):
    """A running DevCluster with Kueue's controller (2 CPU + 2 GPU kwok nodes of 8 GPUs), one
    per module: one Kueue runs per host, so modules never hold two at once. Create queues with
    `strata.devcluster.kueue.create_queues(kueue_cluster, namespace=..., gpus=...)`."""
    for error in (_build_error, _kueue_build_error):
        if error is not None:
            pytest.fail(f"the dev cluster with Kueue could not be built:\n{error}", pytrace=False)
    cluster = DevCluster(tmp_path_factory.mktemp("kueue"), kueue=True)
    try:
        yield from running_cluster(cluster, "dev cluster with Kueue")
    finally:
        leftovers = processes_using(cluster.state_dir)
        if leftovers:
            pytest.fail(f"dev cluster processes survived stop(): {leftovers}", pytrace=False)
        if kueue.host_snapshot() != kueue_host_before:
            pytest.fail(f"{kueue.METRICS_CERT_DIR} was not restored: {kueue.host_snapshot()} "
                        f"!= {kueue_host_before}", pytrace=False)


# Three CPU nodes: the monitoring tests' pods use the host network, one per node.
MONITORING_NODES = [FakeNode(f"kwok-cpu-{i}") for i in range(3)]


@pytest.fixture(scope="module")
def monitoring_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A running DevCluster with Prometheus and prometheus-adapter (3 CPU kwok nodes), one per
    module. Prometheus's port is `.monitoring_ports.prometheus`."""
    for error in (_build_error, _monitoring_build_error):
        if error is not None:
            pytest.fail(f"the dev cluster with monitoring could not be built:\n{error}", pytrace=False)
    cluster = DevCluster(tmp_path_factory.mktemp("monitoring"), nodes=MONITORING_NODES, monitoring=True)
    try:
        yield from running_cluster(cluster, "dev cluster with monitoring")
    finally:
        leftovers = processes_using(cluster.state_dir)
        if leftovers:
            pytest.fail(f"dev cluster processes survived stop(): {leftovers}", pytrace=False)
