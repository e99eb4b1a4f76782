"""Pure observation of a TrainingJob's worker groups: what each attempt's Job and pods say.

Nothing here does I/O. The controller lists the Jobs and pods (strata.k8s) and reads rank 0's
progress (strata.podmetrics); these functions turn them into attempt summaries that the
renderer decides the next attempt from, and the status is built from.

What the trainer tells the operator (one definition each, checked by tests/unit/test_trainer_reporting_contract.py):
- its exit code: 0 done, 2 invalid configuration, 143 stopped by SIGTERM after a checkpoint;
- rank 0's termination message: a JSON result (strata_workloads.train.reporting);
- rank 0's Prometheus gauges while it runs (PROGRESS_GAUGES).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from strata.constants import Reason
from strata.observe.jobs import container_termination, job_condition

# The label each attempt's Job and pods carry, and the annotation that says where it resumes.
LABEL_ATTEMPT = "strata.dev/attempt"
ANNOTATION_RESUME_FROM = "strata.dev/resume-from-step"
# Set by the Job controller on an Indexed Job's pods.
LABEL_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
TRAINER_CONTAINER = "trainer"

# The trainer's exit codes (strata_workloads.train.cli).
EXIT_INVALID_CONFIG = 2
EXIT_INTERRUPTED = 143

# Rank 0's gauges (strata_workloads.train.reporting.Metrics), by what the status calls them.
PROGRESS_GAUGES = {
    "step": "strata_train_step",
    "totalSteps": "strata_train_total_steps",
    "stepsPerSecond": "strata_train_steps_per_second",
    "samplesPerSecond": "strata_train_samples_per_second",
    "tokensPerSecond": "strata_train_tokens_per_second",
    "checkpointStep": "strata_train_checkpoint_step",
    "resumedFromStep": "strata_train_resumed_from_step",
}
# Labelled by `name`: the training losses, and the latest validation metrics.
LOSS_GAUGE = "strata_train_loss"
VALIDATION_GAUGE = "strata_train_validation_metric"


class AttemptState:
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INTERRUPTED = "Interrupted"

    ENDED = (SUCCEEDED, FAILED, INTERRUPTED)


@dataclass(frozen=True)
class TrainerProgress:
    """What rank 0's gauges said at one read."""

    step: int
    total_steps: int
    steps_per_second: float | None = None
    samples_per_second: float | None = None
    tokens_per_second: float | None = None
    checkpoint_step: int | None = None
    resumed_from_step: int | None = None
    train_loss: float | None = None
    validation_loss: float | None = None


@dataclass(frozen=True)
class AttemptView:
    """One attempt (one Indexed Job) as observed, or as the previous status recorded it."""

    number: int
    job: str
    state: str
    live: bool  # its Job exists
    resumed_from_step: int | None = None
    start_time: str | None = None
    end_time: str | None = None
    reason: str | None = None
    message: str | None = None
    queued: bool = False  # suspended by its creator, waiting for Kueue's admission
    result: dict[str, Any] = field(default_factory=dict)  # rank 0's termination message

    @property
    def ended(self) -> bool:
        return self.state in AttemptState.ENDED

    @property
    def counts_as_failure(self) -> bool:
        """An end that uses up one of spec.retries: a worker failed, not an outside stop."""
        return self.state == AttemptState.FAILED and self.reason != Reason.INVALID_CONFIGURATION

    def to_status(self) -> dict[str, Any]:
        entry = {"number": self.number, "job": self.job, "state": self.state, "resumedFromStep": self.resumed_from_step,
                 "startTime": self.start_time, "endTime": self.end_time, "reason": self.reason,
                 "message": self.message}
        return {key: value for key, value in entry.items() if value is not None}


def parse_progress(text: str) -> TrainerProgress | None:
    """Rank 0's Prometheus exposition -> progress; None before its first step."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    losses: dict[str, float] = {}
    validation: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LOSS_GAUGE:
                losses[sample.labels.get("name", "")] = sample.value
            elif sample.name == VALIDATION_GAUGE:
                validation[sample.labels.get("name", "")] = sample.value
            else:
                values[sample.name] = sample.value
    gauges = {key: values.get(name) for key, name in PROGRESS_GAUGES.items()}
    if gauges["step"] is None or gauges["totalSteps"] is None:
        return None

    def whole(key: str) -> int | None:
        return None if gauges[key] is None else int(gauges[key])

    # Families name their main loss "loss"; the GAN reports its two players' losses instead.
    train_loss = losses.get("loss", next(iter(losses.values()), None))
    return TrainerProgress(
        step=int(gauges["step"]), total_steps=int(gauges["totalSteps"]),
        steps_per_second=gauges["stepsPerSecond"] or None, samples_per_second=gauges["samplesPerSecond"],
        tokens_per_second=gauges["tokensPerSecond"] or None, checkpoint_step=whole("checkpointStep"),
        resumed_from_step=whole("resumedFromStep"), train_loss=train_loss, validation_loss=validation.get("loss"),
    )


def parse_termination_message(message: str | None) -> dict[str, Any]:
    """Rank 0's result (JSON), or {} when the message is not one (logs, on a crash)."""
    if not message:
        return {}
    try:
        result = json.loads(message)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


def _trainer_termination(pod: dict[str, Any]) -> dict[str, Any] | None:
    return container_termination(pod, TRAINER_CONTAINER)


def _index(pod: dict[str, Any]) -> int:
    labels = pod["metadata"].get("labels") or {}
    try:
        return int(labels.get(LABEL_COMPLETION_INDEX, "0"))
    except ValueError:
        return 0


def _last_words(termination: dict[str, Any]) -> str:
    """The trainer's own error from its result, else the tail of what it logged."""
    result = parse_termination_message(termination.get("message"))
    if result.get("error"):
        return str(result["error"])
    text = (termination.get("message") or "").strip()
    return text[-400:]


# The Job controller's words when a podFailurePolicy rule fails a Job (its Failed condition).
_POLICY_MESSAGE = re.compile(r"pod (?:[^/\s]+/)?(?P<pod>\S+) failed with exit code (?P<code>\d+)")


def _reason_for_exit(code: int | None) -> str:
    if code == EXIT_INVALID_CONFIG:
        return Reason.INVALID_CONFIGURATION
    if code == EXIT_INTERRUPTED:
        return Reason.INTERRUPTED
    return Reason.WORKER_FAILED


def describe_failure(pods: list[dict[str, Any]], condition: dict[str, Any] | None = None) -> tuple[str, str]:
    """(reason, message) for a failed group: the first worker that ended badly explains it.

    Exit 2 is the trainer refusing its configuration (final); 143 is SIGTERM after a
    checkpoint (an outside stop: eviction, preemption, a deleted pod); anything else failed.
    """
    failed = []
    for pod in pods:
        termination = _trainer_termination(pod)
        if termination and termination.get("exitCode", 0) != 0:
            failed.append((termination.get("finishedAt") or "", _index(pod), pod, termination))
    if not failed:
        # The pods are gone (deleted, or stopped by the Job controller); their Job remembers.
        match = _POLICY_MESSAGE.search((condition or {}).get("message") or "")
        if match:
            code = int(match["code"])
            return _reason_for_exit(code), f"pod {match['pod']} exited {code}"
        deleted = [pod for pod in pods if pod["metadata"].get("deletionTimestamp")]
        if deleted:
            return Reason.INTERRUPTED, f"pod {deleted[0]['metadata']['name']} was deleted before its trainer exited"
        why = (condition or {}).get("message") or "no worker exit code was recorded"
        return Reason.WORKER_FAILED, f"the Job failed: {why}"
    # The earliest failure caused the rest (peers lose their collective and are stopped).
    _, _, pod, termination = min(failed, key=lambda item: (item[0], item[1]))
    code = termination.get("exitCode")
    name = pod["metadata"]["name"]
    detail = termination.get("reason") or ""
    words = _last_words(termination)
    message = f"pod {name} exited {code}" + (f" ({detail})" if detail and detail != "Error" else "")
    if words:
        message += f": {words}"
    return _reason_for_exit(code), message


def observe_attempt(job: dict[str, Any], pods: list[dict[str, Any]], workers: int) -> AttemptView:
    """One attempt from its live Job and pods."""
    meta = job["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    resume = annotations.get(ANNOTATION_RESUME_FROM)
    status = job.get("status") or {}
    common = {
        "number": int(labels.get(LABEL_ATTEMPT, "0")),
        "job": meta["name"],
        "live": True,
        "resumed_from_step": int(resume) if resume else None,
        "start_time": meta.get("creationTimestamp"),
    }
    rank0 = [pod for pod in pods if _index(pod) == 0 and _trainer_termination(pod)]
    result = parse_termination_message((_trainer_termination(rank0[0]) or {}).get("message")) if rank0 else {}
    complete = job_condition(job, "Complete")
    if complete:
        return AttemptView(**common, state=AttemptState.SUCCEEDED, end_time=status.get("completionTime") or complete.get("lastTransitionTime"),
                           reason=Reason.COMPLETED, message="every worker finished", result=result)
    failed = job_condition(job, "Failed")
    if failed:
        reason, message = describe_failure(pods, failed)
        state = AttemptState.INTERRUPTED if reason == Reason.INTERRUPTED else AttemptState.FAILED
        return AttemptView(**common, state=state, end_time=failed.get("lastTransitionTime"), reason=reason,
                           message=message, result=result)
    suspended = job_condition(job, "Suspended") or (job.get("spec") or {}).get("suspend")
    running = [pod for pod in pods if (pod.get("status") or {}).get("phase") == "Running"
               and not pod["metadata"].get("deletionTimestamp")]
    state = AttemptState.RUNNING if len(running) >= workers else AttemptState.PENDING
    return AttemptView(**common, state=state, queued=bool(suspended))


def attempt_from_status(entry: dict[str, Any]) -> AttemptView:
    """An attempt as a previous status recorded it (its Job may be gone)."""
    return AttemptView(
        number=entry["number"], job=entry["job"], state=entry["state"], live=False,
        resumed_from_step=entry.get("resumedFromStep"), start_time=entry.get("startTime"),
        end_time=entry.get("endTime"), reason=entry.get("reason"), message=entry.get("message"),
    )


def merge_attempts(recorded: list[AttemptView], live: list[AttemptView], now: str, suspended: bool) -> list[AttemptView]:
    """Every attempt, oldest first: the live ones as observed, the rest as last recorded.

    A recorded attempt whose Job is gone before it ended was stopped by the operator (spec.suspend)
    or deleted by someone: it is Interrupted now, and the next attempt resumes after it.
    """
    by_number = {attempt.number: attempt for attempt in recorded}
    for attempt in live:
        before = by_number.get(attempt.number)
        if before is not None and before.resumed_from_step is not None:
            # What the trainer reported it resumed from, once status recorded it, beats the
            # operator's expectation on the Job.
            attempt = replace(attempt, resumed_from_step=before.resumed_from_step)
        by_number[attempt.number] = attempt
    merged = []
    for number in sorted(by_number):
        attempt = by_number[number]
        if not attempt.live and not attempt.ended:
            why = "stopped by spec.suspend" if suspended else f"its Job {attempt.job} was deleted"
            attempt = AttemptView(number=attempt.number, job=attempt.job, state=AttemptState.INTERRUPTED, live=False,
                                  resumed_from_step=attempt.resumed_from_step, start_time=attempt.start_time,
                                  end_time=now, reason=Reason.SUSPENDED if suspended else Reason.INTERRUPTED,
                                  message=why)
        merged.append(attempt)
    return merged


def format_duration(seconds: float) -> str:
    """12345 -> "3h25m45s", as kubectl prints ages; whole seconds."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{seconds}s" if hours < 100 else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"
