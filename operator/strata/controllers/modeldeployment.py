"""ModelDeployment controller: serves the model with Triton behind the monitoring sidecar.

resolve: the model to serve (a repository in the spec, or what the named TrainingJob
exported), the live Deployment (the rollout decision reads it), whether the Prometheus
Operator's CRDs exist, and the default images (operator settings, from the environment).
render: render/serving.py. observe: render/serving_status.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from strata import __version__, k8s
from strata.api import MODEL_DEPLOYMENT, TRAINING_JOB, KindInfo
from strata.api.base import S3Location
from strata.api.deployment import ModelDeploymentSpec
from strata.api.training import ExportedModel
from strata.constants import ConditionStatus, ConditionType, Phase, Reason
from strata.controllers.reconcile import Inputs, Outcome, missing_reference_outcome, resolve_references
from strata.controllers.registration import register_kind
from strata.render.common import owner_labels
from strata.render.serving import Images, RolloutPlan, ServedModel, plan_rollout, render_model_deployment, templated_model
from strata.render.serving_status import autoscaling_condition, monitoring_condition, observe_serving

# Operator settings (the chart sets them; see helm/strata/values.yaml tritonImage/sidecarImage).
TRITON_IMAGE_ENV = "STRATA_TRITON_IMAGE"
SIDECAR_IMAGE_ENV = "STRATA_SIDECAR_IMAGE"
DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DEFAULT_SIDECAR_IMAGE = f"ghcr.io/strata-dev/strata-sidecar:{__version__}"

PROMETHEUS_OPERATOR_KINDS = (("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"))
# The versions of the custom metrics API an HPA reads (prometheus-adapter serves both).
CUSTOM_METRICS_APIS = ("custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1")
CHILD_KINDS = (
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    *PROMETHEUS_OPERATOR_KINDS,
)


def default_images() -> Images:
    return Images(triton=os.environ.get(TRITON_IMAGE_ENV) or DEFAULT_TRITON_IMAGE,
                  sidecar=os.environ.get(SIDECAR_IMAGE_ENV) or DEFAULT_SIDECAR_IMAGE)


@dataclass(frozen=True)
class ServingInputs(Inputs):
    # The model the spec names, or None with `unresolved` saying why.
    model: ServedModel | None = None
    unresolved: str | None = None
    deployment: dict[str, Any] | None = None
    prometheus_operator: bool = False
    # Whether a custom metrics API answers (the HPA's queue/compute target needs one).
    custom_metrics: bool = False
    images: Images = Images(triton=DEFAULT_TRITON_IMAGE, sidecar=DEFAULT_SIDECAR_IMAGE)


def exported_variant(exported: ExportedModel, backend: str | None) -> str:
    """The export's model directory to serve: the quantized one when the job quantized, on the
    PyTorch backend unless `backend: python` asks for the python-backend variant."""
    quantized = exported.quantization not in (None, "none")
    variant = exported.quantization if quantized else "torchscript"
    if backend == "python":
        variant = f"{exported.quantization}-python" if quantized else "python"
    # An export recorded without its variants (an older operator) names its plain model only.
    return exported.variants.get(variant, exported.model_name)


def s3_source(location: S3Location) -> dict[str, Any]:
    """ServedModel's fields for an S3 repository."""
    return {"s3_uri": location.uri.rstrip("/"), "s3_endpoint": location.endpoint,
            "s3_secret": location.secret_ref.name if location.secret_ref else None}


def model_from_export(job_name: str, exported: ExportedModel | None, backend: str | None = None) -> tuple[ServedModel | None, str | None]:
    """Pure: the model a TrainingJob exported, from its status.exportedModel (the repository it
    wrote to, its model directories and the version)."""
    if exported is None:
        return None, (f'TrainingJob "{job_name}" has not exported a model yet (status.exportedModel is unset); '
                      "serving starts when it has.")
    name = exported_variant(exported, backend)
    location = exported.repository
    if location.s3 is not None:
        return ServedModel(name=name, version=exported.version, **s3_source(location.s3)), None
    return ServedModel(name=name, version=exported.version, claim=location.pvc.claim_name,
                       path=location.pvc.path.strip("/")), None


def model_from_spec(spec: ModelDeploymentSpec) -> ServedModel | None:
    repository = spec.model.repository
    if repository is None:
        return None
    location = repository.location
    if location.s3 is not None:
        return ServedModel(name=repository.name, version=repository.version, **s3_source(location.s3))
    return ServedModel(name=repository.name, version=repository.version, claim=location.pvc.claim_name,
                       path=location.pvc.path.strip("/"))


def resolve(info: KindInfo, body: dict[str, Any], spec: ModelDeploymentSpec) -> ServingInputs:
    namespace = body["metadata"]["namespace"]
    base = resolve_references(info, body, spec)
    model, unresolved = model_from_spec(spec), None
    job_ref = spec.model.training_job
    if job_ref is not None and not base.missing:
        jobs = k8s.list_objects(TRAINING_JOB, namespace, job_ref.name)
        if jobs:
            exported_data = (jobs[0].get("status") or {}).get("exportedModel")
            try:
                exported = ExportedModel.model_validate(exported_data) if exported_data else None
            except ValueError:
                exported = None  # written by an older operator; its next pass rewrites it
            model, unresolved = model_from_export(job_ref.name, exported, spec.model.backend)
    # The Deployment is named after its owner; its name is not known here, so find it by owner labels.
    return ServingInputs(
        namespace=namespace,
        missing=base.missing,
        model=model,
        unresolved=unresolved,
        prometheus_operator=all(k8s.serves_kind(api_version, kind) for api_version, kind in PROMETHEUS_OPERATOR_KINDS),
        custom_metrics=spec.autoscaling is not None and any(map(k8s.serves_api, CUSTOM_METRICS_APIS)),
        images=default_images(),
    )


def live_deployment(info: KindInfo, body: dict[str, Any]) -> dict[str, Any] | None:
    meta = body["metadata"]
    for deployment in k8s.list_children("apps/v1", "Deployment", meta["namespace"], owner_labels(info, meta["name"])):
        if deployment["metadata"]["name"] == meta["name"]:
            return deployment
    return None


def plan(info: KindInfo, body: dict[str, Any], spec: ModelDeploymentSpec, inputs: ServingInputs) -> RolloutPlan:
    return plan_rollout(spec.rollout, inputs.model, live_deployment(info, body))


def render(info: KindInfo, body: dict[str, Any], spec: ModelDeploymentSpec, inputs: ServingInputs) -> list[dict[str, Any]]:
    """Decide the rollout (reads the live Deployment), say what changed, render (pure)."""
    rollout = plan(info, body, spec, inputs)
    if rollout.newly_available is not None:
        k8s.post_event(body, "Normal", Reason.AVAILABLE,
                       f"Model {rollout.newly_available.describe()} is available on every desired replica")
    if rollout.newly_failed and rollout.rollback is not None:
        reason = Reason.ROLLED_BACK if rollout.rollback.get("restored") else Reason.ROLLOUT_FAILED
        k8s.post_event(body, "Warning", reason, rollout.rollback["message"])
    return render_model_deployment(info, body, spec, rollout, inputs.images, inputs.prometheus_operator,
                                   inputs.custom_metrics)


def observe(info: KindInfo, spec: ModelDeploymentSpec, inputs: ServingInputs, children: list[dict[str, Any]]) -> Outcome:
    monitoring = {ConditionType.PROMETHEUS_MONITORING: monitoring_condition(inputs.prometheus_operator)}
    scaling = autoscaling_condition(spec, inputs.custom_metrics)
    if scaling is not None:
        monitoring[ConditionType.QUEUE_AUTOSCALING] = scaling
    deployment = next((child for child in children if child["kind"] == "Deployment"), None)
    if deployment is None:
        if inputs.missing:
            outcome = missing_reference_outcome(inputs.missing, inputs.namespace)
            outcome.extra_conditions = monitoring
            return outcome
        if inputs.model is None:
            message = inputs.unresolved or "The model to serve could not be resolved."
            return Outcome(
                phase=Phase.WAITING,
                ready=(ConditionStatus.FALSE, Reason.MODEL_NOT_EXPORTED, message),
                progressing=(ConditionStatus.FALSE, Reason.MODEL_NOT_EXPORTED, message),
                degraded=(ConditionStatus.TRUE, Reason.MODEL_NOT_EXPORTED, message),
                extra_conditions=monitoring,
            )
    name = deployment["metadata"]["name"] if deployment else ""
    # Unresolvable now (the TrainingJob went, or lost its export): what is served stays served.
    target = inputs.model if inputs.model is not None else templated_model(deployment)
    phase, conditions, extra = observe_serving(spec, name, inputs.namespace, target, children,
                                               inputs.prometheus_operator)
    degraded = conditions[ConditionType.DEGRADED]
    if inputs.missing:
        degraded = missing_reference_outcome(inputs.missing, inputs.namespace).degraded
    elif inputs.model is None:
        degraded = (ConditionStatus.TRUE, Reason.MODEL_NOT_EXPORTED,
                    f"{inputs.unresolved} Serving {target.describe() if target else 'nothing'} meanwhile.")
    return Outcome(
        phase=phase,
        ready=conditions[ConditionType.READY],
        progressing=conditions[ConditionType.PROGRESSING],
        degraded=degraded,
        extra_status=extra,
        extra_conditions=monitoring,
    )


register_kind(MODEL_DEPLOYMENT, resolve, render, observe, child_kinds=CHILD_KINDS)
