"""Progress reporting an operator can consume without extra privileges.

Three channels (the contract is documented in :mod:`strata_workloads.train`):

* JSON lines on stdout, one object per event, always with ``event``, ``time`` and ``rank``;
* a Prometheus endpoint (rank 0) with the gauges below;
* a final result in the container's termination-message file (rank 0), at most 4096 bytes.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

TERMINATION_LOG_ENV = "STRATA_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes truncates termination messages beyond 4096 bytes.
TERMINATION_MESSAGE_LIMIT = 4096


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity: report them as strings rather than emit invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class EventLog:
    """Writes one JSON object per line. Rank 0 reports everything; other ranks only lifecycle events."""

    def __init__(self, rank: int, stream: TextIO | None = None):
        self.rank = rank
        self.stream = stream or sys.stdout

    def emit(self, event: str, all_ranks: bool = False, **fields: Any) -> None:
        if self.rank != 0 and not all_ranks:
            return
        record = {"event": event, "time": round(time.time(), 3), "rank": self.rank, **_finite(fields)}
        self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.stream.flush()


class Metrics:
    """Prometheus gauges on ``port`` (rank 0 only; 0 disables). Uses a private registry."""

    def __init__(self, port: int, enabled: bool, family: str):
        self.enabled = enabled and port > 0
        self.port = port
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = ["family"]
        self._family = family
        self.step = Gauge("strata_train_step", "Optimizer steps completed", labels, registry=self.registry)
        self.total_steps = Gauge("strata_train_total_steps", "Configured maxSteps", labels, registry=self.registry)
        self.loss = Gauge("strata_train_loss", "Training loss of the last step", labels + ["name"], registry=self.registry)
        self.validation = Gauge("strata_train_validation_metric", "Last validation metrics", labels + ["name"], registry=self.registry)
        self.samples_per_second = Gauge("strata_train_samples_per_second", "Training throughput, all ranks", labels, registry=self.registry)
        self.tokens_per_second = Gauge("strata_train_tokens_per_second", "Training tokens/s, all ranks (text)", labels, registry=self.registry)
        self.learning_rate = Gauge("strata_train_learning_rate", "Current learning rate", labels, registry=self.registry)
        self.checkpoint_step = Gauge("strata_train_checkpoint_step", "Step of the last saved checkpoint", labels, registry=self.registry)
        # Averaged since this process's first step, validation and checkpoints included: what an
        # estimate of the time to completion needs (the operator computes it from this).
        self.steps_per_second = Gauge("strata_train_steps_per_second", "Optimizer steps per second since the first step",
                                      labels, registry=self.registry)
        self.resumed_from_step = Gauge("strata_train_resumed_from_step", "Checkpoint step this run resumed from (0: fresh)",
                                       labels, registry=self.registry)
        self._first_step: tuple[int, float] | None = None
        self.server, _thread = start_http_server(port, addr="0.0.0.0", registry=self.registry)

    def record_step(self, step: int, total: int, losses: dict[str, float], samples_per_second: float,
                    tokens_per_second: float, learning_rate: float) -> None:
        if not self.enabled:
            return
        f = self._family
        self.step.labels(f).set(step)
        self.total_steps.labels(f).set(total)
        for name, value in losses.items():
            self.loss.labels(f, name).set(value)
        self.samples_per_second.labels(f).set(samples_per_second)
        self.tokens_per_second.labels(f).set(tokens_per_second)
        self.learning_rate.labels(f).set(learning_rate)
        now = time.monotonic()
        if self._first_step is None:
            self._first_step = (step, now)
        elif now > self._first_step[1]:
            self.steps_per_second.labels(f).set((step - self._first_step[0]) / (now - self._first_step[1]))

    def record_resumed(self, step: int) -> None:
        if self.enabled:
            self.resumed_from_step.labels(self._family).set(step)

    def record_validation(self, metrics: dict[str, float]) -> None:
        if self.enabled:
            for name, value in metrics.items():
                self.validation.labels(self._family, name).set(value)

    def record_checkpoint(self, step: int) -> None:
        if self.enabled:
            self.checkpoint_step.labels(self._family).set(step)

    def close(self) -> None:
        if self.enabled:
            self.server.shutdown()


def termination_log_path(configured: str | None) -> Path:
    return Path(configured or os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)


def encode_termination_message(result: dict[str, Any]) -> str:
    """Compact JSON within Kubernetes' limit: drop the bulkiest optional fields first if needed."""
    result = _finite(result)
    message = json.dumps(result, separators=(",", ":"))
    for droppable in ("samples", "validationHistory", "export", "metrics"):
        if len(message.encode()) <= TERMINATION_MESSAGE_LIMIT:
            break
        if droppable in result:
            result = {**result, droppable: "omitted: message too long"}
            message = json.dumps(result, separators=(",", ":"))
    if len(message.encode()) > TERMINATION_MESSAGE_LIMIT:
        message = json.dumps({"status": result.get("status"), "error": "result too long",
                              "step": result.get("step")}, separators=(",", ":"))
    return message


def write_termination_message(path: Path, result: dict[str, Any]) -> None:
    try:
        path.write_text(encode_termination_message(result))
    except OSError as error:
        # Outside Kubernetes /dev/termination-log may not be writable; the JSON log has it all.
        print(json.dumps({"event": "warning", "message": f"cannot write termination message to {path}: {error}"}),
              file=sys.stderr)
