"""Token buckets shared by every data-path process of the sidecar.

Clients are spread over the worker processes by connection (SO_REUSEPORT), not by request,
so a limit split N ways would throttle a client whose one connection lands on one worker.
The buckets therefore live in shared memory (a fixed open-addressing table guarded by one
process-shared lock): each check is a handful of array reads and writes, about a
microsecond.

Identities (API key name, client IP, or one global bucket) hash into SLOTS entries; a full
table (more distinct client IPs in flight than slots) reuses the least recently used entry
among the probed ones, which at worst hands that identity a fresh bucket.
"""

from __future__ import annotations

import hashlib
import math
import time
from multiprocessing.context import BaseContext

SLOTS = 4096
PROBES = 8


def _identity_hash(identity: str) -> int:
    # Stable across processes (str hashes are salted per interpreter); never 0 (= free slot).
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "little") >> 1 | 1


class SharedBuckets:
    """Create in the supervisor, pass to the workers (the arrays and lock are inherited)."""

    def __init__(self, context: BaseContext, rate: float, burst: int):
        self.rate = float(rate)
        self.burst = float(burst)
        self.lock = context.Lock()
        self.owners = context.RawArray("q", SLOTS)
        self.tokens = context.RawArray("d", SLOTS)
        self.updated = context.RawArray("d", SLOTS)
        self._hashes: dict[str, int] = {}
        self._views = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_hashes"], state["_views"] = {}, None
        return state

    def _arrays(self):
        # memoryviews index several times faster than the ctypes arrays they look at.
        if self._views is None:
            self._views = tuple(memoryview(array).cast("B").cast(code) for array, code in
                                ((self.owners, "q"), (self.tokens, "d"), (self.updated, "d")))
        return self._views

    def acquire(self, identity: str, now: float | None = None) -> float:
        """Take one token for ``identity``: 0.0 when allowed, else the seconds until one is due."""
        key = self._hashes.get(identity)
        if key is None:
            if len(self._hashes) > 65536:
                self._hashes.clear()
            key = self._hashes[identity] = _identity_hash(identity)
        now = time.monotonic() if now is None else now
        owners, tokens, updated = self._views or self._arrays()
        start = key % SLOTS
        with self.lock:
            victim, oldest = start, math.inf
            for probe in range(PROBES):
                slot = (start + probe) % SLOTS
                owner = owners[slot]
                if owner == key:
                    break
                if owner == 0:
                    owners[slot], tokens[slot], updated[slot] = key, self.burst, now
                    break
                if updated[slot] < oldest:
                    victim, oldest = slot, updated[slot]
            else:
                slot = victim
                owners[slot], tokens[slot], updated[slot] = key, self.burst, now
            available = min(self.burst, tokens[slot] + (now - updated[slot]) * self.rate)
            updated[slot] = now
            if available >= 1.0:
                tokens[slot] = available - 1.0
                return 0.0
            tokens[slot] = available
            return (1.0 - available) / self.rate
