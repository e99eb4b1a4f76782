"""A Dataset's children, rendered purely from its spec and what the controller resolved.

- the pipeline's config (``pipeline.yaml``): the Dataset's spec in the pipeline's own terms
  (strata_workloads.data.config), with every location resolved to where the pod mounts it;
  an immutable, content-named ConfigMap (render/config.py);
- one Job per pipeline run, named for its run key: the config's content hash and the refresh
  tick (the latest time spec.refresh.schedule fired, ``0`` before the first one). A new spec or
  a new tick is a new Job; a rerun of unchanged input finds its version and writes nothing.

The run's Job is created once (a Job's template is immutable) and pruned when the next run's
Job replaces it; status keeps the versions it produced.

What the pod reports back, and where it finds its files, is strata_workloads.data.result: the
one definition both sides import (standard library only, so no pyarrow or torch here).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import posixpath
from dataclasses import dataclass
from typing import Any

from strata.api import DATASET
from strata.api.dataset import DatasetSpec
from strata.constants import ANNOTATION_CREATED_BECAUSE, ChildPolicy
from strata.render.common import (
    child_labels,
    child_metadata,
    s3_settings,
    volume_mount,
    workload_container_security,
    workload_pod_security,
)
from strata_workloads.data.config import MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD
from strata_workloads.data.result import (
    CONFIG_DIR,
    CONFIG_PATH,
    CONTAINER_NAME,
    EXIT_INVALID_CONFIG,
    FEEDBACK_DIR,
    FEEDBACK_SAMPLES_FILE,
    SECRETS_DIR,
    SOURCES_DIR,
    STORAGE_DIR,
)

COMPONENT = "pipeline"
# Retries of a failed pod within one run (a source may be briefly unreachable); an invalid
# configuration (exit 2) fails the run at once.
BACKOFF_LIMIT = 2
# How long shard 0 of a parallel run waits for the others (their pods must run at once): past
# it the run fails saying so, and the next run starts over.
SHARD_TIMEOUT_SECONDS = 6 * 3600
# The run's key and why it was created, on the Job (the status and events read them).
ANNOTATION_RUN_CONFIG = "strata.dev/pipeline-config"
ANNOTATION_REFRESH_TICK = "strata.dev/refresh-tick"
# Job names stay DNS labels (pods carry them in a 63-character label).
MAX_JOB_NAME = 63
RUN_HASH_LENGTH = 8
NO_TICK = "0"
# Cron macros as five fields (the scheduler library reads only the five-field form).
CRON_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0",
               "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *"}


@dataclass(frozen=True)
class PipelineRun:
    """One run to have: its config's name and hash, its refresh tick, and the version it builds on."""

    config_map: str
    config_hash: str
    tick: str
    parent_version: str | None
    because: str  # the creation event's words
    feedback_samples: str | None = None  # a FeedbackPolicy's samples ConfigMap, read as one more source


# ------------------------------------------------------------------------------ checks


def _modality_settings(spec: DatasetSpec) -> dict[str, list[tuple[str, Any]]]:
    """Each modality's own settings, (field path, value) with None for unset."""
    preprocessing, augmentation, filters, schema = spec.preprocessing, spec.augmentation, spec.cleaning.filters, spec.record_schema
    return {
        "text": [("spec.preprocessing.text", preprocessing.text if preprocessing else None),
                 ("spec.augmentation.text", augmentation.text if augmentation else None),
                 ("spec.cleaning.filters.minLength", filters.min_length),
                 ("spec.cleaning.filters.maxLength", filters.max_length),
                 ("spec.cleaning.filters.maxNonAlphaRatio", filters.max_non_alpha_ratio),
                 ("spec.schema.textField", schema.text_field)],
        "image": [("spec.preprocessing.image", preprocessing.image if preprocessing else None),
                  ("spec.augmentation.image", augmentation.image if augmentation else None),
                  ("spec.cleaning.filters.minImageSide", filters.min_image_side),
                  ("spec.schema.imageField", schema.image_field)],
        "audio": [("spec.preprocessing.audio", preprocessing.audio if preprocessing else None),
                  ("spec.augmentation.audio", augmentation.audio if augmentation else None),
                  ("spec.cleaning.filters.minAudioSeconds", filters.min_audio_seconds),
                  ("spec.schema.audioField", schema.audio_field)],
    }


FOLDER_FORMATS = {"image": "imagefolder", "audio": "audiofolder"}


def unsupported_features(spec: DatasetSpec) -> str | None:
    """What the spec asks that this version's pipeline does not do, or that does not apply to its
    modality (accepted, it would do nothing), naming the field and the fix."""
    problems = []
    for index, source in enumerate(spec.sources):
        if source.format in FOLDER_FORMATS.values() and source.format != FOLDER_FORMATS.get(spec.modality):
            kind = next(modality for modality, folder in FOLDER_FORMATS.items() if folder == source.format)
            problems.append(f"spec.sources[{index}].format: an {source.format} holds {kind} records; "
                            f"set spec.modality to {kind}")
    for modality, settings in _modality_settings(spec).items():
        if modality != spec.modality:
            problems.extend(f"{field_path}: applies to {modality} datasets only; remove it"
                            for field_path, value in settings if value is not None)
    if spec.modality != "text":
        near = spec.cleaning.dedup.near_duplicate
        # The API server fills in numPerm's default: only another value is the user's choice.
        if near is not None and near.num_perm != type(near).model_fields["num_perm"].default:
            problems.append(f"spec.cleaning.dedup.nearDuplicate.numPerm: {spec.modality} records are compared by a "
                            f"64-bit hash, not MinHash; remove it (threshold is the share of equal bits)")
        if near is not None and near.threshold < MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD:
            problems.append(f"spec.cleaning.dedup.nearDuplicate.threshold: {spec.modality} needs at least "
                            f"{MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD}, since unrelated records share about half the bits "
                            f"of their hashes; raise it")
        if spec.record_schema.label_field and any(source.format == FOLDER_FORMATS[spec.modality] for source in spec.sources):
            problems.append(f"spec.schema.labelField: an {FOLDER_FORMATS[spec.modality]}'s classes are its directories; "
                            f"remove it")
    preprocessing = spec.preprocessing
    if spec.modality == "image" and preprocessing and preprocessing.image and not preprocessing.image.normalize:
        problems.append("spec.preprocessing.image.normalize: false is not implemented (versions hold pixels in "
                        "[-1, 1], what the image model families train on); remove it")
    if spec.storage.s3 is not None:
        problems.append("spec.storage.s3: versions are written to a PVC in this version of Strata; use storage.pvc")
    return "; ".join(problems) or None


def cron_fields(schedule: str) -> str:
    return CRON_MACROS.get(schedule.strip(), schedule.strip())


def invalid_schedule(spec: DatasetSpec) -> str | None:
    if spec.refresh is None:
        return None
    from cronsim import CronSim, CronSimError

    try:
        CronSim(cron_fields(spec.refresh.schedule), _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc))
    except CronSimError as error:
        return f'spec.refresh.schedule: "{spec.refresh.schedule}" is not a cron schedule ({error}); use five fields such as "0 3 * * *", or @daily'
    return None


def request_tick(requested: str | None, created: str) -> str:
    """A refresh request (an RFC 3339 time) as a tick (``%Y%m%d%H%M%S``), or ``0`` when there is
    none, it is not a time, or it predates the Dataset (copied from another object). A request
    in the Dataset's first second counts: a policy may ask as soon as the Dataset exists."""
    try:
        moment = _dt.datetime.strptime(requested or "", "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return NO_TICK
    return moment.strftime("%Y%m%d%H%M%S") if (requested or "") >= created else NO_TICK


def latest_tick(schedule_tick: str, requested_tick: str) -> str:
    """The later of the schedule's tick (to the minute) and a request's (to the second)."""
    if requested_tick == NO_TICK:
        return schedule_tick
    if schedule_tick == NO_TICK:
        return requested_tick
    return requested_tick if requested_tick > schedule_tick + "00" else schedule_tick


def refresh_tick(spec: DatasetSpec, created: str, now: str) -> str:
    """The latest time the schedule fired after the Dataset was created (``%Y%m%d%H%M``), or ``0``."""
    if spec.refresh is None:
        return NO_TICK
    from cronsim import CronSim

    parse = lambda text: _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)  # noqa: E731
    # Reverse iteration yields times strictly before its start: start a second later, so a
    # firing at exactly `now` counts.
    latest = next(CronSim(cron_fields(spec.refresh.schedule), parse(now) + _dt.timedelta(seconds=1), reverse=True))
    return latest.strftime("%Y%m%d%H%M") if latest > parse(created) else NO_TICK


# ------------------------------------------------------------------------------ the pipeline's config


def source_mount(index: int) -> str:
    return f"{SOURCES_DIR}/{index}"


def secret_mount(kind: str, index: int) -> str:
    return f"{SECRETS_DIR}/{kind}-{index}"


def render_pipeline_config(spec: DatasetSpec, name: str, feedback_samples: str | None = None) -> dict[str, Any]:
    """The pipeline's configuration (strata_workloads.data.config.PipelineConfig, on the wire);
    with `feedback_samples` (the strata.dev/feedback-samples ConfigMap), its samples last."""
    sources = []
    for index, source in enumerate(spec.sources):
        entry: dict[str, Any] = {"format": source.format}
        if source.pvc is not None:
            entry["path"] = source_mount(index)
        elif source.http is not None:
            http: dict[str, Any] = {"url": source.http.url}
            if source.http.pagination is not None:
                http["pagination"] = source.http.pagination.to_wire()
            if source.http.headers_secret_ref is not None:
                http["headersPath"] = secret_mount("http", index)
            entry["http"] = http
        else:
            assert source.s3 is not None
            entry["s3"] = s3_settings(source.s3, secret_mount("s3", index))
        sources.append(entry)
    # A policy's samples are text (question and answer): image and audio datasets have nothing to fold in.
    if feedback_samples is not None and spec.modality == "text":
        sources.append({"path": f"{FEEDBACK_DIR}/{FEEDBACK_SAMPLES_FILE}", "format": "jsonl"})
    schema: dict[str, Any] = {"textField": spec.record_schema.text_field or "text"}
    if spec.record_schema.label_field:
        schema["labelField"] = spec.record_schema.label_field
    if spec.record_schema.image_field:
        schema["imageField"] = spec.record_schema.image_field
    if spec.record_schema.audio_field:
        schema["audioField"] = spec.record_schema.audio_field
    cleaning = spec.cleaning
    filters = {key: value for key, value in (("minLength", cleaning.filters.min_length),
                                             ("maxLength", cleaning.filters.max_length),
                                             ("maxNonAlphaRatio", cleaning.filters.max_non_alpha_ratio),
                                             ("minImageSide", cleaning.filters.min_image_side),
                                             ("minAudioSeconds", cleaning.filters.min_audio_seconds)) if value is not None}
    dedup: dict[str, Any] = {"exact": cleaning.dedup.exact}
    if cleaning.dedup.near_duplicate is not None:
        dedup["nearDuplicate"] = cleaning.dedup.near_duplicate.to_wire()
    config: dict[str, Any] = {
        "name": name,
        "modality": spec.modality,
        "sources": sources,
        "schema": schema,
        "cleaning": {"dedup": dedup, "missingValues": [rule.to_wire() for rule in cleaning.missing_values],
                     "filters": filters},
        "output": STORAGE_DIR,
    }
    text = spec.preprocessing.text if spec.preprocessing else None
    if text is not None:
        config["preprocessing"] = {"text": {"normalize": text.normalize, "lowercase": text.lowercase,
                                            "stripStopwords": text.strip_stopwords,
                                            "tokenizer": {"kind": text.tokenizer.kind, "vocabSize": text.tokenizer.vocab_size}}}
    for modality in ("image", "audio"):
        settings = getattr(spec.preprocessing, modality) if spec.preprocessing else None
        if settings is not None:
            config.setdefault("preprocessing", {})[modality] = settings.to_wire()
    if spec.augmentation is not None:
        augmentation = spec.augmentation
        config["augmentation"] = {"maxSyntheticFraction": augmentation.max_synthetic_fraction, "seed": augmentation.seed}
        if augmentation.text is not None:
            config["augmentation"]["text"] = augmentation.text.to_wire()
        for modality in ("image", "audio"):
            if getattr(augmentation, modality) is not None:
                config["augmentation"][modality] = getattr(augmentation, modality).to_wire()
    if spec.quality_gates is not None:
        config["qualityGates"] = spec.quality_gates.to_wire()
    return config


# ------------------------------------------------------------------------------ the run's Job


def version_path(spec: DatasetSpec, version: str) -> str:
    """Where a version lives on the storage PVC (what status.path and TrainingJobs mount)."""
    assert spec.storage.pvc is not None
    return posixpath.join(spec.storage.pvc.path, version) if spec.storage.pvc.path else version


def job_name(owner_name: str, config_hash: str, tick: str) -> str:
    run_hash = hashlib.sha256(f"{config_hash}/{tick}".encode()).hexdigest()[:RUN_HASH_LENGTH]
    return f"{owner_name[: MAX_JOB_NAME - RUN_HASH_LENGTH - 1].rstrip('-.')}-{run_hash}"


def _volumes(spec: DatasetSpec, config_map: str,
             feedback_samples: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): the config, the storage, each PVC source, each Secret a source names,
    /tmp, and a FeedbackPolicy's samples."""
    assert spec.storage.pvc is not None
    storage = spec.storage.pvc
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "storage", "persistentVolumeClaim": {"claimName": storage.claim_name}},
        # The root filesystem is read-only; downloads of remote Parquet files and caches go here.
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [volume_mount("config", CONFIG_DIR, read_only=True), volume_mount("storage", STORAGE_DIR, storage.path),
              volume_mount("tmp", "/tmp")]
    claims = {storage.claim_name: "storage"}
    for index, source in enumerate(spec.sources):
        if source.pvc is not None:
            volume = claims.get(source.pvc.claim_name)
            if volume is None:
                volume = claims[source.pvc.claim_name] = f"source-{index}"
                volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": source.pvc.claim_name,
                                                                          "readOnly": True}})
            mounts.append(volume_mount(volume, source_mount(index), source.pvc.path, read_only=True))
        secret = (source.s3.secret_ref if source.s3 else None) or (source.http.headers_secret_ref if source.http else None)
        if secret is not None:
            kind = "s3" if source.s3 else "http"
            volume = f"{kind}-{index}"
            volumes.append({"name": volume, "secret": {"secretName": secret.name, "defaultMode": 0o440}})
            mounts.append(volume_mount(volume, secret_mount(kind, index), read_only=True))
    if feedback_samples is not None:
        volumes.append({"name": "feedback", "configMap": {"name": feedback_samples}})
        mounts.append(volume_mount("feedback", FEEDBACK_DIR, read_only=True))
    return volumes, mounts


def render_pipeline_job(spec: DatasetSpec, owner: dict[str, Any], run: PipelineRun, image: str) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    meta = child_metadata(DATASET, owner, job_name(name, run.config_hash, run.tick), COMPONENT, ChildPolicy.CREATE_ONCE)
    meta["annotations"].update({ANNOTATION_RUN_CONFIG: run.config_map, ANNOTATION_REFRESH_TICK: run.tick,
                                ANNOTATION_CREATED_BECAUSE: run.because})
    volumes, mounts = _volumes(spec, run.config_map, run.feedback_samples)
    args = ["-m", "strata_workloads.data", "--config", CONFIG_PATH]
    if run.parent_version:
        args.append(f"--parent-version={run.parent_version}")
    job = meta["name"]
    if spec.parallelism > 1:
        # Each pod's share is its index ($JOB_COMPLETION_INDEX); they meet in a directory named for the Job.
        args += [f"--shards={spec.parallelism}", f"--run-id={job}", f"--shard-timeout={SHARD_TIMEOUT_SECONDS}"]
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["python3"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        # The pipeline streams: memory stays flat as the input grows.
        "resources": {"requests": {"cpu": str(spec.resources.cpu), "memory": str(spec.resources.memory)},
                      "limits": {"memory": str(spec.resources.memory)}},
        "volumeMounts": mounts,
        # The pipeline writes its result (strata_workloads.data.result) here; a crash leaves the log's tail.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": workload_container_security(),
    }
    pod_spec = {
        "restartPolicy": "Never",
        # The pipeline never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": workload_pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    parallel = {}
    if spec.parallelism > 1:
        # Every pod at once (shard 0 waits for the others); a failed shard's pod is retried, and a
        # failure past the limit fails the Job, which stops the rest.
        parallel = {"completionMode": "Indexed", "completions": spec.parallelism, "parallelism": spec.parallelism}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            **parallel,
            "backoffLimit": BACKOFF_LIMIT * spec.parallelism,
            # A configuration the pipeline refuses fails the run at once: no retry can succeed.
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In",
                                                      "values": [EXIT_INVALID_CONFIG]}},
            ]},
            "template": {"metadata": {"labels": child_labels(DATASET, name, COMPONENT)}, "spec": pod_spec},
        },
    }


def kept_job(owner: dict[str, Any], job: str) -> dict[str, Any]:
    """A live run that stays: only who it belongs to is re-asserted (it is create-once)."""
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": child_metadata(DATASET, owner, job, COMPONENT, ChildPolicy.CREATE_ONCE)}
