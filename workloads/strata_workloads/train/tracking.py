"""Optional MLflow experiment tracking (rank 0 only): params, metrics, checkpoint and export artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from strata_workloads.train.config import TrackingConfig, TrainConfig


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"deepspeed": {"zeroStage": 2}}`` -> ``{"deepspeed.zeroStage": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """A no-op unless ``tracking.mlflowUri`` is set and this is rank 0."""

    def __init__(self, config: TrackingConfig, enabled: bool):
        self.config = config
        self.enabled = enabled and bool(config.mlflow_uri)
        self.client = None
        self.run_id: str | None = None

    def start(self, train_config: TrainConfig, **extra_params: Any) -> None:
        if not self.enabled:
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.config.mlflow_uri)
        experiment = self.client.get_experiment_by_name(self.config.experiment)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.config.experiment)
        tags = {"strata.configHash": train_config.config_hash(), "strata.family": train_config.model.family}
        run = self.client.create_run(experiment_id, run_name=self.config.run_name, tags=tags)
        self.run_id = run.info.run_id
        params = flatten(train_config.model_dump(mode="json", by_alias=True, exclude={"tracking"})) | extra_params
        from mlflow.entities import Param

        # MLflow caps params per request; send them in chunks.
        items = [Param(k, str(v)[:500]) for k, v in params.items() if v is not None]
        for start in range(0, len(items), 90):
            self.client.log_batch(self.run_id, params=items[start : start + 90])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled or self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow metric names may not contain some characters; ours are word/slash only.
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        if self.enabled and self.run_id is not None and Path(local_dir).exists():
            self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def finish(self, result: dict[str, Any] | None) -> None:
        if not self.enabled or self.run_id is None:
            return
        status = "FINISHED" if result and result.get("status") in ("succeeded", "early-stopped") else "FAILED"
        if result:
            self.client.set_tag(self.run_id, "strata.status", result.get("status", "unknown"))
        self.client.set_terminated(self.run_id, status=status)
        self.run_id = None
