"""The README's main job, `strata demo`, end to end on its own dev cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from strata.devcluster import processes_using

REPO = Path(__file__).resolve().parents[2]


def strata(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "strata.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_demo_reconciles_the_examples_and_stops_cleanly(tmp_path):
    state_dir = tmp_path / "demo"
    try:
        started = strata("demo", "--state-dir", str(state_dir), "--examples", str(REPO / "examples"))
        assert started.returncode == 0, started.stdout + started.stderr
        table = started.stdout
        for resource in ("dataset.strata.dev/support-chats", "trainingjob.strata.dev/support-lm",
                         "modeldeployment.strata.dev/support-lm", "feedbackpolicy.strata.dev/support-lm"):
            assert resource in table, table
        assert "NotImplemented" not in table  # the Reason column is -o wide only
        assert (state_dir / "logs" / "operator.log").read_text()
    finally:
        stopped = strata("demo", "--down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert "operator" in stopped.stdout and "kube-apiserver" in stopped.stdout
    assert processes_using(state_dir.resolve()) == {}
