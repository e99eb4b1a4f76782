"""The whole loop on the real node, as `strata demo` runs it (strata.demo_loop): a Dataset
version, a TrainingJob trained in pods, a ModelDeployment serving it through the sidecar, real
gRPC calls and feedback, a retraining the FeedbackPolicy starts when approval falls, and the
promotion of the retrained model."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REAL_NODE_NAMESPACE_PREFIX
from strata.demo_loop import run_loop, stage_table
from strata.devcluster import DevCluster
from strata_workloads.monitor.sketch import counts_drift
from tests_support import get_json, temporary_namespace, wait_for

pytestmark = [pytest.mark.realnode, pytest.mark.deepspeed]

LOOP = Path(__file__).resolve().parents[2] / "examples" / "loop" / "loop.yaml"


@pytest.fixture(scope="module")
def namespace(real_node_cluster: DevCluster):
    yield from temporary_namespace(real_node_cluster, f"{REAL_NODE_NAMESPACE_PREFIX}loop")


def test_the_loop_retrains_when_approval_falls_and_promotes_the_retrained_model(real_node_cluster, real_node_operator,
                                                                                 namespace):
    cluster = real_node_cluster

    def kubectl(*args: str, input: str | None = None) -> str:
        return cluster.kubectl(*args, input=input).stdout

    stages = run_loop(kubectl, namespace, LOOP, stage_timeout=900)
    print(stage_table(stages))
    assert [stage.name for stage in stages] == ["data", "training", "serving", "feedback", "retraining", "promotion"]

    policy = get_json(cluster, "feedbackpolicy", "assistant", "-n", namespace)["status"]
    # Why it retrained, as recorded then (the promoted model's pods start with no feedback of
    # their own, so the live approval reading is no longer the one that breached).
    retrained = policy["lastRetrain"]["trainingJob"]
    assert retrained == "assistant-retrain-1"
    assert "approval breached" in policy["lastRetrain"]["reason"] and "below the minimum 0.6" in policy["lastRetrain"]["reason"]
    # The client's random token ids are unlike the corpus: the drift monitor saw it, against
    # the token sketch the Dataset's pipeline pod recorded for the version the model trained on.
    dataset = get_json(cluster, "dataset", "support-notes", "-n", namespace)["status"]
    drift = next(m for m in stages[4].observed["monitors"] if m["name"] == "drift")
    assert drift["verdict"] == "Breached" and drift["samples"] >= 20, drift
    assert f"against Dataset support-notes version {dataset['version'][:12]}" in drift["message"], drift
    # The embedding test: a Job embedded the kept token-id inputs (decoded with the version's
    # tokenizer) and the version's texts with all-MiniLM-L6-v2; random ids are far from the corpus.
    embedding = stages[4].observed["embedding"]
    assert embedding.get("currentCounts"), embedding
    assert sum(embedding["currentCounts"]) >= 20 and sum(embedding["referenceCounts"]) > 0, embedding
    psi, p = counts_drift(embedding["referenceCounts"], embedding["currentCounts"])
    assert psi > 0.2 and p < 0.01, embedding
    job = get_json(cluster, "job", embedding["job"], "-n", namespace)
    assert job["status"].get("succeeded") == 1, job["status"]
    # Its counts joined the drift verdict as one more test.
    def drift_message() -> str:
        monitors = get_json(cluster, "feedbackpolicy", "assistant", "-n", namespace)["status"].get("monitors") or []
        message = next((m.get("message") or "" for m in monitors if m["name"] == "drift"), "")
        return message if "tokens.embedding (PSI" in message else ""

    assert "drifted" in wait_for(drift_message, timeout=120, interval=5, what="the embedding test in the drift verdict")
    actions = [(record["action"], record.get("trainingJob")) for record in policy["history"]]
    assert ("Retrained", retrained) in actions
    job = get_json(cluster, "trainingjob", retrained, "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "FeedbackPolicy"
    # Both trained on the Dataset's published version.
    original = get_json(cluster, "trainingjob", "assistant", "-n", namespace)["status"]
    assert job["status"]["datasetVersion"] == original["datasetVersion"] == dataset["version"]
    deployment = get_json(cluster, "modeldeployment", "assistant", "-n", namespace)
    if policy["promotion"]["state"] == "Promoted":
        assert deployment["spec"]["model"]["trainingJob"]["name"] == retrained
        assert deployment["status"]["revisions"][-1]["modelName"] == f"{retrained}-python"
    else:  # its validation loss was worse: the served model stays
        assert deployment["spec"]["model"]["trainingJob"]["name"] == "assistant"
        assert "worse" in policy["promotion"]["message"].lower()
