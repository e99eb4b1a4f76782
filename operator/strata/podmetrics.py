"""Reads a pod's Prometheus endpoint: how a TrainingJob's live progress reaches its status.

Pulled by the operator from rank 0 (the same gauges Prometheus scrapes), rather than pushed
by the trainer: the trainer pods need no credentials and no write access to anything, the
operator needs no extra RBAC, and the cost is one HTTP GET per running job per poll.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TIMEOUT_SECONDS = 2.0


def fetch_metrics(pod_ip: str, port: int) -> str | None:
    """The exposition text, or None when the pod does not answer (yet)."""
    try:
        with urllib.request.urlopen(f"{pod_url(pod_ip, port)}/metrics", timeout=TIMEOUT_SECONDS) as response:
            return response.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError, ValueError):
        return None


def pod_url(pod_ip: str, port: int) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"


def fetch_json(url: str) -> Any:
    """A JSON document (the sidecar's /stats and /feedback); raises OSError when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, ValueError) as error:
        raise OSError(f"{url}: {error}") from error


def prometheus_query(base_url: str, query: str) -> dict[str, Any]:
    """An instant query's JSON answer from Prometheus's HTTP API. A query Prometheus refuses
    answers 4xx with a JSON body saying why: that body is returned, for the caller to report."""
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return json.loads(error.read())
        except ValueError:
            raise OSError(f"{base_url}: HTTP {error.code}") from error
    except (urllib.error.URLError, ValueError) as error:
        raise OSError(f"{base_url}: {error}") from error
