"""TrainingJob controller: DeepSpeed across pods, one Indexed Job per attempt of the group.

resolve: the Dataset's data, the live attempts (Jobs and their pods), rank 0's progress;
render (render/training_job.py): config, headless Service, checkpoint PVC, attempts' Jobs;
observe: phase, conditions, progress, attempts, checkpoint, export, built fresh each pass.

While a job runs, a periodic pass every STRATA_PROGRESS_SECONDS brings its progress to
status; Job and pod events trigger passes too (registration.watch_children).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field, replace
from typing import Any


from strata import __version__, k8s, podmetrics
from strata.api import DATASET, TRAINING_JOB, KindInfo
from strata.api.base import StorageLocation
from strata.api.training import TrainingJobSpec
from strata.conditions import now_rfc3339
from strata.constants import ConditionStatus, Phase, Reason
from strata.controllers.reconcile import (
    Inputs,
    Outcome,
    is_controlled_by,
    missing_reference_outcome,
    resolve_references,
)
from strata.controllers.registration import RESYNC_SECONDS, register_kind, watch_children
from strata.observe.training import (
    LABEL_ATTEMPT,
    LABEL_COMPLETION_INDEX,
    AttemptState,
    AttemptView,
    TrainerProgress,
    attempt_from_status,
    format_duration,
    merge_attempts,
    observe_attempt,
    parse_progress,
)
from strata.render.common import owner_labels
from strata.render.trainer import METRICS_PORT
from strata.render.training_job import MAX_NAME_LENGTH, DataVolume, render_training_children

# The trainer image when a TrainingJob names none (the chart sets it to the release's image).
TRAINER_IMAGE_ENV = "STRATA_TRAINER_IMAGE"
DEFAULT_TRAINER_IMAGE = f"ghcr.io/strata-dev/strata-trainer:{__version__}"
# How often a running job's progress is read from rank 0.
PROGRESS_SECONDS = float(os.environ.get("STRATA_PROGRESS_SECONDS", "10"))

CHILD_KINDS = (("v1", "ConfigMap"), ("v1", "Service"), ("v1", "PersistentVolumeClaim"), ("batch/v1", "Job"))


@dataclass(frozen=True)
class TrainingInputs(Inputs):
    name: str = ""
    now: str = ""
    image: str = DEFAULT_TRAINER_IMAGE
    data: DataVolume | None = None
    # Why no attempt may start: (phase, reason, message); the Dataset has no data yet, or
    # storage this version cannot mount.
    blocked: tuple[str, str, str] | None = None
    attempts: tuple[AttemptView, ...] = ()
    old_workers_active: bool = False
    progress: TrainerProgress | None = None
    last_checkpoint_step: int | None = None
    dataset_version: str | None = None
    previous: dict[str, Any] = field(default_factory=dict)  # the status this pass started from


def _location(location: StorageLocation) -> str:
    if location.pvc is not None:
        return f"pvc://{location.pvc.claim_name}/{location.pvc.path}".rstrip("/")
    return location.s3.uri if location.s3 else ""


def resolve_data(spec: TrainingJobSpec, dataset: dict[str, Any]) -> tuple[DataVolume | None, tuple[str, str, str] | None]:
    """Pure: the volume the Dataset's data is on, or why there is none to train on yet.

    A version the Dataset published (status.version, under its storage PVC) when there is
    one; until Datasets publish versions, the Dataset's PVC source read as it is.
    """
    name = spec.dataset.name
    dataset_spec = dataset.get("spec") or {}
    status = dataset.get("status") or {}
    storage = (dataset_spec.get("storage") or {}).get("pvc")
    pinned = spec.dataset.version
    if status.get("version") and status.get("path") and storage:
        if pinned and pinned != status["version"]:
            return None, (Phase.PENDING, Reason.DATASET_NOT_READY,
                          f'spec.dataset.version pins "{pinned}" but Dataset "{name}" serves version '
                          f'"{status["version"]}"; unpin it or wait for that version.')
        return DataVolume(storage["claimName"], status["path"], status["version"]), None
    if pinned:
        return None, (Phase.PENDING, Reason.DATASET_NOT_READY,
                      f'spec.dataset.version pins "{pinned}" but Dataset "{name}" has published no version yet.')
    for source in dataset_spec.get("sources") or []:
        if source.get("pvc"):
            return DataVolume(source["pvc"]["claimName"], source["pvc"].get("path", "")), None
    return None, (Phase.PENDING, Reason.DATASET_NOT_READY,
                  f'Dataset "{name}" has published no version yet and has no PVC source to read directly; '
                  f"training starts when it publishes one.")


def unsupported_storage(spec: TrainingJobSpec) -> str | None:
    location = spec.checkpoints.storage
    if location is not None and location.s3 is not None:
        return ("spec.checkpoints.storage: S3 is not supported for checkpoints in this version of Strata; "
                "use a pvc location (exports may go to S3).")
    return None


def invalid_name(name: str) -> str | None:
    if len(name) > MAX_NAME_LENGTH or "." in name:
        return (f"metadata.name: a TrainingJob's name must be a DNS label of at most {MAX_NAME_LENGTH} characters "
                f"(no dots), so its Jobs and worker hostnames fit in 63; rename it.")
    return None


def _pod_phase_active(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def resolve(info: KindInfo, body: dict[str, Any], spec: TrainingJobSpec) -> TrainingInputs:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    base = resolve_references(info, body, spec)
    previous = body.get("status") or {}
    now = now_rfc3339()
    inputs = TrainingInputs(namespace=namespace, missing=base.missing, name=name, now=now, previous=previous,
                            image=os.environ.get(TRAINER_IMAGE_ENV) or DEFAULT_TRAINER_IMAGE)
    if spec.image:
        inputs = replace(inputs, image=spec.image)

    blocked = None
    problem = invalid_name(name) or unsupported_storage(spec)
    if problem:
        blocked = (Phase.INVALID, Reason.INVALID_SPEC if problem.startswith("metadata") else Reason.UNSUPPORTED_STORAGE,
                   problem)
    data = None
    dataset_version = None
    if not base.missing and blocked is None:
        datasets = k8s.list_objects(DATASET, namespace, spec.dataset.name)
        if datasets:
            data, blocked = resolve_data(spec, datasets[0])
            dataset_version = data.version if data else None

    selector = owner_labels(info, name)
    jobs = [job for job in k8s.list_children("batch/v1", "Job", namespace, selector) if is_controlled_by(job, meta["uid"])]
    pods = k8s.list_children("v1", "Pod", namespace, selector)
    pods_by_attempt: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        pods_by_attempt.setdefault((pod["metadata"].get("labels") or {}).get(LABEL_ATTEMPT, ""), []).append(pod)
    live = [observe_attempt(job, pods_by_attempt.get(job["metadata"]["labels"].get(LABEL_ATTEMPT, ""), []),
                            spec.topology.nodes) for job in jobs]
    recorded = [attempt_from_status(entry) for entry in previous.get("attempts") or []]
    attempts = merge_attempts(recorded, live, now, spec.suspend)
    newest = attempts[-1] if attempts else None
    # Workers of an attempt that ended (or whose Job is gone) and have not stopped yet.
    current = str(newest.number) if newest and newest.live and not newest.ended else None
    old_workers_active = any(_pod_phase_active(pod) for attempt, group in pods_by_attempt.items()
                             if attempt != current for pod in group)

    progress = None
    if newest is not None and newest.state == AttemptState.RUNNING:
        rank0 = [pod for pod in pods_by_attempt.get(str(newest.number), [])
                 if (pod["metadata"].get("labels") or {}).get(LABEL_COMPLETION_INDEX) == "0"
                 and (pod.get("status") or {}).get("podIP")]
        if rank0:
            text = podmetrics.fetch_metrics(rank0[0]["status"]["podIP"], METRICS_PORT)
            progress = parse_progress(text) if text else None

    if progress is not None and progress.resumed_from_step and attempts:
        # The step the trainer itself says it resumed from.
        attempts[-1] = replace(attempts[-1], resumed_from_step=progress.resumed_from_step)
    checkpoint_steps = [step for step in (
        progress.checkpoint_step if progress else None,
        (previous.get("lastCheckpoint") or {}).get("step"),
        # An attempt that ended cleanly (done, or stopped by SIGTERM) checkpointed on its way out.
        newest.result.get("step") if newest and newest.result.get("checkpoint") else None,
    ) if step]
    return replace(inputs, data=data, blocked=blocked, attempts=tuple(attempts), old_workers_active=old_workers_active,
                   progress=progress, last_checkpoint_step=max(checkpoint_steps) if checkpoint_steps else None,
                   dataset_version=dataset_version)


def render(info: KindInfo, body: dict[str, Any], spec: TrainingJobSpec, inputs: TrainingInputs) -> list[dict[str, Any]]:
    # Nothing new starts while something it needs is missing; what runs keeps running.
    can_start = not inputs.missing and inputs.blocked is None and inputs.data is not None
    data = inputs.data or DataVolume("", "")
    return render_training_children(
        spec, body, data, inputs.image, list(inputs.attempts),
        hold=inputs.old_workers_active or not can_start,
        last_checkpoint_step=inputs.last_checkpoint_step,
    )


# ---------------------------------------------------------------------------------------
# observe: pure
# ---------------------------------------------------------------------------------------

def _attempts_after_apply(spec: TrainingJobSpec, inputs: TrainingInputs, children: list[dict[str, Any]]) -> list[AttemptView]:
    """The resolved attempts plus any this pass created (observed as just created)."""
    known = {attempt.job for attempt in inputs.attempts}
    created = [observe_attempt(child, [], spec.topology.nodes) for child in children
               if child["kind"] == "Job" and child["metadata"]["name"] not in known]
    live_jobs = {child["metadata"]["name"] for child in children if child["kind"] == "Job"}
    attempts = []
    for attempt in inputs.attempts:
        if attempt.live and attempt.job not in live_jobs:
            # Pruned this pass (an older attempt, or stopped by spec.suspend): its record stays.
            attempt = replace(attempt, live=False)
        attempts.append(attempt)
    return merge_attempts(attempts, created, inputs.now, spec.suspend)


def _progress_status(spec: TrainingJobSpec, inputs: TrainingInputs, newest: AttemptView | None) -> dict[str, Any] | None:
    total = spec.hyperparameters.max_steps
    previous = inputs.previous.get("progress")
    live = inputs.progress
    if newest is not None and newest.state == AttemptState.SUCCEEDED and newest.result.get("step") is not None:
        step = int(newest.result["step"])
        return {"step": step, "totalSteps": total, "percent": min(100, 100 * step // total)}
    if live is None:
        # Between reads (or when rank 0 does not answer) the last one stands.
        return previous
    progress: dict[str, Any] = {"step": live.step, "totalSteps": total, "percent": min(100, 100 * live.step // total)}
    if live.samples_per_second is not None:
        progress["samplesPerSecond"] = round(live.samples_per_second, 3)
    if live.tokens_per_second is not None:
        progress["tokensPerSecond"] = round(live.tokens_per_second, 1)
    if live.steps_per_second and live.step < total:
        remaining = (total - live.step) / live.steps_per_second
        progress["eta"] = format_duration(remaining)
        now = _dt.datetime.strptime(inputs.now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)
        # Whole minutes, so the estimate does not rewrite status on every read.
        finish = now + _dt.timedelta(seconds=remaining)
        finish = finish.replace(second=0) + _dt.timedelta(minutes=1 if finish.second else 0)
        progress["estimatedCompletionTime"] = finish.strftime("%Y-%m-%dT%H:%M:%SZ")
    return progress


def _exported_model(spec: TrainingJobSpec, result: dict[str, Any]) -> dict[str, Any] | None:
    export = result.get("export")
    if spec.export is None or not isinstance(export, dict) or "version" not in export:
        return None
    model = {
        "repository": spec.export.triton_repository.to_wire(),
        "path": _location(spec.export.triton_repository),
        "modelName": export.get("modelName"),
        "version": export["version"],
        "quantization": spec.export.quantization,
    }
    variants = export.get("variants")
    if isinstance(variants, dict):
        model["variants"] = {str(variant): str(name) for variant, name in variants.items()}
    change = (export.get("quantization") or {}).get("change") or {}
    if "loss" in change:
        model["validationChange"] = change["loss"]
    return model


def _base_status(spec: TrainingJobSpec, inputs: TrainingInputs, attempts: list[AttemptView],
                 children: list[dict[str, Any]]) -> dict[str, Any]:
    newest = attempts[-1] if attempts else None
    status: dict[str, Any] = {}
    config_maps = [c["metadata"]["name"] for c in children if c["kind"] == "ConfigMap"]
    if config_maps:
        status["configMap"] = config_maps[0]
    if attempts:
        status["attempts"] = [attempt.to_status() for attempt in attempts]
        status["attempt"] = newest.number
        status["startTime"] = attempts[0].start_time
    result = newest.result if newest else {}
    dataset = result.get("dataset") if isinstance(result.get("dataset"), str) else None
    version = inputs.dataset_version or (dataset.rpartition("@")[2] if dataset and "@" in dataset else None)
    if version:
        status["datasetVersion"] = version[:64]
    progress = _progress_status(spec, inputs, newest)
    if progress:
        status["progress"] = progress
    loss = dict(inputs.previous.get("loss") or {})
    if inputs.progress is not None:
        loss = {key: value for key, value in (("train", inputs.progress.train_loss),
                                               ("validation", inputs.progress.validation_loss or loss.get("validation")))
                if value is not None}
    metrics = result.get("metrics") if isinstance(result.get("metrics"), dict) else None
    if metrics:
        numeric = {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
        status["metrics"] = numeric
        if "loss" in numeric:
            loss["validation"] = numeric["loss"]
    if loss:
        status["loss"] = loss
    claim = spec.checkpoints.storage
    checkpoint_location = _location(claim) if claim else f"pvc://{inputs.name}-checkpoints"
    if inputs.last_checkpoint_step:
        status["lastCheckpoint"] = {"step": inputs.last_checkpoint_step, "path": checkpoint_location}
    resumed = inputs.progress.resumed_from_step if inputs.progress and inputs.progress.resumed_from_step else None
    if newest is not None and (resumed or newest.resumed_from_step) is not None:
        status["resumedFromStep"] = resumed or newest.resumed_from_step
    if newest is not None and newest.state == AttemptState.SUCCEEDED:
        exported = _exported_model(spec, result)
        if exported:
            status["exportedModel"] = exported
        status["completionTime"] = newest.end_time
    return {key: value for key, value in status.items() if value is not None}


def observe(info: KindInfo, spec: TrainingJobSpec, inputs: TrainingInputs, children: list[dict[str, Any]]) -> Outcome:
    attempts = _attempts_after_apply(spec, inputs, children)
    status = _base_status(spec, inputs, attempts, children)
    if inputs.missing:
        outcome = missing_reference_outcome(inputs.missing, inputs.namespace)
        outcome.extra_status.update(status)
        return outcome
    outcome = _phase(spec, inputs, attempts)
    outcome.extra_status.update(status)
    if outcome.phase == Phase.FAILED:
        status_end = attempts[-1].end_time if attempts else None
        if status_end:
            outcome.extra_status["completionTime"] = status_end
    return outcome


def _outcome(phase: str, ready: tuple[str, str, str], progressing: tuple[str, str, str],
             degraded: tuple[str, str, str] | None = None) -> Outcome:
    return Outcome(phase=phase, ready=ready, progressing=progressing,
                   degraded=degraded or (ConditionStatus.FALSE, Reason.AS_EXPECTED, "No errors."))


def _phase(spec: TrainingJobSpec, inputs: TrainingInputs, attempts: list[AttemptView]) -> Outcome:
    newest = attempts[-1] if attempts else None
    false, true = ConditionStatus.FALSE, ConditionStatus.TRUE
    if newest is not None and newest.state == AttemptState.SUCCEEDED:
        step = newest.result.get("step")
        message = f"Trained {step} steps" if step is not None else "Training finished"
        exported = _exported_model(spec, newest.result)
        if exported:
            message += f"; exported {exported['modelName']} version {exported['version']} to {exported['path']}"
        return _outcome(Phase.SUCCEEDED, (true, Reason.SUCCEEDED, message + "."), (false, Reason.SUCCEEDED, "Training is finished."))
    if newest is not None and newest.state == AttemptState.FAILED:
        failures = sum(attempt.counts_as_failure for attempt in attempts)
        if newest.reason == Reason.INVALID_CONFIGURATION:
            message = (f"The trainer refused its configuration ({newest.message}); fix the spec and create the "
                       f"TrainingJob again. Not retried: no attempt could succeed.")
            return _outcome(Phase.FAILED, (false, Reason.INVALID_CONFIGURATION, message),
                            (false, Reason.INVALID_CONFIGURATION, "Training stopped."),
                            (true, Reason.INVALID_CONFIGURATION, message))
        if failures > spec.retries:
            message = (f"Attempt {newest.number} failed ({newest.message}) and all {spec.retries} retries are used; "
                       f"see kubectl logs job/{newest.job}.")
            return _outcome(Phase.FAILED, (false, Reason.RETRIES_EXHAUSTED, message),
                            (false, Reason.RETRIES_EXHAUSTED, "Training stopped."), (true, Reason.RETRIES_EXHAUSTED, message))
    if inputs.blocked is not None and (newest is None or newest.ended):
        phase, reason, message = inputs.blocked
        if phase == Phase.INVALID:
            return _outcome(phase, (false, reason, message), (false, reason, message), (true, reason, message))
        # The Dataset exists and will publish data: progressing, not broken.
        return _outcome(phase, (false, reason, message), (true, reason, message))
    if spec.suspend:
        stopping = " (its workers are stopping, writing a checkpoint)" if inputs.old_workers_active else ""
        message = f"Suspended by spec.suspend{stopping}; set it to false to resume from the last checkpoint."
        return _outcome(Phase.SUSPENDED, (false, Reason.SUSPENDED, message), (false, Reason.SUSPENDED, message))
    if newest is None or newest.ended:
        why = f"attempt {newest.number} ended: {newest.message or newest.reason}; " if newest else ""
        message = f"{why}waiting for its workers to stop before the next attempt starts."
        return _outcome(Phase.PENDING, (false, Reason.RESTARTING, message), (true, Reason.RESTARTING, message))
    if newest.queued:
        queue = spec.topology.queue_name
        message = (f"Attempt {newest.number} waits for Kueue to admit all {spec.topology.nodes} workers "
                   f"through LocalQueue {queue}." if queue else f"Attempt {newest.number} is suspended.")
        return _outcome(Phase.PENDING, (false, Reason.QUEUED, message), (true, Reason.QUEUED, message))
    if newest.state == AttemptState.PENDING:
        message = f"Attempt {newest.number}: waiting for its {spec.topology.nodes} workers to run."
        return _outcome(Phase.PENDING, (false, Reason.WORKERS_PENDING, message), (true, Reason.WORKERS_PENDING, message))
    progress = inputs.progress
    where = (f"step {progress.step} of {spec.hyperparameters.max_steps}" if progress
             else "starting (no step reported yet)")
    resumed = f", resumed from step {newest.resumed_from_step}" if newest.resumed_from_step else ""
    message = f"Attempt {newest.number} training: {where}{resumed}."
    return _outcome(Phase.RUNNING, (false, Reason.TRAINING, message), (true, Reason.TRAINING, message))


def requeue_seconds(body: dict[str, Any]) -> float:
    """A pending or running job's progress is read every PROGRESS_SECONDS, between the events
    its Jobs and pods cause; any other is only resynced."""
    phase = (body.get("status") or {}).get("phase")
    return min(PROGRESS_SECONDS, RESYNC_SECONDS) if phase in (Phase.PENDING, Phase.RUNNING) else RESYNC_SECONDS


register_kind(TRAINING_JOB, resolve, render, observe, child_kinds=CHILD_KINDS, requeue_seconds=requeue_seconds)
# Pods are the Jobs' children, labelled for the TrainingJob: their phases and exit codes are news.
watch_children("v1", "Pod")
