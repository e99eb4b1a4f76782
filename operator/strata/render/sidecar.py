"""The contract between the operator and a ModelDeployment pod: who listens where.

Clients reach only the monitoring sidecar (the Service exposes its ports alone); Triton
listens on the pod's loopback, so nothing bypasses the sidecar's auth and rate limits.
The sidecar's own config file is rendered here from the ModelDeployment spec and parsed by
`strata_workloads.serve.config`; a test feeds one to the other.
"""

from __future__ import annotations

from typing import Any

from strata.api.deployment import ModelDeploymentSpec

SIDECAR_CONFIG_DIR = "/etc/strata"
SIDECAR_CONFIG_FILE = "sidecar.yaml"
SIDECAR_CONFIG_PATH = f"{SIDECAR_CONFIG_DIR}/{SIDECAR_CONFIG_FILE}"
# API keys, mounted from the user's Secret (one key per Secret value).
API_KEYS_DIR = "/etc/strata/api-keys"
# Feedback and audit records that must survive a sidecar restart (a volume).
SIDECAR_STATE_DIR = "/var/strata/sidecar"
# With monitoring.storage: every pod's state directory (this pod's is SIDECAR_STATE_DIR too).
SIDECAR_SHARED_STATE_DIR = "/var/strata/pods"

# What clients call: Triton's own ports, served by the sidecar.
SIDECAR_HTTP_PORT = 8000
SIDECAR_GRPC_PORT = 8001
SIDECAR_METRICS_PORT = 9090
# Triton itself, on 127.0.0.1 inside the pod; its metrics port is what Prometheus scrapes.
TRITON_HTTP_PORT = 18000
TRITON_GRPC_PORT = 18001
TRITON_METRICS_PORT = 8002
MODEL_REPOSITORY_DIR = "/var/strata/models"
# Triton and the sidecar share the pod's network namespace.
TRITON_HOST = "127.0.0.1"
SIDECAR_LISTEN_HOST = "0.0.0.0"


def render_sidecar_config(spec: ModelDeploymentSpec, model_name: str) -> dict[str, Any]:
    """The sidecar's config file (``strata_workloads.serve.config``) for a ModelDeployment.

    ``model_name`` is the Triton model the deployment serves; the sidecar records it on audit
    lines, feedback records and its drift statistics. The Deployment mounts the API-key
    Secret (``access.auth.apiKeys.secretRef``) at API_KEYS_DIR, one file per key, and a
    volume at SIDECAR_STATE_DIR (with ``monitoring.storage``, the pod's own directory of the
    claim, whose whole directory is at SIDECAR_SHARED_STATE_DIR); this file only says where
    they are.
    """
    monitoring = spec.monitoring
    access = spec.access
    config: dict[str, Any] = {
        "modelName": model_name,
        "listen": {"host": SIDECAR_LISTEN_HOST, "httpPort": SIDECAR_HTTP_PORT, "grpcPort": SIDECAR_GRPC_PORT,
                   "metricsPort": SIDECAR_METRICS_PORT},
        "upstream": {"host": TRITON_HOST, "httpPort": TRITON_HTTP_PORT, "grpcPort": TRITON_GRPC_PORT},
        "stateDir": SIDECAR_STATE_DIR,
        "audit": {"sampleRate": monitoring.audit_sample_rate, "redact": sorted(set(monitoring.redact))},
        "drift": {"enabled": monitoring.drift, "sampleRate": monitoring.drift_sample_rate,
                  "inputSamplesPerMinute": monitoring.input_samples_per_minute},
        "toxicity": {"enabled": monitoring.toxicity},
    }
    if monitoring.storage is not None:
        config["sharedStateDir"] = SIDECAR_SHARED_STATE_DIR
        config["sharedStateRetentionDays"] = monitoring.storage.retention_days
    keyed = access is not None and access.auth is not None and access.auth.api_keys is not None
    if keyed:
        config["auth"] = {"apiKeysDir": API_KEYS_DIR}
    if access is not None and access.rate_limit is not None:
        limit = access.rate_limit
        # Without keys every caller is the same anonymous one: a per-key limit is a global one.
        per = "global" if limit.per == "apiKey" and not keyed else limit.per
        config["rateLimit"] = {"requestsPerSecond": limit.requests_per_second, "burst": limit.burst, "per": per}
    return config
