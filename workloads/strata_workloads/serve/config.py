"""The monitoring sidecar's configuration: the file the operator renders from a ModelDeployment.

Rendered by ``strata.render.sidecar.render_sidecar_config`` and mounted at
/etc/strata/sidecar.yaml; ``python -m strata_workloads.serve --config PATH`` (or
``$STRATA_SIDECAR_CONFIG``) reads it. Keys are camelCase like the custom resource; unknown
keys are refused so a typo is not silently ignored, and every error names the setting by its
dotted path (``rateLimit.burst: must be at least 1, got 0``).

This module must not import the operator package (``strata``): pods only have
``strata_workloads``. The ports and paths below repeat the operator's constants on purpose;
tests/unit/test_sidecar_contract.py checks that both sides agree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from strata_workloads import configfile

CONFIG_ENV = "STRATA_SIDECAR_CONFIG"

Port = Annotated[int, Field(ge=0, le=65535)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(configfile.ConfigError):
    """Invalid sidecar configuration; the message names the offending setting(s)."""


class _Section(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Listen(_Section):
    """Where clients reach the sidecar: Triton's own ports (HTTP/REST and gRPC) plus metrics."""

    host: str = "0.0.0.0"
    http_port: Port = 8000
    grpc_port: Port = 8001
    # Prometheus /metrics, drift /stats, /feedback (read side) and the sidecar's own /healthz.
    metrics_port: Port = 9090


class Upstream(_Section):
    """Triton, on the pod's loopback."""

    host: str = "127.0.0.1"
    http_port: Port = 18000
    grpc_port: Port = 18001
    # Longest an upstream call may take when the client set no deadline (seconds).
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0


class Auth(_Section):
    # One file per key (a mounted Secret: file name = the key's name, content = the key).
    # The key's *name* labels metrics and audit lines; the key itself never leaves the sidecar.
    api_keys_dir: str


class RateLimit(_Section):
    requests_per_second: Annotated[float, Field(gt=0, le=1_000_000)]
    burst: Annotated[int, Field(ge=1, le=10_000_000)]
    per: Literal["apiKey", "clientIP", "global"] = "apiKey"

    @model_validator(mode="after")
    def _burst_covers_rate(self) -> "RateLimit":
        if self.burst < self.requests_per_second:
            raise ValueError(f"burst ({self.burst}) must be at least requestsPerSecond ({self.requests_per_second})")
        return self


class Audit(_Section):
    # Share of inference requests written to the audit log (0 disables it).
    sample_rate: Rate = 0.05
    # What is removed from text (BYTES tensors) before it is written; numeric tensors are
    # only ever written as dtype, shape and a SHA-256 of their bytes.
    redact: list[Literal["pii", "secrets"]] = Field(default_factory=list)
    # The log rotates to audit.jsonl.1 past this size (one previous file kept).
    max_bytes: Annotated[int, Field(ge=4096)] = 100 * 1024 * 1024


class Drift(_Section):
    enabled: bool = True
    # Share of inference requests whose tensors are summarised, capped per worker process so
    # the statistics never cost more than a bounded amount of CPU.
    sample_rate: Rate = 0.1
    max_samples_per_second: Annotated[float, Field(gt=0, le=100_000)] = 50.0
    # Values kept per tensor for quantiles (a uniform reservoir over everything sampled).
    reservoir_size: Annotated[int, Field(ge=16, le=1_000_000)] = 4096
    # Rows of text and token-id inputs of sampled requests kept whole per minute (a reservoir),
    # served by GET /stats?window=&samples= for a FeedbackPolicy's embedding drift test.
    input_samples_per_minute: Annotated[int, Field(ge=0, le=1000)] = 0


class Toxicity(_Section):
    # Score text outputs (BYTES tensors) of sampled responses with an offline classifier
    # (strata_workloads.monitor.toxicity: alt-profanity-check's, or one on a volume).
    enabled: bool = False
    # A directory with vectorizer.joblib and model.joblib replacing the built-in classifier.
    model_dir: str | None = None


class SidecarConfig(_Section):
    # The ModelDeployment's served model: recorded on every audit line, feedback record and
    # in /stats, so a FeedbackPolicy reading them knows what they are about.
    model_name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.-]+$")]
    listen: Listen = Listen()
    upstream: Upstream = Upstream()
    # Data-path processes sharing the ports (SO_REUSEPORT); 0: one per CPU the pod may use.
    # With the compiled gRPC front end they serve HTTP only.
    workers: Annotated[int, Field(ge=0, le=256)] = 0
    # Who serves gRPC: the compiled front end (strata-sidecar-grpc, one process using every
    # CPU the pod may use; grpc_front_end.py says why) or the Python workers.
    grpc_front_end: Literal["compiled", "python"] = "compiled"
    # Feedback (feedback.jsonl) and the audit log (audit.jsonl): a volume that outlives restarts.
    state_dir: str = "/var/strata/sidecar"
    # Every pod's state directory (a ReadWriteMany volume, this pod's own being state_dir):
    # the read endpoints then serve any pod's records, gone pods' too (serve/state.py).
    shared_state_dir: str | None = None
    # A gone pod's directory is removed once its sidecar has not been alive for this long.
    shared_state_retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    auth: Auth | None = None
    rate_limit: RateLimit | None = None
    audit: Audit = Audit()
    drift: Drift = Drift()
    toxicity: Toxicity = Toxicity()

    @model_validator(mode="after")
    def _per_key_limit_needs_keys(self) -> "SidecarConfig":
        if self.rate_limit is not None and self.rate_limit.per == "apiKey" and self.auth is None:
            raise ValueError("rateLimit.per: apiKey needs auth.apiKeysDir (without keys use per: global or clientIP)")
        return self

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def parse_config(raw: Any, source: str = "<config>") -> SidecarConfig:
    """Validate an already-parsed mapping; raise ConfigError naming each bad setting."""
    return configfile.validate(SidecarConfig, raw, source, ConfigError)


def load_config(path: str | os.PathLike[str] | None = None) -> SidecarConfig:
    return parse_config(*configfile.read(path, CONFIG_ENV, ConfigError))
