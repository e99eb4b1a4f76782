"""What a Dataset pipeline pod tells the operator: exit codes and its termination message.

The one definition of that contract: the pipeline (``python -m strata_workloads.data``) writes a
:class:`RunResult` with :func:`write_termination_message`, the operator reads it back with
:func:`parse_termination_message` (operator/strata/observe/dataset.py). Standard library only, so
the operator can import it without pyarrow, numpy or torch (a test checks).

The message is one JSON object of at most 4096 bytes (what Kubernetes keeps)::

    {"version": "3f2a...", "path": "/var/lib/strata/dataset/3f2a...", "created": true,
     "promoted": true, "parentVersion": "9c1e...",
     "records": {"in": 1200, "out": 1010, "duplicates": 120, "nearDuplicates": 30,
                 "missing": 12, "quarantined": 28, "synthetic": 0},
     "gates": [{"name": "maxDuplicateRatio", "passed": true, "value": 0.125, "limit": 0.3,
                "message": "..."}],
     "reference": {"tokens": {"rows": 1010, "length": [...], "ids": [...]}}}

A parallel run's shards other than 0 end with a summary of their share instead
(``{"shard": 1, "shards": 2, "parts": 3, "records": 900, "versionExists": false}``), which
:func:`parse_termination_message` does not take for a result; shard 0 writes the result.

Or, when the run could not produce a version, ``{"error": "..."}`` with exit code
:data:`EXIT_INVALID_CONFIG` (the configuration is wrong: retrying cannot help) or
:data:`EXIT_SOURCE_ERROR` (a source cannot be read: a later run may succeed).

``reference`` holds the version's token sketches (strata_workloads.monitor.sketch), which the
operator keeps in status.history for the drift monitors of models trained on the version.

``promoted`` is false when a quality gate failed: the version is written (versions are
immutable and content-addressed) but must not become the Dataset's current version.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TERMINATION_LOG_ENV = "STRATA_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# Kubernetes keeps at most 4096 bytes of a termination message.
TERMINATION_MESSAGE_LIMIT = 4096

EXIT_OK = 0
EXIT_SOURCE_ERROR = 1
EXIT_INVALID_CONFIG = 2

# The container name the operator gives the pipeline, so it finds this message among the pod's.
CONTAINER_NAME = "pipeline"
# Where the operator mounts the pipeline's configuration and the Dataset's storage in the pod.
CONFIG_DIR = "/etc/strata"
CONFIG_FILE = "pipeline.yaml"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
STORAGE_DIR = "/var/lib/strata/dataset"
SOURCES_DIR = "/var/lib/strata/sources"
SECRETS_DIR = "/var/run/secrets/strata"
# A FeedbackPolicy's samples (refreshDataset.includeFeedback), mounted from its ConfigMap and
# read as one more JSON-lines source.
FEEDBACK_DIR = "/var/lib/strata/feedback"
FEEDBACK_SAMPLES_FILE = "samples.jsonl"

# The counts the message carries, in the operator's status.records names.
RECORD_KEYS = ("in", "out", "duplicates", "nearDuplicates", "missing", "quarantined", "synthetic")


@dataclass(frozen=True)
class GateVerdict:
    """One quality gate checked against one version."""

    name: str  # the spec.qualityGates field, e.g. "maxDuplicateRatio"
    passed: bool
    value: float
    limit: float
    message: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "GateVerdict":
        return cls(name=str(raw["name"]), passed=bool(raw["passed"]), value=float(raw["value"]),
                   limit=float(raw["limit"]), message=str(raw.get("message", "")))


@dataclass(frozen=True)
class RunResult:
    """A pipeline run's outcome: the version it produced (or found), or why there is none."""

    version: str | None = None
    path: str | None = None
    created: bool = False  # False: the same input and spec had made this version before
    promoted: bool = False  # every gate passed: this version may become current
    parent_version: str | None = None
    records: dict[str, int] = field(default_factory=dict)
    gates: tuple[GateVerdict, ...] = ()
    error: str | None = None
    # Dataset column -> its token sketch (TokenSketch.to_dict()): the drift reference.
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_gates(self) -> list[GateVerdict]:
        return [gate for gate in self.gates if not gate.passed]

    def to_message(self) -> str:
        """Compact JSON within the 4096-byte limit (long gate messages and errors are cut first)."""
        body: dict[str, Any] = {
            "version": self.version, "path": self.path, "created": self.created, "promoted": self.promoted,
            "parentVersion": self.parent_version, "records": dict(self.records),
            "gates": [asdict(gate) for gate in self.gates], "error": self.error,
            "reference": dict(self.reference),
        }
        body = {key: value for key, value in body.items() if value not in (None, [], {})}
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        for keep in (200, 60, 0):
            if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
                break
            for gate in body.get("gates", []):
                gate["message"] = gate["message"][:keep]
            if body.get("error"):
                body["error"] = body["error"][: max(keep * 10, 200)]
            text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        if len(text.encode()) > TERMINATION_MESSAGE_LIMIT:
            # The reference is the last thing to go: without it drift has no baseline, but
            # the version is still recorded.
            body.pop("reference", None)
            text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        return text

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunResult":
        records = raw.get("records") or {}
        return cls(
            version=raw.get("version"), path=raw.get("path"), created=bool(raw.get("created", False)),
            promoted=bool(raw.get("promoted", False)), parent_version=raw.get("parentVersion"),
            records={key: int(records[key]) for key in RECORD_KEYS if isinstance(records.get(key), (int, float))},
            gates=tuple(GateVerdict.from_dict(gate) for gate in raw.get("gates") or []),
            error=raw.get("error"),
            reference={str(name): sketch for name, sketch in (raw.get("reference") or {}).items()
                       if isinstance(sketch, dict)},
        )


def parse_termination_message(message: str | None) -> RunResult | None:
    """The pod's result, or None when the message is not one (a crash leaves the log's tail)."""
    if not message:
        return None
    try:
        raw = json.loads(message)
        if not isinstance(raw, dict) or not ({"version", "error"} & raw.keys()):
            return None
        return RunResult.from_dict(raw)
    except (ValueError, TypeError, KeyError):
        return None


def termination_log_path(override: str | None = None) -> Path:
    return Path(override or os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)


def write_termination_message(result: RunResult, path: str | Path | None = None) -> None:
    """Write the result where the operator reads it.

    The default path is written only where it exists (the kubelet creates it in a container),
    so a run outside a pod leaves the host's /dev alone.
    """
    write_termination_text(result.to_message(), path)


def write_termination_text(text: str, path: str | Path | None = None) -> None:
    """Any other message (a parallel run's shard summary, which is not a result), likewise."""
    target = termination_log_path(str(path) if path else None)
    if target == Path(DEFAULT_TERMINATION_LOG) and not target.exists():
        return
    target.write_text(text)
