"""The README's main job, `strata demo`, end to end on its own dev cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from strata.devcluster import processes_using
from strata.devcluster.binaries import find_binaries

REPO = Path(__file__).resolve().parents[2]


def strata(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strata.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_demo_with_examples_run_from_another_directory_reconciles_them_and_stops_cleanly(tmp_path):
    """The cluster, CRDs and operator as `strata demo` sets them up; the loop it runs by default
    is tested on the session's real node (tests/operator/test_loop_realnode.py)."""
    state_dir = tmp_path / "demo"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    must_build = [name for name, path in find_binaries().items() if path is None]
    try:
        # Not run from the repository: the manifests are found by their path.
        started = strata("demo", "--state-dir", str(state_dir), "--examples", str(REPO / "examples" / "support-lm.yaml"),
                         cwd=elsewhere)
        assert started.returncode == 0, started.stdout + started.stderr
        first_line = started.stdout.splitlines()[0]
        assert first_line.startswith("Building" if must_build else "Starting the dev cluster"), first_line
        table = started.stdout
        for resource in ("dataset.strata.dev/support-chats", "trainingjob.strata.dev/support-lm",
                         "modeldeployment.strata.dev/support-lm", "feedbackpolicy.strata.dev/support-lm"):
            assert resource in table, table
        assert "NotImplemented" not in table  # the Reason column is -o wide only
        # The demo's cluster has the real node by default, beside kwok's.
        assert any(line.split()[:2] == ["strata-node", "Ready"] for line in table.splitlines()), table
        operator_log = (state_dir / "logs" / "operator.log").read_text()
        assert operator_log and "(re)initializing" not in operator_log and "[ERROR]" not in operator_log, operator_log

        status = strata("dev", "status", "--state-dir", str(state_dir), cwd=elsewhere)
        assert "operator (strata demo)" in status.stdout and "running" in status.stdout, status.stdout
    finally:
        stopped = strata("demo", "--down", "--state-dir", str(state_dir), cwd=elsewhere)
    assert stopped.returncode == 0, stopped.stderr
    assert "operator" in stopped.stdout and "kube-apiserver" in stopped.stdout
    assert processes_using(state_dir.resolve()) == {}
    assert not Path("/sys/class/net/strata0").exists()  # the real node's bridge is gone too


def test_a_demo_that_fails_part_way_stops_what_it_started(tmp_path):
    state_dir = tmp_path / "demo"
    manifest = tmp_path / "elsewhere.yaml"
    # Valid offline, refused by the cluster: its namespace does not exist. So the failure
    # comes after the cluster and the operator have started.
    doc = next(d for d in yaml.safe_load_all((REPO / "examples" / "support-lm.yaml").read_text()) if d)
    doc["metadata"]["namespace"] = "no-such-namespace"
    manifest.write_text(yaml.safe_dump(doc))
    try:
        failed = strata("demo", "--state-dir", str(state_dir), "--examples", str(manifest), cwd=tmp_path)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "no-such-namespace" in failed.stderr
        assert "Stopped what this run started: the operator, " in failed.stderr, failed.stderr
        assert processes_using(state_dir.resolve()) == {}
    finally:
        strata("demo", "--down", "--state-dir", str(state_dir), cwd=tmp_path)


def test_demo_refuses_missing_examples_before_starting_anything(tmp_path):
    result = strata("demo", "--state-dir", str(tmp_path / "demo"), "--examples", str(tmp_path / "nothing"),
                    cwd=tmp_path)
    assert result.returncode == 2 and "pass the manifests to apply with --examples" in result.stderr
    assert not (tmp_path / "demo").exists()
