"""Off the request path: the audit log, drift statistics and toxicity scores of sampled traffic.

Runs in the supervisor process, fed by the workers' samplers. Nothing here can slow a
request down; when it falls behind, samples are dropped and counted
(strata_sidecar_samples_dropped_total).

Drift statistics (GET /stats on the metrics port, and strata_sidecar_tensor_* gauges), per
model, per input and output tensor, since the sidecar started:
  requests   sampled requests that carried the tensor
  count      values seen (elements; for BYTES tensors, one per string, summarising lengths)
  mean, std, min, max   over all values seen (exact; Chan's parallel update)
  quantiles  q01..q99 of a uniform reservoir of ``drift.reservoirSize`` values
  datatype, shape      of the latest sample

Token sketches (GET /stats?window=SECONDS, "sketches"), per model and integer or text input
tensor: each sampled request's rows summarised as strata_workloads.monitor.sketch.TokenSketch,
kept per minute for SKETCH_RETENTION_SECONDS, and returned summed over the last window
("current") and the one before it ("previous"). A FeedbackPolicy's drift monitor compares them
with the token sketch of the Dataset version the model was trained on, or the current with the
previous window.

Value sketches ("valueSketches", alike), per model and float input tensor (FP16, FP32, FP64,
BF16): at most FLOAT_VALUES_PER_TENSOR evenly spaced values of each sampled request's tensor,
summarised as sketch.ValueSketch. A drift monitor compares the current window's with the
previous one's (Dataset versions have no float columns to compare with).

Input samples (GET /stats?window=SECONDS&samples=N, "inputSamples", alike), per model and text
or integer input, when ``drift.inputSamplesPerMinute`` is set: sampled requests' rows kept whole
(texts redacted as audit lines are, both cut to embedding_contract's limits), at most that many
per minute, and at most N of each window returned. A FeedbackPolicy's embedding drift Job embeds
them (strata_workloads.monitor.embedding).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from strata_workloads.monitor import toxicity as toxicity_model
from strata_workloads.monitor.embedding_contract import MAX_TEXT_CHARS, MAX_TOKEN_IDS
from strata_workloads.monitor.sketch import FLOAT_TYPES, TokenSketch, ValueSketch
from strata_workloads.serve import protocol

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
# Outputs the toxicity classifier scored above TOXIC_SCORE, for a person's review (GET /review):
# {"requestId", "time", "model", "key", "source": "toxicity", "score", "input": [texts],
#  "output": [texts]}, the texts redacted and cut as the audit log's are.
REVIEW_FILE = "review.jsonl"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# Audited text: this many elements per tensor, each cut to this many characters.
AUDIT_MAX_ELEMENTS = 16
AUDIT_MAX_CHARS = 1024

# ---- redaction ----

PII_PATTERNS = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b")),
    ("ssn", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("phone", re.compile(r"(?<![\w+])\+?\d{1,3}[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b")),
    ("ip", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
]
SECRET_PATTERNS = [
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)),
    ("bearer", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")),
    ("aws-key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("token", re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("assignment", re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)(\s*[:=]\s*)\S+")),
]


class Redactor:
    def __init__(self, kinds: list[str], api_keys=None):
        self.kinds = set(kinds)
        self.api_keys = api_keys  # an ApiKeys, whose values are always removed under "secrets"

    def __call__(self, text: str) -> str:
        if "secrets" in self.kinds:
            if self.api_keys is not None:
                for value in self.api_keys.values:
                    text = text.replace(value, "[REDACTED:api-key]")
            for name, pattern in SECRET_PATTERNS:
                if name == "assignment":
                    text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}[REDACTED:secret]", text)
                else:
                    text = pattern.sub(f"[REDACTED:{name}]", text)
        if "pii" in self.kinds:
            for name, pattern in PII_PATTERNS:
                text = pattern.sub(f"[REDACTED:{name}]", text)
        return text

    def client(self, address: str) -> str:
        # A client's address is personal data: kept as a stable pseudonym under "pii".
        if "pii" in self.kinds and address:
            return "sha256:" + hashlib.sha256(address.encode()).hexdigest()[:16]
        return address


# ---- toxicity ----

TOXICITY_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, math.inf)


# ---- drift statistics ----

SKETCH_MINUTE = 60
SKETCH_RETENTION_SECONDS = 2 * 24 * 3600  # two of the longest window a policy is likely to use
INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
# Input rows kept whole per input for embedding tests (MinuteInputSamples), across all minutes;
# cut to the embedding contract's MAX_TEXT_CHARS or MAX_TOKEN_IDS, that is at most about 20 MB.
MAX_INPUT_SAMPLE_ROWS = 20_000
# Values of one float tensor sketched per request: an image of millions costs what a latent of
# a few thousand does (about a millisecond).
FLOAT_VALUES_PER_TENSOR = 4096


class MinuteSketches:
    """One tensor's token sketches per minute, dropped after the retention."""

    def __init__(self):
        self.minutes: dict[int, TokenSketch] = {}

    def _minute(self, at: float) -> TokenSketch:
        minute = int(at // SKETCH_MINUTE)
        sketch = self.minutes.get(minute)
        if sketch is None:
            sketch = self.minutes[minute] = TokenSketch()
            oldest = minute - SKETCH_RETENTION_SECONDS // SKETCH_MINUTE
            for stale in [m for m in self.minutes if m < oldest]:
                del self.minutes[stale]
        return sketch

    def add(self, at: float, values: np.ndarray, shape: list[int]) -> None:
        """Token ids: each row of a batched tensor a sequence."""
        self._minute(at).add_rows(values, shape)

    def add_texts(self, at: float, texts: list[bytes]) -> None:
        """A BYTES tensor's elements, each a text."""
        self._minute(at).add_texts(texts)

    def between(self, start: float, end: float) -> TokenSketch:
        """The minutes that began in [start, end)."""
        total = TokenSketch()
        for minute, sketch in self.minutes.items():
            if start <= minute * SKETCH_MINUTE < end:
                total = total.merge(sketch)
        return total


def token_rows(tensor: protocol.Tensor) -> list[list[int]]:
    """An integer tensor's rows as lists of ids (the first dimension is the batch when there
    are two or more, as TokenSketch.add_rows reads it), each cut to MAX_TOKEN_IDS."""
    values = np.asarray(tensor.values).reshape(-1)
    rows = values.reshape(tensor.shape[0], -1) if len(tensor.shape) >= 2 and tensor.shape[0] > 0 else [values]
    return [row[:MAX_TOKEN_IDS].tolist() for row in rows]


class MinuteInputSamples:
    """One text or token-id input's sampled rows kept whole, per minute (at most `per_minute`
    each, a uniform reservoir), for a FeedbackPolicy's embedding drift test. The oldest minutes
    go first once MAX_INPUT_SAMPLE_ROWS rows are kept, so memory stays bounded whatever the
    window."""

    def __init__(self, per_minute: int, rng: np.random.Generator):
        self.per_minute = per_minute
        self.rng = rng
        self.minutes: dict[int, list] = {}
        self.seen: dict[int, int] = {}
        self.kept = 0

    def add(self, at: float, rows: list) -> None:
        minute = int(at // SKETCH_MINUTE)
        kept = self.minutes.setdefault(minute, [])
        for row in rows:
            seen = self.seen[minute] = self.seen.get(minute, 0) + 1
            if len(kept) < self.per_minute:
                kept.append(row)
                self.kept += 1
            elif (slot := int(self.rng.integers(seen))) < self.per_minute:
                kept[slot] = row
        while self.kept > MAX_INPUT_SAMPLE_ROWS and len(self.minutes) > 1:
            oldest = min(self.minutes)
            self.kept -= len(self.minutes.pop(oldest))
            self.seen.pop(oldest, None)

    def between(self, start: float, end: float) -> list:
        """The rows of the minutes that began in [start, end)."""
        return [row for minute, rows in sorted(self.minutes.items()) if start <= minute * SKETCH_MINUTE < end
                for row in rows]


def sample_rows(rows: list, limit: int, rng: np.random.Generator) -> list:
    """At most `limit` of `rows`, drawn uniformly without replacement."""
    if len(rows) <= limit:
        return rows
    return [rows[i] for i in sorted(rng.choice(len(rows), limit, replace=False).tolist())]


class MinuteValueSketches:
    """One float tensor's value sketches per minute, dropped after the retention.

    A sketch is a dict of buckets, about 100 bytes each, and a minute of a feature fills a few
    hundred: two days of minutes would take some 100 MB per input. So only the last two
    minutes (a sample may arrive after the next minute began) stay dicts; earlier ones keep
    their buckets as two arrays, 10 bytes a bucket.
    """

    OPEN_MINUTES = 2

    def __init__(self):
        self.open: dict[int, ValueSketch] = {}
        # minute -> (rows, bucket keys, counts, nan, negative infinity, positive infinity)
        self.sealed: dict[int, tuple[int, np.ndarray, np.ndarray, int, int, int]] = {}

    def add(self, at: float, raw: bytes, datatype: str, shape: list[int]) -> None:
        minute = int(at // SKETCH_MINUTE)
        if minute not in self.open:
            self.open[minute] = self._unseal(minute)
        self.open[minute].add_raw(raw, datatype, shape, FLOAT_VALUES_PER_TENSOR)
        if len(self.open) > self.OPEN_MINUTES:
            for done in sorted(self.open)[:-self.OPEN_MINUTES]:
                self._seal(done)
            oldest = max(self.open) - SKETCH_RETENTION_SECONDS // SKETCH_MINUTE
            for stale in [m for m in self.sealed if m < oldest]:
                del self.sealed[stale]

    def _seal(self, minute: int) -> None:
        sketch = self.open.pop(minute)
        keys = sorted(sketch.counts)
        self.sealed[minute] = (sketch.rows, np.asarray(keys, dtype=np.int16),
                               np.asarray([sketch.counts[key] for key in keys], dtype=np.int64), sketch.nan,
                               sketch.negative_infinity, sketch.positive_infinity)

    def _unseal(self, minute: int) -> ValueSketch:
        sealed = self.sealed.pop(minute, None)
        if sealed is None:
            return ValueSketch()
        rows, keys, counts, nan, negative, positive = sealed
        return ValueSketch(rows, dict(zip(keys.tolist(), counts.tolist())), nan, negative, positive)

    def between(self, start: float, end: float) -> ValueSketch:
        """The minutes that began in [start, end)."""
        total = ValueSketch()
        for minute, sketch in self.open.items():
            if start <= minute * SKETCH_MINUTE < end:
                total = total.merge(sketch)
        chosen = [sealed for minute, sealed in self.sealed.items() if start <= minute * SKETCH_MINUTE < end]
        if chosen:
            keys, where = np.unique(np.concatenate([sealed[1] for sealed in chosen]), return_inverse=True)
            counts = np.zeros(keys.size, dtype=np.int64)
            np.add.at(counts, where, np.concatenate([sealed[2] for sealed in chosen]))
            total = total.merge(ValueSketch(sum(sealed[0] for sealed in chosen), dict(zip(keys.tolist(), counts.tolist())),
                                            *(sum(sealed[field] for sealed in chosen) for field in (3, 4, 5))))
        return total


class TensorStats:
    def __init__(self, reservoir_size: int, rng: np.random.Generator):
        self.requests = 0
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.datatype = ""
        self.shape: list[int] = []
        self.reservoir = np.empty(reservoir_size, dtype=np.float64)
        self.filled = 0
        self._rng = rng

    def add(self, datatype: str, shape: list[int], values: np.ndarray) -> None:
        self.requests += 1
        self.datatype, self.shape = datatype, shape
        values = values[np.isfinite(values)]
        n = values.size
        if n == 0:
            return
        batch_mean = float(values.mean())
        batch_m2 = float(((values - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.minimum = min(self.minimum, float(values.min()))
        self.maximum = max(self.maximum, float(values.max()))
        # Reservoir sampling (algorithm R, vectorised): value i of the stream is kept with
        # probability size/(i+1), replacing a uniformly chosen slot.
        size = self.reservoir.size
        free = size - self.filled
        if free > 0:
            take = min(free, n)
            self.reservoir[self.filled:self.filled + take] = values[:take]
            self.filled += take
            values = values[take:]
        if values.size:
            positions = self.count + (n - values.size) + np.arange(values.size)
            slots = (self._rng.random(values.size) * (positions + 1)).astype(np.int64)
            keep = slots < size
            self.reservoir[slots[keep]] = values[keep]
        self.count = total

    def summary(self) -> dict[str, Any]:
        variance = self.m2 / self.count if self.count else 0.0
        summary: dict[str, Any] = {"datatype": self.datatype, "shape": self.shape, "requests": self.requests,
                                   "count": self.count}
        if self.count:
            kept = self.reservoir[:self.filled]
            summary.update(mean=self.mean, std=math.sqrt(variance), min=self.minimum, max=self.maximum,
                           quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(kept, QUANTILES))})
        return summary


def _numeric(tensor: protocol.Tensor) -> np.ndarray | None:
    if tensor.datatype == "BYTES":
        return np.asarray([len(item) for item in tensor.values], dtype=np.float64)
    if isinstance(tensor.values, np.ndarray):
        return tensor.values.astype(np.float64, copy=False).reshape(-1)
    return None


class Analysis:
    def __init__(self, config, api_keys=None):
        self.config = config
        self.model_name = config.model_name
        self.redact = Redactor(list(config.audit.redact), api_keys)
        self.audit_path = Path(config.state_dir) / AUDIT_FILE
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        self._audit = self.audit_path.open("a", encoding="utf-8")
        self.review_path = Path(config.state_dir) / REVIEW_FILE
        self._review = self.review_path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()
        self.started = time.time()
        self.sampled = 0
        self.audited = 0
        self.errors = 0
        # (model, "inputs"|"outputs", tensor name) -> stats
        self.tensors: dict[tuple[str, str, str], TensorStats] = {}
        # (model, input tensor name) -> per-minute token sketches of integer and text inputs
        self.sketches: dict[tuple[str, str], MinuteSketches] = {}
        # (model, input tensor name) -> per-minute value sketches of float inputs
        self.value_sketches: dict[tuple[str, str], MinuteValueSketches] = {}
        # (model, input tensor name) -> per-minute text or token-id rows kept whole (drift.inputSamplesPerMinute)
        self.input_samples: dict[tuple[str, str], MinuteInputSamples] = {}
        self.toxicity_scored = 0
        self.toxicity_sum = 0.0
        self.toxicity_flagged = 0  # score > TOXIC_SCORE
        self.toxicity_buckets = [0] * len(TOXICITY_BUCKETS)  # non-cumulative counts per bucket

    def consume(self, meta: dict[str, Any], request: bytes | None, response: bytes | None) -> None:
        inputs: list[protocol.Tensor] = []
        outputs: list[protocol.Tensor] = []
        if request:
            try:
                if meta["protocol"] == "grpc":
                    inputs, outputs = protocol.grpc_tensors(request, response)
                else:
                    inputs, outputs = protocol.http_tensors(request, meta.get("requestHeaderLength"), response,
                                                            meta.get("responseHeaderLength"))
            except Exception as error:  # a malformed request Triton refused; audit what we know
                self.errors += 1
                meta = {**meta, "decodeError": str(error)[:200]}
        toxicity = None
        if self.config.toxicity.enabled:
            texts = [item.decode("utf-8", "replace") for tensor in outputs if tensor.datatype == "BYTES"
                     for item in tensor.values]
            if texts:
                # Scored before taking the lock: the classifier is the costly part.
                toxicity = max(toxicity_model.score(texts, self.config.toxicity.model_dir))
        with self._lock:
            self.sampled += 1
            if meta.get("analyse") and self.config.drift.enabled:
                for side, tensors in (("inputs", inputs), ("outputs", outputs)):
                    for tensor in tensors:
                        values = _numeric(tensor)
                        if values is None:
                            continue
                        key = (meta["model"], side, tensor.name)
                        stats = self.tensors.get(key)
                        if stats is None:
                            stats = self.tensors[key] = TensorStats(self.config.drift.reservoir_size, self._rng)
                        stats.add(tensor.datatype, tensor.shape, values)
                for tensor in inputs:
                    at = float(meta.get("time") or time.time())
                    if tensor.datatype in INTEGER_TYPES and isinstance(tensor.values, np.ndarray):
                        self.sketches.setdefault((meta["model"], tensor.name), MinuteSketches()).add(
                            at, tensor.values, tensor.shape)
                        self._keep_rows(meta["model"], tensor.name, at, lambda tensor=tensor: token_rows(tensor))
                    elif tensor.datatype == "BYTES" and tensor.values:
                        self.sketches.setdefault((meta["model"], tensor.name), MinuteSketches()).add_texts(
                            at, list(tensor.values))
                        self._keep_rows(meta["model"], tensor.name, at, lambda tensor=tensor: [
                            self.redact(item[:MAX_TEXT_CHARS * 4].decode("utf-8", "replace")[:MAX_TEXT_CHARS])
                            for item in tensor.values])
                    elif tensor.datatype in FLOAT_TYPES and len(tensor.raw) == (
                            FLOAT_TYPES[tensor.datatype][1] * math.prod(tensor.shape)):
                        # The size check leaves out what Triton refuses (a shape the data does
                        # not fill) and JSON BF16, whose values the decoder holds as FP64.
                        self.value_sketches.setdefault((meta["model"], tensor.name), MinuteValueSketches()).add(
                            at, tensor.raw, tensor.datatype, tensor.shape)
            if toxicity is not None:
                self.toxicity_scored += 1
                self.toxicity_sum += toxicity
                self.toxicity_flagged += toxicity > toxicity_model.TOXIC_SCORE
                self.toxicity_buckets[next(i for i, bound in enumerate(TOXICITY_BUCKETS) if toxicity <= bound)] += 1
        if meta.get("audit"):
            self._write_audit(meta, inputs, outputs, request, toxicity)
        if toxicity is not None and toxicity > toxicity_model.TOXIC_SCORE:
            self._queue_for_review(meta, inputs, outputs, toxicity)

    def _keep_rows(self, model: str, name: str, at: float, rows) -> None:
        """Keep a tensor's rows whole for embedding tests, when the config asks for some."""
        per_minute = self.config.drift.input_samples_per_minute
        if per_minute:
            samples = self.input_samples.get((model, name))
            if samples is None:
                samples = self.input_samples[(model, name)] = MinuteInputSamples(per_minute, self._rng)
            samples.add(at, rows())

    def _tensor_record(self, tensor: protocol.Tensor) -> dict[str, Any]:
        record: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
                                  "sha256": hashlib.sha256(tensor.raw).hexdigest()}
        if tensor.datatype == "BYTES":
            record["text"] = self._text(tensor)
        return record

    def _text(self, tensor: protocol.Tensor) -> list[str]:
        """A BYTES tensor's elements as audit lines and review items keep them: redacted and cut."""
        return [self.redact(item[:AUDIT_MAX_CHARS * 4].decode("utf-8", "replace")[:AUDIT_MAX_CHARS])
                for item in tensor.values[:AUDIT_MAX_ELEMENTS]]

    def _texts(self, tensors: list[protocol.Tensor]) -> list[str]:
        return [text for tensor in tensors if tensor.datatype == "BYTES" for text in self._text(tensor)]

    def _queue_for_review(self, meta, inputs, outputs, toxicity: float) -> None:
        record = {"requestId": meta["requestId"], "time": meta["time"], "model": meta["model"], "key": meta["key"],
                  "source": "toxicity", "score": toxicity, "input": self._texts(inputs), "output": self._texts(outputs)}
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._review.write(line)
            self._review.flush()

    def _write_audit(self, meta, inputs, outputs, request, toxicity) -> None:
        record = {"time": meta["time"], "deployment": self.model_name, "requestId": meta["requestId"],
                  "protocol": meta["protocol"], "model": meta["model"], "key": meta["key"],
                  "client": self.redact.client(meta.get("client", "")), "outcome": meta["outcome"],
                  "latencyMs": meta.get("latencyMs"),
                  "inputs": [self._tensor_record(t) for t in inputs],
                  "outputs": [self._tensor_record(t) for t in outputs]}
        if toxicity is not None:
            record["toxicity"] = toxicity
        if "decodeError" in meta:
            record["decodeError"] = meta["decodeError"]
        if meta.get("tensorsOmitted"):
            record["tensorsOmitted"] = True  # larger than metrics.MAX_SAMPLE_BYTES
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._audit.write(line)
            self._audit.flush()
            self.audited += 1
            if self._audit.tell() > self.config.audit.max_bytes:
                self._audit.close()
                os.replace(self.audit_path, self.audit_path.with_name(AUDIT_FILE + ".1"))
                self._audit = self.audit_path.open("a", encoding="utf-8")

    def exchanges(self, request_ids: set[str], directories: list[Path] | None = None) -> dict[str, dict[str, Any]]:
        """The text of audited answers (BYTES tensors, redacted and cut as audit lines keep them),
        by request id: what a FeedbackPolicy folds into a Dataset refresh (GET /exchanges).
        Answers with no text (numeric tensors only), or not audited, are absent. `directories`:
        the state directories to search (every pod's, with shared state); this pod's alone when None."""
        found: dict[str, dict[str, Any]] = {}
        # Each audit line is flushed as it is written: the files hold every one so far.
        roots = [self.audit_path.parent] if directories is None else directories
        for path in (root / name for root in roots for name in (AUDIT_FILE + ".1", AUDIT_FILE)):
            if not path.exists():
                continue
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a crash
                    request_id = record.get("requestId")
                    if request_id not in request_ids:
                        continue
                    texts = {side: [text for tensor in record.get(side) or [] for text in tensor.get("text") or []]
                             for side in ("inputs", "outputs")}
                    if texts["inputs"] or texts["outputs"]:
                        found[request_id] = {"time": record.get("time"), "model": record.get("model"),
                                             "input": texts["inputs"], "output": texts["outputs"]}
        return found

    def stats(self, window: float | None = None, now: float | None = None, samples: int = 0) -> dict[str, Any]:
        """Everything /stats reports; with `window` (seconds), the token and value sketches of
        the last window and the one before it, and with `samples`, at most that many of each
        window's kept input rows ("inputSamples": texts, or token ids)."""
        now = time.time() if now is None else now
        with self._lock:
            models: dict[str, dict[str, dict[str, Any]]] = {}
            for (model, side, name), stats in sorted(self.tensors.items()):
                models.setdefault(model, {"inputs": {}, "outputs": {}})[side][name] = stats.summary()
            result = {"deployment": self.model_name, "since": self.started, "sampled": self.sampled,
                      "decodeErrors": self.errors, "models": models}
            if window is not None:
                sketches: dict[str, dict[str, Any]] = {}
                for (model, name), minutes in sorted(self.sketches.items()):
                    sketches.setdefault(model, {})[name] = {
                        "current": minutes.between(now - window, now + SKETCH_MINUTE).to_dict(),
                        "previous": minutes.between(now - 2 * window, now - window).to_dict()}
                value_sketches: dict[str, dict[str, Any]] = {}
                for (model, name), value_minutes in sorted(self.value_sketches.items()):
                    value_sketches.setdefault(model, {})[name] = {
                        "current": value_minutes.between(now - window, now + SKETCH_MINUTE).to_dict(),
                        "previous": value_minutes.between(now - 2 * window, now - window).to_dict()}
                if samples:
                    input_samples: dict[str, dict[str, Any]] = {}
                    for (model, name), kept in sorted(self.input_samples.items()):
                        input_samples.setdefault(model, {})[name] = {
                            "current": sample_rows(kept.between(now - window, now + SKETCH_MINUTE), samples, self._rng),
                            "previous": sample_rows(kept.between(now - 2 * window, now - window), samples, self._rng)}
                    result["inputSamples"] = input_samples
                result["window"] = {"seconds": window, "end": now}
                result["sketches"] = sketches
                result["valueSketches"] = value_sketches
            if self.config.toxicity.enabled:
                result["toxicity"] = {"scored": self.toxicity_scored, "flagged": self.toxicity_flagged,
                                      "mean": self.toxicity_sum / self.toxicity_scored if self.toxicity_scored else None}
            return result

    def toxicity_histogram(self) -> tuple[list[tuple[str, int]], float]:
        from prometheus_client.utils import floatToGoString

        with self._lock:
            cumulative, total = [], 0
            for bound, count in zip(TOXICITY_BUCKETS, self.toxicity_buckets):
                total += count
                cumulative.append((floatToGoString(bound), total))
            return cumulative, self.toxicity_sum

    def close(self) -> None:
        with self._lock:
            self._audit.close()
            self._review.close()
