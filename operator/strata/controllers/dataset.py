"""Dataset controller: the pipeline as a Job, one per run, and the versions it publishes.

resolve: what the spec asks that this version cannot do, the refresh tick, the runs' Jobs and pods;
render (render/dataset.py): the pipeline's config, the run's Job;
observe (observe/dataset.py): phase, conditions, the current version and its counts, the recent
versions, the latest run's quality-gate verdicts; built fresh from the previous status each pass.

Refresh: spec.refresh.schedule is evaluated by the operator on each pass (a periodic pass runs
every STRATA_RESYNC_SECONDS, a minute by default, and Job and pod events add passes), not by a
CronJob: a run needs the current version as its parent (lineage, the drift gate), which a
CronJob's fixed template cannot pass, and one owner for every run keeps observation in one place.
A run still going when the schedule fires again finishes first; the next starts after it.
A run is also started on request: a newer time in the strata.dev/refresh-requested-at annotation
(a FeedbackPolicy's spec.retrain.refreshDataset sets it), echoed in status.refreshRequestedAt
by the run that answers it.

The current version is what status.version and status.path say (a TrainingJob reads them with
spec.storage.pvc, see trainingjob.resolve_data); a version that breaks a gate is recorded in
status.history but does not replace it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from strata import __version__, k8s
from strata.api import DATASET, KindInfo
from strata.api.dataset import DatasetSpec
from strata.conditions import now_rfc3339
from strata.constants import ANNOTATION_FEEDBACK_SAMPLES, ANNOTATION_REFRESH_REQUESTED, ConditionStatus, Phase, Reason
from strata.controllers.reconcile import Inputs, Outcome, is_controlled_by, missing_reference_outcome, resolve_references
from strata.controllers.registration import register_kind, watch_children
from strata.observe.dataset import RunState, RunView, gate_status, judge_run, merge_history, newest_run, observe_run
from strata.render.common import owner_labels
from strata.render.config import content_hash, render_config_map
from strata.render.dataset import (
    ANNOTATION_REFRESH_TICK,
    ANNOTATION_RUN_CONFIG,
    NO_TICK,
    PipelineRun,
    invalid_schedule,
    job_name,
    kept_job,
    latest_tick,
    refresh_tick,
    render_pipeline_config,
    render_pipeline_job,
    request_tick,
    unsupported_features,
    version_path,
)

# The pipeline image when the chart sets none (the chart sets it to the release's image).
DATA_IMAGE_ENV = "STRATA_DATA_IMAGE"
DEFAULT_DATA_IMAGE = f"ghcr.io/strata-dev/strata-data:{__version__}"
# The label the Job controller puts on a Job's pods.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"

CHILD_KINDS = (("v1", "ConfigMap"), ("batch/v1", "Job"))


@dataclass(frozen=True)
class DatasetInputs(Inputs):
    name: str = ""
    uid: str = ""
    now: str = ""
    created: str = ""
    image: str = DEFAULT_DATA_IMAGE
    # Why no run may start: (reason, message), the spec asks what this version cannot do.
    blocked: tuple[str, str] | None = None
    runs: tuple[RunView, ...] = ()
    previous: dict[str, Any] = field(default_factory=dict)  # the status this pass started from
    refresh_requested: str | None = None  # the strata.dev/refresh-requested-at annotation
    # The strata.dev/feedback-samples ConfigMap, when it exists: its samples are one more source.
    feedback_samples: str | None = None


def resolve(info: KindInfo, body: dict[str, Any], spec: DatasetSpec) -> DatasetInputs:
    meta = body["metadata"]
    base = resolve_references(info, body, spec)
    inputs = DatasetInputs(namespace=meta["namespace"], missing=base.missing, name=meta["name"], uid=meta.get("uid", ""),
                           now=now_rfc3339(),
                           created=meta.get("creationTimestamp") or now_rfc3339(),
                           image=os.environ.get(DATA_IMAGE_ENV) or DEFAULT_DATA_IMAGE,
                           previous=body.get("status") or {},
                           refresh_requested=(meta.get("annotations") or {}).get(ANNOTATION_REFRESH_REQUESTED))
    samples = (meta.get("annotations") or {}).get(ANNOTATION_FEEDBACK_SAMPLES)
    if samples and k8s.get("v1", "ConfigMap", meta["namespace"], samples) is not None:
        inputs = replace(inputs, feedback_samples=samples)
    problem = unsupported_features(spec)
    blocked = (Reason.UNSUPPORTED_FEATURE, problem) if problem else None
    if blocked is None and (problem := invalid_schedule(spec)):
        blocked = (Reason.INVALID_SPEC, problem)
    selector = owner_labels(info, meta["name"])
    jobs = [job for job in k8s.list_children("batch/v1", "Job", meta["namespace"], selector)
            if is_controlled_by(job, meta["uid"])]
    pods_by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in k8s.list_children("v1", "Pod", meta["namespace"], selector):
        pods_by_job.setdefault((pod["metadata"].get("labels") or {}).get(LABEL_JOB_NAME, ""), []).append(pod)
    runs = tuple(observe_run(job, pods_by_job.get(job["metadata"]["name"], []), (ANNOTATION_RUN_CONFIG, ANNOTATION_REFRESH_TICK))
                 for job in jobs)
    return replace(inputs, blocked=blocked, runs=runs)


def plan_run(spec: DatasetSpec, inputs: DatasetInputs, config_map: str, config_hash: str) -> tuple[str | None, PipelineRun | None]:
    """Pure: (a live run's Job to keep, the run to have). The run to have is created once."""
    if inputs.blocked is not None or inputs.missing:
        return None, None
    scheduled = refresh_tick(spec, inputs.created, inputs.now)
    requested = request_tick(inputs.refresh_requested, inputs.created)
    tick = latest_tick(scheduled, requested)
    wanted = job_name(inputs.name, config_hash, tick)
    newest = newest_run(list(inputs.runs))
    if newest is not None and newest.job != wanted and not newest.ended and newest.config_map == config_map:
        # Same spec, and the schedule fired again while it runs: it finishes first.
        return newest.job, None
    if newest is None:
        because = "Started the first pipeline run"
    elif newest.config_map != config_map:
        because = "Started a pipeline run for the changed spec"
    elif tick != NO_TICK and tick == requested:
        because = f"Started the refresh requested at {inputs.refresh_requested}"
    else:
        because = f"Started the scheduled refresh of {tick[:4]}-{tick[4:6]}-{tick[6:8]} {tick[8:10]}:{tick[10:]} UTC" \
            if tick != NO_TICK else "Started a pipeline run"
    parent = inputs.previous.get("version")
    return None, PipelineRun(config_map, config_hash, tick, parent, because, inputs.feedback_samples)


def render(info: KindInfo, body: dict[str, Any], spec: DatasetSpec, inputs: DatasetInputs) -> list[dict[str, Any]]:
    config_map = render_config_map(info, body, spec, render_pipeline_config(spec, inputs.name, inputs.feedback_samples))
    children = [config_map]
    keep, run = plan_run(spec, inputs, config_map["metadata"]["name"], content_hash(config_map["data"]))
    if keep is not None:
        children.append(kept_job(body, keep))
    if run is not None:
        children.append(render_pipeline_job(spec, body, run, inputs.image))
    return children


# ---------------------------------------------------------------------------------------
# observe: pure
# ---------------------------------------------------------------------------------------


def _outcome(phase: str, ready: tuple[str, str, str], progressing: tuple[str, str, str],
             degraded: tuple[str, str, str] | None = None) -> Outcome:
    return Outcome(phase=phase, ready=ready, progressing=progressing,
                   degraded=degraded or (ConditionStatus.FALSE, Reason.AS_EXPECTED, "No errors."))


def _current_run(inputs: DatasetInputs, children: list[dict[str, Any]]) -> RunView | None:
    """The run whose Job this pass rendered or kept; a Job created just now is observed as pending."""
    by_name = {run.job: run for run in inputs.runs}
    jobs = [child for child in children if child["kind"] == "Job"]
    if not jobs:
        return None
    job = jobs[-1]
    name = job["metadata"]["name"]
    if name in by_name:
        return by_name[name]
    return observe_run(job, [], (ANNOTATION_RUN_CONFIG, ANNOTATION_REFRESH_TICK))


def observe(info: KindInfo, spec: DatasetSpec, inputs: DatasetInputs, children: list[dict[str, Any]]) -> Outcome:
    previous = inputs.previous
    status: dict[str, Any] = {key: previous[key] for key in ("version", "path", "records", "history", "gates",
                                                            "lastRefreshTime") if previous.get(key)}
    config_maps = [child["metadata"]["name"] for child in children if child["kind"] == "ConfigMap"]
    if config_maps:
        status["configMap"] = config_maps[0]
    run = _current_run(inputs, children)
    verdict = None
    if run is not None:
        status["job"] = run.job
        if inputs.refresh_requested and run.tick == request_tick(inputs.refresh_requested, inputs.created) != NO_TICK:
            status["refreshRequestedAt"] = inputs.refresh_requested
        if run.start_time:
            status["lastRefreshTime"] = run.start_time
        if run.ended:
            verdict = judge_run(run, lambda version: version_path(spec, version))
            status["gates"] = gate_status(run.result)
            entry = verdict.version_entry
            status["history"] = merge_history(list(status.get("history") or []), entry)
            if entry is not None and entry["promoted"]:
                status.update(version=entry["version"], path=entry["path"], records=entry["counts"])
    status = {key: value for key, value in status.items() if value not in (None, [], {})}
    outcome = _phase(spec, inputs, run, verdict, status)
    outcome.extra_status.update(status)
    return outcome


def _phase(spec: DatasetSpec, inputs: DatasetInputs, run: RunView | None, verdict: Any, status: dict[str, Any]) -> Outcome:
    false, true = ConditionStatus.FALSE, ConditionStatus.TRUE
    current = status.get("version")
    serving = f"Serving version {current}; " if current else ""
    if inputs.missing:
        return missing_reference_outcome(inputs.missing, inputs.namespace)
    if inputs.blocked is not None:
        reason, message = inputs.blocked
        return _outcome(Phase.INVALID, (false, reason, serving + message), (false, reason, "Waiting for a supported spec."),
                        (true, reason, message))
    if run is None:
        message = "Waiting for the pipeline's Job to be created."
        return _outcome(Phase.PENDING, (false, Reason.PIPELINE_PENDING, message), (true, Reason.PIPELINE_PENDING, message))
    ready_if_serving = true if current else false
    if run.state == RunState.PENDING:
        message = f"{serving}Job {run.job} waits for its pod to run."
        return _outcome(Phase.PENDING, (ready_if_serving, Reason.PIPELINE_PENDING, message),
                        (true, Reason.PIPELINE_PENDING, message))
    if run.state == RunState.RUNNING:
        message = f"{serving}Job {run.job} reads the sources and builds a version."
        return _outcome(Phase.RUNNING, (ready_if_serving, Reason.INGESTING, message), (true, Reason.INGESTING, message))
    if verdict.reason == Reason.VERSION_PUBLISHED:
        next_run = " The next run is on spec.refresh.schedule." if spec.refresh else ""
        return _outcome(Phase.SUCCEEDED, (true, verdict.reason, verdict.message),
                        (false, verdict.reason, verdict.message + next_run))
    after = (" A changed spec or the next scheduled refresh starts a new run." if spec.refresh
             else " A changed spec starts a new run.")
    message = serving + verdict.message + after
    return _outcome(Phase.FAILED, (ready_if_serving, verdict.reason, message), (false, verdict.reason, message),
                    (true, verdict.reason, message))


def observe_and_announce(info: KindInfo, spec: DatasetSpec, inputs: DatasetInputs, children: list[dict[str, Any]]) -> Outcome:
    """observe, then the events a new status is news for: a published or a rejected version."""
    outcome = observe(info, spec, inputs, children)
    previous, status = inputs.previous, outcome.extra_status
    body = {"apiVersion": "strata.dev/v1alpha1", "kind": info.kind,
            "metadata": {"name": inputs.name, "namespace": inputs.namespace, "uid": inputs.uid}}
    if status.get("version") and status.get("version") != previous.get("version"):
        records = (status.get("records") or {}).get("out", 0)
        k8s.post_event(body, "Normal", "Published", f"Published version {status['version']} ({records} records) "
                                                    f"at {status['path']}")
    known = {(item.get("version"), item.get("created")) for item in previous.get("history") or []}
    for item in status.get("history") or []:
        if not item.get("promoted") and (item.get("version"), item.get("created")) not in known:
            k8s.post_event(body, "Warning", Reason.QUALITY_GATE_FAILED,
                           f"Version {item['version']} not made current: {item.get('rejectedBecause', '')}"[:1024])
    if outcome.phase == Phase.FAILED and (previous.get("phase") != Phase.FAILED or previous.get("job") != status.get("job")):
        reason = outcome.degraded[1]
        if reason != Reason.QUALITY_GATE_FAILED:
            k8s.post_event(body, "Warning", reason, outcome.degraded[2][:1024])
    return outcome


register_kind(DATASET, resolve, render, observe_and_announce, child_kinds=CHILD_KINDS)
# Pods are the Jobs' children, labelled for the Dataset: their phases and results are news.
watch_children("v1", "Pod")
