"""Pure: the Event that tells a Strata object's story in `kubectl describe` and `kubectl get
events` ("Created Job trainer-x")."""

from __future__ import annotations

from typing import Any

from strata.constants import MANAGED_BY

# The API server refuses an Event message over 1 KiB.
MESSAGE_LIMIT = 1024


def event_manifest(body: dict[str, Any], type_: str, reason: str, message: str, now: str,
                   instance: str) -> dict[str, Any]:
    """A core/v1 Event on `body` at RFC 3339 time `now`, from the Strata operator (kubectl's
    "From" column) running as `instance` (its pod's or host's name)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{MANAGED_BY}-", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:MESSAGE_LIMIT],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
