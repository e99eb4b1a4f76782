"""What both protocols' front ends share: who is calling, may they, and the request ids."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass

from strata_workloads.serve.auth import ApiKeys, presented_key
from strata_workloads.serve.ratelimit import SharedBuckets

ANONYMOUS = "anonymous"  # no auth configured
MISSING = "missing"  # auth configured, no key presented
INVALID = "invalid"  # a key that is not one of ours


@dataclass(frozen=True)
class Refusal:
    status: str  # gRPC status name
    message: str
    key: str
    retry_after: float = 0.0


class Gateway:
    def __init__(self, keys: ApiKeys | None, buckets: SharedBuckets | None, per: str | None):
        self.keys = keys
        self.buckets = buckets
        self.per = per
        # Unique across workers and restarts: a random prefix per process, then a counter.
        self._prefix = secrets.token_hex(6) + "-"
        self._counter = itertools.count(1)

    def request_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def authenticate(self, authorization: str | None, api_key: str | None) -> tuple[str, Refusal | None]:
        """(key name for labels, refusal or None)."""
        if self.keys is None:
            return ANONYMOUS, None
        presented = presented_key(authorization, api_key)
        if presented is None:
            return MISSING, Refusal("UNAUTHENTICATED", "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'", MISSING)
        name = self.keys.name_of(presented)
        if name is None:
            return INVALID, Refusal("UNAUTHENTICATED", "invalid API key", INVALID)
        return name, None

    def limit(self, key_name: str, client_ip: str) -> Refusal | None:
        if self.buckets is None:
            return None
        identity = key_name if self.per == "apiKey" else client_ip if self.per == "clientIP" else ""
        wait = self.buckets.acquire(identity)
        if wait <= 0.0:
            return None
        return Refusal("RESOURCE_EXHAUSTED",
                       f"rate limit of {self.buckets.rate:g} requests/s (burst {self.buckets.burst:g}) per {self.per} "
                       f"exceeded; retry after {wait:.3f}s", key_name, wait)
