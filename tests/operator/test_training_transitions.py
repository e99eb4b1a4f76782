"""Which TrainingJob spec changes the real API server takes once the job has started.

The transition rules (api/training.py: CHANGEABLE_WHILE_RUNNING) read `oldSelf.status`, so only
the API server can judge them; `strata validate` skips them (api/cel.py). No operator runs in
these namespaces (their prefix is outside its t-* pattern), so the test alone writes the status.
"""

from __future__ import annotations

import copy
import json
import uuid

import pytest
import yaml

from conftest import example_documents
from strata.api import TRAINING_JOB
from strata.api.training import CHANGEABLE_WHILE_RUNNING

pytestmark = pytest.mark.usefixtures("crds_installed")

JOB = "support-lm"

# One valid change of each spec field, as a merge patch of spec; the first test checks that
# every field of the spec has one, so a field added to the spec is checked here too.
CHANGES = {
    "dataset": {"dataset": {"version": "v7"}},
    "model": {"model": {"size": {"layers": 4}}},
    "deepspeed": {"deepspeed": {"microBatchSize": 16}},
    "topology": {"topology": {"nodes": 4}},
    "hyperparameters": {"hyperparameters": {"learningRate": 1.0e-4}},
    "checkpoints": {"checkpoints": {"keep": 5}},
    "validation": {"validation": {"everySteps": 250}},
    "export": {"export": {"quantization": "int8"}},
    "tracking": {"tracking": {"mlflowUri": "http://mlflow.ml:5000"}},  # unset in the example: setting it
    "resources": {"resources": {"memory": "256Gi"}},
    "image": {"image": "registry.example.com/strata/trainer:2"},  # unset in the example: setting it
    "retries": {"retries": 5},
    "suspend": {"suspend": True},
}


def spec_fields() -> list[str]:
    return [field.alias or name for name, field in TRAINING_JOB.spec_model.model_fields.items()]


def test_every_spec_field_has_a_change_here():
    assert set(spec_fields()) <= set(CHANGES), "add a change of the new field to CHANGES"


@pytest.fixture
def unwatched_namespace(crds_installed):
    name = f"immutable-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", name)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


def create_job(cluster, namespace: str) -> None:
    job = copy.deepcopy(next(doc for doc in example_documents() if doc["kind"] == "TrainingJob"))
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))


def patch_spec(cluster, namespace: str, spec_patch: dict):
    return cluster.kubectl("patch", "trainingjob", JOB, "-n", namespace, "--type=merge",
                           "-p", json.dumps({"spec": spec_patch}), check=False)


def mark_started(cluster, namespace: str) -> None:
    cluster.kubectl("patch", "trainingjob", JOB, "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"startTime": "2026-11-30T01:00:00Z"}}))


@pytest.fixture
def started_job(dev_cluster, unwatched_namespace):
    create_job(dev_cluster, unwatched_namespace)
    mark_started(dev_cluster, unwatched_namespace)
    return unwatched_namespace


FIXED = [field for field in spec_fields() if field not in CHANGEABLE_WHILE_RUNNING]
CHANGEABLE = [field for field in spec_fields() if field in CHANGEABLE_WHILE_RUNNING]


def test_before_the_start_every_field_may_change(dev_cluster, unwatched_namespace):
    create_job(dev_cluster, unwatched_namespace)
    for field in spec_fields():
        result = patch_spec(dev_cluster, unwatched_namespace, CHANGES[field])
        assert result.returncode == 0, f"{field}: {result.stderr}"


def test_once_started_each_field_that_defines_the_training_is_refused_with_what_to_do(dev_cluster, started_job):
    for field in FIXED:
        result = patch_spec(dev_cluster, started_job, CHANGES[field])
        assert result.returncode != 0, f"{field} changed on a started job"
        assert f"spec.{field}: Invalid value" in result.stderr, result.stderr
        assert f"{field} cannot change once the TrainingJob has started: create a new TrainingJob" in result.stderr
    spec = json.loads(dev_cluster.kubectl("get", "trainingjob", JOB, "-n", started_job, "-o", "json").stdout)["spec"]
    example = next(doc for doc in example_documents() if doc["kind"] == "TrainingJob")["spec"]
    assert spec["model"] == example["model"] and "tracking" not in spec


def test_once_started_retries_and_suspend_still_change(dev_cluster, started_job):
    assert CHANGEABLE, "retries at least may change on a running job"
    for field in CHANGEABLE:
        result = patch_spec(dev_cluster, started_job, CHANGES[field])
        assert result.returncode == 0, f"{field}: {result.stderr}"


def test_once_started_an_export_cannot_be_removed(dev_cluster, started_job):
    removed = patch_spec(dev_cluster, started_job, {"export": None})
    assert removed.returncode != 0 and "export cannot change once the TrainingJob has started" in removed.stderr


def test_once_started_metadata_and_status_still_change(dev_cluster, started_job):
    dev_cluster.kubectl("label", "trainingjob", JOB, "-n", started_job, "team=support")
    dev_cluster.kubectl("patch", "trainingjob", JOB, "-n", started_job, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": {"progress": {"step": 10, "totalSteps": 20000}}}))

