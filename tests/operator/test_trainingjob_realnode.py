"""TrainingJobs on the dev cluster's real node: real DeepSpeed across two pods (gloo over the pod
network, rendezvous through the headless Service), checkpoints on the job's PVC, live progress,
group restart from a checkpoint, an invalid configuration, suspend and resume, deletion, and
an export that the real tritonserver loads.

The operator runs as its own process (`strata run`) with the locally built trainer image.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REAL_NODE_NAMESPACE_PREFIX
from strata.devcluster import DevCluster
from realnode_support import (apply, claim, events_of, pods, status, text_dataset, trainer_events, training_job,
                              volume_dir, write_text_corpus)
from tests_support import get_json, temporary_namespace, wait_for, wait_until_empty

pytestmark = [pytest.mark.realnode, pytest.mark.deepspeed]


@pytest.fixture(scope="module")
def cluster(real_node_cluster: DevCluster) -> DevCluster:
    return real_node_cluster


@pytest.fixture(scope="module")
def namespace(cluster: DevCluster):
    yield from temporary_namespace(cluster, f"{REAL_NODE_NAMESPACE_PREFIX}tj")


@pytest.fixture(scope="module")
def operator(real_node_operator):
    return real_node_operator


@pytest.fixture(scope="module")
def corpus(cluster: DevCluster, namespace: str, operator) -> dict:
    """A PVC of plain text, a Dataset reading it (applied once the text is there: its pipeline
    starts at once), and a PVC for the model repository."""
    apply(cluster, namespace, claim("corpus"), claim("models"))
    write_text_corpus(volume_dir(cluster, namespace, "corpus") / "text")
    apply(cluster, namespace, text_dataset("chats", "corpus"))
    return {"models": volume_dir(cluster, namespace, "models")}


class TestTwoWorkers:
    """One job through its whole life: progress, a killed worker, completion, export."""

    NAME = "chat-lm"
    # Enough steps that a worker is killed and the group resumes well before the end (about
    # ten steps a second here, a checkpoint every 50), few enough to keep the test short.
    STEPS = 1000

    def test_progress_reaches_status_while_the_group_trains(self, cluster, namespace, corpus):
        apply(cluster, namespace, training_job(self.NAME, max_steps=self.STEPS))
        running = wait_for(lambda: (s := status(cluster, namespace, self.NAME)).get("phase") == "Running"
                           and (s.get("progress") or {}).get("step", 0) > 0 and s,
                           timeout=600, interval=1, what="a running job reporting its step")
        progress = running["progress"]
        assert progress["totalSteps"] == self.STEPS and 0 <= progress["percent"] < 100
        later = wait_for(lambda: (status(cluster, namespace, self.NAME).get("progress") or {}).get("step", 0)
                         > progress["step"] and status(cluster, namespace, self.NAME), timeout=120, interval=1,
                         what="the step to advance in status")
        assert later["progress"].get("eta"), later["progress"]
        assert later["loss"]["train"] > 0
        workers = pods(cluster, namespace, self.NAME)
        assert sorted(p["spec"]["hostname"] for p in workers) == [f"{self.NAME}-1-0", f"{self.NAME}-1-1"]
        assert {p["spec"]["nodeName"] for p in workers} == {"strata-node"}
        # Both ranks joined one group over the pod network.
        rank0 = next(p["metadata"]["name"] for p in workers
                     if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0")
        started = trainer_events(cluster, namespace, rank0, "process")
        assert started and started[0]["worldSize"] == 2

    def test_a_killed_worker_restarts_the_group_from_the_last_checkpoint(self, cluster, namespace, corpus):
        wait_for(lambda: (status(cluster, namespace, self.NAME).get("lastCheckpoint") or {}).get("step"),
                 timeout=300, interval=1, what="a first checkpoint")
        worker = next(p["metadata"]["name"] for p in pods(cluster, namespace, self.NAME)
                      if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "1")
        cluster.kubectl("delete", "pod", "-n", namespace, worker, "--wait=false")
        second = wait_for(lambda: (s := status(cluster, namespace, self.NAME)).get("attempt") == 2
                          and s.get("phase") == "Running" and s.get("resumedFromStep") and s,
                          timeout=600, interval=1, what="attempt 2 training after a resume")
        first = second["attempts"][0]
        assert first["state"] == "Interrupted" and first["reason"] == "Interrupted", first
        assert worker in first["message"] and "143" in first["message"], first
        rank0 = next(p["metadata"]["name"] for p in pods(cluster, namespace, self.NAME)
                     if p["metadata"]["labels"].get("strata.dev/attempt") == "2"
                     and p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0")
        resumed = wait_for(lambda: trainer_events(cluster, namespace, rank0, "resumed"), timeout=300, interval=1,
                           what="the trainer to report where it resumed")
        # Status says what the trainer says (read from its gauges), not only what was expected.
        agreed = wait_for(lambda: (s := status(cluster, namespace, self.NAME)).get("resumedFromStep") == resumed[0]["step"] and s,
                          timeout=60, interval=1, what="status to agree with the trainer on the resume step")
        assert resumed[0]["step"] > 0 and agreed["attempts"][1]["resumedFromStep"] == resumed[0]["step"]
        assert any(line.startswith("Started: Started attempt 2") for line in events_of(cluster, namespace, self.NAME))

    def test_the_job_completes_and_its_export_is_served_by_tritonserver(self, cluster, namespace, corpus, tmp_path):
        done = wait_for(lambda: (s := status(cluster, namespace, self.NAME)).get("phase") in ("Succeeded", "Failed") and s,
                        timeout=900, interval=2, what="the job to finish")
        assert done["phase"] == "Succeeded", done
        assert done["progress"]["step"] == self.STEPS and done["progress"]["percent"] == 100
        exported = done["exportedModel"]
        assert exported["modelName"] == self.NAME and exported["version"] == 1
        assert exported["variants"] == {"torchscript": self.NAME, "python": f"{self.NAME}-python"}
        assert exported["repository"] == {"pvc": {"claimName": "models", "path": "repository"}}
        assert done["metrics"]["loss"] > 0 and done["lastCheckpoint"]["step"] == self.STEPS

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))
        from workload_harness import start_tritonserver

        # The python-backend variant: the only backend nvidia-pytriton's tritonserver has.
        served = f"{self.NAME}-python"
        server, grpc_url = start_tritonserver(corpus["models"] / "repository", [served], tmp_path)
        try:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(grpc_url)
            assert client.is_model_ready(served, "1")
        finally:
            server.close()


def test_an_invalid_configuration_fails_once_with_the_trainers_message(cluster, namespace, corpus):
    # An image family on a corpus of plain text: only the trainer, reading the data, can tell.
    job = training_job("wrong-family", max_steps=50)
    job["spec"]["model"] = {"family": "vae"}
    apply(cluster, namespace, job)
    failed = wait_for(lambda: (s := status(cluster, namespace, "wrong-family")).get("phase") == "Failed" and s,
                      timeout=600, interval=1, what="the job to fail")
    ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidConfiguration"
    assert "the vae family needs an image dataset" in ready["message"], ready
    assert [a["number"] for a in failed["attempts"]] == [1]
    jobs = get_json(cluster, "jobs", "-n", namespace, "-l", "strata.dev/owner-name=wrong-family")["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["wrong-family-1"]


def test_suspend_stops_the_workers_and_resume_continues_from_the_checkpoint(cluster, namespace, corpus):
    apply(cluster, namespace, training_job("pausable", max_steps=100000))
    wait_for(lambda: (status(cluster, namespace, "pausable").get("lastCheckpoint") or {}).get("step"),
             timeout=600, interval=1, what="a first checkpoint")
    cluster.kubectl("patch", "trainingjob", "-n", namespace, "pausable", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    suspended = wait_for(lambda: (s := status(cluster, namespace, "pausable")).get("phase") == "Suspended"
                         and not pods(cluster, namespace, "pausable") and s,
                         timeout=300, interval=1, what="the job suspended with no pod left")
    stopped_at = suspended["lastCheckpoint"]["step"]
    assert suspended["attempts"][-1]["reason"] == "Suspended"
    cluster.kubectl("patch", "trainingjob", "-n", namespace, "pausable", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    resumed = wait_for(lambda: (s := status(cluster, namespace, "pausable")).get("phase") == "Running"
                       and s.get("attempt") == 2 and s.get("resumedFromStep") and s,
                       timeout=600, interval=1, what="the job running again, resumed")
    assert resumed["resumedFromStep"] >= stopped_at > 0

    cluster.kubectl("delete", "trainingjob", "-n", namespace, "pausable", "--wait=true", "--timeout=120s")
    # Its pods, Service, config and the checkpoint PVC it created go with it; the user's PVCs stay.
    def children() -> list[str]:
        listing = get_json(cluster, "pods,jobs,services,pvc,configmaps", "-n", namespace,
                           "-l", "strata.dev/owner-name=pausable")
        return [f'{item["kind"]}/{item["metadata"]["name"]}' for item in listing["items"]]

    # Workers get the pod's grace period to checkpoint on SIGTERM before they are killed.
    wait_until_empty(children, timeout=240, interval=1, what="the job's children to be deleted")
    assert get_json(cluster, "pvc", "-n", namespace, "corpus") and get_json(cluster, "pvc", "-n", namespace, "models")
