"""Starting, identifying and stopping the control-plane processes.

Each process writes a pid file. A pid is only trusted when /proc shows the expected
binary *and* the cluster's state dir in its command line, so a stale pid file whose pid
was reused can never make `down` kill an unrelated process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 40
# Resolved up front: loading a library between fork and exec is not safe.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the starting thread dies.

    Keeps an attached cluster from outliving a crashed or SIGKILLed test run. SIGKILL,
    not SIGTERM: all components would get it at once, and a kube-apiserver whose etcd is
    already gone hangs in graceful shutdown for minutes.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class ManagedProcess:
    """One control-plane process started (or found running) by this package."""

    name: str
    binary: Path
    args: list[str]
    log_path: Path
    pid_path: Path
    popen: subprocess.Popen | None = field(default=None, repr=False)
    pid: int | None = None
    # Environment added to the caller's (None: the caller's as it is).
    env: dict[str, str] | None = None

    def start(self, *, cwd: Path, detached: bool) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():  # keep the previous run's log for post-mortems
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [str(self.binary), *self.args],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the caller doesn't hit the cluster
                # mid-teardown, and detached processes survive the caller.
                start_new_session=True,
                preexec_fn=None if detached else _die_with_parent,
                env=None if self.env is None else {**os.environ, **self.env},
            )
        self.pid = self.popen.pid
        self.pid_path.write_text(f"{self.pid}\n")

    def exit_code(self) -> int | None:
        """The exit status if it has exited (only known for processes we started)."""
        if self.popen is not None:
            return self.popen.poll()
        return None if self.pid is not None and pid_is_running(self.pid) else -1

    def is_running(self) -> bool:
        return self.pid is not None and self.exit_code() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.kill(self.pid, signum)

    def reap(self) -> None:
        if self.popen is not None:
            self.popen.wait()


def pid_is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie we don't own may never be reaped in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def find_running(name: str, binary_name: str, pid_path: Path, state_dir: Path) -> int | None:
    """The pid from `pid_path` if that process is still our `binary_name` for `state_dir`."""
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    argv = _cmdline(pid)
    if not argv or Path(argv[0]).name != binary_name or not pid_is_running(pid):
        return None
    if not any(str(state_dir) in arg for arg in argv[1:]):
        return None
    return pid


def terminate(processes: Iterable[ManagedProcess], grace_seconds: float) -> None:
    """SIGTERM all, SIGKILL whatever outlives the grace period, then reap."""
    processes = [p for p in processes if p.pid is not None]
    for process in processes:
        if process.is_running():
            process.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(p.is_running() for p in processes):
        time.sleep(0.05)
    for process in processes:
        if process.is_running():
            process.signal(signal.SIGKILL)
    for process in processes:
        process.reap()
        # A SIGKILLed process we don't own disappears once init reaps it.
        for _ in range(100):
            if not process.is_running():
                break
            time.sleep(0.05)
        process.pid_path.unlink(missing_ok=True)


def processes_using(state_dir: Path) -> dict[int, list[str]]:
    """Every live process whose command line mentions `state_dir` (leak detection)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = _cmdline(int(entry.name))
        if any(str(state_dir) in arg for arg in argv) and pid_is_running(int(entry.name)):
            found[int(entry.name)] = argv
    return found


def processes_named(binary_name: str) -> dict[int, list[str]]:
    """Every live process whose executable is named `binary_name`, with its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if argv and Path(argv[0]).name == binary_name and pid_is_running(int(entry.name)):
            found[int(entry.name)] = argv
    return found
