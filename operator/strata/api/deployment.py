"""ModelDeployment: Triton Inference Server behind a Service, autoscaled, with a monitoring sidecar."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from strata.api.base import (
    Fraction,
    KindInfo,
    LocalObjectRef,
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
        json_schema_extra=cel((exactly_one_of("trainingJob", "repository"), "set exactly one of trainingJob or repository"))
    )

    training_job: LocalObjectRef | None = Field(default=None, description="Serve what this TrainingJob exported.")
    repository: RepositoryModel | None = None


class DynamicBatching(StrataModel):
    preferred_batch_sizes: list[int] = Field(default_factory=list, max_length=16)
    max_queue_delay_microseconds: int = Field(default=100, ge=0, le=10_000_000)


class InstanceGroup(StrataModel):
    kind: Literal["GPU", "CPU"] = "GPU"
    count: int = Field(default=1, ge=1, le=64)


class Triton(StrataModel):
    image: str = Field(default="nvcr.io/nvidia/tritonserver:25.10-py3", max_length=512)
    max_batch_size: int = Field(default=8, ge=0, le=4096, description="0 disables batching.")
    dynamic_batching: DynamicBatching | None = None
    instance_groups: list[InstanceGroup] = Field(default_factory=lambda: [InstanceGroup()], max_length=8)


class ServingResources(StrataModel):
    gpus: int = Field(default=1, ge=0, le=16)
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253)
    cpu: Quantity = "2"
    memory: Quantity = "16Gi"


class Autoscaling(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas"),
        )
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    queue_compute_ratio: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Scale out when Triton's queue time per request exceeds this multiple of its compute time.",
    )


class Rollout(StrataModel):
    progress_deadline_seconds: int = Field(default=600, ge=30, le=86400)
    auto_rollback: bool = Field(default=True, description="Return to the previous model version if the new one fails.")
    revision_history: int = Field(default=5, ge=1, le=100)


class APIKeys(StrataModel):
    secret_ref: SecretRef = Field(description="Secret whose values are the accepted API keys.")


class Auth(StrataModel):
    api_keys: APIKeys | None = None


class RateLimit(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(("double(self.burst) >= self.requestsPerSecond", "burst must be at least requestsPerSecond", ".burst"))
    )

    requests_per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=10_000_000)
    per: Literal["apiKey", "clientIP", "global"] = "apiKey"


class Access(StrataModel):
    auth: Auth | None = None
    rate_limit: RateLimit | None = None


class Monitoring(StrataModel):
    audit_sample_rate: Fraction = Field(default=0.05, description="Share of requests written to the audit log.")
    redact: list[Literal["pii", "secrets"]] = Field(default_factory=list, max_length=4)
    drift: bool = True
    toxicity: bool = False


class ModelDeploymentSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.autoscaling) || !has(self.replicas)",
                "set replicas or autoscaling, not both",
                ".replicas",
            ),
        )
    )

    model: ModelSource
    triton: Triton = Field(default_factory=Triton)
    resources: ServingResources = Field(default_factory=ServingResources)
    replicas: int | None = Field(default=None, ge=0, le=1000, description="Fixed replica count when not autoscaling.")
    autoscaling: Autoscaling | None = None
    rollout: Rollout = Field(default_factory=Rollout)
    access: Access | None = None
    monitoring: Monitoring = Field(default_factory=Monitoring)

    def references(self) -> list[ObjectReference]:
        job = self.model.training_job
        return [ObjectReference("TrainingJob", job.name, "spec.model.trainingJob.name")] if job else []


class Endpoints(StrataModel):
    grpc: str | None = Field(default=None, max_length=512)
    http: str | None = Field(default=None, max_length=512)
    metrics: str | None = Field(default=None, max_length=512)


class Replicas(StrataModel):
    ready: int = Field(default=0, ge=0)
    desired: int = Field(default=0, ge=0)


class ModelVersions(StrataModel):
    current: int | None = Field(default=None, ge=1)
    previous: int | None = Field(default=None, ge=1)


class ModelDeploymentStatus(StatusBase):
    endpoints: Endpoints | None = None
    replicas: Replicas | None = None
    model_version: ModelVersions | None = None
    ready_replicas: str | None = Field(default=None, max_length=32, description='"ready/desired", for kubectl get.')


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
