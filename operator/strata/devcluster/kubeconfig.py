"""Kubeconfig files for the dev cluster's clients, with the credentials embedded."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CLUSTER_NAME = "strata-dev"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def render_kubeconfig(
    server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> str:
    """A single-context kubeconfig; embedding the PEMs keeps it valid wherever it is copied."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CLUSTER_NAME,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client_cert),
                    "client-key-data": _b64(client_key),
                },
            }
        ],
        "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(
    path: Path, server: str, ca_cert: Path, client_cert: Path, client_key: Path, user: str
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_kubeconfig(server, ca_cert, client_cert, client_key, user))
    path.chmod(0o600)  # holds a private key
    return path
