"""A FeedbackPolicy's embedding drift test (spec.monitors.drift.embedding): the pure parts.

Each test is a Job in the embedder image (strata_workloads.monitor.embedding) and a ConfigMap
holding what it compares (strata_workloads.monitor.embedding_contract: the one definition of
both sides). Both are create-once children of the policy, numbered; the latest KEPT_TESTS stay
(a person can read their logs), older ones are pruned. The Job's result, per-cluster counts, is
kept in status.embeddingTest and tested here as token buckets are (PSI and chi-squared), so it
joins the drift monitor's verdict as one more test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from strata.api import FEEDBACK_POLICY
from strata.api.feedback import EmbeddingDrift
from strata.constants import ANNOTATION_CREATED_BECAUSE, ChildPolicy
from strata.observe.jobs import job_condition
from strata.render.common import (
    child_labels,
    child_metadata,
    volume_mount,
    workload_container_security,
    workload_pod_security,
)
from strata.render.feedback_policy import parse_time
from strata_workloads.monitor.embedding_contract import (
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_PATH,
    CONTAINER_NAME,
    DATASET_DIR,
    EXIT_INVALID_CONFIG,
    MAX_CONFIG_BYTES,
    MODEL_DIR,
    EmbeddingJobConfig,
    EmbeddingJobResult,
    Rows,
    config_json,
)
from strata_workloads.monitor.sketch import Comparison, counts_drift

COMPONENT = "embedding-test"
# On a test's Job: what its inputs are compared with (status.embeddingTest.against).
ANNOTATION_AGAINST = "strata.dev/compared-against"
KEPT_TESTS = 2
# A test that has not ended by then is given up (its pod may never have been scheduled).
DEADLINE_SECONDS = 1800
_MAX_POLICY_NAME = 40


@dataclass(frozen=True)
class DatasetVolume:
    """The reference Dataset version: a claim and the version's directory on it."""

    claim_name: str
    path: str


def test_name(policy: str, number: int) -> str:
    return f"{policy[:_MAX_POLICY_NAME].rstrip('-.')}-embedding-{number}"


def test_number(name: str, policy: str) -> int | None:
    prefix = f"{policy[:_MAX_POLICY_NAME].rstrip('-.')}-embedding-"
    tail = name[len(prefix):] if name.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None


def choose_input(settings: EmbeddingDrift, samples: dict[str, dict[str, list]]) -> tuple[str | None, str]:
    """The input to compare and, when there is none, why: the declared one, else `text`, else
    `tokens` (the Dataset's column names), else the only input with kept rows."""
    kept = sorted(name for name, sides in samples.items() if sides.get("current") or sides.get("previous"))
    if settings.input is not None:
        if settings.input in samples:
            return settings.input, ""
        return None, (f"no rows of input {settings.input} (spec.monitors.drift.embedding.input) were kept; inputs with "
                      f"rows: {', '.join(kept) or 'none'}")
    for name in ("text", "tokens"):
        if name in kept:
            return name, ""
    if len(kept) == 1:
        return kept[0], ""
    if not kept:
        return None, ("the sidecars kept no input rows: set the target ModelDeployment's "
                      "spec.monitoring.inputSamplesPerMinute")
    return None, (f"several inputs have kept rows ({', '.join(kept)}): name one in "
                  f"spec.monitors.drift.embedding.input")


def rows_of(values: list) -> Rows:
    """Kept rows as the sidecar serves them: texts, or lists of token ids."""
    if values and isinstance(values[0], list):
        return Rows(tokens=values)
    return Rows(texts=values)


def fit_rows(config: EmbeddingJobConfig) -> EmbeddingJobConfig:
    """The config with a quarter of the rows dropped from the end, again, until it fits in a ConfigMap."""
    def trimmed(rows: Rows) -> Rows:
        if rows.texts is not None:
            return Rows(texts=rows.texts[: max(1, len(rows.texts) * 3 // 4)])
        return Rows(tokens=(rows.tokens or [])[: max(1, len(rows.tokens or []) * 3 // 4)])

    while len(config_json(config).encode()) > MAX_CONFIG_BYTES:
        reference = trimmed(config.reference) if config.reference is not None else None
        config = config.model_copy(update={"current": trimmed(config.current), "reference": reference})
    return config


def render_test_config_map(owner: dict[str, Any], name: str, config: EmbeddingJobConfig) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": child_metadata(FEEDBACK_POLICY, owner, name, COMPONENT, ChildPolicy.CREATE_ONCE),
            "data": {CONFIG_FILE: config_json(config)}}


def render_test_job(owner: dict[str, Any], name: str, image: str, dataset: DatasetVolume | None,
                    settings: EmbeddingDrift, against: str = "the reference") -> dict[str, Any]:
    """The Job that embeds and counts; its ConfigMap has the same name."""
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}]
    mounts = [volume_mount("config", CONFIG_DIR, read_only=True)]
    if dataset is not None:
        volumes.append({"name": "reference", "persistentVolumeClaim": {"claimName": dataset.claim_name,
                                                                       "readOnly": True}})
        mounts.append(volume_mount("reference", DATASET_DIR, dataset.path, read_only=True))
    if settings.model is not None:
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": settings.model.pvc.claim_name,
                                                                   "readOnly": True}})
        mounts.append(volume_mount("model", MODEL_DIR, settings.model.pvc.path, read_only=True))
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python3"],
        "args": ["-m", "strata_workloads.monitor.embedding", "--config", CONFIG_PATH],
        # HF_HUB_OFFLINE: the model is on disk; nothing may be fetched.
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}],
        # all-MiniLM-L6-v2 and torch take about 1 GiB resident.
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "volumeMounts": mounts + [volume_mount("tmp", "/tmp")],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": workload_container_security(),
    }
    volumes.append({"name": "tmp", "emptyDir": {}})
    meta = child_metadata(FEEDBACK_POLICY, owner, name, COMPONENT, ChildPolicy.CREATE_ONCE)
    meta["annotations"].update({ANNOTATION_AGAINST: against[:256],
                                ANNOTATION_CREATED_BECAUSE: f"Embedding drift test against {against[:256]}"})
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In",
                                                      "values": [EXIT_INVALID_CONFIG]}}]},
            "template": {
                "metadata": {"labels": child_labels(FEEDBACK_POLICY, owner["metadata"]["name"], COMPONENT)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": workload_pod_security(),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def kept_child(owner: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A test's Job or ConfigMap that stays: only who it belongs to is re-asserted."""
    return {"apiVersion": "batch/v1" if kind == "Job" else "v1", "kind": kind,
            "metadata": child_metadata(FEEDBACK_POLICY, owner, name, COMPONENT, ChildPolicy.CREATE_ONCE)}


def adopted_state(job: dict[str, Any]) -> dict[str, Any]:
    """status.embeddingTest of a running test, from its Job."""
    meta = job["metadata"]
    return {"job": meta["name"], "started": meta.get("creationTimestamp") or "",
            "against": (meta.get("annotations") or {}).get(ANNOTATION_AGAINST) or "the reference"}


def job_ended(job: dict[str, Any]) -> bool:
    return job_condition(job, "Complete") is not None or job_condition(job, "Failed") is not None


def record_result(state: dict[str, Any], result: EmbeddingJobResult | None, job_failed_because: str,
                  now: str) -> dict[str, Any]:
    """status.embeddingTest once its Job ended: the counts, or why there are none."""
    ended = {key: value for key, value in state.items() if key in ("job", "started", "against")}
    ended["finished"] = now
    if result is None:
        ended["message"] = (f"Job {state['job']} ended without a result: {job_failed_because}")[:1024]
    elif result.error:
        ended["message"] = f"Job {state['job']}: {result.error}"[:1024]
    else:
        ended.update(input=result.input, referenceCounts=result.reference_counts, currentCounts=result.current_counts)
    return ended


def is_due(state: dict[str, Any] | None, every_seconds: float, now: dt.datetime) -> bool:
    """Whether a new test starts: none ran yet, or the last one ended and `every` has passed."""
    if not state:
        return True
    if not state.get("finished"):
        return False
    started = parse_time(state["started"])
    return started is None or (now - started).total_seconds() >= every_seconds


def comparison(state: dict[str, Any] | None, every_seconds: float, now: dt.datetime,
               problem: str = "") -> Comparison | None:
    """The latest test's counts as one drift comparison, while it is recent (its texts are
    from the window before it started; past two periods it says nothing about now)."""
    if not state or not state.get("currentCounts"):
        why = problem or (state or {}).get("message") or ""
        return Comparison("the embedding test", [], 0, unmet=f"embedding test: {why}", seen=bool(why)) if why else None
    started = parse_time(state["started"])
    if started is None or (now - started).total_seconds() > 2 * every_seconds:
        return Comparison("the embedding test", [], 0, seen=True,
                          unmet=f"embedding test: the latest result (Job {state['job']}, started {state['started']}) is "
                                f"older than two periods; {problem or 'a new one has not ended yet'}")
    psi, p = counts_drift(state["referenceCounts"], state["currentCounts"])
    return Comparison(state.get("against") or "the reference", [(f"{state.get('input', 'text')}.embedding", psi, p)],
                      sum(state["currentCounts"]), (state.get("input", "text"),), seen=True)
