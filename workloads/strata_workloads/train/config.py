"""Trainer configuration: the file the operator renders from a TrainingJob spec.

Keys are camelCase, mirroring the custom resource (``deepspeed.zeroStage``); snake_case is
accepted too for hand-written files. Unknown keys are rejected so a typo in a TrainingJob is
not silently ignored. Loading errors are :class:`ConfigError` whose message names every bad
setting by its dotted path, e.g. ``deepspeed.zeroStage: must be 0..3, got 4``.

This module imports neither torch nor deepspeed so invalid configuration fails in well under
a second, before the heavy imports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from strata_workloads import configfile
from strata_workloads.data.config import S3Source

CONFIG_ENV = "STRATA_TRAIN_CONFIG"

Family = Literal["transformer", "vae", "gan", "diffusion"]
FAMILIES: tuple[str, ...] = ("transformer", "vae", "gan", "diffusion")
IMAGE_FAMILIES = ("vae", "gan", "diffusion")
# Families built from repeated blocks (transformer layers, U-Net residual blocks): what
# activation checkpointing and regional compilation work on.
BLOCK_FAMILIES = ("transformer", "diffusion")

# What each family reports after a validation (the models' metric_names): the metrics early
# stopping can watch. Here, without torch, so a configuration is judged before the imports.
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "transformer": ("loss", "perplexity"),
    "vae": ("loss", "reconstruction", "kl"),
    "gan": ("loss", "generatorLoss", "discriminatorLoss", "momentDistance"),
    "diffusion": ("loss",),
}
# Per-step and per-rank seeds are derived from the seed by multiplication; 32 bits keep them
# within torch's 64-bit generator seeds.
MAX_SEED = 2**32 - 1

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ConfigError(configfile.ConfigError):
    """Invalid trainer configuration; the message names the offending setting(s)."""


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ModelSize(_Section):
    """Size knobs; each family reads the ones it needs and ignores the rest."""

    layers: PositiveInt = 2
    hidden: PositiveInt = 64
    heads: PositiveInt = 4
    context_length: PositiveInt = 64  # transformer: tokens per example
    latent_dim: PositiveInt = 16  # vae, gan
    base_channels: PositiveInt = 16  # diffusion U-Net, gan/vae conv widths
    diffusion_steps: PositiveInt = 100  # diffusion: T of the noise schedule
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class ModelConfig(_Section):
    family: Family
    size: ModelSize = ModelSize()
    # Conditioning: labels in [0, numClasses). 0 means unconditional; -1 means "take it from the
    # dataset manifest" (numClasses there).
    num_classes: Annotated[int, Field(ge=-1)] = -1

    @field_validator("family", mode="before")
    @classmethod
    def _known_family(cls, value: Any) -> Any:
        if value not in FAMILIES:
            raise ValueError(f"unknown model family {value!r}; expected one of {', '.join(FAMILIES)}")
        return value

    @field_validator("size")
    @classmethod
    def _heads_divide_hidden(cls, size: ModelSize, info: ValidationInfo) -> ModelSize:
        # Only the transformer has attention heads; other families read hidden alone.
        if info.data.get("family") == "transformer" and size.hidden % size.heads:
            raise ValueError(f"hidden ({size.hidden}) must be divisible by heads ({size.heads})")
        return size


class DeepSpeedConfig(_Section):
    zero_stage: int = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    micro_batch_size: PositiveInt = 8
    gradient_accumulation: PositiveInt = 1
    offload: Literal["none", "cpu"] = "none"
    gradient_clipping: Annotated[float, Field(ge=0.0)] = 1.0
    # Passed through to deepspeed.init_distributed; gloo is what works without GPUs.
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _zero_stage_range(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3:
            raise ValueError(f"must be 0..3, got {value!r}")
        return value

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "DeepSpeedConfig":
        if self.offload == "cpu" and self.zero_stage == 0:
            raise ValueError("offload: cpu needs zeroStage >= 1 (ZeRO-Offload partitions optimizer state)")
        return self


class Hyperparameters(_Section):
    learning_rate: Annotated[float, Field(gt=0.0)] = 3e-4
    min_learning_rate: Annotated[float, Field(ge=0.0)] = 0.0
    warmup_steps: NonNegativeInt = 0
    max_steps: PositiveInt = 100
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 1234

    @model_validator(mode="after")
    def _schedule_consistent(self) -> "Hyperparameters":
        if self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"minLearningRate ({self.min_learning_rate}) must not exceed learningRate ({self.learning_rate})"
            )
        return self


class CheckpointConfig(_Section):
    dir: str | None = None  # no directory: no checkpoints and no resume
    every_steps: PositiveInt = 100
    keep: PositiveInt = 3


class EarlyStoppingConfig(_Section):
    metric: str = "loss"
    patience: PositiveInt = 3  # validations without improvement before stopping
    mode: Literal["min", "max"] = "min"
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0


class ValidationConfig(_Section):
    every_steps: NonNegativeInt = 0  # 0: validate only at the end
    max_batches: PositiveInt = 8  # per rank, per validation
    early_stopping: EarlyStoppingConfig | None = None


class DataConfig(_Section):
    path: str
    # "auto": a directory with manifest.json is a versioned dataset; *.txt / *.npy are plain files.
    format: Literal["auto", "dataset", "text", "images"] = "auto"
    train_split: str = "train"
    validation_split: str = "validation"
    # For plain files (no validation split): the fraction held out for validation.
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    # Text: join documents (BOS text EOS BOS text EOS ...) and cut the stream into full windows
    # of contextLength + 1 tokens, instead of one padded example per document. Short documents
    # then cost no compute on padding.
    packing: bool = False
    # With packing: attention and positions stay within each document (a block-diagonal causal
    # mask), so a window trains as its documents would alone. Off: attention crosses the
    # separators, which lets the flash kernel run (it takes no mask).
    document_attention: bool = False

    @model_validator(mode="after")
    def _document_attention_needs_packing(self) -> "DataConfig":
        if self.document_attention and not self.packing:
            raise ValueError("documentAttention: needs packing: true (unpacked examples hold one document each)")
        return self


class PerformanceConfig(_Section):
    """Speed and memory knobs; none changes what is computed beyond floating-point rounding."""

    # AdamW's fused (single-kernel) step: "auto" uses it where the parameters' device has it
    # (CUDA; CPU in recent torch), "on" fails if it is missing, "off" uses the foreach step.
    fused_optimizer: Literal["auto", "on", "off"] = "auto"
    # Scaled-dot-product attention kernel (transformer). "auto": torch picks (flash or cuDNN
    # on GPUs); "flash": require the flash kernel, fail instead of falling back; "math": the
    # unfused reference kernel, for checking numerics.
    attention: Literal["auto", "flash", "math"] = "auto"
    # Recompute each block's activations in the backward pass instead of keeping them:
    # less memory (bigger micro-batches or models) for about a third more compute.
    activation_checkpointing: bool = False
    # torch.compile each block (regional compilation: short compile, same parameter names,
    # so checkpoints and export are unaffected).
    compile: bool = False


class ExportConfig(_Section):
    dir: str | None = None  # no directory: no export
    # Upload the export to this S3 repository from `dir` (a scratch directory then); the
    # versions there number it. The same location a Dataset source reads.
    s3: S3Source | None = None
    model_name: str = "strata-model"
    version: Annotated[int, Field(ge=1)] | None = None  # None: one past the highest existing version
    max_batch_size: PositiveInt = 8
    quantization: Literal["none", "int8", "fp16", "bf16"] = "none"
    samples: NonNegativeInt = 4  # generated samples written next to the export

    @field_validator("model_name")
    @classmethod
    def _triton_name(cls, value: str) -> str:
        if not value or any(not (c.isalnum() or c in "-_") for c in value):
            raise ValueError(f"must be letters, digits, '-' or '_', got {value!r}")
        return value

    @model_validator(mode="after")
    def _s3_needs_a_directory(self) -> ExportConfig:
        if self.s3 is not None and self.dir is None:
            raise ValueError("export.s3 needs export.dir, the scratch directory the export is written to before "
                             "its upload")
        return self


class TrackingConfig(_Section):
    mlflow_uri: str | None = None
    experiment: str = "strata"
    run_name: str | None = None
    log_checkpoints: bool = True


class ObservabilityConfig(_Section):
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9400  # 0 disables the endpoint
    log_every_steps: PositiveInt = 1
    termination_log: str | None = None  # default: $STRATA_TERMINATION_LOG or /dev/termination-log


class TrainConfig(_Section):
    model: ModelConfig
    deepspeed: DeepSpeedConfig = DeepSpeedConfig()
    hyperparameters: Hyperparameters = Hyperparameters()
    checkpoints: CheckpointConfig = CheckpointConfig()
    validation: ValidationConfig = ValidationConfig()
    data: DataConfig
    performance: PerformanceConfig = PerformanceConfig()
    export: ExportConfig = ExportConfig()
    tracking: TrackingConfig = TrackingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()

    @model_validator(mode="after")
    def _cross_section(self) -> "TrainConfig":
        if self.deepspeed.precision == "fp16" and self.model.family == "gan":
            # Two engines with independent dynamic loss scalers skip steps at different times.
            raise ValueError("deepspeed.precision: fp16 is not supported for the gan family; use bf16 or fp32")
        family, performance = self.model.family, self.performance
        if self.data.packing and family != "transformer":
            raise ValueError(f"data.packing: packs text documents; the {family} family trains on images")
        if performance.activation_checkpointing and family not in BLOCK_FAMILIES:
            raise ValueError(f"performance.activationCheckpointing: the {family} family has no blocks to "
                             f"recompute; supported for {', '.join(BLOCK_FAMILIES)}")
        if performance.compile and family not in BLOCK_FAMILIES:
            raise ValueError(f"performance.compile: compiles blocks, which the {family} family has none of; "
                             f"supported for {', '.join(BLOCK_FAMILIES)}")
        if performance.compile and self.deepspeed.zero_stage == 3:
            # ZeRO-3 gathers parameters in hooks around every module call; a compiled block would
            # break its graph at each of them and run slower than eager.
            raise ValueError("performance.compile: not supported with deepspeed.zeroStage 3; use zeroStage 0-2")
        if performance.attention != "auto" and family != "transformer":
            raise ValueError(f"performance.attention: selects the transformer's attention kernel; "
                             f"the {family} family has no attention")
        if performance.attention == "flash" and self.data.document_attention:
            raise ValueError("performance.attention: flash takes no attention mask, which data.documentAttention "
                             "needs; use attention: auto")
        return self

    def config_hash(self) -> str:
        """Stable hash of the effective configuration, recorded with checkpoints and exports."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def global_batch_size(self) -> int:
        """Examples per optimizer step on one rank (multiply by world size for all ranks)."""
        return self.deepspeed.micro_batch_size * self.deepspeed.gradient_accumulation


def parse_config(raw: Any, source: str = "<config>") -> TrainConfig:
    """Validate an already-parsed mapping; raise ConfigError naming each bad setting."""
    return configfile.validate(TrainConfig, raw, source, ConfigError)


def load_config(path: str | os.PathLike[str] | None = None) -> TrainConfig:
    """Load from ``path``, else from the file named by ``$STRATA_TRAIN_CONFIG`` (YAML or JSON)."""
    return parse_config(*configfile.read(path, CONFIG_ENV, ConfigError))


def check_before_training(config: TrainConfig, cuda_available: bool) -> None:
    """What a valid file still cannot train: checks that need to know the pod's devices or
    the family's metrics (not its data). Run by every rank before DeepSpeed starts."""
    if config.deepspeed.precision == "fp16" and not cuda_available:
        raise ConfigError("deepspeed.precision: fp16 needs a GPU; DeepSpeed on CPU supports fp32 and bf16")
    stopping, family = config.validation.early_stopping, config.model.family
    if stopping and stopping.metric not in FAMILY_METRICS[family]:
        raise ConfigError(
            f"validation.earlyStopping.metric: the {family} family reports "
            f"{', '.join(FAMILY_METRICS[family])}; got {stopping.metric!r}"
        )


def check_runtime_inputs(config: TrainConfig) -> None:
    """Checks that need the pod's filesystem (not the operator's): fail before starting DeepSpeed."""
    data_path = Path(config.data.path)
    if not data_path.exists():
        raise ConfigError(f"data.path: {data_path} does not exist")
    if config.data.format == "dataset" and not (data_path / "manifest.json").is_file():
        raise ConfigError(f"data.path: {data_path} has no manifest.json but data.format is 'dataset'")
