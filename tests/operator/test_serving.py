"""ModelDeployment on the real API server with the real operator (kwok nodes: pods are
scheduled and turn Ready, nothing runs): the children it applies, the HPA owning replicas,
the Prometheus Operator's kinds appearing with their CRDs, automatic rollback of a version
that never becomes available, and deletion cascading to every child."""

from __future__ import annotations

import json

import pytest

from conftest import get_json, wait_for
from strata.api import KINDS_BY_NAME
from strata.conditions import status_is_current

CRD = KINDS_BY_NAME["ModelDeployment"].crd_name
CHILDREN = ("deployment", "service", "poddisruptionbudget", "horizontalpodautoscaler")


def model_deployment(name: str, version: int, **spec) -> dict:
    return {
        "apiVersion": "strata.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {
            "model": {"repository": {"location": {"pvc": {"claimName": "models", "path": "repo"}}, "name": "doubler",
                                     "version": version}},
            "resources": {"gpus": 0, "cpu": "100m", "memory": "128Mi"},
            "triton": {"instanceGroups": [{"kind": "CPU"}]},
            **spec,
        },
    }


@pytest.fixture
def models_claim(dev_cluster, namespace):
    """A bound claim (kwok nodes have no provisioner: a pre-made volume)."""
    volume = f"models-{namespace}"
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "hostPath": {"path": "/tmp/unused"}, "claimRef": {"namespace": namespace, "name": "models"}}}))
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}}}))
    yield "models"
    dev_cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)


def apply(cluster, namespace, obj) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def current(cluster, namespace, name, predicate, what, timeout=90):
    def check():
        obj = get_json(cluster, CRD, name, "-n", namespace)
        return obj if obj and obj.get("status") and status_is_current(obj) and predicate(obj) else None
    return wait_for(check, timeout=timeout, what=what)


def conditions(obj) -> dict:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def events(cluster, namespace, name) -> list[dict]:
    return get_json(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]


def test_a_served_model_gets_its_children_and_status_and_the_hpa_owns_replicas(dev_cluster, namespace, operator, models_claim):
    apply(dev_cluster, namespace, model_deployment("lm", 1, autoscaling={"minReplicas": 2, "maxReplicas": 3}))
    # The HPA raises the Deployment's one replica to minReplicas (without any metric yet).
    obj = current(dev_cluster, namespace, "lm", lambda o: o["status"].get("phase") == "Serving"
                  and o["status"]["readyReplicas"] == "2/2", "the model to be served by 2 replicas")
    assert obj["status"]["endpoints"]["grpc"] == f"lm.{namespace}.svc:8001"
    assert obj["status"]["modelVersion"] == {"current": 1, "target": 1}
    assert obj["status"]["replicas"] == {"ready": 2, "desired": 2} and obj["status"]["readyReplicas"] == "2/2"
    assert conditions(obj)["Ready"]["reason"] == "Available"
    # Without the Prometheus Operator's CRDs a condition says so, and nothing failed.
    assert conditions(obj)["PrometheusMonitoring"]["status"] == "False"
    assert conditions(obj)["PrometheusMonitoring"]["reason"] == "PrometheusOperatorNotInstalled"
    # Nor is there a custom metrics API: the HPA scales on CPU (the API's default target), not
    # on a ratio it could never read, and a condition says so.
    assert conditions(obj)["QueueAutoscaling"]["reason"] == "CustomMetricsAPIUnavailable"
    hpa = get_json(dev_cluster, "horizontalpodautoscaler", "lm", "-n", namespace)
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]
    uid = obj["metadata"]["uid"]
    for kind in CHILDREN:
        child = get_json(dev_cluster, kind, "lm", "-n", namespace)
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid, kind
    deployment = get_json(dev_cluster, "deployment", "lm", "-n", namespace, "--show-managed-fields")
    # The HPA scaled to minReplicas; the operator never claimed the field, so it never resets it.
    assert deployment["spec"]["replicas"] == 2
    ours = next(f for f in deployment["metadata"]["managedFields"] if f["manager"] == "strata-operator" and f["operation"] == "Apply")
    assert "f:replicas" not in ours["fieldsV1"]["f:spec"]
    service_ports = sorted(p["port"] for p in get_json(dev_cluster, "service", "lm", "-n", namespace)["spec"]["ports"])
    assert service_ports == [8000, 8001, 8002, 9090]
    assert any(e["message"] == "Created Deployment lm" for e in events(dev_cluster, namespace, "lm"))
    wait_for(lambda: any(e["reason"] == "Available" and "doubler version 1" in e["message"]
                         for e in events(dev_cluster, namespace, "lm")), what="an Available event")

    # Deletion cascades to every child (the garbage collector follows the owner references).
    dev_cluster.kubectl("delete", CRD, "lm", "-n", namespace, "--wait=false")
    wait_for(lambda: get_json(dev_cluster, CRD, "lm", "-n", namespace) is None, timeout=120, what="the ModelDeployment to go")
    for kind in CHILDREN:
        wait_for(lambda kind=kind: get_json(dev_cluster, kind, "lm", "-n", namespace) is None, timeout=60, what=f"the {kind} to go")


def test_a_version_that_never_becomes_available_is_rolled_back(dev_cluster, namespace, operator, models_claim):
    apply(dev_cluster, namespace, model_deployment("lm", 1, replicas=1, rollout={"progressDeadlineSeconds": 30}))
    current(dev_cluster, namespace, "lm", lambda o: o["status"].get("phase") == "Serving", "version 1 to be served")
    # No room for another pod: version 2's first pod can never be created, so it never becomes available.
    dev_cluster.kubectl("create", "quota", "full", "-n", namespace, "--hard=pods=1")
    wait_for(lambda: (get_json(dev_cluster, "resourcequota", "full", "-n", namespace) or {}).get("status", {}).get("used"),
             what="the quota to be counted")
    patch = {"spec": {"model": {"repository": {"version": 2}}}}
    dev_cluster.kubectl("patch", CRD, "lm", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    rolling = current(dev_cluster, namespace, "lm", lambda o: o["status"].get("phase") == "RollingOut", "version 2 to roll out")
    assert rolling["status"]["modelVersion"] == {"current": 1, "target": 2}

    obj = current(dev_cluster, namespace, "lm", lambda o: o["status"].get("phase") == "RolledBack"
                  and conditions(o)["Ready"]["status"] == "True", "version 2 to be rolled back", timeout=150)
    assert obj["status"]["modelVersion"] == {"current": 1, "target": 2}
    assert obj["status"]["rollback"]["failedVersion"] == 2 and obj["status"]["rollback"]["restoredVersion"] == 1
    assert conditions(obj)["Degraded"]["status"] == "True" and conditions(obj)["Degraded"]["reason"] == "RolledBack"
    deployment = get_json(dev_cluster, "deployment", "lm", "-n", namespace)
    assert json.loads(deployment["spec"]["template"]["metadata"]["annotations"]["strata.dev/model"])["version"] == 1
    warning = next(e for e in events(dev_cluster, namespace, "lm") if e["reason"] == "RolledBack")
    assert warning["type"] == "Warning"
    assert "version 2 did not become available within rollout.progressDeadlineSeconds (30s); rolled back to doubler version 1" in warning["message"]

    # Naming the served version again ends the rollback: serving, with version 1 current.
    dev_cluster.kubectl("patch", CRD, "lm", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"spec": {"model": {"repository": {"version": 1}}}}))
    obj = current(dev_cluster, namespace, "lm", lambda o: o["status"].get("phase") == "Serving", "version 1 to serve again")
    assert "rollback" not in obj["status"]


MONITORING_CRDS = [
    {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
     "metadata": {"name": f"{plural}.monitoring.coreos.com"},
     "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
              "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
              "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                  "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    for kind, plural in (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules"))
]


def test_with_the_prometheus_operators_crds_a_service_monitor_and_rules_appear(dev_cluster, namespace, operator, models_claim):
    apply(dev_cluster, namespace, model_deployment("lm", 1))
    current(dev_cluster, namespace, "lm", lambda o: conditions(o)["PrometheusMonitoring"]["status"] == "False", "the first pass")
    # Stand-ins for the Prometheus Operator's CRDs (the same group, versions and kinds; schema left open).
    # They stay for the rest of the session: removing a CRD under the session's kopf watch
    # makes that watch fail (404), which the in-process operator reports as its own error.
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": MONITORING_CRDS}))
    dev_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
    current(dev_cluster, namespace, "lm", lambda o: conditions(o)["PrometheusMonitoring"]["status"] == "True",
            "the ServiceMonitor and rules", timeout=60)
    monitor = get_json(dev_cluster, "servicemonitors.monitoring.coreos.com", "lm", "-n", namespace)
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"triton-metrics", "sidecar-metrics"}
    rule = get_json(dev_cluster, "prometheusrules.monitoring.coreos.com", "lm", "-n", namespace)
    alerts = {r.get("alert") for r in rule["spec"]["groups"][0]["rules"]}
    assert {"StrataModelLatencySLO", "StrataModelErrorRate", "StrataModelQueueSaturated"} <= alerts
