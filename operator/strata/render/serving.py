"""What a ModelDeployment renders: Triton and the monitoring sidecar in one pod template, the
Service clients call, the HPA, the PodDisruptionBudget, and (with the Prometheus Operator) a
ServiceMonitor and a PrometheusRule. Pure: everything comes from the spec, the resolved
model and the live Deployment (for the rollout decision, see plan_rollout).

Pod layout (ports and paths in render/sidecar.py, the contract with the sidecar):

- init container `model-repository` (sidecar image, `python -m strata_workloads.model_repository`)
  builds the served repository in an emptyDir at MODEL_REPOSITORY_DIR: the declared model's
  config.pbtxt with the spec's Triton settings merged in (maxBatchSize, dynamicBatching,
  instanceGroups, and a version policy pinned to the served version), and a symlink to that
  one version directory on the read-only mounted source repository (no copy of the weights).
  From an S3 repository it first downloads the served version (and the files beside the
  versions) into an emptyDir that takes the source's place, with the Secret's keys.
- container `triton`: `tritonserver --model-control-mode=explicit --load-model=<name>`,
  HTTP and gRPC on 127.0.0.1 only (nothing bypasses the sidecar), metrics on all interfaces.
  Its probes are exec probes against the loopback health endpoints (kubelet's httpGet cannot
  reach 127.0.0.1 in the pod): readiness /v2/health/ready, liveness /v2/health/live, and a
  startup probe on /v2/health/live that allows rollout.progressDeadlineSeconds for loading.
- container `sidecar`: `python -m strata_workloads.serve --config /etc/strata/sidecar.yaml`;
  its readiness is an httpGet on its own HTTP port's /v2/health/ready, which it passes
  through to Triton without a key, so a pod is Ready only when the whole path serves.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from strata.api import KindInfo
from strata.api.base import S3Location, SecretRef
from strata.api.deployment import ModelDeploymentSpec, Rollout
from strata.constants import ChildPolicy
from strata.render import sidecar as contract
from strata.render.common import child_labels, child_metadata, owner_labels, s3_settings, workload_pod_security
from strata.render.config import content_hash

COMPONENT = "serving"
SIDECAR_CONFIG_KEY = contract.SIDECAR_CONFIG_FILE
REPOSITORY_CONFIG_KEY = "model-repository.yaml"
REPOSITORY_CONFIG_PATH = f"{contract.SIDECAR_CONFIG_DIR}/{REPOSITORY_CONFIG_KEY}"
# The source repository, mounted read-only; the served repository links into it. From S3, an
# emptyDir the init step downloads the served version into.
SOURCE_REPOSITORY_DIR = "/var/strata/source"
# The S3 repository's Secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), in the init step only.
S3_CREDENTIALS_DIR = "/var/strata/s3-credentials"

# Pod template annotation: the model this template serves (JSON of ServedModel.to_dict()).
ANNOTATION_MODEL = "strata.dev/model"
# Deployment annotations: the rollout's memory, kept with the object it describes.
ANNOTATION_REVISIONS = "strata.dev/model-revisions"
ANNOTATION_ROLLBACK = "strata.dev/rollback"

SIDECAR_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
INIT_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
# Downloading from S3 loads pyarrow and the AWS SDK and streams the weights through 1 MiB buffers.
S3_INIT_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
PROBE_PERIOD_SECONDS = 5

# The custom metric the prometheus-adapter rule in helm/strata/prometheus-adapter/ serves:
# queue time over compute time per pod, NVIDIA's autoscaling signal for Triton.
QUEUE_COMPUTE_METRIC = "triton_queue_compute_ratio"
# Alert thresholds of the PrometheusRule (the spec has no SLO fields yet).
LATENCY_SLO_SECONDS = 1.0
ERROR_RATE_THRESHOLD = 0.05
QUEUE_SATURATION_FACTOR = 2.0


@dataclass(frozen=True)
class ServedModel:
    """One model revision: which model, which version, from which repository."""

    name: str
    version: int | None
    claim: str | None = None  # a PVC in the namespace, with the repository under `path`
    path: str = ""
    s3_uri: str | None = None  # or an S3 prefix holding the repository
    s3_endpoint: str | None = None  # an S3-compatible endpoint; AWS when None
    s3_secret: str | None = None  # a Secret in the namespace with the keys; anonymous when None

    @property
    def source(self) -> str:
        if self.s3_uri:
            return self.s3_uri
        return f"pvc://{self.claim}/{self.path.strip('/')}".rstrip("/")

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "version": self.version, "claim": self.claim, "path": self.path, "s3Uri": self.s3_uri}
        if self.s3_uri:  # only S3 models have them: a PVC model's template annotation stays as it was
            data.update(s3Endpoint=self.s3_endpoint, s3Secret=self.s3_secret)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServedModel:
        return cls(name=data["name"], version=data.get("version"), claim=data.get("claim"),
                   path=data.get("path") or "", s3_uri=data.get("s3Uri"), s3_endpoint=data.get("s3Endpoint"),
                   s3_secret=data.get("s3Secret"))

    def describe(self) -> str:
        version = f"version {self.version}" if self.version else "the newest version"
        return f"{self.name} {version}"


@dataclass(frozen=True)
class Images:
    triton: str
    sidecar: str


# --- The rollout decision ------------------------------------------------------------------


@dataclass
class RolloutPlan:
    """What to serve this pass, and the rollout's memory to write back on the Deployment."""

    serve: ServedModel | None
    target: ServedModel | None
    history: list[ServedModel] = field(default_factory=list)
    # Set while the target failed: {"failed": model dict, "restored": model dict or None, "message": ...}
    rollback: dict[str, Any] | None = None
    # What changed in this pass, for events.
    newly_available: ServedModel | None = None
    newly_failed: bool = False


def _annotation_json(obj: dict[str, Any] | None, key: str, default: Any) -> Any:
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    try:
        return json.loads(annotations[key])
    except (KeyError, ValueError, TypeError):
        return default


def templated_model(deployment: dict[str, Any] | None) -> ServedModel | None:
    """The model the Deployment's pod template serves."""
    template = ((deployment or {}).get("spec") or {}).get("template")
    data = _annotation_json(template, ANNOTATION_MODEL, None)
    return ServedModel.from_dict(data) if isinstance(data, dict) else None


def _observed(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    return (status.get("observedGeneration") or 0) >= (deployment["metadata"].get("generation") or 0)


def deployment_available(deployment: dict[str, Any] | None) -> bool:
    """Every desired replica runs the current template and is available (none of an older one)."""
    if not deployment or not _observed(deployment):
        return False
    status = deployment.get("status") or {}
    desired = (deployment.get("spec") or {}).get("replicas", 1)
    return (desired > 0 and (status.get("updatedReplicas") or 0) >= desired
            and (status.get("availableReplicas") or 0) >= desired and (status.get("replicas") or 0) == (status.get("updatedReplicas") or 0))


def deadline_exceeded(deployment: dict[str, Any] | None) -> bool:
    """The Deployment controller gave up on the current template (progressDeadlineSeconds)."""
    if not deployment or not _observed(deployment):
        return False
    return any(c.get("type") == "Progressing" and c.get("status") == "False" and c.get("reason") == "ProgressDeadlineExceeded"
               for c in (deployment.get("status") or {}).get("conditions") or [])


def plan_rollout(rollout: Rollout, target: ServedModel | None, live: dict[str, Any] | None) -> RolloutPlan:
    """Pure: which model the Deployment serves now.

    The target (what the spec names) unless it failed: a target whose rollout exceeded the
    deadline is recorded as failed on the Deployment, and with autoRollback the newest
    revision that was available before it is served again, until the spec names another.
    A failed target that stayed templated (nothing to restore, or autoRollback off) and then
    became available is serving, so its failure is cleared.
    """
    history = [ServedModel.from_dict(entry) for entry in _annotation_json(live, ANNOTATION_REVISIONS, [])
               if isinstance(entry, dict)]
    live_model = templated_model(live)
    newly_available = None
    if live_model is not None and deployment_available(live) and (not history or history[-1] != live_model):
        history.append(live_model)
        newly_available = live_model
    history = history[-rollout.revision_history:]
    if target is None:  # the model cannot be resolved now: keep serving what is served
        return RolloutPlan(serve=live_model, target=None, history=history, newly_available=newly_available,
                           rollback=_annotation_json(live, ANNOTATION_ROLLBACK, None))

    rollback = _annotation_json(live, ANNOTATION_ROLLBACK, None)
    if not isinstance(rollback, dict) or rollback.get("failed") != target.to_dict():
        rollback = None  # the spec moved on from the failed model: roll out what it names
    elif not rollback.get("restored") and live_model == target and deployment_available(live):
        # Nothing was restored, so the failed model stayed templated, and it became available
        # after all (late: a slow pull or start): it serves, and the failure is history.
        rollback = None
    newly_failed = False
    if rollback is None and live_model == target and deadline_exceeded(live):
        newly_failed = True
        restore = next((model for model in reversed(history) if model != target), None) if rollout.auto_rollback else None
        deadline = f"did not become available within rollout.progressDeadlineSeconds ({rollout.progress_deadline_seconds}s)"
        if restore is not None:
            message = f"Model {target.describe()} {deadline}; rolled back to {restore.describe()}."
        elif rollout.auto_rollback:
            message = f"Model {target.describe()} {deadline}, and no earlier version was ever available to roll back to."
        else:
            message = f"Model {target.describe()} {deadline}; rollout.autoRollback is false, so it is left as it is."
        rollback = {"failed": target.to_dict(), "restored": restore.to_dict() if restore else None, "message": message}
    serve = target
    if rollback is not None and rollback.get("restored"):
        serve = ServedModel.from_dict(rollback["restored"])
    return RolloutPlan(serve=serve, target=target, history=history, rollback=rollback,
                       newly_available=newly_available, newly_failed=newly_failed)


# --- Configuration --------------------------------------------------------------------------


def render_repository_config(spec: ModelDeploymentSpec, model: ServedModel) -> dict[str, Any]:
    """The init step's instructions (strata_workloads.model_repository reads them)."""
    triton = spec.triton
    config: dict[str, Any] = {
        "source": SOURCE_REPOSITORY_DIR if model.s3_uri else f"{SOURCE_REPOSITORY_DIR}/{model.path.strip('/')}".rstrip("/"),
        "target": contract.MODEL_REPOSITORY_DIR,
        "model": model.name,
        "version": model.version,
        "maxBatchSize": triton.max_batch_size,
        "instanceGroups": [{"kind": group.kind, "count": group.count} for group in triton.instance_groups],
        "dynamicBatching": None,
    }
    if triton.dynamic_batching is not None:
        config["dynamicBatching"] = {
            "preferredBatchSizes": list(triton.dynamic_batching.preferred_batch_sizes),
            "maxQueueDelayMicroseconds": triton.dynamic_batching.max_queue_delay_microseconds,
        }
    if model.s3_uri:
        location = S3Location(uri=model.s3_uri, endpoint=model.s3_endpoint,
                              secret_ref=SecretRef(name=model.s3_secret) if model.s3_secret else None)
        config["s3"] = s3_settings(location, S3_CREDENTIALS_DIR)
    return config


def render_config_map(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec, model: ServedModel) -> dict[str, Any]:
    """Both files the pod mounts, in one immutable content-named ConfigMap (see render/config.py)."""
    data = {
        SIDECAR_CONFIG_KEY: yaml.safe_dump(contract.render_sidecar_config(spec, model.name), sort_keys=True),
        REPOSITORY_CONFIG_KEY: yaml.safe_dump(render_repository_config(spec, model), sort_keys=True),
    }
    name = owner["metadata"]["name"]
    suffix = f"-{COMPONENT}-{content_hash(data)}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(info, owner, name[: 253 - len(suffix)] + suffix, COMPONENT, ChildPolicy.CREATE_ONCE),
        "immutable": True,
        "data": data,
    }


# --- The pod ------------------------------------------------------------------------------


def pod_labels(info: KindInfo, name: str) -> dict[str, str]:
    return child_labels(info, name, COMPONENT)


def selector_labels(info: KindInfo, name: str) -> dict[str, str]:
    return {**owner_labels(info, name), "app.kubernetes.io/component": COMPONENT}


def _loopback_probe(path: str) -> dict[str, Any]:
    """Exec probe: Triton listens on loopback, which kubelet's httpGet cannot reach."""
    script = (f"import urllib.request; urllib.request.urlopen("
              f"'http://127.0.0.1:{contract.TRITON_HTTP_PORT}{path}', timeout=3)")
    return {"exec": {"command": ["python3", "-c", script]}}


RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def triton_args(model_name: str) -> list[str]:
    return [
        f"--model-repository={contract.MODEL_REPOSITORY_DIR}",
        "--model-control-mode=explicit",
        f"--load-model={model_name}",
        "--http-address=127.0.0.1",
        f"--http-port={contract.TRITON_HTTP_PORT}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={contract.TRITON_GRPC_PORT}",
        "--allow-metrics=true",
        # Triton binds metrics to --http-address unless told otherwise: loopback would hide them
        # from Prometheus (and the queue/compute HPA metric) while the Service advertises the port.
        "--metrics-address=0.0.0.0",
        f"--metrics-port={contract.TRITON_METRICS_PORT}",
        "--strict-readiness=true",
        "--exit-on-error=true",
    ]


def _source_volume(model: ServedModel) -> dict[str, Any]:
    if model.s3_uri:
        return {"name": "source", "emptyDir": {}}
    return {"name": "source", "persistentVolumeClaim": {"claimName": model.claim, "readOnly": True}}


def render_pod_template(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec, model: ServedModel,
                        config_map: str, images: Images) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    resources = spec.resources
    triton_resources: dict[str, Any] = {
        "requests": {"cpu": str(resources.cpu), "memory": str(resources.memory)},
        "limits": {"cpu": str(resources.cpu), "memory": str(resources.memory)},
    }
    if resources.gpus:
        triton_resources["requests"][resources.gpu_resource] = str(resources.gpus)
        triton_resources["limits"][resources.gpu_resource] = str(resources.gpus)
    startup_failures = max(1, math.ceil(spec.rollout.progress_deadline_seconds / PROBE_PERIOD_SECONDS))
    config_mount = {"name": "config", "mountPath": contract.SIDECAR_CONFIG_DIR, "readOnly": True}
    repository_mount = {"name": "models", "mountPath": contract.MODEL_REPOSITORY_DIR}
    source_mount = {"name": "source", "mountPath": SOURCE_REPOSITORY_DIR, "readOnly": True}
    init_mounts = [config_mount, repository_mount, {**source_mount, "readOnly": not model.s3_uri}]
    if model.s3_secret:
        init_mounts.append({"name": "s3-credentials", "mountPath": S3_CREDENTIALS_DIR, "readOnly": True})
    init = {
        "name": "model-repository",
        "image": images.sidecar,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "strata_workloads.model_repository", "--config", REPOSITORY_CONFIG_PATH],
        "volumeMounts": init_mounts,
        "resources": S3_INIT_RESOURCES if model.s3_uri else INIT_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    triton = {
        "name": "triton",
        "image": images.triton,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": triton_args(model.name),
        "ports": [{"name": "triton-metrics", "containerPort": contract.TRITON_METRICS_PORT}],
        "readinessProbe": {**_loopback_probe("/v2/health/ready"), "periodSeconds": PROBE_PERIOD_SECONDS,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**_loopback_probe("/v2/health/live"), "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "startupProbe": {**_loopback_probe("/v2/health/live"), "periodSeconds": PROBE_PERIOD_SECONDS,
                         "timeoutSeconds": 5, "failureThreshold": startup_failures},
        "resources": triton_resources,
        "volumeMounts": [repository_mount, source_mount, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": RESTRICTED_CONTAINER,
    }
    sidecar_mounts = [config_mount, {"name": "sidecar-state", "mountPath": contract.SIDECAR_STATE_DIR},
                      {"name": "tmp", "mountPath": "/tmp"}]
    storage = spec.monitoring.storage
    if storage is not None:
        # The pod's own directory of the claim, made by the kubelet on first mount, and the
        # whole directory beside it, where the sidecar reads gone pods' records.
        base = storage.pvc.path.strip("/")
        sidecar_mounts[1]["subPathExpr"] = posixpath.join(base, "$(POD_NAME)")
        sidecar_mounts.append({"name": "sidecar-state", "mountPath": contract.SIDECAR_SHARED_STATE_DIR,
                               **({"subPath": base} if base else {})})
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "models", "emptyDir": {"sizeLimit": "64Mi"}},
        _source_volume(model),
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        # The python backend passes tensors to its stub through shared memory.
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "sidecar-state", "persistentVolumeClaim": {"claimName": storage.pvc.claim_name}} if storage is not None
        else {"name": "sidecar-state", "emptyDir": {"sizeLimit": "2Gi"}},
    ]
    if model.s3_secret:
        volumes.append({"name": "s3-credentials", "secret": {"secretName": model.s3_secret, "defaultMode": 0o440}})
    auth = spec.access.auth if spec.access else None
    if auth and auth.api_keys:
        sidecar_mounts.append({"name": "api-keys", "mountPath": contract.API_KEYS_DIR, "readOnly": True})
        volumes.append({"name": "api-keys", "secret": {"secretName": auth.api_keys.secret_ref.name}})
    sidecar = {
        "name": "sidecar",
        "image": images.sidecar,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "strata_workloads.serve", "--config", contract.SIDECAR_CONFIG_PATH],
        "ports": [
            {"name": "http", "containerPort": contract.SIDECAR_HTTP_PORT},
            {"name": "grpc", "containerPort": contract.SIDECAR_GRPC_PORT},
            {"name": "sidecar-metrics", "containerPort": contract.SIDECAR_METRICS_PORT},
        ],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": contract.SIDECAR_HTTP_PORT},
                           "periodSeconds": PROBE_PERIOD_SECONDS, "failureThreshold": 3},
        "livenessProbe": {"tcpSocket": {"port": contract.SIDECAR_HTTP_PORT}, "periodSeconds": 10,
                          "initialDelaySeconds": 10, "failureThreshold": 3},
        "resources": SIDECAR_RESOURCES,
        "volumeMounts": sidecar_mounts,
        "securityContext": RESTRICTED_CONTAINER,
    }
    if storage is not None:
        sidecar["env"] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    return {
        "metadata": {
            "labels": pod_labels(info, name),
            "annotations": {ANNOTATION_MODEL: json.dumps(model.to_dict(), sort_keys=True)},
        },
        "spec": {
            "securityContext": workload_pod_security(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "initContainers": [init],
            "containers": [triton, sidecar],
            "volumes": volumes,
        },
    }


def render_deployment(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec, plan: RolloutPlan,
                      config_map: str, images: Images) -> dict[str, Any]:
    assert plan.serve is not None
    name = owner["metadata"]["name"]
    metadata = child_metadata(info, owner, name, COMPONENT)
    metadata["annotations"][ANNOTATION_REVISIONS] = json.dumps([model.to_dict() for model in plan.history], sort_keys=True)
    if plan.rollback is not None:
        metadata["annotations"][ANNOTATION_ROLLBACK] = json.dumps(plan.rollback, sort_keys=True)
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(info, name)},
        # Old pods keep serving until new ones are ready; a version that never gets ready
        # leaves the old revision serving, and the deadline marks it failed.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "revisionHistoryLimit": spec.rollout.revision_history,
        "template": render_pod_template(info, owner, spec, plan.serve, config_map, images),
    }
    # With autoscaling the HPA owns replicas: leaving the field out of the applied manifest
    # means the operator never owns it, so it never fights the HPA.
    if spec.autoscaling is None:
        deployment_spec["replicas"] = 1 if spec.replicas is None else spec.replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": deployment_spec}


# --- Around the pod -------------------------------------------------------------------------


def render_service(info: KindInfo, owner: dict[str, Any]) -> dict[str, Any]:
    """Only the sidecar's ports and the two metrics ports: Triton's own API is not exposed."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(info, owner, name, COMPONENT),
        "spec": {
            "selector": selector_labels(info, name),
            "ports": [
                {"name": "http", "port": contract.SIDECAR_HTTP_PORT, "targetPort": "http", "appProtocol": "http"},
                {"name": "grpc", "port": contract.SIDECAR_GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"},
                {"name": "sidecar-metrics", "port": contract.SIDECAR_METRICS_PORT, "targetPort": "sidecar-metrics"},
                {"name": "triton-metrics", "port": contract.TRITON_METRICS_PORT, "targetPort": "triton-metrics"},
            ],
        },
    }


def ratio_quantity(value: float) -> str:
    """A ratio as a Kubernetes quantity the HPA accepts (milli-units: 1.5 -> 1500m)."""
    return f"{round(value * 1000)}m"


def render_hpa(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec, custom_metrics: bool = True) -> dict[str, Any]:
    """Triton's queue/compute ratio as a Pods metric when a custom metrics API answers; CPU
    utilization when the spec asks for it. Without a custom metrics API the ratio is left
    out: an HPA with a metric it cannot read never scales down. With no metric at all the
    HPA's own default applies (80% CPU utilization)."""
    scaling = spec.autoscaling
    assert scaling is not None
    name = owner["metadata"]["name"]
    metrics: list[dict[str, Any]] = []
    if custom_metrics:
        metrics.append({
            "type": "Pods",
            "pods": {"metric": {"name": QUEUE_COMPUTE_METRIC},
                     "target": {"type": "AverageValue", "averageValue": ratio_quantity(scaling.queue_compute_ratio)}},
        })
    if scaling.cpu_utilization is not None:
        metrics.append({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": scaling.cpu_utilization}}})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(info, owner, name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up_stabilization_seconds},
                "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
            },
        },
    }


def render_pdb(info: KindInfo, owner: dict[str, Any]) -> dict[str, Any]:
    """One replica at a time may be evicted: a drain never empties the model at once, and a
    single replica can still be drained (minAvailable would block it forever)."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(info, owner, name, COMPONENT),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(info, name)}},
    }


def render_service_monitor(info: KindInfo, owner: dict[str, Any]) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": child_metadata(info, owner, name, COMPONENT),
        "spec": {
            "selector": {"matchLabels": owner_labels(info, name)},
            "namespaceSelector": {"matchNames": [owner["metadata"]["namespace"]]},
            "endpoints": [{"port": "triton-metrics", "interval": "15s"}, {"port": "sidecar-metrics", "interval": "15s"}],
        },
    }


def render_prometheus_rule(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any]:
    name, namespace = owner["metadata"]["name"], owner["metadata"]["namespace"]
    selector = f'namespace="{namespace}",service="{name}"'
    ratio = f"strata:{QUEUE_COMPUTE_METRIC}"
    queue_target = spec.autoscaling.queue_compute_ratio if spec.autoscaling else 1.0
    labels = {"severity": "warning", "modeldeployment": name}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": child_metadata(info, owner, name, COMPONENT),
        "spec": {"groups": [{
            "name": f"strata-modeldeployment-{name}",
            "rules": [
                {"record": ratio, "expr":
                    f"sum by (namespace, service, pod) (rate(nv_inference_queue_duration_us{{{selector}}}[1m])) / "
                    f"clamp_min(sum by (namespace, service, pod) (rate(nv_inference_compute_infer_duration_us{{{selector}}}[1m])), 1)"},
                {"alert": "StrataModelLatencySLO", "for": "10m", "labels": labels,
                 "expr": f"sum(rate(nv_inference_request_duration_us{{{selector}}}[5m])) / "
                         f"clamp_min(sum(rate(nv_inference_request_success{{{selector}}}[5m])), 1e-9) / 1e6 > {LATENCY_SLO_SECONDS}",
                 "annotations": {"summary": f"ModelDeployment {namespace}/{name}: mean request latency above {LATENCY_SLO_SECONDS}s for 10 minutes."}},
                {"alert": "StrataModelErrorRate", "for": "5m", "labels": labels,
                 "expr": f"sum(rate(nv_inference_request_failure{{{selector}}}[5m])) / "
                         f"clamp_min(sum(rate(nv_inference_request_success{{{selector}}}[5m])) + "
                         f"sum(rate(nv_inference_request_failure{{{selector}}}[5m])), 1e-9) > {ERROR_RATE_THRESHOLD}",
                 "annotations": {"summary": f"ModelDeployment {namespace}/{name}: more than {ERROR_RATE_THRESHOLD:.0%} of inferences fail."}},
                {"alert": "StrataModelQueueSaturated", "for": "10m", "labels": labels,
                 "expr": f"avg({ratio}{{{selector}}}) > {QUEUE_SATURATION_FACTOR * queue_target:g}",
                 "annotations": {"summary": f"ModelDeployment {namespace}/{name}: requests queue {QUEUE_SATURATION_FACTOR:g}x longer "
                                            f"than the autoscaling target (queue/compute {queue_target:g}) for 10 minutes; "
                                            "check maxReplicas."}},
            ],
        }]},
    }


def render_model_deployment(info: KindInfo, owner: dict[str, Any], spec: ModelDeploymentSpec, plan: RolloutPlan,
                            images: Images, prometheus_operator: bool, custom_metrics: bool = True) -> list[dict[str, Any]]:
    """Every child, or none while there is nothing to serve."""
    if plan.serve is None:
        return []
    config_map = render_config_map(info, owner, spec, plan.serve)
    children = [
        config_map,
        render_deployment(info, owner, spec, plan, config_map["metadata"]["name"], images),
        render_service(info, owner),
        render_pdb(info, owner),
    ]
    if spec.autoscaling is not None:
        children.append(render_hpa(info, owner, spec, custom_metrics))
    if prometheus_operator:
        children += [render_service_monitor(info, owner), render_prometheus_rule(info, owner, spec)]
    return children
