"""The chart's values-gated argocd-cm: the same customizations as the generated patch, merged
into an existing argocd-cm that Helm adopts, and left in place when Strata is uninstalled."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from strata.argocd import PATCH_FILE
from test_chart import CHART, KUBE_VERSION, helm, render, run_helm  # noqa: F401 - helm is a fixture

PATCH = yaml.safe_load((CHART / "argocd" / PATCH_FILE).read_text())


def argocd_cm(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "argocd-cm"]


def test_argo_cd_settings_are_left_alone_by_default(helm):
    assert argocd_cm(render(helm)) == []


def test_enabled_the_chart_carries_exactly_the_generated_patch_for_argo_cds_namespace(helm):
    (config_map,) = argocd_cm(render(helm, "argocdCustomizations=true", "argocdNamespace=gitops"))
    assert config_map["metadata"]["namespace"] == "gitops"
    assert config_map["data"] == PATCH["data"]
    # Argo CD only reads ConfigMaps labelled as its own; uninstalling Strata must not delete it.
    assert config_map["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert config_map["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert config_map["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Delete=false"


def test_enabled_chart_lints_strictly(helm):
    run_helm(helm, "lint", "--strict", str(CHART), "--set", "argocdCustomizations=true")


def test_an_invalid_argo_cd_namespace_is_refused_naming_the_value(helm):
    result = run_helm(helm, "template", "strata", str(CHART), "--kube-version", KUBE_VERSION,
                      "--set", "argocdCustomizations=true", "--set", "argocdNamespace=Argo_CD", check=False)
    assert result.returncode != 0
    assert "/argocdNamespace" in result.stderr, result.stderr


@pytest.fixture
def argocd_namespace(dev_cluster):
    """A namespace holding argocd-cm as Argo CD's install manifest creates it, plus one setting."""
    namespace = f"argocd-{uuid.uuid4().hex[:6]}"
    dev_cluster.kubectl("create", "namespace", namespace)
    dev_cluster.kubectl("create", "configmap", "argocd-cm", "-n", namespace, "--from-literal=timeout.reconciliation=180s")
    dev_cluster.kubectl("label", "configmap", "argocd-cm", "-n", namespace,
                        "app.kubernetes.io/name=argocd-cm", "app.kubernetes.io/part-of=argocd")
    yield namespace
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_helm_adopts_argocd_cm_merging_the_customizations_and_keeps_it_on_uninstall(helm, dev_cluster, argocd_namespace):
    release, release_namespace = f"strata-{uuid.uuid4().hex[:6]}", argocd_namespace
    # The README's adoption step: mark argocd-cm as belonging to the Strata release.
    dev_cluster.kubectl("label", "configmap", "argocd-cm", "-n", argocd_namespace, "app.kubernetes.io/managed-by=Helm")
    dev_cluster.kubectl("annotate", "configmap", "argocd-cm", "-n", argocd_namespace,
                        f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={release_namespace}")
    kubeconfig = ["--kubeconfig", str(dev_cluster.kubeconfig)]
    run_helm(helm, "install", release, str(CHART), "--namespace", release_namespace, *kubeconfig,
             "--set", f"watchNamespaces={{{argocd_namespace}}}",
             "--set", "argocdCustomizations=true", "--set", f"argocdNamespace={argocd_namespace}")
    try:
        data = json.loads(dev_cluster.kubectl("get", "configmap", "argocd-cm", "-n", argocd_namespace, "-o", "json").stdout)["data"]
        assert data == {**PATCH["data"], "timeout.reconciliation": "180s"}
    finally:
        run_helm(helm, "uninstall", release, "--namespace", release_namespace, *kubeconfig)
    kept = json.loads(dev_cluster.kubectl("get", "configmap", "argocd-cm", "-n", argocd_namespace, "-o", "json").stdout)
    assert kept["data"] == {**PATCH["data"], "timeout.reconciliation": "180s"}


def test_the_chart_application_renders_with_its_values(helm, tmp_path):
    app = yaml.safe_load((CHART.parents[1] / "examples" / "argocd" / "strata-chart.yaml").read_text())
    assert app["spec"]["source"]["path"] == "helm/strata"
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(app["spec"]["source"]["helm"]["valuesObject"]))
    rendered = run_helm(helm, "template", "strata", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values)).stdout
    (config_map,) = argocd_cm([d for d in yaml.safe_load_all(rendered) if d])
    assert config_map["data"] == PATCH["data"]
