"""Prometheus and prometheus-adapter against the dev cluster (`strata dev up --monitoring`).

Both run as host processes, built on first use from their Go modules (binaries.PROMETHEUS_SERVER,
binaries.PROMETHEUS_ADAPTER), so that an HPA on a `Pods` metric, the one a ModelDeployment
renders (render/serving.py: QUEUE_COMPUTE_METRIC), scales on what Prometheus scraped:

- Prometheus discovers pods with `kubernetes_sd_configs` (role pod, the admin kubeconfig) and
  scrapes every container port named `metrics` or `<something>-metrics` (SCRAPE_PORT_NAMES):
  a ModelDeployment's pods declare `triton-metrics` (8002) and `sidecar-metrics` (9090), so they
  need no annotation. Each series gets the pod's `namespace`, `pod` and `container` labels, the
  labels the adapter rule maps to resources. Only Running pods are scraped, every
  SCRAPE_INTERVAL.
- prometheus-adapter serves the custom metrics API with the rules of the chart's
  helm/strata/prometheus-adapter/values.yaml (`rules.custom`, as the prometheus-adapter chart
  writes them into its config), so the shipped rule is the one that runs here. That rule
  computes the ratio from Triton's raw counters, so Prometheus needs no recording rule for it.
  It is registered as the `v1beta1` and `v1beta2.custom.metrics.k8s.io` APIServices through an
  ExternalName Service (`localhost`), as metrics-server is (node.py), with a serving cert signed
  by the cluster CA.

Pods on the real node are scraped at their pod IPs (the host routes to the node's bridge). kwok
pods run no process; a kwok pod with `hostNetwork: true` gets its node's IP, 127.0.0.1
(`kwok --node-ip`), so a host process exporting metrics on the port the pod declares is scraped
as that pod (tests/devcluster/test_monitoring.py).

    <state>/monitoring/prometheus.yml     Prometheus's config
    <state>/monitoring/prometheus-data/   its TSDB (throwaway)
    <state>/monitoring/adapter.yaml       the adapter's rules (from the chart's values)
    <state>/monitoring/adapter-certs/     the adapter's generated files (--cert-dir)
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .binaries import PROMETHEUS_ADAPTER, PROMETHEUS_SERVER, build_component
from .kubectl import kubectl_path
from .pki import Pki, ensure_serving_cert

PROMETHEUS = "prometheus"
ADAPTER = "prometheus-adapter"
NAMES = (PROMETHEUS, ADAPTER)  # start order; stop runs in reverse
HOST = "127.0.0.1"

# Short enough for tests to see a change within seconds; the adapter rule's rate() window
# (1m) holds about a dozen samples.
SCRAPE_INTERVAL = "5s"
SCRAPE_JOB = "kubernetes-pods"
# Container ports Prometheus scrapes, by name: `metrics` or `<anything>-metrics`.
SCRAPE_PORT_NAMES = r"(.+-)?metrics"
# The adapter re-lists Prometheus's series this often (its default, 10m, would hide a new pod's
# series for minutes) and lists series seen within METRICS_MAX_AGE.
RELIST_INTERVAL = "5s"
METRICS_MAX_AGE = "1m"

# The chart's values for the prometheus-community/prometheus-adapter chart: one definition.
CHART_ADAPTER_VALUES = (Path(__file__).resolve().parents[3] / "helm" / "strata"
                        / "prometheus-adapter" / "values.yaml")

CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
CUSTOM_METRICS_VERSIONS = ("v1beta1", "v1beta2")
SERVICE_NAMESPACE = "kube-system"
SERVICE_NAME = ADAPTER
CERT_STEM = ADAPTER
CERT_DNS_NAMES = ("localhost", f"{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc")


class MonitoringError(RuntimeError):
    """The monitoring add-on could not be set up."""


@dataclass(frozen=True)
class MonitoringPorts:
    prometheus: int
    adapter: int


@dataclass(frozen=True)
class MonitoringLayout:
    state_dir: Path

    @property
    def dir(self) -> Path:
        return self.state_dir / "monitoring"

    @property
    def prometheus_config(self) -> Path:
        return self.dir / "prometheus.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.dir / "prometheus-data"

    @property
    def adapter_config(self) -> Path:
        return self.dir / "adapter.yaml"

    @property
    def adapter_cert_dir(self) -> Path:
        return self.dir / "adapter-certs"


# -- the binaries ------------------------------------------------------------------------------


def ensure_binaries() -> dict[str, Path]:
    """Prometheus and prometheus-adapter, built on first use (minutes) and cached afterwards.
    Prometheus is built with promtool when that is missing too (one `go build`)."""
    build_component(PROMETHEUS_SERVER, list(PROMETHEUS_SERVER.packages))  # no-op once cached
    build_component(PROMETHEUS_ADAPTER, [ADAPTER])
    return {PROMETHEUS: PROMETHEUS_SERVER.cache_dir() / PROMETHEUS,
            ADAPTER: PROMETHEUS_ADAPTER.cache_dir() / ADAPTER}


# -- configuration (pure) ----------------------------------------------------------------------


def adapter_rules(values_path: Path = CHART_ADAPTER_VALUES) -> dict[str, Any]:
    """The adapter's config from the chart's values, as the prometheus-adapter chart renders it:
    `rules.custom` become `rules` (this chart turns `rules.default` off)."""
    try:
        values = yaml.safe_load(values_path.read_text())
    except FileNotFoundError as error:
        raise MonitoringError(f"the chart's prometheus-adapter values are missing: {values_path} "
                              "(run from a checkout of the repository)") from error
    rules = (values or {}).get("rules") or {}
    if rules.get("default", True) is not False:
        raise MonitoringError(f"{values_path}: rules.default must be false; the dev cluster "
                              "serves only the chart's custom rules")
    custom = rules.get("custom") or []
    if not custom:
        raise MonitoringError(f"{values_path}: rules.custom is empty; nothing would be served")
    return {"rules": custom}


def scrape_config(kubeconfig: Path, scrape_interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    """Pods' metrics ports, found through the apiserver, labelled with their namespace and pod."""
    return {
        "job_name": SCRAPE_JOB,
        "scrape_interval": scrape_interval,
        "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": SCRAPE_PORT_NAMES, "action": "keep"},
            # Pending pods have no address yet; finished ones serve nothing.
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        ],
    }


def prometheus_config(kubeconfig: Path, scrape_interval: str = SCRAPE_INTERVAL) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [scrape_config(kubeconfig, scrape_interval)],
    }


def prometheus_arguments(layout: MonitoringLayout, ports: MonitoringPorts) -> list[str]:
    return [
        f"--config.file={layout.prometheus_config}",
        f"--storage.tsdb.path={layout.prometheus_data}",
        "--storage.tsdb.retention.time=2h",
        f"--web.listen-address={HOST}:{ports.prometheus}",
        "--log.level=warn",
    ]


def adapter_arguments(layout: MonitoringLayout, ports: MonitoringPorts, pki: Pki,
                      kubeconfig: Path) -> list[str]:
    cert, key = pki.dir / f"{CERT_STEM}.crt", pki.dir / f"{CERT_STEM}.key"
    return [
        f"--lister-kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={ports.adapter}",
        f"--tls-cert-file={cert}",
        f"--tls-private-key-file={key}",
        f"--cert-dir={layout.adapter_cert_dir}",
        f"--config={layout.adapter_config}",
        f"--prometheus-url=http://{HOST}:{ports.prometheus}/",
        f"--metrics-relist-interval={RELIST_INTERVAL}",
        f"--metrics-max-age={METRICS_MAX_AGE}",
    ]


def write_files(layout: MonitoringLayout, pki: Pki, kubeconfig: Path,
                scrape_interval: str = SCRAPE_INTERVAL) -> None:
    """Both configs and the adapter's serving cert (signed by the cluster CA)."""
    layout.dir.mkdir(parents=True, exist_ok=True)
    layout.prometheus_data.mkdir(exist_ok=True)
    layout.adapter_cert_dir.mkdir(exist_ok=True)
    layout.prometheus_config.write_text(
        yaml.safe_dump(prometheus_config(kubeconfig, scrape_interval), sort_keys=False))
    layout.adapter_config.write_text(yaml.safe_dump(adapter_rules(), sort_keys=False))
    ensure_serving_cert(pki, CERT_STEM, dns_names=CERT_DNS_NAMES)


def apiservice_objects(ca_bundle: bytes, port: int) -> list[dict[str, Any]]:
    """The Service (ExternalName `localhost`) and the APIServices that route the custom metrics
    API to the host process."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": port, "protocol": "TCP"}]},
    }
    return [service, *({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": name},
        "spec": {
            "service": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "port": port},
            "group": CUSTOM_METRICS_GROUP,
            "version": version,
            "caBundle": base64.b64encode(ca_bundle).decode(),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    } for name, version in apiservice_names())]


def apiservice_names() -> list[tuple[str, str]]:
    return [(f"{version}.{CUSTOM_METRICS_GROUP}", version) for version in CUSTOM_METRICS_VERSIONS]


# -- running -----------------------------------------------------------------------------------


def prometheus_is_ready(ports: MonitoringPorts) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ports.prometheus}/-/ready", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def query(port: int, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector (Prometheus's HTTP API)."""
    url = f"http://{HOST}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise MonitoringError(f"Prometheus query {promql!r} failed: {body}")
    return body["data"]["result"]


def targets(port: int) -> list[dict[str, Any]]:
    """Prometheus's active scrape targets (labels, health, last error)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/api/v1/targets?state=active", timeout=10) as response:
        return json.load(response)["data"]["activeTargets"]


def unregister(kubeconfig: Path) -> None:
    """Delete the APIServices and their Service (an unavailable APIService makes discovery of
    every group slow and noisy); best effort: the apiserver may be gone already."""
    names = [f"apiservice/{name}" for name, _ in apiservice_names()]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(kubeconfig), "--request-timeout=5s",
             "delete", *names, "--ignore-not-found"], capture_output=True, timeout=30)
        subprocess.run(
            [str(kubectl_path()), "--kubeconfig", str(kubeconfig), "--request-timeout=5s",
             "delete", "-n", SERVICE_NAMESPACE, f"service/{SERVICE_NAME}", "--ignore-not-found"],
            capture_output=True, timeout=30)


def stop_cleanup(state_dir: Path) -> None:
    """After the adapter is gone: its API registration removed, if it ran from `state_dir`."""
    if not MonitoringLayout(state_dir).dir.is_dir():
        return
    kubeconfig = state_dir / "kubeconfig"
    if kubeconfig.is_file():
        unregister(kubeconfig)
