"""The monitoring add-on for real (`DevCluster(monitoring=True)`, `strata dev up --monitoring`):
Prometheus discovers a pod through the apiserver and scrapes it, prometheus-adapter serves the
chart's rule through the custom metrics API, and a real HPA, the one a ModelDeployment renders,
scales a Deployment up on Triton's queue/compute ratio and back down.

kwok pods run no process. A kwok pod with `hostNetwork: true` gets its node's IP, 127.0.0.1, so
the host process this test runs, exporting counters under Triton's names and format on the port
the pod declares as `triton-metrics`, is scraped as that pod: discovery, relabeling, scraping,
the adapter and the HPA are all the real ones, with no test-only configuration. Each such pod
takes its port on its node, so the module's cluster has 3 CPU nodes (3 replicas at most).

The last test stops the module's cluster and checks that nothing is left behind.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from strata.api import MODEL_DEPLOYMENT
from strata.api.deployment import ModelDeploymentSpec
from strata.devcluster import DevCluster, down, free_port, processes_using, up
from strata.devcluster import monitoring
from strata.devcluster.processes import pid_is_running
from strata.render.serving import QUEUE_COMPUTE_METRIC, render_hpa
from tests_support import get_json, temporary_namespace, wait_for

MAX_REPLICAS = 3  # the module cluster's CPU nodes (conftest.MONITORING_NODES)


class TritonCounters:
    """Triton's two duration counters (microseconds, cumulative) as Triton serves them on its
    metrics port, growing at rates the test sets: the "load"."""

    def __init__(self, model: str = "lm"):
        self.model = model
        self._lock = threading.Lock()
        self._totals = {"queue": 0.0, "compute": 0.0}
        self._rates = {"queue": 0.0, "compute": 0.0}
        self._since = time.monotonic()

    def set_load(self, *, queue_us_per_s: float, compute_us_per_s: float) -> None:
        with self._lock:
            self._advance()
            self._rates = {"queue": queue_us_per_s, "compute": compute_us_per_s}

    def _advance(self) -> None:
        now = time.monotonic()
        for key, rate in self._rates.items():
            self._totals[key] += rate * (now - self._since)
        self._since = now

    def exposition(self) -> str:
        with self._lock:
            self._advance()
            totals = dict(self._totals)
        labels = f'model="{self.model}",version="1"'
        return (
            "# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds\n"
            "# TYPE nv_inference_queue_duration_us counter\n"
            f"nv_inference_queue_duration_us{{{labels}}} {int(totals['queue'])}\n"
            "# HELP nv_inference_compute_infer_duration_us Cumulative compute inference duration in microseconds\n"
            "# TYPE nv_inference_compute_infer_duration_us counter\n"
            f"nv_inference_compute_infer_duration_us{{{labels}}} {int(totals['compute'])}\n"
        )


@pytest.fixture
def exporter():
    """TritonCounters served over HTTP on a free loopback port (`.port`), like Triton's :8002."""
    counters = TritonCounters()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = counters.exposition().encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    counters.port = server.server_address[1]
    yield counters
    server.shutdown()
    server.server_close()


@pytest.fixture
def namespace(monitoring_cluster: DevCluster):
    yield from temporary_namespace(monitoring_cluster, "monitoring")


def triton_like_deployment(name: str, metrics_port: int, replicas: int = 1) -> dict:
    """Pods declaring Triton's metrics port as a ModelDeployment's do (`triton-metrics`), on
    the host network so that kwok gives them 127.0.0.1, where the test's exporter listens."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "containers": [{
                        "name": "triton",
                        "image": "tritonserver:kwok",
                        "ports": [{"name": "triton-metrics", "containerPort": metrics_port}],
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    }],
                },
            },
        },
    }


def apply(cluster: DevCluster, namespace: str, manifest: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def running_pods(cluster: DevCluster, namespace: str, app: str) -> list[str]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"app={app}")["items"]
    return sorted(p["metadata"]["name"] for p in pods
                  if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))


def quantity(value: str) -> float:
    """A Kubernetes quantity as the custom metrics API writes it ("3", "2999m", "1500u")."""
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3}
    return float(value[:-1]) * scale[value[-1]] if value[-1] in scale else float(value)


def custom_metric(cluster: DevCluster, namespace: str, metric: str = QUEUE_COMPUTE_METRIC) -> dict[str, float]:
    """pod name -> value, from the custom metrics API through the apiserver (as the HPA reads it)."""
    result = cluster.kubectl("get", "--raw",
                             f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{metric}",
                             check=False)
    if result.returncode != 0:
        return {}
    return {item["describedObject"]["name"]: quantity(item["value"]) for item in json.loads(result.stdout)["items"]}


def test_prometheus_scrapes_a_discovered_pod_and_the_adapter_serves_the_ratio(
        monitoring_cluster: DevCluster, namespace: str, exporter: TritonCounters):
    exporter.set_load(queue_us_per_s=3000, compute_us_per_s=1000)  # queue/compute = 3
    apply(monitoring_cluster, namespace, triton_like_deployment("lm", exporter.port))
    [pod] = wait_for(lambda: running_pods(monitoring_cluster, namespace, "lm"), what="the pod to run")

    port = monitoring_cluster.monitoring_ports.prometheus
    target = wait_for(lambda: next((t for t in monitoring.targets(port)
                                    if t["labels"].get("namespace") == namespace and t["health"] == "up"), None),
                      timeout=60, what="Prometheus to discover and scrape the pod")
    assert target["labels"]["pod"] == pod
    assert target["labels"]["container"] == "triton"
    assert target["scrapeUrl"] == f"http://127.0.0.1:{exporter.port}/metrics"
    series = monitoring.query(port, f'nv_inference_queue_duration_us{{namespace="{namespace}"}}')
    assert [s["metric"]["pod"] for s in series] == [pod]

    served = wait_for(lambda: custom_metric(monitoring_cluster, namespace), timeout=90,
                      what=f"{QUEUE_COMPUTE_METRIC} through the custom metrics API")
    assert list(served) == [pod]
    assert served[pod] == pytest.approx(3, rel=0.1)

    # The ratio follows the load.
    exporter.set_load(queue_us_per_s=500, compute_us_per_s=1000)
    wait_for(lambda: (v := custom_metric(monitoring_cluster, namespace).get(pod)) is not None and v < 1 and v,
             timeout=120, interval=2, what="the served ratio to fall below 1 as the queue rate dropped")


def test_the_model_deployments_hpa_scales_a_deployment_up_and_back_down_on_the_ratio(
        monitoring_cluster: DevCluster, namespace: str, exporter: TritonCounters):
    spec = ModelDeploymentSpec.model_validate({
        "model": {"repository": {"location": {"pvc": {"claimName": "models", "path": "repo"}},
                                 "name": "lm", "version": 1}},
        "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"},
        "triton": {"instanceGroups": [{"kind": "CPU"}]},
        "autoscaling": {"minReplicas": 1, "maxReplicas": MAX_REPLICAS, "queueComputeRatio": 1.0,
                        "scaleDownStabilizationSeconds": 0},
    })
    # The operator's HPA, unowned here (no ModelDeployment exists for it to belong to).
    hpa = render_hpa(MODEL_DEPLOYMENT, {"metadata": {"name": "lm", "namespace": namespace, "uid": "none"}}, spec)
    hpa["metadata"] = {"name": "lm"}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == QUEUE_COMPUTE_METRIC

    exporter.set_load(queue_us_per_s=0, compute_us_per_s=1000)
    apply(monitoring_cluster, namespace, triton_like_deployment("lm", exporter.port))
    wait_for(lambda: running_pods(monitoring_cluster, namespace, "lm"), what="the first pod to run")
    apply(monitoring_cluster, namespace, hpa)

    def replicas() -> tuple[int, int]:
        deployment = get_json(monitoring_cluster, "deployment", "lm", "-n", namespace)
        return deployment["spec"]["replicas"], len(running_pods(monitoring_cluster, namespace, "lm"))

    # Requests queue three times as long as they compute: more replicas, up to the maximum.
    exporter.set_load(queue_us_per_s=3000, compute_us_per_s=1000)
    wait_for(lambda: replicas() == (MAX_REPLICAS, MAX_REPLICAS) and replicas(), timeout=180, interval=2,
             what=f"the HPA to scale to {MAX_REPLICAS} running replicas")
    served = wait_for(lambda: (m := custom_metric(monitoring_cluster, namespace)) and len(m) == MAX_REPLICAS and m,
                      timeout=90, interval=2, what="every replica's ratio to be served")
    assert all(value > 1 for value in served.values()), served

    # The queue empties: back to the minimum.
    exporter.set_load(queue_us_per_s=0, compute_us_per_s=1000)
    wait_for(lambda: replicas() == (1, 1) and replicas(), timeout=240, interval=2,
             what="the HPA to scale back to 1 replica")
    events = get_json(monitoring_cluster, "events", "-n", namespace,
                      "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler")["items"]
    reasons = [event["message"] for event in events if event["reason"] == "SuccessfulRescale"]
    assert any(QUEUE_COMPUTE_METRIC in message and "above target" in message for message in reasons), reasons
    assert any("below target" in message for message in reasons), reasons


def test_monitoring_stops_and_starts_again_on_a_running_cluster(monitoring_cluster: DevCluster):
    """What a session-wide cluster does for a module that needs monitoring (start_monitoring)."""
    pids = [monitoring_cluster.processes[name].pid for name in monitoring.NAMES]
    monitoring_cluster.stop_monitoring()
    assert not any(map(pid_is_running, pids))
    listed = get_json(monitoring_cluster, "apiservices")["items"]
    assert not [a for a in listed if a["spec"].get("group") == monitoring.CUSTOM_METRICS_GROUP]
    assert monitoring_cluster.kubectl("get", "service", "-n", monitoring.SERVICE_NAMESPACE,
                                      monitoring.SERVICE_NAME, check=False).returncode != 0
    assert monitoring_cluster.kubectl("get", "nodes").returncode == 0  # the cluster runs on

    monitoring_cluster.start_monitoring()
    assert all(monitoring_cluster.processes[name].is_running() for name in monitoring.NAMES)
    discovery = json.loads(monitoring_cluster.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2").stdout)
    assert discovery["groupVersion"] == "custom.metrics.k8s.io/v1beta2"


def test_stopping_the_cluster_leaves_no_process(monitoring_cluster: DevCluster):
    """Last in the module: stops the module's cluster."""
    pids = [monitoring_cluster.processes[name].pid for name in monitoring.NAMES]
    monitoring_cluster.stop()
    assert not any(map(pid_is_running, pids))
    assert processes_using(monitoring_cluster.state_dir) == {}


@pytest.mark.cluster
def test_strata_dev_down_stops_a_detached_clusters_monitoring(tmp_path):
    """`strata dev up --monitoring` / `down`: the detached processes are found and stopped."""
    state_dir = tmp_path / "detached"
    cluster = up(state_dir, nodes=[], monitoring=True)
    try:
        assert set(monitoring.NAMES) <= set(cluster.processes)
        from strata.devcluster import status
        assert set(monitoring.NAMES) <= set(status(state_dir)["running"])
    finally:
        stopped = down(state_dir)
    assert stopped[:2] == ["prometheus-adapter", "prometheus"], stopped
    assert processes_using(state_dir.resolve()) == {}
