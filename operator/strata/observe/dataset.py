"""Pure observation of a Dataset's pipeline runs: what each run's Job and pod say, and the status
that follows from them and the previous status.

Nothing here does I/O. The controller lists the Jobs and pods; the pod's termination message is
parsed by strata_workloads.data.result (the contract's one definition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata.constants import Reason
from strata.observe.jobs import container_termination, job_condition
from strata_workloads.data.result import (
    CONTAINER_NAME,
    EXIT_INVALID_CONFIG,
    EXIT_SOURCE_ERROR,
    RunResult,
    parse_termination_message,
)

# Versions kept in status.history, newest last.
HISTORY_LIMIT = 10


class RunState:
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    ENDED = (SUCCEEDED, FAILED)


@dataclass(frozen=True)
class RunView:
    """One pipeline run (one Job) as observed."""

    job: str
    state: str
    config_map: str = ""
    tick: str = ""
    start_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    result: RunResult | None = None
    logs_tail: str = ""  # what the pod left when it wrote no result (FallbackToLogsOnError)

    @property
    def ended(self) -> bool:
        return self.state in RunState.ENDED


def _termination(pod: dict[str, Any]) -> dict[str, Any] | None:
    return container_termination(pod, CONTAINER_NAME)


def observe_run(job: dict[str, Any], pods: list[dict[str, Any]], annotations: tuple[str, str]) -> RunView:
    """A run from its Job and the Job's pods; the newest pod that ended with a result (or an
    error) tells what happened, else the newest that ended. In a parallel run that is shard 0's
    result (it ends last), or the error of the shard that failed; the other shards' summaries
    are not results."""
    meta = job["metadata"]
    job_status = job.get("status") or {}
    config_annotation, tick_annotation = annotations
    ended = sorted((pod for pod in pods if _termination(pod)),
                   key=lambda pod: (_termination(pod).get("finishedAt") or "", pod["metadata"].get("creationTimestamp") or ""))
    with_result = [pod for pod in ended if parse_termination_message(_termination(pod).get("message"))]
    termination = _termination((with_result or ended)[-1]) if ended else None
    complete, failed = job_condition(job, "Complete"), job_condition(job, "Failed")
    if complete:
        state = RunState.SUCCEEDED
    elif failed:
        state = RunState.FAILED
    elif any((pod.get("status") or {}).get("phase") == "Running" for pod in pods):
        state = RunState.RUNNING
    else:
        state = RunState.PENDING
    message = (termination or {}).get("message") or ""
    result = parse_termination_message(message) if state in RunState.ENDED else None
    end = None
    if complete or failed:
        end = job_status.get("completionTime") or (complete or failed).get("lastTransitionTime")
    annotations_ = meta.get("annotations") or {}
    return RunView(
        job=meta["name"], state=state, config_map=annotations_.get(config_annotation, ""),
        tick=annotations_.get(tick_annotation, ""), start_time=job_status.get("startTime") or meta.get("creationTimestamp"),
        end_time=end, exit_code=(termination or {}).get("exitCode"), result=result,
        logs_tail="" if result else message.strip()[-400:],
    )


def newest_run(runs: list[RunView]) -> RunView | None:
    """The run started last (Jobs of one Dataset are named by hash, so by time, not by name)."""
    return max(runs, key=lambda run: (run.start_time or "", run.job)) if runs else None


@dataclass(frozen=True)
class RunVerdict:
    """What an ended run means for the Dataset: a reason and words, and a version if it made one."""

    reason: str
    message: str
    version_entry: dict[str, Any] | None = None


def judge_run(run: RunView, path_of: Any) -> RunVerdict:
    """Pure: an ended run's verdict. ``path_of(version)`` gives a version's place on the storage PVC."""
    result = run.result
    if run.state == RunState.FAILED or (result is not None and result.error):
        if result is not None and result.error:
            reason = Reason.INVALID_CONFIGURATION if run.exit_code == EXIT_INVALID_CONFIG else (
                Reason.SOURCE_UNREADABLE if run.exit_code == EXIT_SOURCE_ERROR else Reason.PIPELINE_FAILED)
            return RunVerdict(reason, f"Job {run.job}: {result.error}")
        words = run.logs_tail or (f"exit code {run.exit_code}" if run.exit_code is not None else "no pod result")
        return RunVerdict(Reason.PIPELINE_FAILED, f"Job {run.job} failed ({words}); see kubectl logs job/{run.job}.")
    if result is None or not result.version:
        return RunVerdict(Reason.RESULT_MISSING,
                          f"Job {run.job} ended without the pipeline's result in its termination message; "
                          f"see kubectl logs job/{run.job}.")
    counts = dict(result.records)
    entry: dict[str, Any] = {"version": result.version, "path": path_of(result.version), "created": run.end_time,
                             "records": counts.get("out", 0), "counts": counts, "promoted": result.promoted}
    if result.reference:
        entry["reference"] = [{"column": column, **sketch} for column, sketch in sorted(result.reference.items())]
    failed = result.failed_gates
    if failed:
        because = "; ".join(f"{gate.name}: {gate.message}" for gate in failed)
        entry["rejectedBecause"] = because[:1024]
        return RunVerdict(Reason.QUALITY_GATE_FAILED, f"Version {result.version} broke its quality gates and is not "
                                                      f"current: {because}.", entry)
    made = "Published" if result.created else "Found unchanged"
    return RunVerdict(Reason.VERSION_PUBLISHED, f"{made} version {result.version} ({counts.get('out', 0)} records).", entry)


def merge_history(history: list[dict[str, Any]], entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Pure: the history with `entry` recorded once (a version made again moves to the end), bounded."""
    if entry is not None:
        entry = {key: value for key, value in entry.items() if value is not None}
        if entry not in history:  # the same run seen again on a later pass changes nothing
            history = [item for item in history if item.get("version") != entry["version"]] + [entry]
    return history[-HISTORY_LIMIT:]


def gate_status(result: RunResult | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    return [{"name": gate.name, "passed": gate.passed, "value": gate.value, "limit": gate.limit,
             "message": gate.message[:1024]} for gate in result.gates]
