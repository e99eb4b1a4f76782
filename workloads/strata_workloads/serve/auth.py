"""API keys from a mounted Secret: one file per key, re-read when the Secret changes."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Where clients put the key: gRPC metadata / HTTP headers (lower-case, as gRPC delivers them).
AUTHORIZATION = "authorization"
API_KEY_HEADER = "x-api-key"
BEARER = "bearer "


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: ``x-api-key: K`` or ``authorization: Bearer K``."""
    if api_key:
        return api_key.strip()
    if authorization and authorization[:7].lower() == BEARER:
        return authorization[7:].strip()
    return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Maps a presented key to its name (the Secret's data key), by SHA-256 digest.

    Lookups by digest take the same time whichever key matched or how much of it did. Files
    whose names start with '.' are skipped: kubelet's ``..data`` and timestamped directories.
    """

    def __init__(self, directory: str | os.PathLike[str], reload_seconds: float = 5.0):
        self.directory = Path(directory)
        self.reload_seconds = reload_seconds
        self._by_digest: dict[bytes, str] = {}
        self._values: list[str] = []
        self._signature: tuple = ()
        self.reload()

    def reload(self) -> bool:
        """Re-read the directory if it changed; True when the key set was replaced."""
        try:
            entries = sorted(p for p in self.directory.iterdir() if not p.name.startswith("."))
            signature = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in entries)
        except OSError as error:
            log.error("cannot read API keys from %s: %s", self.directory, error)
            return False
        if signature == self._signature:
            return False
        by_digest, values = {}, []
        for path in entries:
            try:
                value = path.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                log.error("skipping API key file %s: %s", path, error)
                continue
            if value:
                by_digest[_digest(value)] = path.name
                values.append(value)
        self._by_digest, self._values, self._signature = by_digest, values, signature
        log.info("loaded %d API key(s) from %s", len(by_digest), self.directory)
        return True

    def name_of(self, key: str | None) -> str | None:
        """The key's name, or None when it is missing or not one of ours."""
        if not key:
            return None
        return self._by_digest.get(_digest(key))

    @property
    def values(self) -> list[str]:
        """The keys themselves (for redaction from audited text)."""
        return list(self._values)

    def watch(self, stop: threading.Event) -> threading.Thread:
        """Poll for rotated keys (kubelet swaps the Secret's files atomically)."""

        def loop():
            while not stop.wait(self.reload_seconds):
                self.reload()

        thread = threading.Thread(target=loop, name="api-key-reload", daemon=True)
        thread.start()
        return thread
