"""The Helm chart: lint, values schema, server-side validation, and the operator running
with nothing but the permissions the chart grants it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from strata.conditions import status_is_current
from strata.devcluster import ensure_binaries

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "strata"
EXAMPLES = REPO / "examples"
KUBE_VERSION = "v1.36.3"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_binaries()["helm"]


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def test_chart_lints_strictly(helm):
    run_helm(helm, "lint", "--strict", str(CHART))


@pytest.mark.parametrize(
    "setting, message",
    [
        pytest.param("metricsPort=0", "/metricsPort", id="a zero metrics port is refused"),
        pytest.param("imagePullPolicy=Sometimes", "/imagePullPolicy", id="an unknown pull policy is refused"),
        pytest.param("watchNamespaces[0]=Not_A_Namespace", "/watchNamespaces/0", id="an invalid namespace is refused"),
        pytest.param("metricPort=9090", "additional properties 'metricPort' not allowed", id="a misspelt value is refused"),
        pytest.param("healthPort=8080", "metricsPort and healthPort must differ", id="clashing ports are refused"),
    ],
)
def test_values_schema_refuses_bad_values_naming_them(helm, setting, message):
    result = run_helm(helm, "template", "strata", str(CHART), "--kube-version", KUBE_VERSION,
                      "--set", setting, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_watch_namespaces_become_operator_arguments(helm):
    rendered = run_helm(helm, "template", "strata", str(CHART), "--kube-version", KUBE_VERSION,
                        "--set", "watchNamespaces={ml,research}").stdout
    deployment = next(d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run" and "--namespace=ml" in args and "--namespace=research" in args


def render(helm, *settings: str) -> list[dict]:
    args = [arg for setting in settings for arg in ("--set", setting)]
    rendered = run_helm(helm, "template", "strata", str(CHART), "--kube-version", KUBE_VERSION, *args).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def test_the_read_only_container_gets_a_writable_tmp(helm):
    pod = next(d for d in render(helm) if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume


@pytest.mark.parametrize("settings, triton, sidecar, trainer, data, embedder", [
    pytest.param((), "nvcr.io/nvidia/tritonserver:25.10-py3", "ghcr.io/strata-dev/strata-sidecar:0.1.0",
                 "ghcr.io/strata-dev/strata-trainer:0.1.0", "ghcr.io/strata-dev/strata-data:0.1.0",
                 "ghcr.io/strata-dev/strata-embedder:0.1.0",
                 id="by default NVIDIA's Triton, and the sidecar, trainer, data and embedder images at the operator's version"),
    pytest.param(("tritonImage=registry.local/triton:1", "imageTag=2.0.0"), "registry.local/triton:1",
                 "ghcr.io/strata-dev/strata-sidecar:2.0.0", "ghcr.io/strata-dev/strata-trainer:2.0.0",
                 "ghcr.io/strata-dev/strata-data:2.0.0", "ghcr.io/strata-dev/strata-embedder:2.0.0",
                 id="the sidecar, the trainer, the data and the embedder image follow the operator's tag"),
    pytest.param(("sidecarImage=registry.local/sidecar@sha256:ab", "trainerImage=registry.local/trainer:cu13",
                  "dataImageRepository=registry.local/data", "embedderImage=registry.local/embedder:cpu"),
                 "nvcr.io/nvidia/tritonserver:25.10-py3", "registry.local/sidecar@sha256:ab", "registry.local/trainer:cu13",
                 "registry.local/data:0.1.0", "registry.local/embedder:cpu",
                 id="sidecar, trainer and embedder images are used as given, the data image's repository too"),
])
def test_the_workload_images_reach_the_operator_as_settings(helm, settings, triton, sidecar, trainer, data, embedder):
    from strata.controllers.dataset import DATA_IMAGE_ENV, DEFAULT_DATA_IMAGE
    from strata.controllers.embedding_tests import DEFAULT_EMBEDDER_IMAGE, EMBEDDER_IMAGE_ENV
    from strata.controllers.modeldeployment import SIDECAR_IMAGE_ENV, TRITON_IMAGE_ENV
    from strata.controllers.trainingjob import DEFAULT_TRAINER_IMAGE, TRAINER_IMAGE_ENV
    container = next(d for d in render(helm, *settings) if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {TRITON_IMAGE_ENV: triton, SIDECAR_IMAGE_ENV: sidecar, TRAINER_IMAGE_ENV: trainer, DATA_IMAGE_ENV: data,
                   EMBEDDER_IMAGE_ENV: embedder}
    if not settings:  # the chart's default is the operator's own
        assert trainer == DEFAULT_TRAINER_IMAGE and data == DEFAULT_DATA_IMAGE and embedder == DEFAULT_EMBEDDER_IMAGE


def test_the_prometheus_operators_kinds_are_granted_for_a_model_deployments_monitoring(helm):
    """Checked on the rendered rules: `kubectl auth can-i` cannot answer for kinds whose CRDs
    this cluster lacks."""
    cluster_role = next(d for d in render(helm) if d["kind"] == "ClusterRole")
    rule = next(r for r in cluster_role["rules"] if r["apiGroups"] == ["monitoring.coreos.com"])
    assert set(rule["resources"]) == {"servicemonitors", "prometheusrules"}
    assert {"create", "patch", "delete", "list", "watch"} <= set(rule["verbs"])


def _configmap_rules(doc: dict) -> list[dict]:
    return [rule for rule in doc["rules"] if "configmaps" in rule["resources"]]


def test_watching_all_namespaces_grants_namespaced_rules_cluster_wide(helm):
    docs = render(helm)
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert _configmap_rules(cluster_role)
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_watching_named_namespaces_grants_namespaced_rules_only_there(helm):
    docs = render(helm, "watchNamespaces={ml,research}")
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert not _configmap_rules(cluster_role)
    roles = {d["metadata"]["namespace"]: d for d in docs if d["kind"] == "Role"}
    bindings = {d["metadata"]["namespace"] for d in docs if d["kind"] == "RoleBinding"}
    assert set(roles) == bindings == {"ml", "research"}
    assert all(_configmap_rules(role) for role in roles.values())


def test_rendered_chart_passes_server_side_validation(helm, dev_cluster):
    namespace = f"helm-{uuid.uuid4().hex[:6]}"
    dev_cluster.kubectl("create", "namespace", namespace)
    rendered = run_helm(helm, "template", "strata", str(CHART), "--namespace", namespace,
                        "--kube-version", KUBE_VERSION, "--set", "serviceMonitorEnabled=false").stdout
    result = dev_cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def installed_chart(helm, dev_cluster):
    """The chart installed (CRDs included) into its own namespace, watching one workspace."""
    namespace = f"strata-{uuid.uuid4().hex[:6]}"
    workspace = f"rbac-{uuid.uuid4().hex[:6]}"
    release = "strata"
    dev_cluster.kubectl("create", "namespace", workspace)
    run_helm(helm, "install", release, str(CHART), "--namespace", namespace, "--create-namespace",
             "--set", f"watchNamespaces={{{workspace}}}",
             "--kubeconfig", str(dev_cluster.kubeconfig), "--wait", "--timeout", "120s")
    yield namespace, release, workspace
    run_helm(helm, "uninstall", release, "--namespace", namespace, "--kubeconfig", str(dev_cluster.kubeconfig),
             check=False)


def test_installed_chart_rolls_out_the_operator(dev_cluster, installed_chart):
    namespace, release, _ = installed_chart
    dev_cluster.kubectl("rollout", "status", f"deployment/{release}", "-n", namespace, "--timeout=60s")
    crds = dev_cluster.kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=strata", "-o", "name").stdout.split()
    assert len(crds) == 4


@pytest.mark.parametrize(
    "verb, resource, where, allowed",
    [
        pytest.param("patch", "trainingjobs.strata.dev/status", "workspace", True, id="may write status"),
        pytest.param("watch", "datasets.strata.dev", "workspace", True, id="may watch its kinds"),
        pytest.param("create", "configmaps", "workspace", True, id="may create its children"),
        pytest.param("patch", "deployments.apps", "workspace", True, id="may apply a model's Deployment"),
        pytest.param("create", "horizontalpodautoscalers.autoscaling", "workspace", True, id="may create a model's HPA"),
        pytest.param("delete", "poddisruptionbudgets.policy", "workspace", True, id="may prune a model's PDB"),
        pytest.param("patch", "services", "workspace", True, id="may apply a model's Service"),
        pytest.param("create", "pods", "workspace", False, id="may not create pods itself"),
        pytest.param("create", "events", "workspace", True, id="may post events"),
        pytest.param("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster", True, id="may discover CRDs"),
        pytest.param("create", "configmaps", "elsewhere", False, id="may not touch other namespaces"),
        pytest.param("watch", "datasets.strata.dev", "elsewhere", False, id="may not watch other namespaces"),
        pytest.param("create", "trainingjobs.strata.dev", "workspace", True, id="may create a policy's retraining"),
        pytest.param("delete", "trainingjobs.strata.dev", "workspace", False, id="may not delete users' resources"),
        pytest.param("update", "trainingjobs.strata.dev", "workspace", False, id="may not replace users' specs"),
        pytest.param("get", "secrets", "workspace", False, id="may not read secrets"),
        pytest.param("create", "pods/exec", "workspace", False, id="may not exec into pods"),
        pytest.param("create", "clusterrolebindings.rbac.authorization.k8s.io", "cluster", False, id="may not grant itself more"),
    ],
)
def test_the_operator_has_least_privilege(dev_cluster, installed_chart, verb, resource, where, allowed):
    namespace, release, workspace = installed_chart
    scope = {"workspace": ["-n", workspace], "elsewhere": ["-n", "default"], "cluster": []}[where]
    result = dev_cluster.kubectl("auth", "can-i", verb, resource, *scope,
                                 f"--as=system:serviceaccount:{namespace}:{release}", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), result.stdout + result.stderr


def _service_account_kubeconfig(dev_cluster, namespace: str, account: str, path: Path) -> Path:
    token = dev_cluster.kubectl("create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(dev_cluster.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }))
    return path


def test_the_operator_reconciles_with_only_the_charts_permissions(dev_cluster, installed_chart, tmp_path):
    """`strata run`, as the chart's ServiceAccount, reconciles every kind in its namespace."""
    namespace, release, workspace = installed_chart
    kubeconfig = _service_account_kubeconfig(dev_cluster, namespace, release, tmp_path / "sa.kubeconfig")
    log = tmp_path / "operator.log"
    with open(log, "w") as log_file:
        operator = subprocess.Popen(
            [sys.executable, "-m", "strata.cli", "run", "--kubeconfig", str(kubeconfig),
             "--namespace", workspace, "--metrics-port", "0", "--liveness", "http://127.0.0.1:0/healthz"],
            stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "STRATA_RESYNC_SECONDS": "5"},
        )
    try:
        dev_cluster.kubectl("apply", "-n", workspace, "-f", str(EXAMPLES))
        # A model served from a repository, autoscaled: the Deployment, Service, PDB and HPA too.
        served = {"apiVersion": "strata.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "served"},
                  "spec": {"model": {"repository": {"location": {"pvc": {"claimName": "models"}}, "name": "m", "version": 1}},
                           "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"},
                           "triton": {"instanceGroups": [{"kind": "CPU"}]},
                           "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}}
        dev_cluster.kubectl("apply", "-n", workspace, "-f", "-", input=json.dumps(served))
        # A job whose data is on a PVC: its attempt's Job, Service and checkpoint claim too.
        local = {"apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "local"},
                 "spec": {"modality": "text", "schema": {"textField": "text"},
                          "sources": [{"pvc": {"claimName": "corpus"}, "format": "text"}],
                          "storage": {"pvc": {"claimName": "corpus", "path": "versions"}}}}
        trained = {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "trained"},
                   "spec": {"dataset": {"name": "local"}, "model": {"family": "transformer"},
                            "topology": {"nodes": 1, "gpusPerNode": 0}, "resources": {"cpu": "1", "memory": "1Gi"}}}
        dev_cluster.kubectl("apply", "-n", workspace, "-f", "-",
                            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [local, trained]}))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            items = json.loads(dev_cluster.kubectl("get", "strata", "-n", workspace, "-o", "json").stdout)["items"]
            if items and all(map(status_is_current, items)):
                break
            assert operator.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        else:
            pytest.fail(f"the operator did not report on every resource:\n{log.read_text()[-3000:]}")
        config_maps = dev_cluster.kubectl("get", "configmaps", "-n", workspace, "-l",
                                          "app.kubernetes.io/managed-by=strata-operator", "-o", "name").stdout.split()
        # Two Datasets, two TrainingJobs, the FeedbackPolicy and the served model (the example
        # ModelDeployment waits for its TrainingJob's export).
        assert len(config_maps) == 6
        for kind in ("deployment", "service", "poddisruptionbudget", "horizontalpodautoscaler"):
            dev_cluster.kubectl("get", kind, "served", "-n", workspace)
        for kind, name in (("job", "trained-1"), ("service", "trained"), ("pvc", "trained-checkpoints")):
            dev_cluster.kubectl("get", kind, name, "-n", workspace)
        time.sleep(6)  # let at least one periodic resync run as well
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
    output = log.read_text()
    assert "Forbidden" not in output and " 403" not in output, output[-3000:]
