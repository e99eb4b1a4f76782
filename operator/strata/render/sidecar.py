"""The contract between the operator and a ModelDeployment pod: who listens where.

Clients reach only the monitoring sidecar (the Service exposes its ports alone); Triton
listens on the pod's loopback, so nothing bypasses the sidecar's auth and rate limits.
The sidecar's own config file is rendered here from the ModelDeployment spec and parsed by
`strata_workloads.serve.config`; a test feeds one to the other.
"""

from __future__ import annotations

SIDECAR_CONFIG_DIR = "/etc/strata"
SIDECAR_CONFIG_FILE = "sidecar.yaml"
SIDECAR_CONFIG_PATH = f"{SIDECAR_CONFIG_DIR}/{SIDECAR_CONFIG_FILE}"
# API keys, mounted from the user's Secret (one key per Secret value).
API_KEYS_DIR = "/etc/strata/api-keys"
# Feedback and audit records that must survive a sidecar restart (a volume).
SIDECAR_STATE_DIR = "/var/strata/sidecar"

# What clients call: Triton's own ports, served by the sidecar.
SIDECAR_HTTP_PORT = 8000
SIDECAR_GRPC_PORT = 8001
SIDECAR_METRICS_PORT = 9090
# Triton itself, on 127.0.0.1 inside the pod; its metrics port is what Prometheus scrapes.
TRITON_HTTP_PORT = 18000
TRITON_GRPC_PORT = 18001
TRITON_METRICS_PORT = 8002
MODEL_REPOSITORY_DIR = "/var/strata/models"
