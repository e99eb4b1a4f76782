"""TrainingJob: DeepSpeed training of a model family on a Dataset version, exported for Triton."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from strata.api.base import (
    DNS1123Name,
    KindInfo,
    ObjectReference,
    PrinterColumn,
    Quantity,
    StatusBase,
    StorageLocation,
    StrataModel,
    Toleration,
    cel,
)

ModelFamily = Literal["transformer", "vae", "gan", "diffusion"]


class DatasetRef(StrataModel):
    name: DNS1123Name = Field(description="Dataset in the same namespace.")
    version: str | None = Field(
        default=None, max_length=64, description="Pin a version; the Dataset's current version when unset."
    )


# Which families read each size setting, and its default there. A setting given to a family
# that does not read it is refused (it would have no effect); an unset one is filled in when
# the trainer's config is rendered, so an object does not carry other families' defaults.
# The image shape of vae, gan and diffusion models is the Dataset's (preprocessing.image).
SIZE_SETTINGS: dict[str, tuple[tuple[str, ...], int]] = {
    "layers": (("transformer",), 6),
    "hidden": (("transformer", "vae", "gan"), 512),
    "heads": (("transformer",), 8),
    "contextLength": (("transformer",), 512),
    "latentDim": (("vae", "gan"), 64),
    "diffusionSteps": (("diffusion",), 1000),
}


def _families(setting: str) -> str:
    families = SIZE_SETTINGS[setting][0]
    return f"{' and '.join(families)} famil{'ies' if len(families) > 1 else 'y'}"


def _size_description(setting: str, what: str) -> str:
    return f"{what} Read by the {_families(setting)} only; default {SIZE_SETTINGS[setting][1]}."


def _size_or_default(setting: str) -> str:
    return f"(has(self.size.{setting}) ? self.size.{setting} : {SIZE_SETTINGS[setting][1]})"


def _applies_only_to(setting: str) -> tuple[str, str, str]:
    listed = ", ".join(f"'{family}'" for family in SIZE_SETTINGS[setting][0])
    return (
        f"!has(self.size.{setting}) || self.family in [{listed}]",
        f"{setting} applies only to the {_families(setting)}",
        f".size.{setting}",
    )


class ModelSize(StrataModel):
    """Size settings; each family reads its own, and the others are refused for it."""

    layers: int | None = Field(default=None, ge=1, le=256, description=_size_description("layers", "Transformer blocks."))
    hidden: int | None = Field(
        default=None, ge=8, le=65536,
        description=_size_description("hidden", "Width of the hidden layers (the transformer's embedding size)."),
    )
    heads: int | None = Field(
        default=None, ge=1, le=256, description=_size_description("heads", "Attention heads; must divide hidden.")
    )
    context_length: int | None = Field(
        default=None, ge=8, le=1_048_576, description=_size_description("contextLength", "Tokens per sequence.")
    )
    latent_dim: int | None = Field(
        default=None, ge=2, le=8192, description=_size_description("latentDim", "Length of the latent (noise) vector.")
    )
    diffusion_steps: int | None = Field(
        default=None, ge=10, le=10000, description=_size_description("diffusionSteps", "Steps of the noise schedule.")
    )

    def resolved(self, family: str) -> dict[str, int]:
        """The settings `family` reads, camelCase, each as given or its default."""
        given = self.to_wire()
        return {
            setting: given.get(setting, default)
            for setting, (families, default) in SIZE_SETTINGS.items()
            if family in families
        }


class ModelSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.conditioning != 'prompt' || self.family == 'transformer'",
                "prompt conditioning is only for the transformer family",
                ".conditioning",
            ),
            (
                f"self.family != 'transformer' || {_size_or_default('hidden')} % {_size_or_default('heads')} == 0",
                "hidden must be a multiple of heads",
                ".size.heads",
            ),
            *(_applies_only_to(setting) for setting in SIZE_SETTINGS),
        )
    )

    family: ModelFamily = Field(
        description="What to train: transformer (text), or vae, gan or diffusion (images, shaped by the Dataset)."
    )
    size: ModelSize = Field(
        default_factory=ModelSize,
        description="Size settings. The image shape comes from the Dataset (preprocessing.image width and height).",
    )
    conditioning: Literal["none", "label", "prompt"] = Field(
        default="none",
        description="none: unconditional; label: condition on the Dataset's labelField; prompt: a text prefix (transformer).",
    )


class DeepSpeedConfig(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.offload == 'none' || self.zeroStage >= 1",
                "offload needs zeroStage 1, 2 or 3",
                ".offload",
            ),
        )
    )

    zero_stage: int = Field(default=2, ge=0, le=3, description="ZeRO stage: 0 off, 1 optimizer, 2 +gradients, 3 +parameters.")
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    micro_batch_size: int = Field(default=8, ge=1, le=65536, description="Samples per GPU per step.")
    gradient_accumulation: int = Field(default=1, ge=1, le=4096)
    gradient_clipping: float = Field(default=1.0, ge=0, description="Max gradient norm; 0 disables clipping.")
    offload: Literal["none", "cpu"] = Field(default="none", description="Offload optimizer state to CPU memory.")


class Topology(StrataModel):
    nodes: int = Field(default=1, ge=1, le=1024)
    gpus_per_node: int = Field(default=1, ge=0, le=16, description="0 trains on CPU (gloo).")
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253, description="Extended resource to request.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    queue_name: str | None = Field(default=None, max_length=63, description="Kueue LocalQueue to admit the job through.")


class Hyperparameters(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.warmupSteps < self.maxSteps", "warmupSteps must be below maxSteps", ".warmupSteps"),
        )
    )

    learning_rate: float = Field(default=3.0e-4, gt=0, le=10)
    warmup_steps: int = Field(default=0, ge=0)
    max_steps: int = Field(default=1000, ge=1, le=100_000_000)
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seed: int = Field(default=0, ge=0)


class Checkpoints(StrataModel):
    every_steps: int = Field(default=1000, ge=1)
    keep: int = Field(default=3, ge=1, le=100, description="Newest checkpoints kept; older ones are deleted.")
    storage: StorageLocation | None = Field(default=None, description="Where checkpoints go; a scratch PVC when unset.")


class EarlyStopping(StrataModel):
    patience: int = Field(default=5, ge=1, le=1000, description="Validations without improvement before stopping.")
    metric: Literal["valLoss", "perplexity"] = "valLoss"


class Validation(StrataModel):
    every_steps: int = Field(default=500, ge=1)
    fraction: float = Field(default=0.05, gt=0, lt=1, description="Share of the dataset held out for validation.")
    early_stopping: EarlyStopping | None = None


class Export(StrataModel):
    triton_repository: StorageLocation = Field(description="Triton model repository the trained model is written to.")
    quantization: Literal["none", "int8", "fp16", "bf16"] = Field(
        default="none", description="Post-training quantization; the validation change is recorded in status."
    )


class Tracking(StrataModel):
    mlflow_uri: str = Field(max_length=1024, pattern=r"^https?://", description="MLflow tracking server URL.")
    experiment: str | None = Field(default=None, max_length=256)


class WorkerResources(StrataModel):
    cpu: Quantity = Field(default="4", description="CPU request and limit per worker.")
    memory: Quantity = Field(default="32Gi", description="Memory request and limit per worker.")


class TrainingJobSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.validation.earlyStopping) || self.validation.earlyStopping.metric != 'perplexity' "
                "|| self.model.family == 'transformer'",
                "early stopping on perplexity is only for the transformer family",
                ".validation.earlyStopping.metric",
            ),
        )
    )

    dataset: DatasetRef
    model: ModelSpec
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    topology: Topology = Field(default_factory=Topology)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    validation: Validation = Field(default_factory=Validation)
    export: Export | None = None
    tracking: Tracking | None = None
    resources: WorkerResources = Field(default_factory=WorkerResources)
    retries: int = Field(default=3, ge=0, le=100, description="Restarts of the worker group, each resuming from a checkpoint.")
    image: str | None = Field(default=None, max_length=512, description="Trainer image; the operator's default when unset.")

    def references(self) -> list[ObjectReference]:
        return [ObjectReference("Dataset", self.dataset.name, "spec.dataset.name")]


class Progress(StrataModel):
    step: int = Field(default=0, ge=0)
    total_steps: int = Field(default=0, ge=0)
    samples_per_second: float | None = None


class Losses(StrataModel):
    train: float | None = None
    validation: float | None = None


class CheckpointRef(StrataModel):
    step: int = Field(ge=0)
    path: str = Field(max_length=1024)


class ExportedModel(StrataModel):
    path: str = Field(max_length=1024)
    model_name: str = Field(max_length=253)
    version: int = Field(ge=1)
    quantization: str | None = Field(default=None, max_length=16)
    validation_change: float | None = Field(default=None, description="Quantized minus full-precision validation metric.")


class TrainingJobStatus(StatusBase):
    dataset_version: str | None = Field(default=None, max_length=64)
    progress: Progress | None = None
    loss: Losses | None = None
    last_checkpoint: CheckpointRef | None = None
    attempt: int | None = Field(default=None, ge=0)
    resumed_from_step: int | None = Field(default=None, ge=0)
    exported_model: ExportedModel | None = None
    start_time: str | None = Field(default=None, max_length=64)
    completion_time: str | None = Field(default=None, max_length=64)


TRAINING_JOB = KindInfo(
    kind="TrainingJob",
    plural="trainingjobs",
    short_names=("stj", "tjob"),
    description="Distributed DeepSpeed training of a transformer, VAE, GAN or diffusion model, exported for Triton.",
    spec_model=TrainingJobSpec,
    status_model=TrainingJobStatus,
    columns=(
        PrinterColumn(name="Family", type="string", json_path=".spec.model.family"),
        PrinterColumn(name="Step", type="integer", json_path=".status.progress.step"),
        PrinterColumn(name="Total", type="integer", json_path=".status.progress.totalSteps", priority=1),
        PrinterColumn(name="Loss", type="number", json_path=".status.loss.train", description="Latest training loss."),
        PrinterColumn(name="Val-Loss", type="number", json_path=".status.loss.validation", priority=1),
    ),
)
