"""Reads a pod's Prometheus endpoint: how a TrainingJob's live progress reaches its status.

Pulled by the operator from rank 0 (the same gauges Prometheus scrapes), rather than pushed
by the trainer: the trainer pods need no credentials and no write access to anything, the
operator needs no extra RBAC, and the cost is one HTTP GET per running job per poll.
"""

from __future__ import annotations

import urllib.error
import urllib.request

TIMEOUT_SECONDS = 2.0


def fetch_metrics(pod_ip: str, port: int) -> str | None:
    """The exposition text, or None when the pod does not answer (yet)."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=TIMEOUT_SECONDS) as response:
            return response.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None
