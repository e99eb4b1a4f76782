"""Session-wide fixtures: the real local Kubernetes control plane (`dev_cluster`).

Tests that use `dev_cluster` are marked `cluster` automatically, so `-m "not cluster"`
skips them. The cluster is never skipped silently: if it can't be built or started,
every test that needs it fails with the component's log tail.
"""

from __future__ import annotations

import pytest

from strata.devcluster import BuildError, DevCluster, ensure_binaries, processes_using
from tests_support import running_cluster

_build_error: str | None = None


def _uses_dev_cluster(item: pytest.Item) -> bool:
    return "dev_cluster" in getattr(item, "fixturenames", ())


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
    global _build_error
    if session.config.option.collectonly or not any(map(_uses_dev_cluster, session.items)):
        return
    try:
        ensure_binaries()
    except BuildError as error:
        _build_error = str(error)


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
