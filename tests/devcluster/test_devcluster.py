"""The dev control plane behaves like a real cluster: these run against real processes."""

from __future__ import annotations

import json
import socket

import pytest

from strata.devcluster import DevCluster, FakeNode, processes_using
from tests_support import temporary_namespace
from strata.devcluster.binaries import KUBERNETES_VERSION

WAIT = "--timeout=60s"


def _apply(cluster: DevCluster, *manifests: dict) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(document))


def _get(cluster: DevCluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def namespace(dev_cluster: DevCluster):
    yield from temporary_namespace(dev_cluster, "t")


def _pod_template(name: str, resources: dict | None = None, restart_policy: str = "Always") -> dict:
    container = {"name": "main", "image": "registry.k8s.io/pause:3.10"}
    if resources:
        container["resources"] = resources
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [container], "restartPolicy": restart_policy},
    }


def test_apiserver_is_healthy_and_runs_the_pinned_version(dev_cluster: DevCluster):
    assert dev_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    assert dev_cluster.kubectl("get", "--raw", "/livez").stdout.strip() == "ok"
    version = json.loads(dev_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_rbac_denies_a_service_account_without_bindings(dev_cluster: DevCluster):
    nobody = "--as=system:serviceaccount:default:nobody"
    can_i = dev_cluster.kubectl("auth", "can-i", "list", "pods", nobody, check=False)
    assert (can_i.returncode, can_i.stdout.strip()) == (1, "no")

    request = dev_cluster.kubectl("get", "pods", "-n", "default", nobody, check=False)
    assert request.returncode != 0
    assert "Forbidden" in request.stderr

    admin = dev_cluster.kubectl("auth", "can-i", "list", "pods")
    assert admin.stdout.strip() == "yes"


def test_gpu_nodes_advertise_gpus(dev_cluster: DevCluster):
    gpu_nodes = _get(dev_cluster, "nodes", "-l", "nvidia.com/gpu.present=true")["items"]
    assert len(gpu_nodes) == 2
    for node in gpu_nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    cpu_nodes = _get(dev_cluster, "nodes", "-l", "type=kwok,!nvidia.com/gpu.present")["items"]
    assert len(cpu_nodes) == 2
    assert all("nvidia.com/gpu" not in node["status"]["allocatable"] for node in cpu_nodes)


def test_gpu_pod_is_scheduled_onto_a_gpu_node_and_runs(dev_cluster: DevCluster, namespace: str):
    template = _pod_template("gpu", {"limits": {"nvidia.com/gpu": "1"}})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "gpu", "namespace": namespace},
        "spec": template["spec"],
    }
    _apply(dev_cluster, pod)
    dev_cluster.kubectl("wait", "-n", namespace, "pod/gpu",
                        "--for=jsonpath={.status.phase}=Running", WAIT)
    node_name = _get(dev_cluster, "-n", namespace, "pod/gpu")["spec"]["nodeName"]
    node = _get(dev_cluster, "node", node_name)
    assert node["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"


def test_job_completes(dev_cluster: DevCluster, namespace: str):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": _pod_template("once", restart_policy="Never"),
        },
    }
    _apply(dev_cluster, job)
    dev_cluster.kubectl("wait", "-n", namespace, "job/once", "--for=condition=Complete", WAIT)
    assert _get(dev_cluster, "-n", namespace, "job/once")["status"]["succeeded"] == 1


def test_deployment_becomes_available(dev_cluster: DevCluster, namespace: str):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": _pod_template("web", {"requests": {"cpu": "100m", "memory": "64Mi"}}),
        },
    }
    _apply(dev_cluster, deployment)
    dev_cluster.kubectl("wait", "-n", namespace, "deployment/web",
                        "--for=condition=Available", WAIT)
    assert _get(dev_cluster, "-n", namespace, "deployment/web")["status"]["readyReplicas"] == 2


def test_deleting_an_owner_cascades_to_its_dependents(dev_cluster: DevCluster, namespace: str):
    _apply(dev_cluster, {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "owner", "namespace": namespace}})
    owner_uid = _get(dev_cluster, "-n", namespace, "configmap/owner")["metadata"]["uid"]
    _apply(dev_cluster, {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
            ],
        },
    })
    # Background propagation: the apiserver deletes the owner, the GC the child.
    dev_cluster.kubectl("delete", "-n", namespace, "configmap/owner",
                        "--cascade=background", "--wait=true")
    dev_cluster.kubectl("wait", "-n", namespace, "configmap/child", "--for=delete", WAIT)


@pytest.mark.cluster  # runs its own cluster rather than the shared one
def test_restarts_into_the_same_state_dir_and_stops_cleanly(tmp_path):
    cluster = DevCluster(tmp_path / "state", nodes=[FakeNode("solo", gpus=1)])
    with cluster:
        cluster.kubectl("create", "configmap", "survives-restart", "-n", "default")
    assert processes_using(cluster.state_dir) == {}
    assert not _is_listening(cluster.ports.apiserver)

    with cluster:  # etcd data, certs and nodes are reused
        cluster.kubectl("get", "configmap", "survives-restart", "-n", "default")
        cluster.kubectl("wait", "node/solo", "--for=condition=Ready", WAIT)
    assert processes_using(cluster.state_dir) == {}
    assert not _is_listening(cluster.ports.apiserver)


def _is_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
