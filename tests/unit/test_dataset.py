"""A Dataset's pure parts: the pipeline config and Job it renders, when a run starts, what a run's
Job and pod say, and the status that follows."""

from __future__ import annotations

import copy
import json

import pytest

from strata.api import DATASET
from strata.api.dataset import DatasetSpec
from strata.constants import ConditionStatus, Phase, Reason
from strata.controllers.dataset import DatasetInputs, observe, plan_run, render
from strata.observe.dataset import HISTORY_LIMIT, RunState, RunView, merge_history, observe_run
from strata.render.dataset import (
    ANNOTATION_REFRESH_TICK,
    ANNOTATION_RUN_CONFIG,
    BACKOFF_LIMIT,
    NO_TICK,
    PipelineRun,
    invalid_schedule,
    job_name,
    latest_tick,
    refresh_tick,
    request_tick,
    render_pipeline_config,
    render_pipeline_job,
    unsupported_features,
)
from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.result import CONFIG_PATH, CONTAINER_NAME, FEEDBACK_DIR, STORAGE_DIR, GateVerdict, RunResult
from tests_support import example_spec

OWNER = {"metadata": {"name": "chats", "namespace": "ml", "uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z"}}
ANNOTATIONS = (ANNOTATION_RUN_CONFIG, ANNOTATION_REFRESH_TICK)


def spec(**changes) -> DatasetSpec:
    raw = copy.deepcopy(example_spec("Dataset"))
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return DatasetSpec.model_validate(raw)


def container(manifest):
    return manifest["spec"]["template"]["spec"]["containers"][0]


# --- the pipeline's config -------------------------------------------------------------------

def test_the_rendered_config_is_one_the_pipeline_accepts_with_locations_where_the_pod_mounts_them():
    raw = render_pipeline_config(spec(sources=[
        {"pvc": {"claimName": "corpus", "path": "in"}, "format": "jsonl"},
        {"s3": {"uri": "s3://corpora/x/", "endpoint": "http://s3.local:8333", "secretRef": {"name": "keys"}}, "format": "csv"},
        {"http": {"url": "https://api.local/v1", "headersSecretRef": {"name": "token"}, "pagination": {"cursorField": "next"}},
         "format": "json"},
    ]), "chats")
    config = PipelineConfig.model_validate(raw)
    assert [source.path for source in config.sources] == ["/var/lib/strata/sources/0", None, None]
    assert config.sources[1].s3.credentials_path == "/var/run/secrets/strata/s3-1"
    assert config.sources[1].s3.endpoint == "http://s3.local:8333"
    assert config.sources[2].http.headers_path == "/var/run/secrets/strata/http-2"
    assert config.sources[2].http.pagination.cursor_field == "next"
    assert config.output == STORAGE_DIR and config.name == "chats"
    # The example's settings arrive.
    assert config.cleaning.dedup.near_duplicate.threshold == 0.85
    assert config.cleaning.filters.min_length == 8 and config.augmentation.seed == 7
    assert config.quality_gates.max_duplicate_ratio == 0.3 and config.quality_gates.max_drift == 0.2
    assert (config.record_schema.text_field, config.record_schema.label_field) == ("text", "intent")


def test_stop_word_removal_arrives_in_the_pipelines_config():
    raw = render_pipeline_config(spec(preprocessing__text__stripStopwords=True), "chats")
    assert PipelineConfig.model_validate(raw).preprocessing.text.strip_stopwords
    assert not PipelineConfig.model_validate(render_pipeline_config(spec(), "chats")).preprocessing.text.strip_stopwords


def image_spec(**changes) -> DatasetSpec:
    """The example's storage with an image folder of classes, brought to 32x32 grey and augmented."""
    return spec(**{"modality": "image", "schema": {}, "sources": [{"pvc": {"claimName": "photos", "path": "pets"},
                                                                    "format": "imagefolder"}],
                   "preprocessing": {"image": {"width": 32, "height": 24, "resize": "pad", "colorSpace": "L"}},
                   "augmentation": {"image": {"horizontalFlip": True, "rotationDegrees": 10}, "maxSyntheticFraction": 0.25},
                   "cleaning": {"dedup": {"nearDuplicate": {"threshold": 0.9}}, "filters": {"minImageSide": 16}},
                   **changes})


def test_an_image_datasets_settings_arrive_in_a_config_the_pipeline_accepts():
    dataset = image_spec()
    assert unsupported_features(dataset) is None
    config = PipelineConfig.model_validate(render_pipeline_config(dataset, "pets"))
    assert config.modality == "image" and config.sources[0].format == "imagefolder"
    image = config.preprocessing.image
    assert (image.width, image.height, image.resize, image.color_space) == (32, 24, "pad", "L")
    assert config.augmentation.image.horizontal_flip and config.augmentation.image.rotation_degrees == 10
    assert config.augmentation.max_synthetic_fraction == 0.25
    assert config.cleaning.filters.min_image_side == 16 and config.cleaning.dedup.near_duplicate.threshold == 0.9


def audio_spec(**changes) -> DatasetSpec:
    """The example's storage with an audio folder of classes, as 40-band spectrograms of 2 s."""
    return spec(**{"modality": "audio", "schema": {}, "sources": [{"pvc": {"claimName": "clips", "path": "words"},
                                                                    "format": "audiofolder"}],
                   "preprocessing": {"audio": {"sampleRate": 8000, "nMels": 40, "maxSeconds": 2}},
                   "augmentation": {"audio": {"timeStretch": 0.1, "backgroundNoiseSnrDb": 20}, "maxSyntheticFraction": 0.2},
                   "cleaning": {"dedup": {"nearDuplicate": {"threshold": 0.9}}, "filters": {"minAudioSeconds": 0.5}},
                   **changes})


def test_an_audio_datasets_settings_arrive_in_a_config_the_pipeline_accepts():
    dataset = audio_spec()
    assert unsupported_features(dataset) is None
    config = PipelineConfig.model_validate(render_pipeline_config(dataset, "words"))
    assert config.modality == "audio" and config.sources[0].format == "audiofolder"
    audio = config.preprocessing.audio
    assert (audio.sample_rate, audio.n_mels, audio.max_seconds, audio.representation) == (8000, 40, 2, "melSpectrogram")
    assert config.augmentation.audio.time_stretch == 0.1 and config.augmentation.audio.background_noise_snr_db == 20
    assert config.cleaning.filters.min_audio_seconds == 0.5


@pytest.mark.parametrize("changes, field", [
    pytest.param({"preprocessing__image": {"width": 32}}, "spec.preprocessing.image",
                 id="image preprocessing on audio is refused naming the field"),
    pytest.param({"cleaning__filters__minLength": 3}, "spec.cleaning.filters.minLength",
                 id="a text filter on audio is refused naming the field"),
    pytest.param({"sources": [{"pvc": {"claimName": "c"}, "format": "imagefolder"}], "schema": {"audioField": "clip"}},
                 "spec.sources[0].format", id="an image folder in an audio dataset is refused naming its format"),
    pytest.param({"schema": {"labelField": "word"}}, "spec.schema.labelField",
                 id="a label field beside an audio folder's class directories is refused"),
])
def test_audio_settings_the_pipeline_cannot_honour_are_refused_naming_the_field(changes, field):
    problem = unsupported_features(audio_spec(**changes))
    assert problem is not None and problem.startswith(field), problem


def test_feedback_samples_are_text_and_are_not_folded_into_an_image_dataset():
    config = PipelineConfig.model_validate(render_pipeline_config(image_spec(), "pets", feedback_samples="policy-feedback-samples"))
    assert [source.format for source in config.sources] == ["imagefolder"]


@pytest.mark.parametrize("changes, field", [
    pytest.param({"preprocessing": None, "cleaning__filters": {}}, None, id="an image dataset with defaults is accepted"),
    pytest.param({"cleaning__dedup__nearDuplicate__numPerm": 128}, None,
                 id="numPerm at its default, as the API server fills it in, is accepted"),
    pytest.param({"cleaning__filters__minLength": 3}, "spec.cleaning.filters.minLength",
                 id="a text filter on images is refused naming the field"),
    pytest.param({"augmentation__text": {"masking": 0.1}}, "spec.augmentation.text",
                 id="text augmentation on images is refused naming the field"),
    pytest.param({"cleaning__dedup__nearDuplicate__numPerm": 64}, "spec.cleaning.dedup.nearDuplicate.numPerm",
                 id="MinHash permutations on images are refused, since images are compared by hash bits"),
    pytest.param({"cleaning__dedup__nearDuplicate__threshold": 0.6}, "spec.cleaning.dedup.nearDuplicate.threshold",
                 id="a near-duplicate threshold at which unrelated images match is refused"),
    pytest.param({"preprocessing__image__normalize": False}, "spec.preprocessing.image.normalize",
                 id="unnormalized pixels are refused naming the field"),
    pytest.param({"schema": {"labelField": "kind"}}, "spec.schema.labelField",
                 id="a label field beside an image folder's class directories is refused"),
])
def test_image_settings_the_pipeline_cannot_honour_are_refused_naming_the_field(changes, field):
    problem = unsupported_features(image_spec(**changes))
    assert (problem is None) if field is None else (problem is not None and problem.startswith(field)), problem


@pytest.mark.parametrize("changes, field", [
    pytest.param({"sources": [{"pvc": {"claimName": "c"}, "format": "imagefolder"}]}, "spec.sources[0].format",
                 id="an image folder source in a text dataset is refused naming its format"),
    pytest.param({"sources": [{"pvc": {"claimName": "c"}, "format": "audiofolder"}]}, "spec.sources[0].format",
                 id="an audio folder source in a text dataset is refused naming its format"),
    pytest.param({"augmentation__audio": {"timeStretch": 0.1}}, "spec.augmentation.audio",
                 id="audio augmentation on text is refused naming the field"),
    pytest.param({"cleaning__filters__minImageSide": 8}, "spec.cleaning.filters.minImageSide",
                 id="an image filter on text is refused naming the field"),
    pytest.param({"storage": {"s3": {"uri": "s3://versions/x"}}}, "spec.storage.s3",
                 id="S3 storage is refused naming storage.s3"),
])
def test_what_the_pipeline_cannot_do_is_refused_naming_the_field(changes, field):
    problem = unsupported_features(spec(**changes))
    assert problem is not None and problem.startswith(field)


def test_the_example_needs_nothing_unsupported():
    assert unsupported_features(spec()) is None and invalid_schedule(spec()) is None


# --- refresh ticks -----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule, created, now, tick", [
    pytest.param(None, "2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", NO_TICK, id="no schedule: one tick forever"),
    pytest.param("0 3 * * *", "2026-01-01T00:00:00Z", "2026-01-01T02:59:59Z", NO_TICK,
                 id="before the first firing after creation: no tick"),
    pytest.param("0 3 * * *", "2026-01-01T00:00:00Z", "2026-01-02T10:00:00Z", "202601020300",
                 id="the latest firing is the tick"),
    pytest.param("@hourly", "2026-01-01T00:30:00Z", "2026-01-01T02:15:00Z", "202601010200", id="macros work"),
    pytest.param("*/15 * * * *", "2026-01-01T00:20:00Z", "2026-01-01T00:29:00Z", NO_TICK,
                 id="a firing before creation does not count"),
])
def test_refresh_tick(schedule, created, now, tick):
    dataset = spec(refresh={"schedule": schedule} if schedule else None)
    assert refresh_tick(dataset, created, now) == tick


def test_a_schedule_cron_cannot_read_is_refused_naming_it():
    problem = invalid_schedule(spec(refresh={"schedule": "61 * * * *"}))
    assert problem is not None and problem.startswith("spec.refresh.schedule")


# --- the run's Job -----------------------------------------------------------------------------

def _job(dataset=None, parent="v0"):
    dataset = dataset or spec()
    return render_pipeline_job(dataset, OWNER, PipelineRun("chats-pipeline-abc", "abc", "0", parent, "Started"), "data:1")


def test_the_job_runs_the_pipeline_on_its_config_in_the_data_image_restricted():
    manifest = _job()
    pod = manifest["spec"]["template"]["spec"]
    main = container(manifest)
    assert main["name"] == CONTAINER_NAME and main["image"] == "data:1"
    assert main["args"] == ["-m", "strata_workloads.data", "--config", CONFIG_PATH, "--parent-version=v0"]
    assert main["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                       "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert main["terminationMessagePolicy"] == "FallbackToLogsOnError"
    rules = manifest["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert "--parent-version" not in " ".join(container(_job(parent=None))["args"])


def test_the_job_mounts_config_storage_pvc_sources_and_secrets():
    dataset = spec(sources=[
        {"pvc": {"claimName": "corpus", "path": "raw"}, "format": "text"},
        {"pvc": {"claimName": "datasets", "path": "inbox"}, "format": "jsonl"},
        {"s3": {"uri": "s3://b/p", "secretRef": {"name": "keys"}}, "format": "jsonl"},
    ])
    manifest = _job(dataset)
    volumes = {volume["name"]: volume for volume in manifest["spec"]["template"]["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container(manifest)["volumeMounts"]}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "chats-pipeline-abc"}}
    assert volumes["storage"]["persistentVolumeClaim"] == {"claimName": "datasets"}
    assert mounts[STORAGE_DIR] == {"name": "storage", "mountPath": STORAGE_DIR, "subPath": "support-chats"}
    assert mounts["/var/lib/strata/sources/0"] == {"name": "source-0", "mountPath": "/var/lib/strata/sources/0",
                                                   "subPath": "raw", "readOnly": True}
    assert volumes["source-0"]["persistentVolumeClaim"] == {"claimName": "corpus", "readOnly": True}
    # A source on the storage's own claim reuses its volume, read-only.
    assert mounts["/var/lib/strata/sources/1"]["name"] == "storage" and mounts["/var/lib/strata/sources/1"]["readOnly"]
    assert volumes["s3-2"]["secret"]["secretName"] == "keys"
    assert mounts["/var/run/secrets/strata/s3-2"]["readOnly"]
    assert mounts["/etc/strata"]["readOnly"] and "/tmp" in mounts


def test_one_pod_by_default_sized_by_spec_resources():
    manifest = _job(spec(resources={"cpu": "2", "memory": "3Gi"}))
    assert "completionMode" not in manifest["spec"] and "--shards" not in " ".join(container(manifest)["args"])
    assert container(manifest)["resources"] == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    assert container(_job())["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}


def test_parallelism_runs_an_indexed_job_whose_pods_share_the_input_and_meet_in_the_jobs_directory():
    manifest = _job(spec(parallelism=3))
    job_spec = manifest["spec"]
    assert (job_spec["completionMode"], job_spec["completions"], job_spec["parallelism"]) == ("Indexed", 3, 3)
    # Each pod's share comes from $JOB_COMPLETION_INDEX, which the Job controller sets.
    args = container(manifest)["args"]
    assert "--shards=3" in args and f"--run-id={manifest['metadata']['name']}" in args
    assert any(arg.startswith("--shard-timeout=") for arg in args)
    assert job_spec["backoffLimit"] == 3 * BACKOFF_LIMIT
    # The run's config (and so its Job and the version) does not depend on how many pods build it.
    assert render_pipeline_config(spec(parallelism=3), "chats") == render_pipeline_config(spec(), "chats")


def test_a_feedback_policys_samples_are_one_more_source_mounted_from_its_config_map():
    config = render_pipeline_config(spec(), "chats", feedback_samples="lm-feedback-samples")
    assert config["sources"][-1] == {"path": f"{FEEDBACK_DIR}/samples.jsonl", "format": "jsonl"}
    assert config["sources"][:-1] == render_pipeline_config(spec(), "chats")["sources"]
    manifest = render_pipeline_job(spec(), OWNER, PipelineRun("chats-pipeline-abc", "abc", "0", None, "Started",
                                                              "lm-feedback-samples"), "data:1")
    volumes = {volume["name"]: volume for volume in manifest["spec"]["template"]["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container(manifest)["volumeMounts"]}
    assert volumes["feedback"] == {"name": "feedback", "configMap": {"name": "lm-feedback-samples"}}
    assert mounts[FEEDBACK_DIR]["name"] == "feedback" and mounts[FEEDBACK_DIR]["readOnly"]
    assert "feedback" not in {volume["name"] for volume in _job()["spec"]["template"]["spec"]["volumes"]}


def test_job_names_are_dns_labels_fixed_by_the_config_and_the_tick():
    long_name = "a" * 70
    names = {job_name(long_name, "abc", "0"), job_name(long_name, "abc", "0")}
    assert len(names) == 1 and len(names.pop()) <= 63
    assert job_name("chats", "abc", "0") != job_name("chats", "abd", "0") != job_name("chats", "abc", "202601010000")


# --- when a run starts -------------------------------------------------------------------------

def _run(job, state, config_map="chats-pipeline-abc", start="2026-01-01T00:00:00Z", result=None, exit_code=None):
    return RunView(job=job, state=state, config_map=config_map, start_time=start, result=result, exit_code=exit_code)


def _inputs(runs=(), previous=None, now="2026-01-01T01:00:00Z", blocked=None, requested=None):
    return DatasetInputs(namespace="ml", name="chats", uid="u-1", now=now, created="2026-01-01T00:00:00Z",
                         image="data:1", runs=tuple(runs), previous=previous or {}, blocked=blocked,
                         refresh_requested=requested)


@pytest.mark.parametrize("runs, schedule, now, keep, starts", [
    pytest.param([], None, "2026-01-01T01:00:00Z", None, "Started the first pipeline run", id="no run yet: the first starts"),
    pytest.param([_run(job_name("chats", "abc", "0"), RunState.SUCCEEDED)], None, "2026-01-01T01:00:00Z", None, "",
                 id="the run for this spec exists: it is kept, not repeated"),
    pytest.param([_run("chats-old", RunState.SUCCEEDED, config_map="chats-pipeline-old")], None, "2026-01-01T01:00:00Z",
                 None, "Started a pipeline run for the changed spec", id="a changed spec starts a new run"),
    pytest.param([_run(job_name("chats", "abc", "0"), RunState.RUNNING)], "0 * * * *", "2026-01-01T02:00:00Z",
                 job_name("chats", "abc", "0"), None, id="the schedule fires while a run goes: it finishes first"),
    pytest.param([_run(job_name("chats", "abc", "0"), RunState.SUCCEEDED)], "0 * * * *", "2026-01-01T02:00:00Z",
                 None, "Started the scheduled refresh of 2026-01-01 02:00 UTC", id="the schedule fires after a run: a refresh"),
])
def test_plan_run(runs, schedule, now, keep, starts):
    dataset = spec(refresh={"schedule": schedule} if schedule else None)
    kept, run = plan_run(dataset, _inputs(runs, now=now), "chats-pipeline-abc", "abc")
    assert kept == keep
    if starts is None:
        assert run is None
    else:
        assert run is not None and run.because.startswith(starts)


@pytest.mark.parametrize("requested, tick", [
    pytest.param("2026-01-01T00:30:05Z", "20260101003005", id="a request is a tick to the second"),
    pytest.param("2025-12-31T23:00:00Z", NO_TICK, id="a request older than the Dataset is none (copied with it)"),
    pytest.param("2026-01-01T00:00:00Z", "20260101000000", id="a request in the Dataset's first second counts"),
    pytest.param("tomorrow", NO_TICK, id="a value that is no RFC 3339 time is ignored"),
    pytest.param(None, NO_TICK, id="no annotation, no request"),
])
def test_request_tick(requested, tick):
    assert request_tick(requested, "2026-01-01T00:00:00Z") == tick


def test_the_later_of_the_schedule_and_a_request_wins():
    assert latest_tick("202601010200", "20260101020001") == "20260101020001"
    assert latest_tick("202601010200", "20260101015959") == "202601010200"
    assert latest_tick(NO_TICK, "20260101015959") == "20260101015959" and latest_tick("202601010200", NO_TICK) == "202601010200"


def test_a_refresh_request_starts_a_run_after_the_current_one_and_the_run_answering_it_says_so():
    done = _run(job_name("chats", "abc", "0"), RunState.SUCCEEDED)
    _, run = plan_run(spec(), _inputs([done], requested="2026-01-01T00:40:00Z"), "chats-pipeline-abc", "abc")
    assert run is not None and run.because == "Started the refresh requested at 2026-01-01T00:40:00Z"
    assert run.tick == "20260101004000"
    going = _run(job_name("chats", "abc", "0"), RunState.RUNNING)
    kept, run = plan_run(spec(), _inputs([going], requested="2026-01-01T00:40:00Z"), "chats-pipeline-abc", "abc")
    assert (kept, run) == (going.job, None)
    answering = RunView(job=job_name("chats", "abc", "20260101004000"), state=RunState.RUNNING,
                        config_map="chats-pipeline-abc", tick="20260101004000")
    outcome = observe(DATASET, spec(), _inputs([answering], requested="2026-01-01T00:40:00Z"),
                      [{"kind": "Job", "metadata": {"name": answering.job}}])
    assert outcome.extra_status["refreshRequestedAt"] == "2026-01-01T00:40:00Z"


def test_a_run_builds_on_the_current_version_and_nothing_runs_while_the_spec_is_unsupported():
    _, run = plan_run(spec(), _inputs(previous={"version": "v7"}), "chats-pipeline-abc", "abc")
    assert run.parent_version == "v7"
    assert plan_run(spec(), _inputs(blocked=(Reason.UNSUPPORTED_FEATURE, "no")), "c", "abc") == (None, None)
    children = render(DATASET, OWNER, spec(), _inputs(blocked=(Reason.UNSUPPORTED_FEATURE, "no")))
    assert [child["kind"] for child in children] == ["ConfigMap"]


# --- what a run's Job and pod say ---------------------------------------------------------------

def _job_object(conditions=(), start="2026-01-01T00:00:00Z"):
    return {"metadata": {"name": "chats-1", "annotations": {ANNOTATION_RUN_CONFIG: "cm", ANNOTATION_REFRESH_TICK: "0"}},
            "status": {"startTime": start, "conditions": [{"type": t, "status": "True", "lastTransitionTime": "2026-01-01T00:05:00Z"}
                                                          for t in conditions]}}


def _pod(phase, exit_code=None, message=None, finished="2026-01-01T00:05:00Z"):
    pod = {"metadata": {"name": "chats-1-x", "creationTimestamp": "2026-01-01T00:00:01Z"}, "status": {"phase": phase}}
    if exit_code is not None:
        pod["status"]["containerStatuses"] = [{"name": CONTAINER_NAME, "state": {"terminated": {
            "exitCode": exit_code, "message": message, "finishedAt": finished}}}]
    return pod


RESULT = RunResult(version="v8", path="/var/lib/strata/dataset/v8", created=True, promoted=True,
                   records={"in": 10, "out": 8, "duplicates": 2, "nearDuplicates": 0, "missing": 0, "quarantined": 0,
                            "synthetic": 0})
GATE_FAILED = RunResult(version="v9", path="/p", created=True, promoted=False, records={"in": 10, "out": 5},
                        gates=(GateVerdict("maxDuplicateRatio", False, 0.5, 0.3, "5 of 10 records read were duplicates"),))


@pytest.mark.parametrize("job, pods, state, version, exit_code", [
    pytest.param(_job_object(), [_pod("Pending")], RunState.PENDING, None, None, id="a pod not running yet: pending"),
    pytest.param(_job_object(), [_pod("Running")], RunState.RUNNING, None, None, id="a running pod: running"),
    pytest.param(_job_object(["Complete"]), [_pod("Succeeded", 0, RESULT.to_message())], RunState.SUCCEEDED, "v8", 0,
                 id="a complete Job: its pod's result"),
    pytest.param(_job_object(["Failed"]), [_pod("Failed", 2, RunResult(error="bad").to_message())], RunState.FAILED, None, 2,
                 id="a failed Job: its pod's exit code and error"),
    pytest.param(_job_object(["Complete"]), [], RunState.SUCCEEDED, None, None, id="a complete Job whose pod is gone"),
    pytest.param(_job_object(["Complete"]), [_pod("Succeeded", 0, RESULT.to_message()),
                                             _pod("Succeeded", 0, '{"shard":1,"shards":2,"parts":3,"records":9}', finished="2026-01-01T00:06:00Z")],
                 RunState.SUCCEEDED, "v8", 0, id="a parallel run: shard 0's result, not another shard's summary"),
    pytest.param(_job_object(["Failed"]), [_pod("Failed", 1, RunResult(error="sources: s3://b cannot be read").to_message()),
                                           _pod("Failed", 143, "Terminated", finished="2026-01-01T00:06:00Z")],
                 RunState.FAILED, None, 1, id="a parallel run: the failed shard's error, not shard 0 stopped after it"),
])
def test_observe_run(job, pods, state, version, exit_code):
    run = observe_run(job, pods, ANNOTATIONS)
    assert (run.state, run.result.version if run.result else None, run.exit_code) == (state, version, exit_code)
    assert run.config_map == "cm" and run.tick == "0"


# --- the status that follows --------------------------------------------------------------------

def _observe(run, previous=None, dataset=None):
    dataset = dataset or spec()
    children = [{"kind": "ConfigMap", "metadata": {"name": "chats-pipeline-abc"}},
                {"kind": "Job", "metadata": {"name": run.job}}] if run else []
    return observe(DATASET, dataset, _inputs([run] if run else [], previous=previous), children)


PREVIOUS = {"version": "v7", "path": "support-chats/v7", "records": {"in": 9, "out": 9},
            "history": [{"version": "v7", "path": "support-chats/v7", "created": "2025-12-31T00:00:00Z", "records": 9,
                         "promoted": True}]}


@pytest.mark.parametrize("run, previous, phase, ready, reason, version", [
    pytest.param(_run("j", RunState.PENDING), None, Phase.PENDING, "False", Reason.PIPELINE_PENDING, None,
                 id="a pending run with nothing published: pending, not ready"),
    pytest.param(_run("j", RunState.RUNNING), PREVIOUS, Phase.RUNNING, "True", Reason.INGESTING, "v7",
                 id="a run going while a version serves: running and ready"),
    pytest.param(_run("j", RunState.SUCCEEDED, result=RESULT), PREVIOUS, Phase.SUCCEEDED, "True", Reason.VERSION_PUBLISHED,
                 "v8", id="a promoted version becomes current"),
    pytest.param(_run("j", RunState.SUCCEEDED, result=GATE_FAILED), PREVIOUS, Phase.FAILED, "True",
                 Reason.QUALITY_GATE_FAILED, "v7", id="a version that breaks a gate leaves the previous one current"),
    pytest.param(_run("j", RunState.SUCCEEDED, result=GATE_FAILED), None, Phase.FAILED, "False",
                 Reason.QUALITY_GATE_FAILED, None, id="a version that breaks a gate with none before: not ready"),
    pytest.param(_run("j", RunState.FAILED, result=RunResult(error="sources: s3://x cannot be listed"), exit_code=1), PREVIOUS,
                 Phase.FAILED, "True", Reason.SOURCE_UNREADABLE, "v7", id="an unreadable source fails the run, not the data"),
    pytest.param(_run("j", RunState.FAILED, result=RunResult(error="bad configuration"), exit_code=2), None,
                 Phase.FAILED, "False", Reason.INVALID_CONFIGURATION, None, id="a refused config is named"),
    pytest.param(_run("j", RunState.SUCCEEDED), None, Phase.FAILED, "False", Reason.RESULT_MISSING, None,
                 id="a pod that ends without its result is a failure that says so"),
])
def test_observe(run, previous, phase, ready, reason, version):
    outcome = _observe(run, copy.deepcopy(previous))
    assert (outcome.phase, outcome.ready[0], outcome.ready[1]) == (phase, ready, reason)
    assert outcome.extra_status.get("version") == version
    assert outcome.extra_status["job"] == "j"
    if phase == Phase.FAILED:
        assert outcome.degraded[0] == ConditionStatus.TRUE
    DATASET.status_model.model_validate({**outcome.extra_status, "phase": outcome.phase})


def test_a_published_version_carries_its_path_counts_and_gates_into_status():
    status = _observe(_run("j", RunState.SUCCEEDED, result=RESULT, start="2026-01-01T00:00:00Z"), copy.deepcopy(PREVIOUS)).extra_status
    assert status["path"] == "support-chats/v8"  # on spec.storage.pvc, where a TrainingJob mounts it
    assert status["records"]["out"] == 8 and status["records"]["duplicates"] == 2
    assert [item["version"] for item in status["history"]] == ["v7", "v8"]
    rejected = _observe(_run("j", RunState.SUCCEEDED, result=GATE_FAILED), copy.deepcopy(PREVIOUS)).extra_status
    assert rejected["history"][-1]["promoted"] is False
    assert "maxDuplicateRatio" in rejected["history"][-1]["rejectedBecause"]
    assert rejected["gates"] == [{"name": "maxDuplicateRatio", "passed": False, "value": 0.5, "limit": 0.3,
                                  "message": "5 of 10 records read were duplicates"}]


def test_history_records_a_version_once_and_keeps_the_latest_ones():
    entry = {"version": "v1", "path": "p/v1", "created": "t1", "records": 1, "promoted": True}
    once = merge_history([], entry)
    assert merge_history(once, entry) == once
    history = []
    for i in range(HISTORY_LIMIT + 3):
        history = merge_history(history, {**entry, "version": f"v{i}"})
    assert len(history) == HISTORY_LIMIT and history[-1]["version"] == f"v{HISTORY_LIMIT + 2}"
    again = merge_history(history, {**entry, "version": history[0]["version"], "created": "t2"})
    assert again[-1]["version"] == history[0]["version"] and len(again) == HISTORY_LIMIT


def test_an_unsupported_spec_is_invalid_and_keeps_serving_its_current_version():
    outcome = observe(DATASET, spec(), _inputs(previous=copy.deepcopy(PREVIOUS),
                                               blocked=(Reason.UNSUPPORTED_FEATURE, "spec.modality: no")), [])
    assert outcome.phase == Phase.INVALID and outcome.ready[1] == Reason.UNSUPPORTED_FEATURE
    assert outcome.extra_status["version"] == "v7"
    json.dumps(outcome.extra_status)
