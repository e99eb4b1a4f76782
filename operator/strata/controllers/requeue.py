"""Periodic passes without a finalizer: every object is reconciled again a set time after its
last pass (its kind's resync; a running TrainingJob's progress reads; a FeedbackPolicy's
evaluations), from a fresh read, on a few worker threads.

Why not kopf timers: kopf puts a finalizer on every object that has one, so that it can stop
the timer before the object goes. Only a running operator that watches the object removes it,
so nothing can be deleted while the operator is down, and a namespace being deleted hangs for
good: kopf stops watching a namespace once it is marked for deletion (nolar/kopf#1088) and
never sees its objects go. A pass needs no cleanup, so Strata needs no finalizer.

`Schedule` is the bookkeeping (which objects exist and when each is due), fed by kopf's watch
events and by every pass; `Requeuer` runs what is due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# A failed periodic pass is retried this soon, or at its interval if that is shorter.
RETRY_SECONDS = 10.0
# The longest the runner sleeps between looks at the schedule (new objects may be due sooner).
TICK_SECONDS = 1.0


@dataclass
class Entry:
    kind: str
    namespace: str
    name: str
    uid: str
    interval: float
    last_pass: float
    running: bool = False

    @property
    def due(self) -> float:
        return self.last_pass + self.interval


class Schedule:
    """Thread-safe: kopf's handlers and the worker threads update it concurrently."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}

    def seen(self, kind: str, namespace: str, name: str, uid: str, interval: float) -> None:
        """An object the operator watches exists; `interval` may change with its state (a
        TrainingJob's progress is read often only while it runs)."""
        with self._lock:
            entry = self._entries.get(uid)
            if entry is None:
                # First seen now: kopf's own create or resume handler runs its first pass.
                self._entries[uid] = Entry(kind, namespace, name, uid, interval, self._clock())
            else:
                entry.interval = interval

    def passed(self, uid: str) -> None:
        """A pass of the object finished (whatever started it): its next one is an interval away."""
        with self._lock:
            if (entry := self._entries.get(uid)) is not None:
                entry.last_pass = self._clock()

    def retry(self, uid: str, delay: float) -> None:
        """Its periodic pass failed: the next one in `delay` seconds, or at its interval if sooner."""
        with self._lock:
            if (entry := self._entries.get(uid)) is not None:
                entry.last_pass = self._clock() - entry.interval + min(delay, entry.interval)
                entry.running = False

    def done(self, uid: str) -> None:
        with self._lock:
            if (entry := self._entries.get(uid)) is not None:
                entry.running = False

    def gone(self, uid: str) -> None:
        with self._lock:
            self._entries.pop(uid, None)

    def take_due(self) -> list[Entry]:
        """The objects whose pass is due and not already running, now marked running."""
        now = self._clock()
        with self._lock:
            due = sorted((e for e in self._entries.values() if not e.running and e.due <= now), key=lambda e: e.due)
            for entry in due:
                entry.running = True
            return [Entry(**vars(entry)) for entry in due]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


SCHEDULE = Schedule()


class Requeuer:
    """Runs `run_pass(entry)` for each due entry on `workers` threads until stopped. run_pass
    reads the object afresh and reconciles it; the schedule hears of the pass from reconcile()."""

    def __init__(self, schedule: Schedule, run_pass: Callable[[Entry], None], workers: int = 4,
                 logger: logging.Logger | None = None) -> None:
        self._schedule = schedule
        self._run_pass = run_pass
        self._workers = workers
        self._logger = logger or logging.getLogger(__name__)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="strata-requeue")
        self._thread = threading.Thread(target=self._loop, name="strata-requeue", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            for entry in self._schedule.take_due():
                self._pool.submit(self._guarded, entry)

    def _guarded(self, entry: Entry) -> None:
        try:
            self._run_pass(entry)
        except Exception as error:  # retried; the object's status says what failed
            self._logger.warning(f"Periodic pass of {entry.kind} {entry.namespace}/{entry.name} failed: {error}")
            self._schedule.retry(entry.uid, RETRY_SECONDS)
        else:
            self._schedule.done(entry.uid)
