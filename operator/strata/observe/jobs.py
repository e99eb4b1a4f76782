"""What the Job controller and the kubelet say about a Job and its pods, read the same way by
every observer (a Dataset's runs, a TrainingJob's attempts, a FeedbackPolicy's embedding tests)."""

from __future__ import annotations

from typing import Any


def job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The Job's condition of this type when it is True (Complete, Failed, Suspended...)."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def container_termination(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    """How the pod's `container` ended (its terminated state, or its last one after a restart)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container:
            return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
    return None
