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
MAX_SEED = 2**32 - 1


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
    *others, last = SIZE_SETTINGS[setting][0]
    return f"{', '.join(others)} and {last} families" if others else f"{last} family"


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
    # No "prompt" value: every transformer continues a text prompt, so it would train exactly
    # as "none" does (an accepted value must have an effect).
    conditioning: Literal["none", "label"] = Field(
        default="none",
        description="none: unconditional (a transformer still continues any text prompt); label: condition on the Dataset's labelField.",
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
    precision: Literal["bf16", "fp16", "fp32"] = Field(default="bf16", description="Numeric format of training: bf16, fp16 (GPU only) or fp32.")
    micro_batch_size: int = Field(default=8, ge=1, le=65536, description="Samples per GPU per step.")
    gradient_accumulation: int = Field(default=1, ge=1, le=4096, description="Micro-batches summed before each optimizer step.")
    gradient_clipping: float = Field(default=1.0, ge=0, description="Max gradient norm; 0 disables clipping.")
    offload: Literal["none", "cpu"] = Field(default="none", description="Offload optimizer state to CPU memory.")


class Topology(StrataModel):
    nodes: int = Field(default=1, ge=1, le=1024, description="Worker pods (one per node).")
    gpus_per_node: int = Field(default=1, ge=0, le=16, description="0 trains on CPU (gloo).")
    gpu_resource: str = Field(default="nvidia.com/gpu", max_length=253, description="Extended resource to request.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Labels a node must have to run a worker.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32, description="Taints the workers tolerate (for example on GPU nodes).")
    queue_name: str | None = Field(
        default=None, max_length=63,
        description="Kueue LocalQueue to admit the job through: the worker group is created suspended and starts when Kueue admits all of it.",
    )
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass of the worker pods.")


class Hyperparameters(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.warmupSteps < self.maxSteps", "warmupSteps must be below maxSteps", ".warmupSteps"),
        )
    )

    learning_rate: float = Field(default=3.0e-4, gt=0, le=10, description="Peak learning rate of AdamW, reached after warmupSteps.")
    warmup_steps: int = Field(default=0, ge=0, description="Optimizer steps of linear warmup from 0 to learningRate.")
    max_steps: int = Field(default=1000, ge=1, le=100_000_000, description="Optimizer steps to train for.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(default="cosine", description="Decay of the learning rate after warmup: cosine, linear or constant.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="AdamW weight decay (0 to 1).")
    # Bounded as 32 bits: the trainer derives per-step and per-rank seeds from it by
    # multiplication, which must stay within torch's 64-bit generator seeds.
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of weights, data order and noise; the same seed replays the same run.")


class Checkpoints(StrataModel):
    every_steps: int = Field(default=1000, ge=1, description="Optimizer steps between checkpoints; one is also taken at the end and on SIGTERM.")
    keep: int = Field(default=3, ge=1, le=100, description="Newest checkpoints kept; older ones are deleted.")
    storage: StorageLocation | None = Field(default=None, description="Where checkpoints go (a PVC; S3 is refused for now); a scratch PVC when unset.")


class EarlyStopping(StrataModel):
    patience: int = Field(default=5, ge=1, le=1000, description="Validations without improvement before stopping.")
    metric: Literal["valLoss", "perplexity"] = Field(default="valLoss", description="Validation metric watched: valLoss, or perplexity (transformer only).")


class Validation(StrataModel):
    every_steps: int = Field(default=500, ge=1, description="Optimizer steps between validations.")
    fraction: float = Field(default=0.05, gt=0, lt=1, description="Share of the dataset held out for validation.")
    early_stopping: EarlyStopping | None = Field(default=None, description="Stop when the metric stops improving; train for maxSteps when unset.")


class Export(StrataModel):
    triton_repository: StorageLocation = Field(description="Triton model repository the trained model is written to: a PVC directory, or an S3 prefix that rank 0 uploads to; the version is one past the highest the repository has.")
    quantization: Literal["none", "int8", "fp16", "bf16"] = Field(
        default="none", description="Post-training quantization; the validation change is recorded in status."
    )


class Tracking(StrataModel):
    mlflow_uri: str = Field(max_length=1024, pattern=r"^https?://", description="MLflow tracking server URL.")
    experiment: str | None = Field(default=None, max_length=256, description="MLflow experiment name; \"strata\" when unset.")


class WorkerResources(StrataModel):
    cpu: Quantity = Field(default="4", description="CPU request and limit per worker, as a quantity (cores: 4, 500m).")
    memory: Quantity = Field(default="32Gi", description="Memory request and limit per worker, as a quantity (bytes: 32Gi, 512Mi).")


class TrainingJobSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.validation.earlyStopping) || self.validation.earlyStopping.metric != 'perplexity' "
                "|| self.model.family == 'transformer'",
                "early stopping on perplexity is only for the transformer family",
                ".validation.earlyStopping.metric",
            ),
            # What the trainer refuses before it starts (strata_workloads.train.config), refused
            # here too, so a job cannot be accepted and then fail on its first attempt.
            (
                "self.deepspeed.precision != 'fp16' || self.model.family != 'gan'",
                "fp16 is not supported for the gan family (its two engines' loss scalers would skip "
                "steps at different times); use bf16 or fp32",
                ".deepspeed.precision",
            ),
            (
                "self.deepspeed.precision != 'fp16' || self.topology.gpusPerNode > 0",
                "fp16 needs GPUs (DeepSpeed on CPU trains in bf16 or fp32); set topology.gpusPerNode, "
                "or use bf16 or fp32",
                ".deepspeed.precision",
            ),
        )
    )

    dataset: DatasetRef = Field(description="The Dataset to train on.")
    model: ModelSpec = Field(description="The model family and its size.")
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig, description="DeepSpeed settings: ZeRO stage, precision, batch size, offload.")
    topology: Topology = Field(default_factory=Topology, description="How many workers, GPUs per worker, and where they run.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Optimizer and learning-rate schedule.")
    checkpoints: Checkpoints = Field(default_factory=Checkpoints, description="How often checkpoints are taken, how many kept, and where.")
    validation: Validation = Field(default_factory=Validation, description="How often the held-out split is evaluated, and early stopping.")
    export: Export | None = Field(default=None, description="Write the trained model to a Triton model repository; no export when unset.")
    tracking: Tracking | None = Field(default=None, description="Log parameters, metrics and artifacts to MLflow; none when unset.")
    resources: WorkerResources = Field(default_factory=WorkerResources, description="CPU and memory of each worker pod.")
    retries: int = Field(default=3, ge=0, le=100, description="Restarts of the worker group, each resuming from a checkpoint.")
    image: str | None = Field(default=None, max_length=512, description="Trainer image; the operator's default when unset.")
    suspend: bool = Field(
        default=False,
        description="Stop the workers (each checkpoints on the way out); setting it back to false resumes from the last checkpoint.",
    )

    def references(self) -> list[ObjectReference]:
        return [ObjectReference("Dataset", self.dataset.name, "spec.dataset.name")]


class Progress(StrataModel):
    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    total_steps: int = Field(default=0, ge=0, description="Optimizer steps planned (maxSteps).")
    percent: int | None = Field(default=None, ge=0, le=100, description="Share of totalSteps done, in percent.")
    eta: str | None = Field(default=None, max_length=32, description="Estimated time to completion at the current rate (such as 12m30s).")
    estimated_completion_time: str | None = Field(default=None, max_length=64, description="When training should finish at the current rate (RFC 3339).")
    samples_per_second: float | None = Field(default=None, description="Training throughput over all workers (samples per second).")
    tokens_per_second: float | None = Field(default=None, description="Training throughput over all workers in tokens per second (text families).")


class Losses(StrataModel):
    train: float | None = Field(default=None, description="Training loss of the latest step.")
    validation: float | None = Field(default=None, description="Loss of the latest validation.")


class CheckpointRef(StrataModel):
    step: int = Field(ge=0, description="Optimizer step the checkpoint was taken at.")
    path: str = Field(max_length=1024, description="Where the checkpoint lives.")


class ExportedModel(StrataModel):
    repository: StorageLocation = Field(description="Triton model repository the model was written to (the spec's export.tritonRepository).")
    path: str = Field(max_length=1024, description="The repository as a readable location (pvc://claim/path or s3://bucket/prefix).")
    model_name: str = Field(max_length=253, description="Model name in the repository (the TrainingJob's name).")
    version: int = Field(ge=1, description="Model version directory in the repository.")
    quantization: str | None = Field(default=None, max_length=16, description="Quantization applied on export (none, int8, fp16 or bf16).")
    validation_change: float | None = Field(default=None, description="Quantized minus full-precision validation metric.")
    variants: dict[str, str] = Field(
        default_factory=dict, max_length=8,
        description="Model directories in the repository by variant: torchscript (Triton's PyTorch backend) and "
                    "python (its python backend), and <quantization> and <quantization>-python when quantized.",
    )


class Attempt(StrataModel):
    """One start of the worker group: an Indexed Job."""

    number: int = Field(ge=1, description="1 for the first start, then one more per group restart.")
    job: str = Field(max_length=253, description="The attempt's Job.")
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Interrupted"] = Field(
        description="Pending (not all workers running), Running, Succeeded, Failed, or Interrupted (stopped from outside after a checkpoint)."
    )
    resumed_from_step: int | None = Field(default=None, ge=0, description="Checkpoint step the attempt resumed from; unset for a fresh start.")
    start_time: str | None = Field(default=None, max_length=64, description="When the attempt's Job was created (RFC 3339).")
    end_time: str | None = Field(default=None, max_length=64, description="When the attempt ended (RFC 3339).")
    reason: str | None = Field(default=None, max_length=64, description="Why it ended, as one CamelCase word.")
    message: str | None = Field(default=None, max_length=2048, description="Why it ended, for people: the worker, its exit code and its last words.")


class TrainingJobStatus(StatusBase):
    dataset_version: str | None = Field(default=None, max_length=64, description="Dataset version the job trains on.")
    progress: Progress | None = Field(default=None, description="Steps done, percent, time to completion and throughput.")
    loss: Losses | None = Field(default=None, description="Latest training and validation loss.")
    last_checkpoint: CheckpointRef | None = Field(default=None, description="The newest complete checkpoint.")
    attempt: int | None = Field(default=None, ge=0, description="Starts of the worker group so far; above 1 after a restart.")
    resumed_from_step: int | None = Field(default=None, ge=0, description="Step the current attempt resumed from.")
    attempts: list[Attempt] = Field(default_factory=list, max_length=101, description="Every start of the worker group, oldest first.")
    metrics: dict[str, float] | None = Field(default=None, description="Final validation metrics of the trained model.")
    exported_model: ExportedModel | None = Field(default=None, description="Where the trained model was exported.")
    start_time: str | None = Field(
        default=None, max_length=64,
        description="When training started (RFC 3339): the worker group was first created. From then on only "
                    "retries and suspend may change in the spec.",
    )
    completion_time: str | None = Field(default=None, max_length=64, description="When training finished (RFC 3339).")


# Spec fields a running job takes up at once (the lead's spec.suspend included). Every other
# field defines the training, and is fixed once it has started (status.startTime is set): a
# restarted attempt resumes from this training's checkpoints, which a different model,
# dataset or batch size could not use. Before the start (waiting for the Dataset, say) every
# field may change. A field added to the spec is fixed unless it is listed here.
CHANGEABLE_WHILE_RUNNING = ("retries", "suspend")
# A root-level rule: only there does CEL see the status (a rule on spec sees spec alone).
_NOT_STARTED = "!has(oldSelf.status) || !has(oldSelf.status.startTime)"


def _fixed_once_started(field: str, optional: bool) -> dict[str, str]:
    """A transition rule refusing a change of spec.<field> once the job has started."""
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    if optional:  # set, changed, or unset
        unchanged = f"has({new}) == has({old}) && (!has({new}) || {new} == {old})"
    else:  # required, or defaulted by the API server: always present
        unchanged = f"{new} == {old}"
    return {
        "rule": f"{_NOT_STARTED} || ({unchanged})",
        "message": f"{field} cannot change once the TrainingJob has started: create a new TrainingJob with the new "
                   f"{field} (this one's checkpoints stay where they are), or set {field} back",
        "fieldPath": f".spec.{field}",
    }


def _fixed_fields_rules() -> tuple[dict[str, str], ...]:
    return tuple(
        _fixed_once_started(field.alias or name, optional=not field.is_required() and field.default is None)
        for name, field in TrainingJobSpec.model_fields.items()
        if (field.alias or name) not in CHANGEABLE_WHILE_RUNNING
    )


TRAINING_JOB = KindInfo(
    kind="TrainingJob",
    plural="trainingjobs",
    short_names=("stj", "tjob"),
    description="Distributed DeepSpeed training of a transformer, VAE, GAN or diffusion model, exported for Triton.",
    spec_model=TrainingJobSpec,
    status_model=TrainingJobStatus,
    columns=(
        PrinterColumn(name="Step", type="integer", json_path=".status.progress.step"),
        PrinterColumn(name="Percent", type="integer", json_path=".status.progress.percent", description="Share of the planned steps done."),
        PrinterColumn(name="ETA", type="string", json_path=".status.progress.eta", description="Estimated time to completion."),
        PrinterColumn(name="Loss", type="number", json_path=".status.loss.train", description="Latest training loss."),
        PrinterColumn(name="Family", type="string", json_path=".spec.model.family", priority=1),
        PrinterColumn(name="Total", type="integer", json_path=".status.progress.totalSteps", priority=1),
        PrinterColumn(name="Val-Loss", type="number", json_path=".status.loss.validation", priority=1),
        PrinterColumn(name="Attempt", type="integer", json_path=".status.attempt", priority=1),
    ),
    object_rules=(
        {
            # The export is named after the job, and Triton model names take no dots, which
            # object names may have. Refused at creation, not on the trainer's first attempt.
            # No fieldPath: the schema does not describe metadata, so the message names the field.
            "rule": "!self.metadata.name.contains('.')",
            "message": "metadata.name must not contain '.': it names the exported Triton model, which takes "
                       "letters, digits, '-' and '_' only; use '-' instead",
        },
        *_fixed_fields_rules(),
    ),
)
