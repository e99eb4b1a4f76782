"""The data path's Prometheus metrics, shared across worker processes.

Every worker writes its values to memory-mapped files in PROMETHEUS_MULTIPROC_DIR (set by
the supervisor before it starts them); the supervisor's /metrics merges them. Labelled
children are cached per label set so a request costs a dictionary lookup and a few
memory writes, not prometheus_client's label resolution.
"""

from __future__ import annotations

import os
import queue
import random
import time
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Model names come from clients; past this many distinct ones a worker labels the rest
# "other" so a caller cannot grow the metrics without bound.
MAX_MODEL_LABELS = 64
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


class DataPathMetrics:
    def __init__(self) -> None:
        if not os.environ.get(MULTIPROC_ENV):
            raise RuntimeError(f"{MULTIPROC_ENV} must be set before the data path's metrics are created")
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("strata_sidecar_requests_total",
                                "Requests through the sidecar by protocol, call, model, outcome (gRPC status name) and API key name.",
                                ["protocol", "call", "model", "outcome", "key"])
        self.latency = Histogram("strata_sidecar_request_duration_seconds",
                                 "Time from a request's arrival at the sidecar to its answer (inference calls).",
                                 ["protocol", "model"], buckets=LATENCY_BUCKETS)
        self.request_bytes = Histogram("strata_sidecar_request_bytes", "Inference request payload sizes.",
                                       ["protocol", "model"], buckets=SIZE_BUCKETS)
        self.response_bytes = Histogram("strata_sidecar_response_bytes", "Inference response payload sizes.",
                                        ["protocol", "model"], buckets=SIZE_BUCKETS)
        self.inflight = Gauge("strata_sidecar_inflight_requests", "Inference requests being forwarded now.",
                              ["protocol"], multiprocess_mode="livesum")
        self.samples_dropped = Counter("strata_sidecar_samples_dropped_total",
                                       "Sampled requests not analysed because the analysis queue was full.")
        self._counters: dict[tuple, Any] = {}
        self._observers: dict[tuple, tuple[Any, Any, Any]] = {}
        self._models: set[str] = set()
        self.inflight_grpc = self.inflight.labels("grpc")
        self.inflight_http = self.inflight.labels("http")

    def model_label(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) < MAX_MODEL_LABELS:
            self._models.add(model)
            return model
        return "other"

    def count(self, protocol: str, call: str, model: str, outcome: str, key: str) -> None:
        labels = (protocol, call, model, outcome, key)
        child = self._counters.get(labels)
        if child is None:
            child = self._counters[labels] = self.requests.labels(protocol, call, self.model_label(model), outcome, key)
        child.inc()

    def observe(self, protocol: str, model: str, seconds: float, sent: int, received: int) -> None:
        labels = (protocol, model)
        children = self._observers.get(labels)
        if children is None:
            label = self.model_label(model)
            children = self._observers[labels] = (self.latency.labels(protocol, label),
                                                  self.request_bytes.labels(protocol, label),
                                                  self.response_bytes.labels(protocol, label))
        children[0].observe(seconds)
        children[1].observe(sent)
        children[2].observe(received)


class Sampler:
    """Chooses requests for the audit log and drift statistics; hands them to the supervisor.

    The request path only draws a random number; chosen requests are queued without
    blocking (the queue's feeder thread pickles them) and dropped, counted, when the
    supervisor falls behind. Drift samples are also capped per second per worker.
    """

    def __init__(self, samples: Any, metrics: DataPathMetrics, audit_rate: float, drift_rate: float,
                 drift_per_second: float):
        self.samples = samples
        self.metrics = metrics
        self.audit_rate = audit_rate
        self.drift_rate = drift_rate
        self.drift_per_second = drift_per_second
        self._allowance = drift_per_second
        self._checked = time.monotonic()
        self.enabled = audit_rate > 0 or drift_rate > 0

    def _drift_allowed(self) -> bool:
        now = time.monotonic()
        self._allowance = min(self.drift_per_second, self._allowance + (now - self._checked) * self.drift_per_second)
        self._checked = now
        if self._allowance >= 1.0:
            self._allowance -= 1.0
            return True
        return False

    def offer(self, meta: dict[str, Any] | None, make_meta, request: bytes | None, response: bytes | None) -> None:
        audit = random.random() < self.audit_rate
        drift = self.drift_rate > 0 and random.random() < self.drift_rate and response is not None \
            and self._drift_allowed()
        if not (audit or drift):
            return
        record = meta if meta is not None else make_meta()
        record["audit"], record["analyse"] = audit, drift
        try:
            self.samples.put_nowait((record, request, response))
        except queue.Full:
            self.metrics.samples_dropped.inc()
