"""Every pod's records on a shared volume: what outlives a pod.

Each sidecar keeps feedback, the review queue and the audit log in its state directory. Alone
(an emptyDir) they survive the sidecar's restarts but not the pod's replacement by a rollout or
a scale-in. With ``sharedStateDir`` the state directory is this pod's own directory on a
ReadWriteMany volume (``<sharedStateDir>/<pod name>``; the Deployment mounts it there by
``subPathExpr``), and every sidecar can read every pod's directory, including those of pods that
are gone. A FeedbackPolicy then reads all of them through one sidecar: ``GET /pods`` names the
directories, ``GET /feedback?pod=<name>`` and ``GET /review?pod=<name>`` page one of them, and
``GET /exchanges`` searches them all.

A live sidecar touches ``HEARTBEAT_FILE`` in its own directory every ``HEARTBEAT_SECONDS``; a
directory whose heartbeat is older than the retention belongs to a pod gone that long, and any
sidecar removes it (at start and every ``HEARTBEAT_SECONDS``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEARTBEAT_FILE = ".alive"
HEARTBEAT_SECONDS = 600.0
# A pod's name, as Kubernetes allows it: no separators, so it can only name a directory of the root.
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class UnknownPod(LookupError):
    """No directory of that pod on the shared volume."""


class SharedState:
    def __init__(self, root: Path, own: Path, retention_seconds: float):
        self.root = root
        self.own = own
        self.retention_seconds = retention_seconds

    def heartbeat(self, now: float | None = None) -> None:
        beat = self.own / HEARTBEAT_FILE
        beat.touch()
        if now is not None:
            os.utime(beat, (now, now))

    def pods(self) -> list[dict[str, Any]]:
        """Every pod's directory: its name and when its sidecar was last alive (Unix seconds)."""
        found = []
        for directory in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if directory.is_dir() and _POD_NAME.match(directory.name):
                found.append({"pod": directory.name, "alive": _last_alive(directory)})
        return found

    def directory(self, pod: str) -> Path:
        if not _POD_NAME.match(pod) or not (self.root / pod).is_dir():
            raise UnknownPod(f"pod: no state of a pod named {pod!r} here; GET /pods lists them")
        return self.root / pod

    def directories(self) -> list[Path]:
        return [self.root / entry["pod"] for entry in self.pods()]

    def remove_expired(self, now: float | None = None) -> list[str]:
        """Remove the directories of pods gone for longer than the retention; their names."""
        cutoff = (time.time() if now is None else now) - self.retention_seconds
        removed = []
        for entry in self.pods():
            directory = self.root / entry["pod"]
            if entry["alive"] < cutoff and not _same_directory(directory, self.own):
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(entry["pod"])
        if removed:
            log.info("removed the records of %d pod(s) gone for longer than the retention: %s",
                     len(removed), ", ".join(removed))
        return removed


def _last_alive(directory: Path) -> float:
    """The heartbeat's time; for a directory without one, its newest file's."""
    try:
        return (directory / HEARTBEAT_FILE).stat().st_mtime
    except FileNotFoundError:
        return max([directory.stat().st_mtime, *(path.stat().st_mtime for path in directory.iterdir())])


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
