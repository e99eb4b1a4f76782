"""Kueue for real: its controller, built from its Go module, runs against the dev cluster
(`DevCluster(kueue=True)`, `strata dev up --kueue`), admits an Indexed Job whose whole pod
group fits the ClusterQueue's quota and keeps one that does not suspended, with no pod.

The module's cluster (the `kueue_cluster` fixture in conftest) has kwok's 2 GPU nodes of 8
GPUs each; the last test stops it and checks that nothing is left behind.
"""

from __future__ import annotations

import json
import uuid

import pytest

from strata.devcluster import DevCluster, processes_using
from strata.devcluster import kueue
from strata.devcluster.processes import pid_is_running
from tests_support import REPO, example_spec, get_json, temporary_namespace, wait_for

GPU = kueue.GPU_RESOURCE
QUOTA_GPUS = 8


@pytest.fixture
def namespace(kueue_cluster: DevCluster):
    yield from temporary_namespace(kueue_cluster, "kueue")


@pytest.fixture
def queue(kueue_cluster: DevCluster, namespace: str) -> str:
    """A LocalQueue in `namespace` feeding a fresh ClusterQueue with a quota of 8 GPUs."""
    name = f"q-{uuid.uuid4().hex[:8]}"
    kueue.create_queues(kueue_cluster, namespace=namespace, gpus=QUOTA_GPUS,
                        cluster_queue=name, local_queue=name)
    yield name
    kueue_cluster.kubectl("delete", "clusterqueue.kueue.x-k8s.io", name, "--wait=false",
                          check=False)


def indexed_job(name: str, queue: str, pods: int, gpus_per_pod: int) -> dict:
    """What a TrainingJob with spec.topology.queueName renders: suspended, labelled, with
    requests Kueue counts against the quota."""
    resources = {"cpu": "1", "memory": "1Gi", GPU: str(gpus_per_pod)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {kueue.QUEUE_LABEL: queue}},
        "spec": {
            "suspend": True,
            "completionMode": "Indexed",
            "completions": pods,
            "parallelism": pods,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "trainer", "image": "trainer:dev",
                                "resources": {"requests": resources, "limits": {GPU: str(gpus_per_pod)}}}],
            }},
        },
    }


def create(cluster: DevCluster, namespace: str, manifest: dict) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def job_pods(cluster: DevCluster, namespace: str, job: str) -> list[dict]:
    return get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]


def condition(obj: dict | None, kind: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", [])
                 if c["type"] == kind), {})


def test_the_job_whose_whole_group_fits_is_admitted_and_the_one_that_does_not_stays_suspended_with_no_pod(
        kueue_cluster: DevCluster, namespace: str, queue: str):
    # The group that can never fit goes first: BestEffortFIFO must not let it block the other.
    create(kueue_cluster, namespace, indexed_job("too-big", queue, pods=2, gpus_per_pod=8))
    create(kueue_cluster, namespace, indexed_job("fits", queue, pods=2, gpus_per_pod=4))

    wait_for(lambda: get_json(kueue_cluster, "job", "fits", "-n", namespace)["spec"]["suspend"] is False,
             what="Kueue to unsuspend the Job of 2 x 4 GPUs")
    admitted = wait_for(lambda: condition(kueue.workload_for_job(kueue_cluster, namespace, "fits"),
                                          "Admitted").get("status") == "True"
                        and kueue.workload_for_job(kueue_cluster, namespace, "fits"),
                        what="the Workload of the Job that fits to be Admitted")
    assert admitted["status"]["admission"]["clusterQueue"] == queue
    pods = wait_for(lambda: (lambda pods: len(pods) == 2 and all(p["spec"].get("nodeName") for p in pods)
                             and pods)(job_pods(kueue_cluster, namespace, "fits")),
                    what="both pods of the admitted Job to be scheduled")
    gpu_nodes = {node.name for node in kueue_cluster.nodes if node.gpus}
    assert {pod["spec"]["nodeName"] for pod in pods} <= gpu_nodes
    for pod in pods:
        assert pod["spec"]["containers"][0]["resources"]["requests"][GPU] == "4"

    pending = wait_for(lambda: (lambda wl: "insufficient quota" in condition(wl, "QuotaReserved").get("message", "")
                                and wl)(kueue.workload_for_job(kueue_cluster, namespace, "too-big")),
                       what="Kueue's Workload to say the 2 x 8 GPU Job does not fit")
    reserved = condition(pending, "QuotaReserved")
    assert reserved["status"] == "False"
    assert f"insufficient quota for {GPU}" in reserved["message"], reserved
    assert condition(pending, "Admitted").get("status") != "True"
    assert get_json(kueue_cluster, "job", "too-big", "-n", namespace)["spec"]["suspend"] is True
    assert job_pods(kueue_cluster, namespace, "too-big") == []


def test_a_job_without_the_queue_label_is_not_kueues(kueue_cluster: DevCluster, namespace: str, queue: str):
    job = indexed_job("unqueued", queue, pods=1, gpus_per_pod=1)
    del job["metadata"]["labels"]
    job["spec"]["suspend"] = False
    create(kueue_cluster, namespace, job)
    wait_for(lambda: job_pods(kueue_cluster, namespace, "unqueued"), what="the unqueued Job's pod")
    assert kueue.workload_for_job(kueue_cluster, namespace, "unqueued") is None


def test_only_the_batch_job_and_kueue_webhooks_are_registered_and_by_url(kueue_cluster: DevCluster):
    for kind, name in (("mutatingwebhookconfiguration", kueue.MUTATING_WEBHOOKS),
                       ("validatingwebhookconfiguration", kueue.VALIDATING_WEBHOOKS)):
        webhooks = get_json(kueue_cluster, kind, name)["webhooks"]
        groups = {group for webhook in webhooks for rule in webhook["rules"] for group in rule["apiGroups"]}
        assert groups == {"batch", "kueue.x-k8s.io"}, (kind, groups)
        for webhook in webhooks:
            assert webhook["clientConfig"]["url"].startswith(
                f"https://127.0.0.1:{kueue_cluster.kueue_ports.webhook}/")
    # A Deployment is not held up by Kueue's deployment webhook (failurePolicy Fail).
    kueue_cluster.kubectl("create", "deployment", "not-kueues", "--image=x", "-n", "default")
    kueue_cluster.kubectl("delete", "deployment", "not-kueues", "-n", "default", "--wait=false")


def test_the_example_queues_are_accepted_and_made_active_by_kueue(kueue_cluster: DevCluster, namespace: str):
    example = REPO / "examples" / "kueue" / "kueue.yaml"
    kueue_cluster.kubectl("apply", "-n", namespace, "-f", str(example))
    try:
        wait_for(lambda: kueue.is_active(get_json(kueue_cluster, "clusterqueue.kueue.x-k8s.io", "strata"))
                 and kueue.is_active(get_json(kueue_cluster, "localqueue.kueue.x-k8s.io", "strata",
                                              "-n", namespace)),
                 what="the example's ClusterQueue and LocalQueue to be Active")
        # Room for the example TrainingJob's group: 2 nodes x 8 GPUs.
        quota = get_json(kueue_cluster, "clusterqueue.kueue.x-k8s.io", "strata")["spec"]["resourceGroups"]
        gpus = next(r for r in quota[0]["flavors"][0]["resources"] if r["name"] == GPU)
        topology = example_spec("TrainingJob")["topology"]
        assert int(gpus["nominalQuota"]) >= topology["nodes"] * topology["gpusPerNode"]
    finally:
        kueue_cluster.kubectl("delete", "clusterqueue.kueue.x-k8s.io", "strata", "--wait=false",
                              check=False)


def test_stopping_the_cluster_leaves_no_process_and_restores_the_host_path(
        kueue_cluster: DevCluster, kueue_host_before: dict):
    """Last in the module: stops the module's cluster."""
    pid = kueue_cluster.processes[kueue.NAME].pid
    assert kueue.host_snapshot() != kueue_host_before, "Kueue's certs should be in place while it runs"
    kueue_cluster.stop()
    assert not pid_is_running(pid)
    assert processes_using(kueue_cluster.state_dir) == {}
    assert kueue.host_snapshot() == kueue_host_before
    assert not kueue.KueueLayout(kueue_cluster.state_dir).host_record.exists()
