"""The trainer's configuration file, rendered from a TrainingJob spec.

This is the contract between the operator and the trainer workload
(`strata_workloads.train.config`): every worker pod mounts the rendered file at
TRAINER_CONFIG_PATH, the dataset version at DATA_DIR, the checkpoint volume at
CHECKPOINT_DIR and the Triton model repository at EXPORT_DIR (or, for an S3 repository, a
scratch directory there, and the repository's Secret at EXPORT_CREDENTIALS_DIR). A unit test
feeds the output to the trainer's own parser, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Any

from strata.api.training import TrainingJobSpec
from strata.render.common import s3_settings

TRAINER_CONFIG_DIR = "/etc/strata"
TRAINER_CONFIG_FILE = "train.yaml"
TRAINER_CONFIG_PATH = f"{TRAINER_CONFIG_DIR}/{TRAINER_CONFIG_FILE}"
DATA_DIR = "/var/strata/data"
CHECKPOINT_DIR = "/var/strata/checkpoints"
EXPORT_DIR = "/var/strata/models"
EXPORT_CREDENTIALS_DIR = "/var/strata/export-credentials"
METRICS_PORT = 9400

# The CR names validation metrics from the user's side; the trainer by what it computes.
EARLY_STOPPING_METRICS = {"valLoss": "loss", "perplexity": "perplexity"}


def render_trainer_config(spec: TrainingJobSpec, job_name: str) -> dict[str, Any]:
    model, deepspeed, hp = spec.model, spec.deepspeed, spec.hyperparameters
    config: dict[str, Any] = {
        "model": {
            "family": model.family,
            # Only the settings this family reads, defaults filled in (see SIZE_SETTINGS).
            "size": model.size.resolved(model.family),
            # -1: the number of classes comes from the dataset manifest; 0: unconditional
            # (a prompt prefix needs no classes: it is part of the text).
            "numClasses": -1 if model.conditioning == "label" else 0,
        },
        "deepspeed": {
            "zeroStage": deepspeed.zero_stage,
            "precision": deepspeed.precision,
            "microBatchSize": deepspeed.micro_batch_size,
            "gradientAccumulation": deepspeed.gradient_accumulation,
            "gradientClipping": deepspeed.gradient_clipping,
            "offload": deepspeed.offload,
        },
        "hyperparameters": {
            "learningRate": hp.learning_rate,
            "warmupSteps": hp.warmup_steps,
            "maxSteps": hp.max_steps,
            "decay": hp.lr_schedule,
            "weightDecay": hp.weight_decay,
            "seed": hp.seed,
        },
        "checkpoints": {
            "dir": CHECKPOINT_DIR,
            "everySteps": spec.checkpoints.every_steps,
            "keep": spec.checkpoints.keep,
        },
        "validation": {"everySteps": spec.validation.every_steps},
        "data": {"path": DATA_DIR, "validationFraction": spec.validation.fraction},
        "observability": {"metricsPort": METRICS_PORT},
    }
    stopping = spec.validation.early_stopping
    if stopping is not None:
        config["validation"]["earlyStopping"] = {
            "metric": EARLY_STOPPING_METRICS[stopping.metric],
            "patience": stopping.patience,
        }
    if spec.export is not None:
        config["export"] = {"dir": EXPORT_DIR, "modelName": job_name, "quantization": spec.export.quantization}
        if spec.export.triton_repository.s3 is not None:
            config["export"]["s3"] = s3_settings(spec.export.triton_repository.s3, EXPORT_CREDENTIALS_DIR)
    if spec.tracking is not None:
        config["tracking"] = {"mlflowUri": spec.tracking.mlflow_uri, "runName": job_name}
        if spec.tracking.experiment:
            config["tracking"]["experiment"] = spec.tracking.experiment
    return config
