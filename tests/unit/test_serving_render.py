"""ModelDeployment: the pure render, rollout decision, model resolution and status."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from strata.api import MODEL_DEPLOYMENT
from strata.api.deployment import ModelDeploymentSpec
from strata.api.training import ExportedModel
from strata.constants import Phase, Reason
from strata.controllers.modeldeployment import model_from_export, model_from_spec
from strata.render import sidecar as contract
from strata.render.serving import (
    ANNOTATION_MODEL,
    ANNOTATION_REVISIONS,
    ANNOTATION_ROLLBACK,
    Images,
    S3_CREDENTIALS_DIR,
    SOURCE_REPOSITORY_DIR,
    ServedModel,
    plan_rollout,
    render_model_deployment,
)
from strata.render.serving_status import autoscaling_condition, observe_serving
from tests_support import example_spec

OWNER = {"metadata": {"name": "lm", "namespace": "ml", "uid": "u-1"}}
IMAGES = Images(triton="triton:1", sidecar="sidecar:1")
V3 = ServedModel(name="lm", version=3, claim="models", path="repo")
V4 = ServedModel(name="lm", version=4, claim="models", path="repo")
V5 = ServedModel(name="lm", version=5, claim="models", path="repo")


def spec_of(**changes) -> ModelDeploymentSpec:
    wire = {"model": {"repository": {"location": {"pvc": {"claimName": "models", "path": "repo"}}, "name": "lm", "version": 4}},
            "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi"}, "triton": {"instanceGroups": [{"kind": "CPU"}]}}
    wire.update(changes)
    return ModelDeploymentSpec.model_validate(wire)


def live(model: ServedModel, *, available: bool = False, deadline: bool = False, history=(), rollback=None, replicas=2) -> dict:
    annotations = {ANNOTATION_REVISIONS: json.dumps([m.to_dict() for m in history])}
    if rollback is not None:
        annotations[ANNOTATION_ROLLBACK] = json.dumps(rollback)
    conditions = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}] if deadline else \
        [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" if available else "ReplicaSetUpdated"}]
    ready = replicas if available else 0
    return {
        "kind": "Deployment",
        "metadata": {"name": "lm", "generation": 2, "annotations": annotations},
        "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {ANNOTATION_MODEL: json.dumps(model.to_dict())}}}},
        "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready,
                   "availableReplicas": ready, "conditions": conditions},
    }


def children(spec, plan, prometheus=False):
    return render_model_deployment(MODEL_DEPLOYMENT, OWNER, spec, plan, IMAGES, prometheus)


def by_kind(rendered):
    return {child["kind"]: child for child in rendered}


# --- The rollout decision -------------------------------------------------------------------

ROLLOUT_CASES = [
    pytest.param(V4, None, V4, [], None, id="a first rollout serves the target"),
    pytest.param(V4, live(V4, available=True), V4, [V4], None, id="an available revision enters the history"),
    pytest.param(V5, live(V4, available=True, history=[V4]), V5, [V4], None, id="a new version is rolled out"),
    pytest.param(V5, live(V5, history=[V3, V4]), V5, [V3, V4], None, id="a rollout in progress keeps its target"),
    pytest.param(V5, live(V5, deadline=True, history=[V3, V4]), V4, [V3, V4], V4,
                 id="a version past its deadline is rolled back to the last available one"),
    pytest.param(V5, live(V4, history=[V3, V4], rollback={"failed": V5.to_dict(), "restored": V4.to_dict(), "message": "m"}),
                 V4, [V3, V4], V4, id="a rolled back version stays rolled back while the spec names it"),
    pytest.param(V3, live(V4, available=True, history=[V3, V4], rollback={"failed": V5.to_dict(), "restored": V4.to_dict(), "message": "m"}),
                 V3, [V3, V4], None, id="naming another version clears the rollback and rolls it out"),
    pytest.param(V5, live(V5, deadline=True), V5, [], None, id="a first version past its deadline has nothing to roll back to"),
    pytest.param(V5, live(V5, available=True, rollback={"failed": V5.to_dict(), "restored": None, "message": "m"}),
                 V5, [V5], None, id="a failed first version that becomes available late serves"),
    pytest.param(None, live(V4, available=True, history=[V4]), V4, [V4], None,
                 id="an unresolvable model keeps serving what is served"),
]


@pytest.mark.parametrize("target, deployment, serve, history, restored", ROLLOUT_CASES)
def test_rollout_decision(target, deployment, serve, history, restored):
    plan = plan_rollout(spec_of().rollout, target, deployment)
    assert plan.serve == serve
    assert plan.history == history
    assert (ServedModel.from_dict(plan.rollback["restored"]) if plan.rollback and plan.rollback.get("restored") else None) == restored


def test_a_failed_version_without_auto_rollback_is_left_failed():
    plan = plan_rollout(spec_of(rollout={"autoRollback": False}).rollout, V5, live(V5, deadline=True, history=[V4]))
    assert plan.serve == V5 and plan.newly_failed
    assert plan.rollback["restored"] is None and "autoRollback is false" in plan.rollback["message"]


@pytest.mark.parametrize("auto_rollback", [True, False], ids=["with autoRollback", "without autoRollback"])
def test_a_failure_with_nothing_restored_is_cleared_when_the_target_becomes_available(auto_rollback):
    failed = {"failed": V5.to_dict(), "restored": None, "message": "m"}
    still_failing = plan_rollout(spec_of(rollout={"autoRollback": auto_rollback}).rollout, V5,
                                 live(V5, deadline=True, history=[V4], rollback=failed))
    assert still_failing.rollback == failed and not still_failing.newly_failed
    late = plan_rollout(spec_of(rollout={"autoRollback": auto_rollback}).rollout, V5,
                        live(V5, available=True, history=[V4], rollback=failed))
    assert late.rollback is None and late.serve == V5 and late.newly_available == V5 and late.history == [V4, V5]


def test_a_restored_version_stays_restored_while_the_spec_names_the_failed_one():
    rolled_back = {"failed": V5.to_dict(), "restored": V4.to_dict(), "message": "m"}
    plan = plan_rollout(spec_of().rollout, V5, live(V4, available=True, history=[V3, V4], rollback=rolled_back))
    assert plan.rollback == rolled_back and plan.serve == V4


def test_the_history_keeps_at_most_revision_history_entries():
    plan = plan_rollout(spec_of(rollout={"revisionHistory": 2}).rollout, V5, live(V5, available=True, history=[V3, V4]))
    assert plan.history == [V4, V5] and plan.newly_available == V5


def test_a_rollback_message_names_both_versions_and_the_deadline():
    plan = plan_rollout(spec_of().rollout, V5, live(V5, deadline=True, history=[V4]))
    assert plan.newly_failed
    assert plan.rollback["message"] == ("Model lm version 5 did not become available within rollout.progressDeadlineSeconds "
                                        "(600s); rolled back to lm version 4.")


# --- Resolving the model --------------------------------------------------------------------

EXPORT_CASES = [
    pytest.param({"repository": {"pvc": {"claimName": "exports", "path": "/repo/a/"}}, "path": "pvc://exports/repo/a",
                  "modelName": "lm", "version": 2},
                 ServedModel(name="lm", version=2, claim="exports", path="repo/a"), id="a pvc repository names its claim and path"),
    pytest.param({"repository": {"pvc": {"claimName": "models"}}, "path": "pvc://models", "modelName": "lm", "version": 1},
                 ServedModel(name="lm", version=1, claim="models", path=""), id="a claim's root is a repository"),
    pytest.param({"repository": {"s3": {"uri": "s3://bucket/models"}}, "path": "s3://bucket/models",
                  "modelName": "lm", "version": 1},
                 ServedModel(name="lm", version=1, s3_uri="s3://bucket/models"), id="an s3 repository"),
    pytest.param({"repository": {"s3": {"uri": "s3://bucket/models/", "endpoint": "http://seaweedfs.storage:8333",
                                        "secretRef": {"name": "model-keys"}}},
                  "path": "s3://bucket/models", "modelName": "lm", "version": 1},
                 ServedModel(name="lm", version=1, s3_uri="s3://bucket/models", s3_endpoint="http://seaweedfs.storage:8333",
                             s3_secret="model-keys"), id="an s3 repository keeps its endpoint and Secret"),
]


VARIANTS = {"torchscript": "lm", "python": "lm-python", "int8": "lm-int8", "int8-python": "lm-int8-python"}
BACKEND_CASES = [
    pytest.param("none", None, "lm", id="the TorchScript model on the PyTorch backend by default"),
    pytest.param("none", "python", "lm-python", id="backend python serves the python-backend variant"),
    pytest.param("int8", None, "lm-int8", id="a quantized export serves its quantized model"),
    pytest.param("int8", "python", "lm-int8-python", id="a quantized export on the python backend"),
]


@pytest.mark.parametrize("quantization, backend, served", BACKEND_CASES)
def test_the_served_variant_follows_the_backend_and_the_exports_quantization(quantization, backend, served):
    exported = ExportedModel.model_validate({"repository": {"pvc": {"claimName": "models"}}, "path": "pvc://models",
                                             "modelName": "lm", "version": 1, "quantization": quantization,
                                             "variants": VARIANTS})
    model, why = model_from_export("lm", exported, backend)
    assert why is None and model.name == served


@pytest.mark.parametrize("exported, expected", EXPORT_CASES)
def test_a_training_jobs_export_resolves_to_a_served_model(exported, expected):
    model, why = model_from_export("lm", ExportedModel.model_validate(exported))
    assert why is None and model == expected


def test_a_training_job_without_an_export_says_serving_waits_for_it():
    model, why = model_from_export("lm", None)
    assert model is None and 'TrainingJob "lm" has not exported a model yet' in why


def test_a_repository_in_the_spec_is_served_as_declared():
    assert model_from_spec(spec_of()) == V4


# --- What is rendered -----------------------------------------------------------------------


def test_nothing_is_rendered_while_there_is_nothing_to_serve():
    assert children(spec_of(), plan_rollout(spec_of().rollout, None, None)) == []


S3_SPEC = {"repository": {"location": {"s3": {"uri": "s3://b/m", "endpoint": "http://s3.storage:8333",
                                                "secretRef": {"name": "model-keys"}}}, "name": "lm", "version": 1}}


def test_an_s3_repository_is_downloaded_by_the_init_step_into_an_empty_dir_with_the_secrets_keys():
    spec = spec_of(model=S3_SPEC)
    model = model_from_spec(spec)
    rendered = by_kind(children(spec, plan_rollout(spec.rollout, model, None)))
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["source"] == {"name": "source", "emptyDir": {}}
    assert volumes["s3-credentials"] == {"name": "s3-credentials", "secret": {"secretName": "model-keys", "defaultMode": 0o440}}
    init = pod["initContainers"][0]
    mounts = {mount["name"]: mount for mount in init["volumeMounts"]}
    assert mounts["source"]["readOnly"] is False and mounts["s3-credentials"]["mountPath"] == S3_CREDENTIALS_DIR
    # The keys are for the download only: neither Triton nor the sidecar mounts them.
    assert all("s3-credentials" not in {m["name"] for m in c["volumeMounts"]} for c in pod["containers"])
    config = yaml.safe_load(rendered["ConfigMap"]["data"]["model-repository.yaml"])
    assert config["s3"] == {"uri": "s3://b/m", "endpoint": "http://s3.storage:8333", "credentialsPath": S3_CREDENTIALS_DIR}
    assert config["source"] == SOURCE_REPOSITORY_DIR and config["model"] == "lm" and config["version"] == 1


def test_an_anonymous_s3_repository_mounts_no_secret():
    spec = spec_of(model={"repository": {"location": {"s3": {"uri": "s3://public/models"}}, "name": "lm"}})
    rendered = by_kind(children(spec, plan_rollout(spec.rollout, model_from_spec(spec), None)))
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert "s3-credentials" not in {volume["name"] for volume in pod["volumes"]}
    assert yaml.safe_load(rendered["ConfigMap"]["data"]["model-repository.yaml"])["s3"] == {"uri": "s3://public/models"}


def test_a_pvc_models_template_annotation_has_no_s3_fields():
    """An upgrade must not change the pod template of what is served from a claim (it would roll out)."""
    assert V4.to_dict() == {"name": "lm", "version": 4, "claim": "models", "path": "repo", "s3Uri": None}
    s3 = model_from_spec(spec_of(model=S3_SPEC))
    assert ServedModel.from_dict(json.loads(json.dumps(s3.to_dict()))) == s3


def test_the_service_exposes_only_the_sidecar_and_the_metrics_ports():
    rendered = by_kind(children(spec_of(), plan_rollout(spec_of().rollout, V4, None)))
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in rendered["Service"]["spec"]["ports"]}
    assert ports == {"http": (8000, "http"), "grpc": (8001, "grpc"), "sidecar-metrics": (9090, "sidecar-metrics"),
                     "triton-metrics": (8002, "triton-metrics")}
    containers = {c["name"]: c for c in rendered["Deployment"]["spec"]["template"]["spec"]["containers"]}
    assert {p["containerPort"] for p in containers["sidecar"]["ports"]} == {8000, 8001, 9090}
    assert [p["containerPort"] for p in containers["triton"]["ports"]] == [8002]


def test_triton_loads_only_the_declared_model_on_loopback():
    rendered = by_kind(children(spec_of(), plan_rollout(spec_of().rollout, V4, None)))
    triton = rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["command"] == ["tritonserver"]
    args = triton["args"]
    assert "--model-control-mode=explicit" in args and "--load-model=lm" in args
    assert "--http-address=127.0.0.1" in args and "--grpc-address=127.0.0.1" in args
    # Metrics must be reachable at the pod IP (Prometheus, the HPA's custom metric): Triton would
    # otherwise bind them to the HTTP address, loopback.
    assert "--metrics-address=0.0.0.0" in args
    assert f"--http-port={contract.TRITON_HTTP_PORT}" in args and f"--metrics-port={contract.TRITON_METRICS_PORT}" in args
    assert "/v2/health/ready" in triton["readinessProbe"]["exec"]["command"][-1]
    assert "/v2/health/live" in triton["livenessProbe"]["exec"]["command"][-1]
    assert triton["startupProbe"]["failureThreshold"] * triton["startupProbe"]["periodSeconds"] == 600


def test_every_container_is_non_root_and_restricted():
    template = by_kind(children(spec_of(), plan_rollout(spec_of().rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]
    assert template["securityContext"]["runAsNonRoot"] is True
    assert template["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in template["containers"] + template["initContainers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}


def test_the_source_repository_is_mounted_read_only_from_its_claim():
    template = by_kind(children(spec_of(), plan_rollout(spec_of().rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]
    source = next(v for v in template["volumes"] if v["name"] == "source")
    assert source["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


REPLICA_CASES = [
    pytest.param({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, None, id="with autoscaling the HPA owns replicas"),
    pytest.param({"replicas": 3}, 3, id="fixed replicas are applied"),
    pytest.param({}, 1, id="neither gives one replica"),
]


@pytest.mark.parametrize("changes, replicas", REPLICA_CASES)
def test_replicas(changes, replicas):
    spec = spec_of(**changes)
    rendered = by_kind(children(spec, plan_rollout(spec.rollout, V4, None)))
    assert rendered["Deployment"]["spec"].get("replicas") == replicas
    assert ("HorizontalPodAutoscaler" in rendered) == (replicas is None)


def test_the_hpa_targets_the_queue_compute_ratio_and_cpu_with_the_declared_behaviour():
    spec = spec_of(autoscaling={"minReplicas": 2, "maxReplicas": 5, "queueComputeRatio": 1.5, "cpuUtilization": 70,
                                "scaleDownStabilizationSeconds": 30})
    hpa = by_kind(children(spec, plan_rollout(spec.rollout, V4, None)))["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["pods"] == {"metric": {"name": "triton_queue_compute_ratio"},
                                        "target": {"type": "AverageValue", "averageValue": "1500m"}}
    assert hpa["metrics"][1]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 30


SCALING_CASES = [
    pytest.param(70, True, ["Pods", "Resource"], ("True", "QueueComputeRatioServed"),
                 id="with a custom metrics API the ratio and CPU are both targets"),
    pytest.param(70, False, ["Resource"], ("False", "CustomMetricsAPIUnavailable"),
                 id="without one the HPA scales on CPU only, and says so"),
    pytest.param(None, False, [], ("False", "CustomMetricsAPIUnavailable"),
                 id="without one and without a CPU target the HPA's default CPU target applies"),
]


@pytest.mark.parametrize("cpu, custom_metrics, kinds, condition", SCALING_CASES)
def test_the_queue_target_needs_a_custom_metrics_api(cpu, custom_metrics, kinds, condition):
    """An HPA that cannot read one of its metrics never scales down, so the ratio is only a
    target where a custom metrics API answers."""
    spec = spec_of(autoscaling={"minReplicas": 1, "maxReplicas": 3, "cpuUtilization": cpu})
    rendered = render_model_deployment(MODEL_DEPLOYMENT, OWNER, spec, plan_rollout(spec.rollout, V4, None), IMAGES,
                                       False, custom_metrics)
    hpa = by_kind(rendered)["HorizontalPodAutoscaler"]["spec"]
    assert [metric["type"] for metric in hpa["metrics"]] == kinds
    status, reason, message = autoscaling_condition(spec, custom_metrics)
    assert (status, reason) == condition
    if not custom_metrics:
        assert "prometheus-adapter" in message and ("70%" in message if cpu else "80%" in message)


def test_without_autoscaling_there_is_no_autoscaling_condition():
    assert autoscaling_condition(spec_of(), True) is None


def test_resources_and_gpus_reach_the_triton_container():
    spec = spec_of(resources={"gpus": 2, "gpuResource": "amd.com/gpu", "cpu": "3", "memory": "8Gi"},
                   triton={"instanceGroups": [{"kind": "GPU", "count": 2}]})
    triton = by_kind(children(spec, plan_rollout(spec.rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"] == {"cpu": "3", "memory": "8Gi", "amd.com/gpu": "2"}


def test_monitoring_storage_gives_each_pod_its_own_directory_of_the_claim_and_the_sidecar_the_whole():
    spec = spec_of(monitoring={"storage": {"pvc": {"claimName": "records", "path": "/qa/"}}})
    template = by_kind(children(spec, plan_rollout(spec.rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in template["volumes"]}
    assert volumes["sidecar-state"] == {"name": "sidecar-state", "persistentVolumeClaim": {"claimName": "records"}}
    sidecar = next(c for c in template["containers"] if c["name"] == "sidecar")
    state = [mount for mount in sidecar["volumeMounts"] if mount["name"] == "sidecar-state"]
    assert state == [{"name": "sidecar-state", "mountPath": contract.SIDECAR_STATE_DIR, "subPathExpr": "qa/$(POD_NAME)"},
                     {"name": "sidecar-state", "mountPath": contract.SIDECAR_SHARED_STATE_DIR, "subPath": "qa"}]
    assert sidecar["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    assert all(m["name"] != "sidecar-state" for c in template["containers"] if c["name"] != "sidecar"
               for m in c["volumeMounts"])

    default = by_kind(children(spec_of(), plan_rollout(spec_of().rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]
    assert {v["name"]: v for v in default["volumes"]}["sidecar-state"]["emptyDir"]
    assert "env" not in next(c for c in default["containers"] if c["name"] == "sidecar")


def test_api_keys_are_mounted_for_the_sidecar_only():
    spec = spec_of(access={"auth": {"apiKeys": {"secretRef": {"name": "keys"}}}})
    template = by_kind(children(spec, plan_rollout(spec.rollout, V4, None)))["Deployment"]["spec"]["template"]["spec"]
    assert {"name": "api-keys", "secret": {"secretName": "keys"}} in template["volumes"]
    mounts = {c["name"]: [m["mountPath"] for m in c["volumeMounts"]] for c in template["containers"]}
    assert contract.API_KEYS_DIR in mounts["sidecar"] and contract.API_KEYS_DIR not in mounts["triton"]


def test_triton_settings_reach_the_init_step_and_a_change_is_a_new_config():
    plain, batched = spec_of(), spec_of(triton={"maxBatchSize": 16, "instanceGroups": [{"kind": "CPU", "count": 3}],
                                                "dynamicBatching": {"preferredBatchSizes": [4, 8]}})
    import yaml
    first = by_kind(children(plain, plan_rollout(plain.rollout, V4, None)))["ConfigMap"]
    second = by_kind(children(batched, plan_rollout(batched.rollout, V4, None)))["ConfigMap"]
    settings = yaml.safe_load(second["data"]["model-repository.yaml"])
    assert settings["maxBatchSize"] == 16 and settings["instanceGroups"] == [{"kind": "CPU", "count": 3}]
    assert settings["dynamicBatching"] == {"preferredBatchSizes": [4, 8], "maxQueueDelayMicroseconds": 100}
    assert settings["version"] == 4 and settings["source"] == "/var/strata/source/repo"
    assert first["metadata"]["name"] != second["metadata"]["name"] and second["immutable"] is True


def test_a_rollback_renders_the_restored_model_and_records_it_on_the_deployment():
    plan = plan_rollout(spec_of().rollout, V5, live(V5, deadline=True, history=[V4]))
    deployment = by_kind(children(spec_of(), plan))["Deployment"]
    assert json.loads(deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION_MODEL]) == V4.to_dict()
    assert json.loads(deployment["metadata"]["annotations"][ANNOTATION_ROLLBACK])["failed"] == V5.to_dict()


@pytest.mark.parametrize("installed", [True, False], ids=["with the Prometheus Operator", "without it"])
def test_a_service_monitor_and_rules_exist_only_with_the_prometheus_operator(installed):
    spec = spec_of(autoscaling={"queueComputeRatio": 2})
    rendered = by_kind(children(spec, plan_rollout(spec.rollout, V4, None), prometheus=installed))
    assert ("ServiceMonitor" in rendered) == installed and ("PrometheusRule" in rendered) == installed
    if installed:
        rules = rendered["PrometheusRule"]["spec"]["groups"][0]["rules"]
        assert {r.get("alert") for r in rules} >= {"StrataModelLatencySLO", "StrataModelErrorRate", "StrataModelQueueSaturated"}
        assert "> 4" in next(r for r in rules if r.get("alert") == "StrataModelQueueSaturated")["expr"]


# --- Status ---------------------------------------------------------------------------------

STATUS_CASES = [
    pytest.param(V4, live(V4, available=True, history=[V3, V4]), Phase.SERVING, Reason.AVAILABLE, "True",
                 {"current": 4, "previous": 3, "target": 4}, id="all replicas serve the target"),
    pytest.param(V5, live(V5, history=[V3, V4]), Phase.ROLLING_OUT, Reason.ROLLING_OUT, "False",
                 {"current": 4, "previous": 3, "target": 5}, id="a new version rolling out"),
    pytest.param(V5, live(V4, available=True, history=[V3, V4], rollback={"failed": V5.to_dict(), "restored": V4.to_dict(), "message": "Rolled."}),
                 Phase.ROLLED_BACK, Reason.ROLLED_BACK, "True", {"current": 4, "previous": 3, "target": 5},
                 id="a rolled back version serves the previous one"),
    pytest.param(V5, live(V5, deadline=True, rollback={"failed": V5.to_dict(), "restored": None, "message": "Nothing."}),
                 Phase.FAILED, Reason.ROLLOUT_FAILED, "False", {"target": 5}, id="a failed first version"),
]


@pytest.mark.parametrize("target, deployment, phase, reason, ready, versions", STATUS_CASES)
def test_status(target, deployment, phase, reason, ready, versions):
    got_phase, conditions, extra = observe_serving(spec_of(), "lm", "ml", target, [deployment], False)
    assert got_phase == phase
    assert conditions["Ready"][:2] == (ready, reason)
    assert extra["modelVersion"] == versions
    assert extra["endpoints"]["grpc"] == "lm.ml.svc:8001" and extra["endpoints"]["http"] == "http://lm.ml.svc:8000"
    assert extra["readyReplicas"] == f"{deployment['status']['readyReplicas']}/2"
    MODEL_DEPLOYMENT.status_model.model_validate({**extra, "phase": got_phase})


def test_the_example_renders_without_error():
    spec = ModelDeploymentSpec.model_validate(example_spec("ModelDeployment"))
    owner = copy.deepcopy(OWNER)
    rendered = children(spec, plan_rollout(spec.rollout, V4, None), prometheus=True)
    assert [c["kind"] for c in rendered] == ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
                                            "HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule"]
    assert owner == OWNER
