"""The monitoring add-on without a cluster: how it is built, that the adapter runs the chart's
rules, that Prometheus's scrape config selects exactly a ModelDeployment pod's metrics ports
(checked by promtool too), and what it registers."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from strata.api import MODEL_DEPLOYMENT
from strata.devcluster import binaries, monitoring
from strata.devcluster.binaries import (
    COMPONENTS,
    PROMETHEUS,
    PROMETHEUS_ADAPTER,
    PROMETHEUS_ADAPTER_VERSION,
    PROMETHEUS_SERVER,
)
from strata.api.deployment import ModelDeploymentSpec
from strata.render.serving import (
    QUEUE_COMPUTE_METRIC,
    Images,
    ServedModel,
    plan_rollout,
    render_model_deployment,
)

REPO = Path(__file__).resolve().parents[2]
CHART_VALUES = REPO / "helm" / "strata" / "prometheus-adapter" / "values.yaml"


def test_both_are_built_on_demand_and_prometheus_in_promtools_module_build():
    # `strata dev build` (CI's install step, every cluster start) builds neither.
    assert PROMETHEUS_SERVER not in COMPONENTS and PROMETHEUS_ADAPTER not in COMPONENTS
    assert "prometheus" not in binaries.BINARY_NAMES and "prometheus-adapter" not in binaries.BINARY_NAMES
    # Same module, cache directory and lock as promtool: one `go build` when both are missing.
    assert PROMETHEUS_SERVER.module_dir == PROMETHEUS.module_dir
    assert PROMETHEUS_SERVER.cache_dir() == PROMETHEUS.cache_dir()
    assert PROMETHEUS_SERVER.packages == {**PROMETHEUS.packages,
                                          "prometheus": "github.com/prometheus/prometheus/cmd/prometheus"}
    tools = (PROMETHEUS.module_dir / "tools.go").read_text()
    assert '"github.com/prometheus/prometheus/cmd/prometheus"' in tools
    go_mod = (PROMETHEUS_ADAPTER.module_dir / "go.mod").read_text()
    assert f"sigs.k8s.io/prometheus-adapter {PROMETHEUS_ADAPTER_VERSION}" in go_mod
    assert (PROMETHEUS_ADAPTER.module_dir / "go.sum").is_file()
    assert PROMETHEUS_ADAPTER.packages == {"prometheus-adapter": "sigs.k8s.io/prometheus-adapter/cmd/adapter"}


def test_the_adapter_runs_the_charts_rules():
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert monitoring.CHART_ADAPTER_VALUES == CHART_VALUES
    assert monitoring.adapter_rules() == {"rules": chart["rules"]["custom"]}
    served = [rule["name"]["as"] for rule in monitoring.adapter_rules()["rules"]]
    assert QUEUE_COMPUTE_METRIC in served


def test_the_written_adapter_config_is_the_charts_rules(tmp_path):
    layout = monitoring.MonitoringLayout(tmp_path)
    pki = _pki(tmp_path)
    monitoring.write_files(layout, pki, tmp_path / "kubeconfig")
    chart = yaml.safe_load(CHART_VALUES.read_text())
    assert yaml.safe_load(layout.adapter_config.read_text()) == {"rules": chart["rules"]["custom"]}


@pytest.mark.parametrize("values, complaint", [
    ({"rules": {"default": True, "custom": [{"seriesQuery": "x"}]}}, "rules.default must be false"),
    ({"rules": {"default": False, "custom": []}}, "rules.custom is empty"),
], ids=["default rules on are refused", "no custom rule is refused"])
def test_values_the_dev_cluster_cannot_serve_are_refused_naming_the_field(tmp_path, values, complaint):
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(monitoring.MonitoringError, match=complaint):
        monitoring.adapter_rules(path)


def _keep_regex(config: dict) -> str:
    relabel = config["scrape_configs"][0]["relabel_configs"]
    return next(r["regex"] for r in relabel
                if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"])


def test_a_model_deployment_pod_is_scraped_on_both_metrics_ports_and_no_other():
    spec = ModelDeploymentSpec.model_validate({
        "model": {"repository": {"location": {"pvc": {"claimName": "models", "path": "repo"}}, "name": "lm",
                                 "version": 1}},
        "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}, "triton": {"instanceGroups": [{"kind": "CPU"}]},
        "autoscaling": {"maxReplicas": 3}})
    model = ServedModel(name="lm", version=1, claim="models", path="repo")
    rendered = render_model_deployment(MODEL_DEPLOYMENT, {"metadata": {"name": "lm", "namespace": "ml", "uid": "u"}},
                                       spec, plan_rollout(spec.rollout, model, None),
                                       Images(triton="triton:1", sidecar="sidecar:1"), False)
    template = next(c for c in rendered if c["kind"] == "Deployment")["spec"]["template"]
    ports = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    regex = _keep_regex(monitoring.prometheus_config(Path("/k")))
    # Prometheus anchors relabel regexes.
    scraped = {name for name in ports if re.fullmatch(regex, name)}
    assert scraped == {"triton-metrics", "sidecar-metrics"}
    assert ports - scraped == {"http", "grpc"}


def test_series_carry_the_namespace_and_pod_labels_the_adapter_rule_maps_to_resources():
    relabel = monitoring.prometheus_config(Path("/k"))["scrape_configs"][0]["relabel_configs"]
    targets = {r["target_label"]: r["source_labels"] for r in relabel if "target_label" in r}
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["pod"] == ["__meta_kubernetes_pod_name"]
    overrides = {label for rule in monitoring.adapter_rules()["rules"]
                 for label in rule["resources"]["overrides"]}
    assert overrides <= set(targets)


def test_promtool_accepts_the_prometheus_config(tmp_path):
    promtool = binaries.find_binaries()["promtool"]
    if promtool is None:
        pytest.fail("promtool is not built: run `python3 -m strata.cli dev build`", pytrace=False)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(monitoring.prometheus_config(kubeconfig)))
    result = subprocess.run([str(promtool), "check", "config", "--syntax-only", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert monitoring.prometheus_config(kubeconfig)["global"]["scrape_interval"] == monitoring.SCRAPE_INTERVAL


def test_the_custom_metrics_api_is_registered_in_both_versions_with_the_cluster_ca():
    objects = monitoring.apiservice_objects(b"CA PEM", 6443)
    service = objects[0]
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost",
                               "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}
    apiservices = {o["metadata"]["name"]: o["spec"] for o in objects[1:]}
    assert set(apiservices) == {"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}
    for spec in apiservices.values():
        assert base64.b64decode(spec["caBundle"]) == b"CA PEM"
        assert spec["service"] == {"name": service["metadata"]["name"],
                                   "namespace": service["metadata"]["namespace"], "port": 6443}
        assert "insecureSkipTLSVerify" not in spec


def test_the_adapter_reads_prometheus_with_the_admin_kubeconfig_and_relists_often(tmp_path):
    layout = monitoring.MonitoringLayout(tmp_path)
    args = monitoring.adapter_arguments(layout, monitoring.MonitoringPorts(9090, 6443), _pki(tmp_path),
                                        tmp_path / "kubeconfig")
    assert f"--lister-kubeconfig={tmp_path / 'kubeconfig'}" in args
    assert "--prometheus-url=http://127.0.0.1:9090/" in args
    assert "--secure-port=6443" in args
    assert f"--metrics-relist-interval={monitoring.RELIST_INTERVAL}" in args


def _pki(tmp_path: Path):
    from strata.devcluster.pki import ensure_pki
    return ensure_pki(tmp_path / "pki")
