"""Feedback on answers: thumbs up or down and free text, keyed by the sidecar's request id.

Clients send ``POST /v2/feedback`` to the sidecar's HTTP port (API key required when auth is
on) with ``{"requestId": "<strata-request-id of the answer>", "rating": "up"|"down",
"text": "..."}``; the answer is 201 once the record is on disk. Records are appended, one JSON
line each, to ``<stateDir>/feedback.jsonl`` and fsync'ed before answering, so a restart (or a
crash) loses nothing acknowledged. Worker processes append to the same file with O_APPEND:
each record is one write(2), so lines never interleave.

The supervisor reads the file back (``GET /feedback?after=<offset>`` on the metrics port, and
the ``strata_sidecar_feedback_total`` counter, recounted from the file at start).

``attributes`` (optional) are request attributes the client declares with its rating, such as
a locale or a customer tier: a FeedbackPolicy's bias monitor compares approval between the
groups they define (strata_workloads.monitor.feedback.bias).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

FEEDBACK_FILE = "feedback.jsonl"
RATINGS = ("up", "down")
MAX_TEXT = 4096
MAX_ATTRIBUTES = 16
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_ATTRIBUTE_VALUE = 256
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class FeedbackError(ValueError):
    pass


def validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FeedbackError("feedback must be a JSON object with requestId, rating and optional text")
    unknown = sorted(set(body) - {"requestId", "rating", "text", "attributes"})
    if unknown:
        raise FeedbackError(f"unknown feedback field(s) {', '.join(unknown)}; expected requestId, rating, text, "
                            "attributes")
    request_id, rating, text = body.get("requestId"), body.get("rating"), body.get("text", "")
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise FeedbackError("requestId: the strata-request-id returned with the answer (1-128 characters "
                            f"of letters, digits, '_.:-'), got {request_id!r}")
    if rating not in RATINGS:
        raise FeedbackError(f"rating: must be 'up' or 'down', got {rating!r}")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise FeedbackError(f"text: must be a string of at most {MAX_TEXT} characters")
    record = {"requestId": request_id, "rating": rating, "text": text}
    attributes = body.get("attributes")
    if attributes is not None:
        if (not isinstance(attributes, dict) or len(attributes) > MAX_ATTRIBUTES
                or not all(isinstance(k, str) and _ATTRIBUTE_NAME.match(k) and isinstance(v, str)
                           and len(v) <= MAX_ATTRIBUTE_VALUE for k, v in attributes.items())):
            raise FeedbackError(f"attributes: an object of at most {MAX_ATTRIBUTES} string values (names of 1-64 "
                                f"letters, digits, '_.-'; values of at most {MAX_ATTRIBUTE_VALUE} characters), "
                                f"such as {{\"locale\": \"de\"}}")
        record["attributes"] = attributes
    return record


class FeedbackStore:
    """The writing side, one per worker process."""

    def __init__(self, state_dir: Path, model_name: str):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FEEDBACK_FILE
        self.model_name = model_name
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def append_sync(self, body: Any, key: str) -> dict[str, Any]:
        record = {**validate(body), "key": key, "model": self.model_name, "time": time.time()}
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, line)
        os.fsync(self._fd)
        return record

    async def append(self, body: Any, key: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.append_sync, body, key)

    def close(self) -> None:
        os.close(self._fd)


class JsonLines:
    """Pages of an append-only JSON-lines file, by byte offset (what GET /feedback and
    GET /review answer: ``{"records": [...], "next": <offset to ask for next>}``)."""

    def __init__(self, path: Path):
        self.path = path

    def _read(self, offset: int, limit: int | None = None) -> tuple[list[dict[str, Any]], int]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        records = []
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n") or (limit is not None and len(records) >= limit):
                break  # a line still being written, or the page is full
            offset += len(line)
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a crash mid-write: never acknowledged, skipped
        return records, offset

    def page(self, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        records, offset = self._read(after, limit)
        return {"records": records, "next": offset}


class FeedbackLog(JsonLines):
    """The reading side, in the supervisor: counts by rating and pages of records."""

    def __init__(self, state_dir: Path):
        super().__init__(state_dir / FEEDBACK_FILE)
        self._lock = threading.Lock()
        self._offset = 0
        self.counts = {rating: 0 for rating in RATINGS}
        self.refresh()

    def refresh(self) -> None:
        """Count the complete lines appended since the last look."""
        with self._lock:
            records, self._offset = self._read(self._offset)
            for record in records:
                self.counts[record["rating"]] = self.counts.get(record["rating"], 0) + 1
