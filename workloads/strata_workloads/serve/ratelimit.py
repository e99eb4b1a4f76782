"""Token buckets shared by every data-path process of the sidecar, of both protocols.

Clients are spread over the worker processes by connection (SO_REUSEPORT), not by request,
so a limit split N ways would throttle a client whose one connection lands on one worker;
and a key's limit covers its gRPC and HTTP calls together. The buckets therefore live in one
memory-mapped file that the Python workers and the compiled gRPC front end
(workloads/sidecar-grpc/gateway.go, the same layout and hash) all map: a fixed
open-addressing table guarded by flock, so each check is a lock, a handful of array reads
and writes and an unlock, a few microseconds.

Layout: SLOTS owners (int64 identity hashes, 0 = free), then SLOTS token counts and SLOTS
last-update times (float64; CLOCK_MONOTONIC seconds, which every process on the host reads
alike). Identities (API key name, client IP, or one global bucket) hash into the table; a
full table (more distinct client IPs in flight than slots) reuses the least recently used
entry among the probed ones, which at worst hands that identity a fresh bucket.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import time
from pathlib import Path

SLOTS = 4096
PROBES = 8
TABLE_BYTES = 3 * 8 * SLOTS


def _identity_hash(identity: str) -> int:
    # Stable across processes (str hashes are salted per interpreter); never 0 (= free slot).
    return int.from_bytes(hashlib.sha256(identity.encode()).digest()[:8], "little") >> 1 | 1


class SharedBuckets:
    """Create in the supervisor (``create=True`` writes the empty table); the workers are
    handed the object and map the file themselves on first use."""

    def __init__(self, path: str | os.PathLike[str], rate: float, burst: int, *, create: bool = False):
        self.path = Path(path)
        self.rate = float(rate)
        self.burst = float(burst)
        if create:
            temporary = self.path.with_suffix(".tmp")
            temporary.write_bytes(bytes(TABLE_BYTES))
            os.replace(temporary, self.path)
        self._hashes: dict[str, int] = {}
        self._views = None
        self._fd = -1

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_hashes"], state["_views"], state["_fd"] = {}, None, -1
        return state

    def _arrays(self):
        # flock locks belong to an open file: each process opens its own.
        if self._views is None:
            self._fd = os.open(self.path, os.O_RDWR)
            memory = memoryview(mmap.mmap(self._fd, TABLE_BYTES))
            self._views = (memory[:8 * SLOTS].cast("q"), memory[8 * SLOTS:16 * SLOTS].cast("d"),
                           memory[16 * SLOTS:].cast("d"))
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
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
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
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
