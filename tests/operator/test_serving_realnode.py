"""ModelDeployments on the dev cluster's real node: a TrainingJob trained in pods exports a
model; a ModelDeployment serves it with the real tritonserver (nvidia-pytriton's, python
backend, CPU) behind the monitoring sidecar; a client pod calls it by the Service's name with
tritonclient over gRPC; a model in an S3 repository (SeaweedFS on the node's IP) is downloaded
by the pod's init step and served; version changes roll out, a version that never becomes ready
is rolled back; deletion cascades; the HPA scales out on real CPU load through the sidecar and back in;
with Prometheus and prometheus-adapter on this cluster (`real_node_monitoring`), it scales out
on Triton's queue/compute ratio, computed from Triton's own metrics, under real load and back.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Any

import pytest

from conftest import REAL_NODE_NAMESPACE_PREFIX
from realnode_support import apply, claim, status, text_dataset, training_job, volume_dir, write_text_corpus
from s3_support import ACCESS_KEY, BUCKET, SECRET_KEY, seaweedfs
from serving_models import write_doubling_model
from strata.devcluster import DevCluster, monitoring
from strata.devcluster.network import NODE_IP
from strata.render.serving import QUEUE_COMPUTE_METRIC
from tests_support import get_json, temporary_namespace, wait_for, wait_until_empty

pytestmark = [pytest.mark.realnode, pytest.mark.deepspeed]

JOB = "qa-lm"
API_KEY = "k-7f3a9c"


@pytest.fixture(scope="module")
def cluster(real_node_cluster: DevCluster) -> DevCluster:
    return real_node_cluster


@pytest.fixture(scope="module")
def namespace(cluster: DevCluster):
    yield from temporary_namespace(cluster, f"{REAL_NODE_NAMESPACE_PREFIX}serve")


@pytest.fixture(scope="module")
def exported(cluster: DevCluster, namespace: str, real_node_operator) -> dict:
    """A small TrainingJob trained in a pod to completion; its status and the models volume."""
    apply(cluster, namespace, claim("corpus"), claim("models"),
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-keys"},
           "stringData": {"qa-team": API_KEY}})
    # The text first: the Dataset's pipeline starts as soon as it exists.
    write_text_corpus(volume_dir(cluster, namespace, "corpus") / "text", parts=1, lines_per_part=200)
    apply(cluster, namespace, text_dataset("chats", "corpus"))
    job = training_job(JOB, max_steps=60, checkpoints={"everySteps": 50})
    job["spec"]["topology"]["nodes"] = 1
    apply(cluster, namespace, job)
    done = wait_for(lambda: (s := status(cluster, namespace, JOB)).get("phase") in ("Succeeded", "Failed") and s,
                    timeout=900, interval=2, what="the TrainingJob to finish")
    assert done["phase"] == "Succeeded", done
    return {"status": done, "models": volume_dir(cluster, namespace, "models")}


def deployment(name: str, model: dict, **spec_changes) -> dict:
    spec = {
        "model": model,
        "triton": {"maxBatchSize": 4, "instanceGroups": [{"kind": "CPU", "count": 1}]},
        # The real node has 2 CPUs: small requests leave room for a rollout's surge pod.
        "resources": {"gpus": 0, "cpu": "250m", "memory": "2Gi"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 1},
        "access": {"auth": {"apiKeys": {"secretRef": {"name": "api-keys"}}}},
        "rollout": {"progressDeadlineSeconds": 300},
        **spec_changes,
    }
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def md_status(cluster: DevCluster, namespace: str, name: str) -> dict:
    return (get_json(cluster, "modeldeployment", "-n", namespace, name) or {}).get("status") or {}


def serving(cluster: DevCluster, namespace: str, name: str, version: int, timeout: float = 600) -> dict:
    return wait_for(lambda: (s := md_status(cluster, namespace, name)).get("phase") == "Serving"
                    and (s.get("modelVersion") or {}).get("current") == version and s,
                    timeout=timeout, interval=2, what=f"{name} serving version {version}")


# A client in its own pod: the sidecar image has tritonclient. It asks the model's metadata
# through the sidecar, sends one request shaped from it, and tries once without a key.
CLIENT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException, triton_to_np_dtype

    url, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
    client = grpcclient.InferenceServerClient(url)
    headers = {"authorization": f"Bearer {key}"}
    metadata = client.get_model_metadata(model, headers=headers, as_json=True)
    inputs = []
    for spec in metadata["inputs"]:
        shape = [1] + [8 if int(d) < 0 else int(d) for d in spec["shape"][1:]]
        data = np.ones(shape, dtype=triton_to_np_dtype(spec["datatype"]))
        tensor = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    result = client.infer(model, inputs, headers=headers)
    outputs = {o["name"]: list(result.as_numpy(o["name"]).shape) for o in metadata["outputs"]}
    try:
        client.infer(model, inputs)
        refused = None
    except InferenceServerException as error:
        refused = error.status()
    print(json.dumps({"outputs": outputs, "requestId": result.get_response().id, "withoutKey": refused}))
""")


def run_client(cluster: DevCluster, namespace: str, name: str, target: str, model: str, key: str = API_KEY) -> dict:
    """Run CLIENT in a pod against `target` (host:port) and return what it printed."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                    "containers": [{"name": "client", "image": cluster.image_refs["sidecar"],
                                    "command": ["python3", "-c", CLIENT, target, model, key]}]}}
    apply(cluster, namespace, pod)
    phase = wait_for(lambda: (p := (get_json(cluster, "pod", "-n", namespace, name) or {}).get("status", {}).get("phase"))
                     in ("Succeeded", "Failed") and p, timeout=180, interval=1, what=f"client pod {name} to finish")
    logs = cluster.kubectl("logs", "-n", namespace, name, check=False).stdout
    assert phase == "Succeeded", logs[-3000:]
    return json.loads(logs.strip().splitlines()[-1])


def serving_pod(cluster: DevCluster, namespace: str, name: str) -> str | None:
    """The deployment's one running pod not being deleted, when there is exactly one."""
    pods = [p for p in get_json(cluster, "pods", "-n", namespace, "-l", f"strata.dev/owner-name={name}")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    return pods[0]["metadata"]["name"] if len(pods) == 1 else None


def sidecar_call(cluster: DevCluster, namespace: str, pod: str, url: str, body: dict | None = None) -> dict:
    """GET (or POST `body` to) `url` from inside the pod's sidecar container, with the API key."""
    program = ("import json, sys, urllib.request; "
               "body = sys.argv[2].encode() if len(sys.argv) > 2 else None; "
               "request = urllib.request.Request(sys.argv[1], data=body, "
               f"headers={{'authorization': 'Bearer {API_KEY}', 'content-type': 'application/json'}}); "
               "print(urllib.request.urlopen(request, timeout=10).read().decode())")
    args = ["exec", "-n", namespace, pod, "-c", "sidecar", "--", "python3", "-c", program, url]
    return json.loads(cluster.kubectl(*args, *([json.dumps(body)] if body is not None else [])).stdout)


def test_a_deployment_of_a_training_jobs_export_serves_clients_by_the_service_name(cluster, namespace, exported):
    apply(cluster, namespace, deployment("qa", {"trainingJob": {"name": JOB}, "backend": "python"}))
    up = serving(cluster, namespace, "qa", exported["status"]["exportedModel"]["version"])
    assert up["replicas"] == {"ready": 1, "desired": 1}
    assert up["endpoints"]["grpc"] == f"qa.{namespace}.svc:8001"
    served = exported["status"]["exportedModel"]["variants"]["python"]

    answer = run_client(cluster, namespace, "client-1", f"qa.{namespace}.svc:8001", served)
    assert answer["outputs"] and all(shape[0] == 1 for shape in answer["outputs"].values()), answer
    assert answer["requestId"], "the sidecar answers with a request id"
    assert answer["withoutKey"] == "StatusCode.UNAUTHENTICATED"

    # Triton listens on loopback only: the pod's own Triton ports are closed to other pods.
    pod = get_json(cluster, "pods", "-n", namespace, "-l", "strata.dev/owner-name=qa")["items"][0]
    assert {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])} == {8000, 8001, 8002, 9090}
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, "qa", "--wait=false")  # room on the node


@pytest.fixture(scope="module")
def s3_repository(cluster: DevCluster, tmp_path_factory):
    """SeaweedFS on the real node's IP, where its pods reach the host, holding the doubler."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs"), host=NODE_IP) as server:
        local = tmp_path_factory.mktemp("doubler")
        write_doubling_model(local, "doubler", versions=(1, 2))
        server.upload(local, "models")
        yield server


def test_a_model_in_an_s3_repository_is_downloaded_by_the_pod_and_served(cluster, namespace, real_node_operator,
                                                                           s3_repository):
    location = {"s3": {"uri": f"s3://{BUCKET}/models", "endpoint": s3_repository.endpoint,
                       "secretRef": {"name": "model-keys"}}}
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "model-keys"},
           "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}},
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api-keys"}, "stringData": {"qa-team": API_KEY}},
          deployment("from-s3", {"repository": {"location": location, "name": "doubler", "version": 2}}))
    up = serving(cluster, namespace, "from-s3", 2)
    assert up["revisions"][-1]["source"] == f"s3://{BUCKET}/models", up["revisions"]
    pod = serving_pod(cluster, namespace, "from-s3")
    init_log = cluster.kubectl("logs", "-n", namespace, pod, "-c", "model-repository").stdout
    assert f"Serving doubler version 2 from s3://{BUCKET}/models" in init_log, init_log

    answer = run_client(cluster, namespace, "client-s3", f"from-s3.{namespace}.svc:8001", "doubler")
    assert answer["outputs"] == {"OUTPUT0": [1, 4]}, answer
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, "from-s3", "--wait=false")  # room on the node


def test_a_training_jobs_export_to_s3_is_served_from_s3(cluster, namespace, exported, s3_repository):
    """The loop over S3: rank 0 uploads the export, the ModelDeployment's pod downloads it."""
    s3 = {"uri": f"s3://{BUCKET}/exports", "endpoint": s3_repository.endpoint, "secretRef": {"name": "model-keys"}}
    job = training_job("qa-lm-s3", max_steps=20, export={"tritonRepository": {"s3": s3}})
    job["spec"]["topology"]["nodes"] = 1
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "model-keys"},
           "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}, job)
    done = wait_for(lambda: (s := status(cluster, namespace, "qa-lm-s3")).get("phase") in ("Succeeded", "Failed") and s,
                    timeout=600, interval=2, what="the TrainingJob exporting to S3 to finish")
    assert done["phase"] == "Succeeded", done
    export = done["exportedModel"]
    assert (export["path"], export["version"], export["repository"]["s3"]["uri"]) == (s3["uri"], 1, s3["uri"]), export
    python_variant = export["variants"]["python"]

    apply(cluster, namespace, deployment("from-s3-export", {"trainingJob": {"name": "qa-lm-s3"}, "backend": "python"}))
    up = serving(cluster, namespace, "from-s3-export", 1)
    assert up["revisions"][-1]["source"] == s3["uri"], up["revisions"]
    answer = run_client(cluster, namespace, "client-s3-export", f"from-s3-export.{namespace}.svc:8001", python_variant)
    assert answer["outputs"] and all(shape[0] == 1 for shape in answer["outputs"].values()), answer
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, "from-s3-export", "--wait=false")


def test_a_new_version_rolls_out_one_that_never_becomes_ready_is_rolled_back_and_deletion_cascades(cluster, namespace, exported):
    export = exported["status"]["exportedModel"]
    model_name = export["variants"]["python"]
    repository = exported["models"] / export["repository"]["pvc"]["path"]
    model = {"repository": {"location": {"pvc": {"claimName": "models", "path": export["repository"]["pvc"]["path"]}},
                            "name": model_name, "version": 1}}
    # Feedback, review and audit records on a shared claim (monitoring.storage) outlive the pods a rollout replaces.
    apply(cluster, namespace, claim("records"),
          deployment("versions", model, monitoring={"storage": {"pvc": {"claimName": "records", "path": "versions"}}}))
    serving(cluster, namespace, "versions", 1)
    first_pod = serving_pod(cluster, namespace, "versions")
    posted = sidecar_call(cluster, namespace, first_pod, "http://127.0.0.1:8000/v2/feedback",
                          {"requestId": "r-before-rollout", "rating": "down", "text": "slow"})
    assert posted == {"requestId": "r-before-rollout", "recorded": True}

    # Version 2: the same weights published again, as a retraining would publish new ones.
    shutil.copytree(repository / model_name / "1", repository / model_name / "2")
    cluster.kubectl("patch", "modeldeployment", "-n", namespace, "versions", "--type=merge",
                    "-p", json.dumps({"spec": {"model": {"repository": {"version": 2}}}}))
    rolled = serving(cluster, namespace, "versions", 2)
    assert rolled["modelVersion"]["previous"] == 1
    # The version-2 pod's sidecar serves the replaced pod's feedback from the claim.
    second_pod = wait_for(lambda: (p := serving_pod(cluster, namespace, "versions")) != first_pod and p,
                          timeout=120, interval=1, what="the version-2 pod to be the only one")
    pods = sidecar_call(cluster, namespace, second_pod, "http://127.0.0.1:9090/pods")
    assert pods["shared"] and {first_pod, second_pod} <= {entry["pod"] for entry in pods["pods"]}
    kept = sidecar_call(cluster, namespace, second_pod, f"http://127.0.0.1:9090/feedback?pod={first_pod}")["records"]
    assert [(r["requestId"], r["rating"], r["text"]) for r in kept] == [("r-before-rollout", "down", "slow")]
    assert (volume_dir(cluster, namespace, "records") / "versions" / first_pod / "feedback.jsonl").is_file()

    # Version 3 does not exist: the init step fails, and after the deadline version 2 serves again.
    # The short deadline comes only now: versions 1 and 2 may start slowly on a busy node.
    cluster.kubectl("patch", "modeldeployment", "-n", namespace, "versions", "--type=merge",
                    "-p", json.dumps({"spec": {"model": {"repository": {"version": 3}},
                                               "rollout": {"progressDeadlineSeconds": 60}}}))
    back = wait_for(lambda: (s := md_status(cluster, namespace, "versions")).get("phase") == "RolledBack" and s,
                    timeout=400, interval=2, what="version 3 to be rolled back")
    assert back["modelVersion"]["current"] == 2 and back["modelVersion"]["target"] == 3
    assert back["rollback"]["failedVersion"] == 3 and back["rollback"]["restoredVersion"] == 2
    ready = wait_for(lambda: (s := md_status(cluster, namespace, "versions")).get("replicas", {}).get("ready") == 1 and s,
                     timeout=300, interval=2, what="the restored version to be ready")
    assert ready["phase"] == "RolledBack"
    answer = run_client(cluster, namespace, "client-2", f"versions.{namespace}.svc:8001", model_name)
    assert answer["outputs"]
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=versions")["items"]
    assert any("rolled back" in event["message"].lower() for event in events), [e["message"] for e in events]

    # Deletion cascades to everything the deployment owns, and leaves the user's volume.
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, "versions", "--wait=false")

    def children() -> list[str]:
        listing = get_json(cluster, "pods,deployments,services,horizontalpodautoscalers,poddisruptionbudgets,configmaps",
                           "-n", namespace, "-l", "strata.dev/owner-name=versions")
        left = [f'{item["kind"]}/{item["metadata"]["name"]}' for item in listing["items"]]
        return left + (["ModelDeployment/versions"] if get_json(cluster, "modeldeployment", "-n", namespace,
                                                                "versions") else [])

    wait_until_empty(children, timeout=180, interval=1, what="the deployment's children to be deleted")
    assert get_json(cluster, "pvc", "-n", namespace, "models"), "the user's model repository stays"


def test_the_hpa_scales_a_deployment_out_on_real_cpu_load_through_the_sidecar_and_back_in(cluster, namespace, exported):
    """autoscaling.cpuUtilization on metrics-server's measure of the pods (Triton and the sidecar):
    gRPC calls from four client threads through the sidecar push it over the target; when they
    stop, the HPA scales back in (scaleDownStabilizationSeconds 0)."""
    from strata.render.sidecar import SIDECAR_GRPC_PORT

    export = exported["status"]["exportedModel"]
    apply(cluster, namespace, deployment("busy", {"trainingJob": {"name": JOB}, "backend": "python"},
                                         autoscaling={"minReplicas": 1, "maxReplicas": 2, "cpuUtilization": 50,
                                                      "scaleDownStabilizationSeconds": 0}))
    serving(cluster, namespace, "busy", export["version"])
    hpa = get_json(cluster, "hpa", "-n", namespace, "busy")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]
    pod = get_json(cluster, "pods", "-n", namespace, "-l", "strata.dev/owner-name=busy")["items"][0]
    target = f"{pod['status']['podIP']}:{SIDECAR_GRPC_PORT}"
    threads, stop, calls = load_threads(target, export["variants"]["python"], count=4, width=32)
    try:
        def scaled_out():
            if not any(thread.is_alive() for thread in threads):
                raise AssertionError("every load thread stopped (see the log for its error)")
            return md_status(cluster, namespace, "busy").get("replicas") == {"ready": 2, "desired": 2}

        wait_for(scaled_out, timeout=300, interval=3,
                 what=f"the HPA to scale busy out to 2 ready replicas under load "
                      f"({get_json(cluster, 'hpa', '-n', namespace, 'busy').get('status')})")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert calls[0] > 0
    wait_for(lambda: md_status(cluster, namespace, "busy").get("replicas", {}).get("desired") == 1, timeout=300,
             interval=3, what="the HPA to scale busy back in to 1 once the load stopped")
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, "busy", "--wait=false")


def load_threads(target: str, model: str, count: int, width: int) -> tuple[list, Any, list[int]]:
    """`count` client threads calling `model` at `target` as fast as it answers, each on its own
    channel; returns (threads, stop event, [calls])."""
    import threading

    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import triton_to_np_dtype

    headers, stop, calls = {"authorization": f"Bearer {API_KEY}"}, threading.Event(), [0]

    def load() -> None:
        client = grpcclient.InferenceServerClient(target)
        metadata = client.get_model_metadata(model, headers=headers, as_json=True)
        inputs = []
        for spec in metadata["inputs"]:
            shape = [1] + [width if int(d) < 0 else int(d) for d in spec["shape"][1:]]
            tensor = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
            tensor.set_data_from_numpy(np.ones(shape, dtype=triton_to_np_dtype(spec["datatype"])))
            inputs.append(tensor)
        while not stop.is_set():
            client.infer(model, inputs, headers=headers)
            calls[0] += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, stop, calls


def custom_metric(cluster: DevCluster, namespace: str) -> dict[str, float]:
    """pod -> the queue/compute ratio, from the custom metrics API as the HPA reads it."""
    result = cluster.kubectl("get", "--raw", f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}"
                             f"/pods/*/{QUEUE_COMPUTE_METRIC}", check=False)
    if result.returncode != 0:
        return {}
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3}
    return {item["describedObject"]["name"]: float(item["value"][:-1]) * scale[item["value"][-1]]
            if item["value"][-1] in scale else float(item["value"])
            for item in json.loads(result.stdout)["items"]}


def test_the_hpa_scales_on_tritons_queue_compute_ratio_under_real_load(cluster, namespace, exported,
                                                                       real_node_monitoring):
    """autoscaling.queueComputeRatio: Prometheus scrapes Triton's :8002 at the pod IP,
    prometheus-adapter serves queue time over compute time per pod, and sixteen clients through
    the sidecar queue requests in front of Triton's one model instance: the HPA scales out on
    that ratio, and back in when the clients stop."""
    from strata.render.sidecar import SIDECAR_GRPC_PORT

    name, target = "queued", 0.5
    export = exported["status"]["exportedModel"]
    apply(cluster, namespace, deployment(name, {"trainingJob": {"name": JOB}, "backend": "python"}, autoscaling={
        "minReplicas": 1, "maxReplicas": 2, "queueComputeRatio": target, "scaleDownStabilizationSeconds": 0}))
    serving(cluster, namespace, name, export["version"])
    hpa = get_json(cluster, "hpa", "-n", namespace, name)
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"] == [QUEUE_COMPUTE_METRIC]
    [pod] = get_json(cluster, "pods", "-n", namespace, "-l", f"strata.dev/owner-name={name}")["items"]
    pod_name = pod["metadata"]["name"]

    # Prometheus found the pod through the apiserver and scrapes Triton's port at the pod IP.
    port = cluster.monitoring_ports.prometheus
    wait_for(lambda: [t for t in monitoring.targets(port) if t["labels"].get("pod") == pod_name
                      and t["labels"].get("container") == "triton" and t["health"] == "up"],
             timeout=90, interval=2, what=f"Prometheus to scrape {pod_name}'s triton-metrics port "
                                          f"({[(t['labels'].get('pod'), t['health'], t.get('lastError')) for t in monitoring.targets(port)]})")

    threads, stop, calls = load_threads(f"{pod['status']['podIP']}:{SIDECAR_GRPC_PORT}", export["variants"]["python"],
                                        count=16, width=8)
    try:
        def alive() -> None:
            if not any(thread.is_alive() for thread in threads):
                raise AssertionError("every load thread stopped (see the log for its error)")

        ratio = wait_for(lambda: (alive(), m := custom_metric(cluster, namespace))[1].get(pod_name, 0) > target and m,
                         timeout=300, interval=3, what=f"{QUEUE_COMPUTE_METRIC} of {pod_name} above {target} under load")
        wait_for(lambda: (alive(), md_status(cluster, namespace, name).get("replicas"))[1] == {"ready": 2, "desired": 2},
                 timeout=300, interval=3, what=f"the HPA to scale {name} out to 2 ready replicas (ratio {ratio})")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert calls[0] > 0
    wait_for(lambda: md_status(cluster, namespace, name).get("replicas", {}).get("desired") == 1, timeout=400,
             interval=3, what=f"the HPA to scale {name} back in to 1 once the load stopped")
    events = get_json(cluster, "events", "-n", namespace, "--field-selector",
                      f"involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={name}")["items"]
    messages = [event["message"] for event in events if event["reason"] == "SuccessfulRescale"]
    assert any(QUEUE_COMPUTE_METRIC in message and "above target" in message for message in messages), messages
    cluster.kubectl("delete", "modeldeployment", "-n", namespace, name, "--wait=false")
