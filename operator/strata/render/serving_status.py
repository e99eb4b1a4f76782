"""A ModelDeployment's status, observed from its live children (pure).

The rollout's memory (revisions that became available, a failed version and what was
restored) is read from the annotations render/serving.py wrote on the Deployment, so status
and the object that acts on it cannot disagree.
"""

from __future__ import annotations

from typing import Any

from strata.api.deployment import ModelDeploymentSpec
from strata.constants import ConditionStatus, ConditionType, Phase, Reason
from strata.render import sidecar as contract
from strata.render.serving import (
    ANNOTATION_REVISIONS,
    ANNOTATION_ROLLBACK,
    ServedModel,
    _annotation_json,
    deployment_available,
    templated_model,
)

NO_ERRORS = (ConditionStatus.FALSE, Reason.AS_EXPECTED, "No errors.")


def endpoints(name: str, namespace: str) -> dict[str, str]:
    host = f"{name}.{namespace}.svc"
    return {
        "grpc": f"{host}:{contract.SIDECAR_GRPC_PORT}",
        "http": f"http://{host}:{contract.SIDECAR_HTTP_PORT}",
        "metrics": f"http://{host}:{contract.SIDECAR_METRICS_PORT}/metrics",
    }


def monitoring_condition(prometheus_operator: bool) -> tuple[str, str, str]:
    if prometheus_operator:
        return (ConditionStatus.TRUE, Reason.MONITORING_CREATED,
                "A ServiceMonitor scrapes Triton's and the sidecar's metrics; a PrometheusRule records the "
                "queue/compute ratio and alerts on latency, errors and queue saturation.")
    return (ConditionStatus.FALSE, Reason.PROMETHEUS_OPERATOR_MISSING,
            "The Prometheus Operator's CRDs (monitoring.coreos.com ServiceMonitor, PrometheusRule) are not installed, "
            "so no ServiceMonitor or PrometheusRule was created; serving is unaffected. Install them and the next "
            "pass creates both.")


def autoscaling_condition(spec: ModelDeploymentSpec, custom_metrics: bool) -> tuple[str, str, str] | None:
    """Whether the HPA scales on Triton's queue/compute ratio; None without autoscaling."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    cpu = (f" and CPU utilization ({scaling.cpu_utilization}%)" if scaling.cpu_utilization is not None else "")
    if custom_metrics:
        return (ConditionStatus.TRUE, Reason.QUEUE_METRIC_SERVED,
                f"The HPA scales on Triton's queue/compute ratio (target {scaling.queue_compute_ratio:g}){cpu}.")
    fallback = (f"CPU utilization ({scaling.cpu_utilization}%) only" if scaling.cpu_utilization is not None
                else "the HPA's default of 80% CPU utilization")
    return (ConditionStatus.FALSE, Reason.CUSTOM_METRICS_UNAVAILABLE,
            "No custom metrics API (custom.metrics.k8s.io) answers, so the HPA scales on " + fallback + ". "
            "Install prometheus-adapter with the rule in the chart's prometheus-adapter/values.yaml; "
            "the next pass adds the queue/compute target.")


def observe_serving(spec: ModelDeploymentSpec, name: str, namespace: str, target: ServedModel | None,
                    children: list[dict[str, Any]], prometheus_operator: bool) -> tuple[str, dict[str, tuple[str, str, str]], dict[str, Any]]:
    """(phase, {Ready/Progressing/Degraded: (status, reason, message)}, extra status)."""
    by_kind = {child["kind"]: child for child in children}
    deployment = by_kind.get("Deployment")
    config_map = by_kind.get("ConfigMap")
    extra: dict[str, Any] = {"endpoints": endpoints(name, namespace)}
    if config_map:
        extra["configMap"] = config_map["metadata"]["name"]
    history = [ServedModel.from_dict(entry) for entry in _annotation_json(deployment, ANNOTATION_REVISIONS, [])]
    rollback = _annotation_json(deployment, ANNOTATION_ROLLBACK, None)
    served = templated_model(deployment)
    status = (deployment or {}).get("status") or {}
    desired = ((deployment or {}).get("spec") or {}).get("replicas", 0) if deployment else 0
    ready = status.get("readyReplicas") or 0
    extra["replicas"] = {"ready": ready, "desired": desired}
    extra["readyReplicas"] = f"{ready}/{desired}"
    versions: dict[str, Any] = {}
    if history and history[-1].version:
        versions["current"] = history[-1].version
    if len(history) > 1 and history[-2].version:
        versions["previous"] = history[-2].version
    if target is not None and target.version:
        versions["target"] = target.version
    if versions:
        extra["modelVersion"] = versions
    extra["revisions"] = [{"version": model.version, "modelName": model.name, "source": model.source}
                          if model.version else {"modelName": model.name, "source": model.source} for model in history]
    if isinstance(rollback, dict):
        failed = ServedModel.from_dict(rollback["failed"])
        record: dict[str, Any] = {"message": rollback.get("message", "")}
        if failed.version:
            record["failedVersion"] = failed.version
        if rollback.get("restored") and rollback["restored"].get("version"):
            record["restoredVersion"] = rollback["restored"]["version"]
        extra["rollback"] = record

    available = deployment_available(deployment)
    message = rollback.get("message", "") if isinstance(rollback, dict) else ""
    if isinstance(rollback, dict) and rollback.get("restored"):
        restored = ServedModel.from_dict(rollback["restored"])
        if available and served == restored:
            readiness = (ConditionStatus.TRUE, Reason.ROLLED_BACK, f"{message} {ready}/{desired} replicas serve {restored.describe()}.")
            progressing = (ConditionStatus.FALSE, Reason.ROLLED_BACK, "Rolled back; a new model version in the spec starts a new rollout.")
        else:
            readiness = (ConditionStatus.FALSE, Reason.ROLLED_BACK, f"{message} Waiting for {restored.describe()} to be available again.")
            progressing = (ConditionStatus.TRUE, Reason.ROLLED_BACK, f"Restoring {restored.describe()}.")
        return Phase.ROLLED_BACK, {
            ConditionType.READY: readiness,
            ConditionType.PROGRESSING: progressing,
            ConditionType.DEGRADED: (ConditionStatus.TRUE, Reason.ROLLED_BACK, message),
        }, extra
    if isinstance(rollback, dict):
        return Phase.FAILED, {
            ConditionType.READY: (ConditionStatus.FALSE, Reason.ROLLOUT_FAILED, message),
            ConditionType.PROGRESSING: (ConditionStatus.FALSE, Reason.ROLLOUT_FAILED, message),
            ConditionType.DEGRADED: (ConditionStatus.TRUE, Reason.ROLLOUT_FAILED, message),
        }, extra
    if available and served == target:
        text = f"{ready}/{desired} replicas serve {target.describe()}."
        return Phase.SERVING, {
            ConditionType.READY: (ConditionStatus.TRUE, Reason.AVAILABLE, text),
            ConditionType.PROGRESSING: (ConditionStatus.FALSE, Reason.AVAILABLE, "Rollout complete."),
            ConditionType.DEGRADED: NO_ERRORS,
        }, extra
    updated = status.get("updatedReplicas") or 0
    what = target.describe() if target is not None else "the model"
    text = (f"Rolling out {what}: {updated}/{desired} replicas updated, {ready} ready; "
            f"rolled back automatically unless available within {spec.rollout.progress_deadline_seconds}s"
            if spec.rollout.auto_rollback else
            f"Rolling out {what}: {updated}/{desired} replicas updated, {ready} ready")
    return Phase.ROLLING_OUT, {
        ConditionType.READY: (ConditionStatus.FALSE, Reason.ROLLING_OUT, text + "."),
        ConditionType.PROGRESSING: (ConditionStatus.TRUE, Reason.ROLLING_OUT, text + "."),
        ConditionType.DEGRADED: NO_ERRORS,
    }, extra
