"""The dev cluster's real node: pods run for real (kubelet, containerd, CNI, kube-proxy,
CoreDNS, metrics-server, volumes), and `stop` leaves the host as it found it.

One cluster with the real node serves this module; it starts after a snapshot of the host
and the last test compares the host after `stop` against that snapshot. Nothing is skipped
when the real node cannot start: every test fails with the reason.
"""

from __future__ import annotations

import json
import uuid

import pytest

from strata.devcluster import DevCluster, processes_using
from strata.devcluster import host
from strata.devcluster.network import REAL_NODE_NAME
from strata.devcluster.node import NODE_LABEL
from tests_support import running_cluster, temporary_namespace, wait_for

# The smallest image with Python (and the project) in it.
PYTHON_IMAGE = "operator"
pytestmark = pytest.mark.realnode


@pytest.fixture(scope="module")
def host_before() -> dict:
    return host.snapshot()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory: pytest.TempPathFactory, host_before: dict):
    cluster = DevCluster(tmp_path_factory.mktemp("realnode"), real_node=True,
                         images=("pause", PYTHON_IMAGE), startup_timeout=180)
    yield from running_cluster(cluster, "the real node")


@pytest.fixture
def namespace(real_cluster: DevCluster):
    yield from temporary_namespace(real_cluster, "rn")


def _apply(cluster: DevCluster, namespace: str, *manifests: dict) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def _get(cluster: DevCluster, namespace: str, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", "-n", namespace, *args, "-o", "json").stdout)


def _python_pod(cluster: DevCluster, name: str, script: str, *, labels: dict | None = None,
                restart: str = "Never", volumes: list | None = None, mounts: list | None = None,
                resources: dict | None = None, **spec) -> dict:
    container = {
        "name": "main",
        "image": cluster.image_refs[PYTHON_IMAGE],
        "imagePullPolicy": "Never",
        "command": ["python", "-u", "-c", script],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if mounts:
        container["volumeMounts"] = mounts
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [container], "restartPolicy": restart,
                 "nodeSelector": {NODE_LABEL: "real"}, "volumes": volumes or [], **spec},
    }


def _phase(cluster: DevCluster, namespace: str, name: str) -> str:
    return _get(cluster, namespace, "pod", name).get("status", {}).get("phase", "")


def _wait_phase(cluster: DevCluster, namespace: str, name: str, phases: tuple[str, ...],
                timeout: float = 120) -> str:
    return wait_for(lambda: (p := _phase(cluster, namespace, name)) in phases and p,
                    timeout=timeout, what=f"pod {name} to reach {phases}")


HTTP_SERVER = (
    "import http.server, socket\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = socket.gethostname().encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n"
)


def _fetch_script(url: str) -> str:
    return (
        "import time, urllib.request\n"
        "for attempt in range(60):\n"
        "    try:\n"
        f"        print(urllib.request.urlopen({url!r}, timeout=2).read().decode()); break\n"
        "    except OSError as error:\n"
        "        last = error; time.sleep(1)\n"
        "else:\n"
        "    raise SystemExit(f'unreachable: {last}')\n"
    )


def test_the_real_node_is_ready_beside_the_fake_ones(real_cluster: DevCluster):
    nodes = {n["metadata"]["name"]: n for n in
             json.loads(real_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]}
    node = nodes[REAL_NODE_NAME]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    assert {"kwok-gpu-0", "kwok-cpu-0"} <= set(nodes)


def test_a_pod_runs_python_and_its_logs_and_exec_work(real_cluster: DevCluster, namespace: str):
    _apply(real_cluster, namespace, _python_pod(
        real_cluster, "hello", "import sys, time; print('hello from', sys.version.split()[0]); "
        "time.sleep(600)"))
    _wait_phase(real_cluster, namespace, "hello", ("Running",))
    logs = wait_for(lambda: (out := real_cluster.kubectl(
        "logs", "-n", namespace, "hello", check=False).stdout) and "hello from" in out and out,
        what="the pod's log line")
    assert "hello from 3.11" in logs
    whoami = real_cluster.kubectl("exec", "-n", namespace, "hello", "--", "python", "-c",
                                  "import os; print(os.getuid(), os.getcwd())").stdout.split()
    assert whoami[0] == "1000"


def test_pods_talk_by_pod_ip_cluster_ip_and_headless_dns(real_cluster: DevCluster,
                                                         namespace: str):
    server = _python_pod(real_cluster, "web-0", HTTP_SERVER, labels={"app": "web"},
                         restart="Always", hostname="web-0", subdomain="web-headless")
    server["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    services = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-headless"},
         "spec": {"clusterIP": "None", "selector": {"app": "web"},
                  "ports": [{"port": 8080}]}},
    ]
    _apply(real_cluster, namespace, server, *services)
    wait_for(lambda: _get(real_cluster, namespace, "pod", "web-0")["status"].get(
        "conditions") and any(c["type"] == "Ready" and c["status"] == "True" for c in _get(
            real_cluster, namespace, "pod", "web-0")["status"]["conditions"]),
        timeout=120, what="the server pod to be Ready")
    pod_ip = _get(real_cluster, namespace, "pod", "web-0")["status"]["podIP"]
    cluster_ip = _get(real_cluster, namespace, "service", "web")["spec"]["clusterIP"]
    urls = {
        "by-pod-ip": f"http://{pod_ip}:8080/",
        "by-cluster-ip": f"http://{cluster_ip}/",
        "by-service-name": f"http://web.{namespace}.svc.cluster.local/",
        "by-pod-hostname": f"http://web-0.web-headless.{namespace}.svc.cluster.local:8080/",
    }
    for name, url in urls.items():
        _apply(real_cluster, namespace, _python_pod(real_cluster, name, _fetch_script(url)))
    for name, url in urls.items():
        phase = _wait_phase(real_cluster, namespace, name, ("Succeeded", "Failed"))
        output = real_cluster.kubectl("logs", "-n", namespace, name).stdout
        assert phase == "Succeeded" and output.strip() == "web-0", (name, url, output)


def test_a_file_written_to_a_volume_claim_is_read_by_a_later_pod(real_cluster: DevCluster,
                                                                  namespace: str):
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    volume = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    mount = [{"name": "data", "mountPath": "/data"}]
    token = uuid.uuid4().hex
    _apply(real_cluster, namespace, claim, _python_pod(
        real_cluster, "writer", f"open('/data/checkpoint', 'w').write({token!r})",
        volumes=volume, mounts=mount))
    assert _wait_phase(real_cluster, namespace, "writer", ("Succeeded", "Failed")) == "Succeeded"
    _apply(real_cluster, namespace, _python_pod(
        real_cluster, "reader", "print(open('/data/checkpoint').read())",
        volumes=volume, mounts=mount))
    assert _wait_phase(real_cluster, namespace, "reader", ("Succeeded", "Failed")) == "Succeeded"
    assert real_cluster.kubectl("logs", "-n", namespace, "reader").stdout.strip() == token
    assert _get(real_cluster, namespace, "pvc", "data")["status"]["phase"] == "Bound"


def test_a_failing_container_reports_its_exit_code_and_message(real_cluster: DevCluster,
                                                                namespace: str):
    pod = _python_pod(real_cluster, "fails", "open('/dev/termination-log', 'w').write("
                      "'bad setting: lr'); raise SystemExit(3)")
    pod["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    _apply(real_cluster, namespace, pod)
    assert _wait_phase(real_cluster, namespace, "fails", ("Succeeded", "Failed")) == "Failed"
    state = _get(real_cluster, namespace, "pod", "fails")["status"]["containerStatuses"][0]
    terminated = state["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["message"] == "bad setting: lr"


def test_metrics_server_measures_cpu_and_an_hpa_scales_on_it(real_cluster: DevCluster,
                                                             namespace: str):
    # Burns CPU while /tmp/busy exists, so the test decides when the load ends.
    burner = ("import os, time\n"
              "open('/tmp/busy', 'w').close()\n"
              "while True:\n"
              "    if os.path.exists('/tmp/busy'):\n"
              "        end = time.time() + 0.1\n"
              "        while time.time() < end: pass\n"
              "    else:\n"
              "        time.sleep(0.5)\n")
    template = _python_pod(real_cluster, "burner", burner, labels={"app": "burner"},
                           restart="Always",
                           resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}})
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "burner"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "burner"}},
                 "template": {"metadata": template["metadata"], "spec": template["spec"]}},
    }
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "burner"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "burner"},
            "minReplicas": 1, "maxReplicas": 2,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
    }
    _apply(real_cluster, namespace, deployment, hpa)

    def pod_cpu_millis() -> int:
        result = real_cluster.kubectl("get", "--raw",
                                      f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods",
                                      check=False)
        if result.returncode != 0:
            return 0
        usage = [c["usage"]["cpu"] for item in json.loads(result.stdout)["items"]
                 for c in item["containers"]]
        return max((_millicores(u) for u in usage), default=0)

    assert wait_for(lambda: pod_cpu_millis() >= 200, timeout=120,
                    what="metrics-server to report the burner's CPU")
    wait_for(lambda: _get(real_cluster, namespace, "deployment", "burner")["spec"]["replicas"] == 2,
             timeout=180, what="the HPA to scale the Deployment up to 2")
    running = wait_for(lambda: (pods := [
        p["metadata"]["name"] for p in _get(real_cluster, namespace, "pods", "-l",
                                            "app=burner")["items"]
        if p["status"].get("phase") == "Running"]) and len(pods) == 2 and pods,
        timeout=120, what="both burner pods to run")
    for pod in running:  # the load ends in every pod: each one stops burning
        wait_for(lambda: real_cluster.kubectl(
            "exec", "-n", namespace, pod, "--", "python", "-c",
            "import os; os.path.exists('/tmp/busy') and os.remove('/tmp/busy')",
            check=False).returncode == 0, what=f"the load to stop in {pod}")
    wait_for(lambda: _get(real_cluster, namespace, "deployment", "burner")["spec"]["replicas"] == 1,
             timeout=180, what="the HPA to scale back down to 1 once the load stopped")


def _millicores(quantity: str) -> int:
    if quantity.endswith("n"):
        return int(quantity[:-1]) // 1_000_000
    if quantity.endswith("u"):
        return int(quantity[:-1]) // 1_000
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(float(quantity) * 1000)


def test_stop_leaves_nothing_on_the_host(real_cluster: DevCluster, host_before: dict):
    """Runs last in this module: stops the cluster and compares the host with the snapshot."""
    state_dir = real_cluster.state_dir
    real_cluster.stop()
    assert processes_using(state_dir) == {}
    after = host.snapshot()
    for key in host_before:
        assert after[key] == host_before[key], key
