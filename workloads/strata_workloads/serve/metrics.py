"""The data path's metrics: counted in plain Python per worker, merged by the supervisor.

prometheus_client's multiprocess mode costs tens of microseconds per request (a lock and
memory-mapped writes per value); here a request costs a few dictionary and list
increments. Each worker writes a snapshot of its totals to ``<metrics dir>/worker-<pid>.json``
every SNAPSHOT_SECONDS (atomically: write, then rename); the supervisor's /metrics merges the
snapshots at scrape time, so values lag by at most that long. A dead worker's counters stay
in the totals (counters never go down); its in-flight gauge does not.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import random
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any

SNAPSHOT_SECONDS = 0.5
# Larger samples go to the supervisor as metadata only (audited without tensors, not
# analysed): the sample queue must not hold gigabytes when Triton serves large tensors.
MAX_SAMPLE_BYTES = 4 * 1024 * 1024
SAMPLE_FLUSH_SECONDS = 0.25
MAX_PENDING_SAMPLES = 256
# Model names come from clients; past this many distinct ones a worker labels the rest
# "other" so a caller cannot grow the metrics without bound.
MAX_MODEL_LABELS = 64
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
REQUEST_LABELS = ("protocol", "call", "model", "outcome", "key")
HISTOGRAM_LABELS = ("protocol", "model")
# name -> (help, buckets, index of its counts in a histogram entry)
HISTOGRAMS = {
    "strata_sidecar_request_duration_seconds": ("Time from a request's arrival at the sidecar to its answer "
                                                "(inference calls).", LATENCY_BUCKETS, 0),
    "strata_sidecar_request_bytes": ("Inference request payload sizes.", SIZE_BUCKETS, 2),
    "strata_sidecar_response_bytes": ("Inference response payload sizes.", SIZE_BUCKETS, 4),
}


class DataPathMetrics:
    def __init__(self, directory: str | os.PathLike[str] | None = None):
        self.directory = Path(directory) if directory else None
        self.requests: dict[tuple[str, ...], int] = {}
        # (protocol, model) -> [latency counts, latency sum, request-size counts, sum, response-size counts, sum]
        self.histograms: dict[tuple[str, str], list] = {}
        self.inflight = {"grpc": 0, "http": 0}
        self.samples_dropped = 0
        self._models: set[str] = set()
        self._labels: dict[str, str] = {}

    def model_label(self, model: str) -> str:
        label = self._labels.get(model)
        if label is None:
            if len(self._models) < MAX_MODEL_LABELS:
                self._models.add(model)
                label = model
            else:
                label = "other"
            self._labels[model] = label
        return label

    def count(self, protocol: str, call: str, model: str, outcome: str, key: str) -> None:
        labels = (protocol, call, self.model_label(model) if model else "", outcome, key)
        self.requests[labels] = self.requests.get(labels, 0) + 1

    def observe(self, protocol: str, model: str, seconds: float, sent: int, received: int) -> None:
        labels = (protocol, self.model_label(model) if model else "")
        entry = self.histograms.get(labels)
        if entry is None:
            entry = self.histograms[labels] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0, [0] * (len(SIZE_BUCKETS) + 1), 0,
                                               [0] * (len(SIZE_BUCKETS) + 1), 0]
        entry[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1
        entry[1] += seconds
        entry[2][bisect_left(SIZE_BUCKETS, sent)] += 1
        entry[3] += sent
        entry[4][bisect_left(SIZE_BUCKETS, received)] += 1
        entry[5] += received

    def snapshot(self) -> str:
        return json.dumps({"pid": os.getpid(), "requests": [[*labels, n] for labels, n in self.requests.items()],
                           "histograms": [[*labels, *entry] for labels, entry in self.histograms.items()],
                           "inflight": self.inflight, "samplesDropped": self.samples_dropped})

    async def publish(self, stop: asyncio.Event) -> None:
        """Write snapshots until ``stop``, and once more after it (nothing counted is lost)."""
        path = self.directory / f"worker-{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        last = None
        while True:
            current = self.snapshot()
            if current != last:
                temporary.write_text(current)
                os.replace(temporary, path)
                last = current
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), SNAPSHOT_SECONDS)
            except asyncio.TimeoutError:
                pass


def collect(directory: Path, alive_pids: set[int]):
    """Prometheus metric families merged from every worker's snapshot."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.utils import floatToGoString

    requests: dict[tuple, int] = {}
    histograms: dict[tuple, list] = {}
    inflight = {"grpc": 0, "http": 0}
    dropped = 0
    for path in directory.glob("worker-*.json"):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for *labels, n in snapshot["requests"]:
            requests[tuple(labels)] = requests.get(tuple(labels), 0) + n
        for protocol, model, *entry in snapshot["histograms"]:
            merged = histograms.setdefault((protocol, model), [[0] * len(entry[0]), 0.0, [0] * len(entry[2]), 0,
                                                               [0] * len(entry[4]), 0])
            for index in (0, 2, 4):
                merged[index] = [a + b for a, b in zip(merged[index], entry[index])]
                merged[index + 1] += entry[index + 1]
        dropped += snapshot["samplesDropped"]
        if snapshot["pid"] in alive_pids:
            for protocol, n in snapshot["inflight"].items():
                inflight[protocol] = inflight.get(protocol, 0) + n

    family = CounterMetricFamily("strata_sidecar_requests",
                                 "Requests through the sidecar by protocol, call, model, outcome (gRPC status name) "
                                 "and API key name.", labels=REQUEST_LABELS)
    for labels, n in sorted(requests.items()):
        family.add_metric(list(labels), n)
    yield family
    for name, (documentation, bounds, index) in HISTOGRAMS.items():
        family = HistogramMetricFamily(name, documentation, labels=HISTOGRAM_LABELS)
        for labels, entry in sorted(histograms.items()):
            cumulative, total = [], 0
            for bound, n in zip((*bounds, float("inf")), entry[index]):
                total += n
                cumulative.append((floatToGoString(bound), total))
            family.add_metric(list(labels), cumulative, entry[index + 1])
        yield family
    gauge = GaugeMetricFamily("strata_sidecar_inflight_requests", "Inference requests being forwarded now.",
                              labels=["protocol"])
    for protocol, n in sorted(inflight.items()):
        gauge.add_metric([protocol], n)
    yield gauge
    yield CounterMetricFamily("strata_sidecar_samples_dropped",
                              "Sampled requests not analysed because the analysis queue was full.", value=dropped)


class Sampler:
    """Chooses requests for the audit log and drift statistics; hands them to the supervisor.

    The request path draws a random number and, for a chosen request, appends it to a list.
    The list goes to the supervisor in one piece every SAMPLE_FLUSH_SECONDS (one queue item,
    pickled by the queue's feeder thread): handing samples over one by one woke that thread
    for each and cost the data path more than the sampling itself. At most
    MAX_PENDING_SAMPLES wait between flushes, and batches are dropped, counted, when the
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
        self.pending: list[tuple] = []

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
        if len(self.pending) >= MAX_PENDING_SAMPLES:
            self.metrics.samples_dropped += 1
            return
        record = meta if meta is not None else make_meta()
        record["audit"], record["analyse"] = audit, drift
        if (len(request) if request else 0) + (len(response) if response else 0) > MAX_SAMPLE_BYTES:
            if not audit:
                return
            record["analyse"], record["tensorsOmitted"] = False, True
            request = response = None
        self.pending.append((record, request, response))

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            self.samples.put_nowait(batch)
        except queue.Full:
            self.metrics.samples_dropped += len(batch)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every SAMPLE_FLUSH_SECONDS until ``stop``, then once more."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_FLUSH_SECONDS)
            except asyncio.TimeoutError:
                pass
            self.flush()
