"""Optional MLflow experiment tracking (rank 0 only): params, metrics, checkpoint and export artifacts.

Tracking is observability, not the job: an unreachable or failing MLflow server is reported
(``on_failure``) and, if it keeps failing, tracking is switched off, but training goes on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from strata_workloads.train.config import TrackingConfig, TrainConfig

# MLflow's client retries with exponential backoff for minutes by default; a training
# step should not stall that long on a metrics upload.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

# Consecutive failed calls after which tracking is switched off for the rest of the run.
MAX_CONSECUTIVE_FAILURES = 3

FailureHandler = Callable[[str, Exception, bool], None]


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

    def __init__(self, config: TrackingConfig, enabled: bool, on_failure: FailureHandler | None = None):
        self.config = config
        self.enabled = enabled and bool(config.mlflow_uri)
        self.client = None
        self.run_id: str | None = None
        self.on_failure = on_failure or (lambda action, error, disabled: None)
        self.consecutive_failures = 0

    def _guarded(self, action: str, call: Callable[[], None]) -> None:
        """Run one MLflow call; a failure is reported, and enough of them disable tracking."""
        if not self.enabled:
            return
        try:
            call()
        except Exception as error:  # MLflow raises many types; none may stop training
            self.consecutive_failures += 1
            # Without a run there is nothing to log into, so a failed start disables at once.
            disable = action == "start" or self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES
            if disable:
                self.enabled = False
            self.on_failure(action, error, disable)
        else:
            self.consecutive_failures = 0

    def start(self, train_config: TrainConfig, **extra_params: Any) -> None:
        self._guarded("start", lambda: self._start(train_config, **extra_params))

    def _start(self, train_config: TrainConfig, **extra_params: Any) -> None:
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
        if self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # MLflow metric names may not contain some characters; ours are word/slash only.
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._guarded("log_metrics", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def log_artifacts(self, local_dir: Path, artifact_path: str) -> None:
        if self.run_id is not None and Path(local_dir).exists():
            self._guarded("log_artifacts", lambda: self.client.log_artifacts(self.run_id, str(local_dir), artifact_path))

    def finish(self, result: dict[str, Any] | None) -> None:
        if self.run_id is None:
            return
        status = "FINISHED" if result and result.get("status") in ("succeeded", "early-stopped") else "FAILED"

        def close_run() -> None:
            if result:
                self.client.set_tag(self.run_id, "strata.status", result.get("status", "unknown"))
            self.client.set_terminated(self.run_id, status=status)

        self._guarded("finish", close_run)
        self.run_id = None
