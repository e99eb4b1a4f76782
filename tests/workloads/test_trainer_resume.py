"""A group killed mid-run (SIGKILL of one rank) and restarted resumes at its last checkpoint."""

from __future__ import annotations

import json
import os
import signal

import pytest
from workload_harness import base_config, launch

pytestmark = pytest.mark.deepspeed

CHECKPOINT_EVERY = 5
KILL_AFTER_STEP = 12  # two steps past the checkpoint at step 10
MAX_STEPS = 40


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, text_dataset):
    workdir = tmp_path_factory.mktemp("resume")
    config = base_config(
        "transformer", text_dataset, workdir, zero_stage=3,
        hyperparameters={"maxSteps": MAX_STEPS, "warmupSteps": 3},
        checkpoints={"dir": str(workdir / "checkpoints"), "everySteps": CHECKPOINT_EVERY, "keep": 2},
        validation={"everySteps": 10, "maxBatches": 1},
    )
    rank_pids: dict[int, int] = {}
    killed: list[int] = []

    def kill_rank_one(event, _process):
        if event["event"] == "process":
            rank_pids[event["rank"]] = event["pid"]
        if event["event"] == "step" and event["step"] >= KILL_AFTER_STEP and not killed:
            os.kill(rank_pids[1], signal.SIGKILL)
            killed.append(event["step"])

    first = launch(config, workdir, on_event=kill_rank_one)
    latest = json.loads((workdir / "checkpoints" / "latest.json").read_text())
    second = launch(config, workdir)
    return first, latest, second, killed


def test_killed_run_fails_without_completing(killed_and_resumed):
    first, latest, _second, killed = killed_and_resumed
    assert killed, "rank 1 was never killed"
    assert first.returncode != 0
    assert not first.of("completed")
    assert max(e["step"] for e in first.of("step")) < MAX_STEPS
    # Only whole checkpoints count: the last one written before the kill.
    assert latest["step"] == max(e["step"] for e in first.of("checkpoint"))
    assert latest["step"] >= 10


def test_restart_resumes_at_the_checkpoint_step(killed_and_resumed):
    _first, latest, second, _killed = killed_and_resumed
    assert second.returncode == 0, second.stderr[-4000:]
    resumed = second.one("resumed")
    assert resumed["step"] == latest["step"]
    assert resumed["configChanged"] is False
    steps = [e["step"] for e in second.of("step")]
    assert steps == list(range(latest["step"] + 1, MAX_STEPS + 1))
    assert second.termination["resumedFrom"] == latest["step"]
    assert second.termination["step"] == MAX_STEPS


def test_resumed_loss_curve_continues_the_original(killed_and_resumed):
    first, latest, second, _killed = killed_and_resumed
    original, resumed = first.step_losses(), second.step_losses()
    overlap = sorted(set(original) & set(resumed))
    # The steps between the checkpoint and the kill ran twice: same weights, optimizer state,
    # learning rate, data position and noise, so the same losses.
    assert overlap and overlap[0] == latest["step"] + 1
    for step in overlap:
        assert resumed[step] == pytest.approx(original[step], rel=1e-4), (step, original[step], resumed[step])
    rates_original = {e["step"]: e["learningRate"] for e in first.of("step")}
    rates_resumed = {e["step"]: e["learningRate"] for e in second.of("step")}
    assert all(rates_resumed[s] == pytest.approx(rates_original[s]) for s in overlap)


def test_sigterm_checkpoints_and_exits_for_a_restart(tmp_path, text_dataset):
    """Kubernetes stops pods with SIGTERM (to the launcher, which forwards it to the ranks).

    Runs under ZeRO-0 (plain data parallelism) so that stage's checkpointing is covered too.
    """
    config = base_config(
        "transformer", text_dataset, tmp_path, zero_stage=0,
        hyperparameters={"maxSteps": MAX_STEPS},
        checkpoints={"dir": str(tmp_path / "checkpoints"), "everySteps": 100, "keep": 1},
        validation={"everySteps": 0, "maxBatches": 1},
    )
    signalled: list[int] = []

    def terminate_launcher(event, process):
        if event["event"] == "step" and event["step"] >= 6 and not signalled:
            process.send_signal(signal.SIGTERM)
            signalled.append(event["step"])

    run = launch(config, tmp_path, on_event=terminate_launcher)
    # The trainer's code for "checkpointed and stopped", through torchrun (see train/launch.py).
    assert signalled and run.returncode == 143
    interrupted = run.one("interrupted")
    assert signalled[0] <= interrupted["step"] < MAX_STEPS
    # The checkpoint every 100 steps never came due: this one was taken because of the signal.
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == interrupted["step"]
    assert run.termination["status"] == "interrupted" and run.termination["step"] == interrupted["step"]
    assert not run.of("completed")
