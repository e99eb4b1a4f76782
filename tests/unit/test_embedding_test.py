"""A FeedbackPolicy's embedding drift test, the pure parts (strata.render.embedding_test): which
input, when a test is due, the Job and its ConfigMap (read back by the Job's own contract), the
result in status and in the drift verdict."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from strata.api.feedback import EmbeddingDrift, FeedbackPolicySpec
from strata.render import embedding_test as embedding
from strata.render import feedback_policy as policy
from strata_workloads.monitor.embedding_contract import (
    CONFIG_FILE,
    DATASET_DIR,
    MAX_CONFIG_BYTES,
    MODEL_DIR,
    EmbeddingJobConfig,
    EmbeddingJobResult,
    Rows,
)
from strata_workloads.monitor.result import BREACHED, INSUFFICIENT_DATA, OK

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
OWNER = {"apiVersion": "strata.dev/v1alpha1", "kind": "FeedbackPolicy",
         "metadata": {"name": "assistant-quality", "namespace": "ml", "uid": "u-1"}}


def settings(**fields) -> EmbeddingDrift:
    return EmbeddingDrift.model_validate(fields)


@pytest.mark.parametrize("case, declared, samples, chosen, why", [
    ("the declared input", {"input": "prompt"}, {"prompt": {"current": ["a"]}, "text": {"current": ["b"]}},
     "prompt", ""),
    ("a declared input without rows names the inputs that have some", {"input": "prompt"},
     {"text": {"current": ["b"]}}, None, "inputs with rows: text"),
    ("text before tokens, as the Dataset's columns", {}, {"tokens": {"current": [[1]]}, "text": {"current": ["b"]}},
     "text", ""),
    ("tokens when there is no text", {}, {"tokens": {"current": [[1]]}}, "tokens", ""),
    ("the only input with rows", {}, {"query": {"current": ["q"]}}, "query", ""),
    ("no rows: the target must keep some", {}, {}, None, "spec.monitoring.inputSamplesPerMinute"),
    ("several others: name one", {}, {"a": {"current": ["x"]}, "b": {"current": ["y"]}}, None,
     "spec.monitors.drift.embedding.input"),
])
def test_choose_input(case, declared, samples, chosen, why):
    name, problem = embedding.choose_input(settings(**declared), samples)
    assert name == chosen
    assert why in problem if why else problem == ""


def test_the_job_reads_its_config_map_and_mounts_the_reference_version_and_a_model_on_a_volume():
    config = EmbeddingJobConfig(input="text", current=Rows(texts=["where is my order"] * 20), against="dataset",
                                dataset_mounted=True, sample_size=50, clusters=4, seed=3, model_mounted=True)
    config_map = embedding.render_test_config_map(OWNER, "assistant-quality-embedding-3", config)
    # The Job's own contract reads what the operator wrote.
    assert EmbeddingJobConfig.model_validate_json(config_map["data"][CONFIG_FILE]) == config
    job = embedding.render_test_job(OWNER, "assistant-quality-embedding-3", "embedder:1",
                                    embedding.DatasetVolume("datasets", "support/3f2a"),
                                    settings(model={"pvc": {"claimName": "models", "path": "minilm"}}))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "embedder:1"
    assert container["args"][:2] == ["-m", "strata_workloads.monitor.embedding"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts[DATASET_DIR]["name"]]["persistentVolumeClaim"] == {"claimName": "datasets", "readOnly": True}
    assert mounts[DATASET_DIR]["subPath"] == "support/3f2a" and mounts[DATASET_DIR]["readOnly"]
    assert volumes[mounts[MODEL_DIR]["name"]]["persistentVolumeClaim"]["claimName"] == "models"
    assert mounts[MODEL_DIR]["subPath"] == "minilm"
    assert volumes["config"]["configMap"]["name"] == "assistant-quality-embedding-3"
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]
    # Without a model on a volume or a Dataset version, nothing else is mounted.
    bare = embedding.render_test_job(OWNER, "x-embedding-1", "embedder:1", None, settings())
    assert [v["name"] for v in bare["spec"]["template"]["spec"]["volumes"]] == ["config", "tmp"]


def test_rows_are_dropped_until_the_config_fits_a_config_map():
    long = "x" * 1000
    config = EmbeddingJobConfig(input="text", current=Rows(texts=[long] * 2000), against="rows",
                                reference=Rows(texts=[long] * 2000))
    fitted = embedding.fit_rows(config)
    assert len(embedding.config_json(fitted).encode()) <= MAX_CONFIG_BYTES
    assert 300 < len(fitted.current.texts) < 2000 and len(fitted.reference.texts) == len(fitted.current.texts)
    small = config.model_copy(update={"current": Rows(texts=["a"]), "reference": Rows(texts=["b"])})
    assert embedding.fit_rows(small) == small


@pytest.mark.parametrize("case, state, every, due", [
    ("never ran", None, 3600, True),
    ("running", {"job": "p-embedding-1", "started": "2026-11-30T11:00:00Z"}, 60, False),
    ("ended, within the period", {"job": "p-embedding-1", "started": "2026-11-30T11:30:00Z",
                                  "finished": "2026-11-30T11:31:00Z"}, 3600, False),
    ("ended, a period ago", {"job": "p-embedding-1", "started": "2026-11-30T11:00:00Z",
                             "finished": "2026-11-30T11:01:00Z"}, 3600, True),
])
def test_is_due(case, state, every, due):
    assert embedding.is_due(state, every, NOW) is due


def test_names_number_the_tests_within_a_dns_label():
    name = embedding.test_name("a" * 60, 12)
    assert len(name) <= 63 and embedding.test_number(name, "a" * 60) == 12
    assert embedding.test_number("assistant-quality-embedding-x", "assistant-quality") is None
    assert embedding.test_number("assistant-quality-config-abc", "assistant-quality") is None


def test_a_test_status_missed_is_adopted_from_its_job():
    """A pass whose status write was lost started a test: the next pass reads it from the Job
    (what it compares with, when it started) instead of starting another."""
    job = embedding.render_test_job(OWNER, "assistant-quality-embedding-5", "embedder:1", None, settings(),
                                    against="Dataset support version 3f2a")
    job["metadata"]["creationTimestamp"] = "2026-11-30T11:58:00Z"
    state = embedding.adopted_state(job)
    assert state == {"job": "assistant-quality-embedding-5", "started": "2026-11-30T11:58:00Z",
                     "against": "Dataset support version 3f2a"}
    assert not embedding.is_due(state, 60, NOW)  # running: never a second one beside it
    # Its creation is announced with what it compares.
    assert "against Dataset support version 3f2a" in job["metadata"]["annotations"]["strata.dev/created-because"]


def test_a_result_or_why_there_is_none_is_recorded():
    state = {"job": "p-embedding-2", "started": "2026-11-30T11:00:00Z", "against": "Dataset d version 3f2a"}
    result = EmbeddingJobResult(input="text", model="all-MiniLM-L6-v2", against="dataset",
                                reference_counts=[5, 5], current_counts=[1, 9])
    recorded = embedding.record_result(state, result, "", "2026-11-30T11:02:00Z")
    assert recorded == {**state, "finished": "2026-11-30T11:02:00Z", "input": "text", "referenceCounts": [5, 5],
                        "currentCounts": [1, 9]}
    failed = embedding.record_result(state, EmbeddingJobResult(input="text", model="", against="dataset",
                                                               error="too few texts"), "", "t")
    assert failed["message"] == "Job p-embedding-2: too few texts" and "currentCounts" not in failed
    crashed = embedding.record_result(state, None, "exit code 137", "t")
    assert crashed["message"] == "Job p-embedding-2 ended without a result: exit code 137"


SPEC = FeedbackPolicySpec.model_validate({
    "target": {"modelDeployment": "assistant"}, "window": "1h",
    "monitors": {"drift": {"reference": "previousWindow", "minSamples": 50, "embedding": {}}}})


def verdict(state, problem=""):
    comparison = embedding.comparison(state, 3600, NOW, problem)
    return policy.evaluate(SPEC, policy.Signals(), NOW, embedding=comparison)[0]


def test_the_latest_counts_join_the_drift_verdict_while_recent():
    state = {"job": "p-embedding-4", "started": "2026-11-30T11:30:00Z", "finished": "2026-11-30T11:31:00Z",
             "input": "text", "against": "the 1h before", "referenceCounts": [50, 50, 50, 50, 0],
             "currentCounts": [50, 50, 50, 50, 0]}
    same = verdict(state)
    assert same.verdict == OK and same.samples == 200 and "text.embedding" in same.details
    shifted = verdict({**state, "currentCounts": [10, 10, 10, 10, 160]})
    assert shifted.verdict == BREACHED and "text.embedding" in shifted.message
    stale = verdict({**state, "started": "2026-11-30T09:00:00Z", "currentCounts": [10, 10, 10, 10, 160]})
    assert stale.verdict == INSUFFICIENT_DATA and "older than two periods" in stale.message


def test_why_no_test_ran_reaches_the_drift_monitors_message():
    result = verdict(None, "the sidecars kept no input rows: set the target ModelDeployment's "
                           "spec.monitoring.inputSamplesPerMinute")
    assert result.verdict == INSUFFICIENT_DATA and "inputSamplesPerMinute" in result.message
    assert embedding.comparison(None, 3600, NOW) is None


# Every field of spec.monitors.drift.embedding, with two values: the test must differ.
def rendered(fields: dict) -> tuple:
    chosen = settings(**fields)
    config = EmbeddingJobConfig(input=chosen.input or "text", current=Rows(texts=["a"] * 10), against="rows",
                                reference=Rows(texts=["b"] * 10), sample_size=chosen.sample_size,
                                clusters=chosen.clusters, model_mounted=chosen.model is not None)
    job = embedding.render_test_job(OWNER, "p-embedding-1", "embedder:1", None, chosen)
    every = policy.duration_seconds(chosen.every or SPEC.window)
    return json.loads(embedding.config_json(config)), job, every, embedding.choose_input(
        chosen, {"text": {"current": ["x"]}, "prompt": {"current": ["y"]}})


@pytest.mark.parametrize("before, after", [
    pytest.param({}, {"input": "prompt"}, id="input"),
    pytest.param({"sampleSize": 500}, {"sampleSize": 200}, id="sampleSize"),
    pytest.param({"clusters": 10}, {"clusters": 20}, id="clusters"),
    pytest.param({}, {"every": "10m"}, id="every"),
    pytest.param({}, {"model": {"pvc": {"claimName": "models"}}}, id="model"),
])
def test_each_embedding_field_changes_the_test(before, after):
    assert rendered(before) != rendered(after)


def test_every_embedding_field_is_in_the_effects_table():
    covered = {"input", "sampleSize", "clusters", "every", "model"}
    assert {field.alias or name for name, field in EmbeddingDrift.model_fields.items()} == covered
