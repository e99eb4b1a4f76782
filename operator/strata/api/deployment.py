"""ModelDeployment: Triton Inference Server behind a Service, autoscaled, with a monitoring sidecar."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from strata.api.base import (
    Fraction,
    KindInfo,
    LocalObjectRef,
    PVCLocation,
    ObjectReference,
    PrinterColumn,
    Quantity,
    SecretRef,
    StatusBase,
    StorageLocation,
    StrataModel,
    cel,
    exactly_one_of,
)


class RepositoryModel(StrataModel):
    location: StorageLocation = Field(description="Triton model repository holding the model.")
    name: str = Field(max_length=253, pattern=r"^[A-Za-z0-9_.-]+$", description="Model directory in the repository.")
    version: int | None = Field(default=None, ge=1, description="Model version to serve; the newest when unset.")


class ModelSource(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (exactly_one_of("trainingJob", "repository"), "set exactly one of trainingJob or repository"),
            ("!has(self.backend) || has(self.trainingJob)",
             "backend picks a variant of a TrainingJob's export; for a repository model, name its directory in repository.name",
             ".backend"),
        )
    )

    training_job: LocalObjectRef | None = Field(default=None, description="Serve what this TrainingJob exported.")
    repository: RepositoryModel | None = Field(default=None, description="Serve a model already in a Triton model repository.")
    backend: Literal["pytorch", "python"] | None = Field(
        default=None,
        description="Which variant of the TrainingJob's export to serve: pytorch (the TorchScript model on Triton's "
                    "PyTorch backend; the default) or python (the same model run by torch in Triton's python "
                    "backend, for Triton builds without the PyTorch backend). Quantized when the job's export is.",
    )


class DynamicBatching(StrataModel):
    preferred_batch_sizes: list[int] = Field(default_factory=list, max_length=16, description="Batch sizes Triton tries to form; any size up to maxBatchSize when empty.")
    max_queue_delay_microseconds: int = Field(default=100, ge=0, le=10_000_000, description="Longest a request waits for a batch to fill (microseconds).")


class InstanceGroup(StrataModel):
    kind: Literal["GPU", "CPU"] = Field(default="GPU", description="Run these model instances on GPU or CPU.")
    count: int = Field(default=1, ge=1, le=64, description="Model instances of this kind per replica.")


class Triton(StrataModel):
    image: str | None = Field(default=None, max_length=512, description="Triton Inference Server image; the operator's default (its STRATA_TRITON_IMAGE setting) when unset.")
    max_batch_size: int = Field(default=8, ge=0, le=4096, description="0 disables batching.")
    dynamic_batching: DynamicBatching | None = Field(default=None, description="Let Triton batch concurrent requests; no batching across requests when unset.")
    instance_groups: list[InstanceGroup] = Field(default_factory=lambda: [InstanceGroup()], max_length=8, description="Model instances per replica; one GPU instance when unset.")


class ServingResources(StrataModel):
    gpus: int = Field(default=1, ge=0, le=16, description="GPUs per replica.")
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253, description="Extended resource name of the GPUs to request.")
    cpu: Quantity = Field(default="2", description="CPU request and limit per replica, as a quantity (cores: 2, 500m).")
    memory: Quantity = Field(default="16Gi", description="Memory request and limit per replica, as a quantity (bytes: 16Gi, 512Mi).")


class Autoscaling(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas"),
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    queue_compute_ratio: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Scale out when Triton's queue time per request exceeds this multiple of its compute time "
        "(a per-pod custom metric served by prometheus-adapter; see the chart's prometheus-adapter rule).",
    )
    cpu_utilization: int | None = Field(
        default=None, ge=1, le=1000,
        description="Also scale out when CPU use exceeds this percentage of the requested CPU; not a target when unset.",
    )
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600, description="How long a higher replica count must be recommended before scaling up (seconds).")
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600, description="How long a lower replica count must be recommended before scaling down (seconds).")


class Rollout(StrataModel):
    progress_deadline_seconds: int = Field(default=600, ge=30, le=86400, description="Time a new model version has to become ready (seconds).")
    auto_rollback: bool = Field(default=True, description="Return to the previous model version if the new one fails.")
    revision_history: int = Field(default=5, ge=1, le=100, description="Previous model versions kept for rollback.")


class APIKeys(StrataModel):
    secret_ref: SecretRef = Field(description="Secret whose values are the accepted API keys.")


class Auth(StrataModel):
    api_keys: APIKeys | None = Field(default=None, description="Require one of these API keys on every request.")


class RateLimit(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(("double(self.burst) >= self.requestsPerSecond", "burst must be at least requestsPerSecond", ".burst"))
    )

    requests_per_second: float = Field(gt=0, le=1_000_000, description="Sustained requests allowed per second.")
    burst: int = Field(ge=1, le=10_000_000, description="Requests allowed at once above the sustained rate.")
    per: Literal["apiKey", "clientIP", "global"] = Field(default="apiKey", description="Limit each API key, each client IP, or all traffic together.")


class Access(StrataModel):
    auth: Auth | None = Field(default=None, description="Who may call the model; anyone in the cluster when unset.")
    rate_limit: RateLimit | None = Field(default=None, description="Requests allowed per second; unlimited when unset.")


class MonitoringStorage(StrataModel):
    pvc: PVCLocation = Field(description="A ReadWriteMany claim (yours: Strata never creates or deletes it) and a directory "
                                         "in it; each pod keeps its records in <path>/<pod name>.")
    retention_days: int = Field(default=30, ge=1, le=3650,
                                description="Days a gone pod's records are kept after its sidecar was last alive.")


class Monitoring(StrataModel):
    audit_sample_rate: Fraction = Field(default=0.05, description="Share of requests written to the audit log.")
    redact: list[Literal["pii", "secrets"]] = Field(default_factory=list, max_length=4, description="Remove PII and/or secrets from audited requests and responses.")
    drift: bool = Field(default=True, description="Compare request inputs to the training data (for FeedbackPolicy drift monitors).")
    drift_sample_rate: Fraction = Field(default=0.1, description="Share of requests whose inputs are summarised for drift (at most 50 per second per sidecar process).")
    toxicity: bool = Field(default=False, description="Score responses for toxicity (for FeedbackPolicy toxicity monitors).")
    input_samples_per_minute: int = Field(
        default=0, ge=0, le=1000,
        description="Keep up to this many of the requests sampled for drift per minute, their text or token-id inputs "
                    "whole (texts redacted as audit lines are), in the sidecar's memory for a FeedbackPolicy's embedding "
                    "drift test; 0 keeps none.")
    storage: MonitoringStorage | None = Field(
        default=None,
        description="Where sidecars keep feedback, the review queue and the audit log so that they outlive pods (a rollout or "
                    "a scale-in replaces pods); each pod's own emptyDir, lost with the pod, when unset.")


class ModelDeploymentSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.autoscaling) || !has(self.replicas)",
                "set replicas or autoscaling, not both",
                ".replicas",
            ),
            (
                "self.resources.gpus > 0 || !self.triton.instanceGroups.exists(g, g.kind == 'GPU')",
                "a GPU instance group needs resources.gpus of at least 1; to serve on CPU set triton.instanceGroups to [{kind: CPU}]",
                ".resources.gpus",
            ),
        )
    )

    model: ModelSource = Field(description="What to serve: a TrainingJob's export or a model in a repository.")
    triton: Triton = Field(default_factory=Triton, description="Triton server image, batching and model instances.")
    resources: ServingResources = Field(default_factory=ServingResources, description="GPUs, CPU and memory of each replica.")
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Fixed replica count when not autoscaling.")
    autoscaling: Autoscaling | None = Field(default=None, description="Scale replicas on Triton's queue time; fixed replicas when unset.")
    rollout: Rollout = Field(default_factory=Rollout, description="How a new model version replaces the old one.")
    access: Access | None = Field(default=None, description="Authentication and rate limits; open within the cluster when unset.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Auditing, redaction, drift and toxicity scoring of traffic.")

    def references(self) -> list[ObjectReference]:
        job = self.model.training_job
        return [ObjectReference("TrainingJob", job.name, "spec.model.trainingJob.name")] if job else []


class Endpoints(StrataModel):
    grpc: str | None = Field(default=None, max_length=512, description="Triton's gRPC endpoint (host:port).")
    http: str | None = Field(default=None, max_length=512, description="Triton's HTTP endpoint (URL).")
    metrics: str | None = Field(default=None, max_length=512, description="Triton's Prometheus metrics (URL).")


class Replicas(StrataModel):
    ready: int = Field(default=0, ge=0, description="Replicas ready to serve.")
    desired: int = Field(default=0, ge=0, description="Replicas wanted now.")


class ModelVersions(StrataModel):
    current: int | None = Field(default=None, ge=1, description="Model version served now.")
    previous: int | None = Field(default=None, ge=1, description="Model version served before, the rollback target.")
    target: int | None = Field(default=None, ge=1, description="Model version the spec asks for; differs from current while it rolls out or after it was rolled back.")


class ModelRevision(StrataModel):
    version: int | None = Field(default=None, ge=1, description="Model version served; unset when the repository's newest version was served.")
    model_name: str = Field(max_length=253, description="Model name in the repository.")
    source: str = Field(max_length=1024, description="Repository the model was served from (pvc://claim/path or s3://bucket/prefix).")


class Rollback(StrataModel):
    failed_version: int | None = Field(default=None, ge=1, description="Model version that did not become available in time.")
    restored_version: int | None = Field(default=None, ge=1, description="Model version served again in its place.")
    message: str = Field(default="", max_length=4096, description="What happened, in a sentence.")


class ModelDeploymentStatus(StatusBase):
    endpoints: Endpoints | None = Field(default=None, description="Where to reach the model.")
    replicas: Replicas | None = Field(default=None, description="Ready and desired replicas.")
    model_version: ModelVersions | None = Field(default=None, description="Current and previous model versions.")
    ready_replicas: str | None = Field(default=None, max_length=32, description='"ready/desired", for kubectl get.')
    revisions: list[ModelRevision] = Field(default_factory=list, max_length=100, description="Model revisions that became available, oldest first; at most rollout.revisionHistory.")
    rollback: Rollback | None = Field(default=None, description="Set while a failed model version is rolled back; cleared when the spec names another version.")


MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("smd", "mdep"),
    description="A model served by NVIDIA Triton behind a Service, autoscaled, with auth, rate limits and monitoring.",
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    columns=(
        PrinterColumn(name="Replicas", type="string", json_path=".status.readyReplicas", description="Ready/desired."),
        PrinterColumn(name="Model-Version", type="integer", json_path=".status.modelVersion.current"),
        PrinterColumn(name="Endpoint", type="string", json_path=".status.endpoints.grpc", priority=1),
    ),
)
