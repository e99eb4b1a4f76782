"""The compiled gRPC front end (``workloads/sidecar-grpc``, a Go program): starting it, and
reading the samples it hands over.

Why it exists: every gRPC call through a Python proxy pays for a Python gRPC hop, which
costs more than the ModelDeployment's latency and throughput goals allow whatever the
proxy does (tests/benchmarks/bench_sidecar.py measures both front ends against direct
calls). The compiled front end does what grpc_proxy.py does, with the same refusals,
metrics, request ids and samples; ``grpcFrontEnd: python`` in the sidecar's config keeps
the Python one (tests/workloads/test_sidecar.py runs against both).

What it shares with the Python side, each defined once here or in the module named:
  flags          front_end_args() renders them from the sidecar's config
  rate limits    ratelimit.SharedBuckets' file, mapped by both (one limit per key over
                 both protocols)
  metrics        metrics.DataPathMetrics' snapshot format, in the same directory
  samples        frames on a Unix socket (SAMPLES_SOCKET in the metrics directory), read by
                 read_samples() and consumed like the workers' samples
  constants      ``strata-sidecar-grpc -describe`` prints its own; the contract test
                 compares them with protocol.py, metrics.py and ratelimit.py
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, BinaryIO

from strata_workloads.serve.config import SidecarConfig

log = logging.getLogger(__name__)

BINARY_NAME = "strata-sidecar-grpc"
BINARY_ENV = "STRATA_SIDECAR_GRPC"
SAMPLES_SOCKET = "samples.sock"
NO_BYTES = 0xFFFFFFFF  # a frame's length for "no request / response bytes"
LISTENING = b"listening\n"  # what the front end prints on stdout once its port is open


class FrontEndMissing(RuntimeError):
    """The binary is neither at $STRATA_SIDECAR_GRPC nor on PATH."""


def find_binary() -> str:
    configured = os.environ.get(BINARY_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise FrontEndMissing(f"${BINARY_ENV}={configured} is not an executable file")
        return configured
    found = shutil.which(BINARY_NAME)
    if found is None:
        raise FrontEndMissing(
            f"grpcFrontEnd: compiled needs {BINARY_NAME} on PATH or in ${BINARY_ENV} (build it with `go build` in "
            f"workloads/sidecar-grpc; the sidecar image has it), or set grpcFrontEnd: python")
    return found


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def front_end_args(config: SidecarConfig, metrics_dir: Path, buckets_file: Path | None) -> list[str]:
    """The front end's flags for this sidecar config (main.go declares them)."""
    analyse = config.drift.enabled or config.toxicity.enabled
    args = [
        f"-listen={_address(config.listen.host, config.listen.grpc_port)}",
        f"-upstream={_address(config.upstream.host, config.upstream.grpc_port)}",
        f"-timeout={config.upstream.timeout_seconds}",
        f"-audit-rate={config.audit.sample_rate}",
        f"-drift-rate={config.drift.sample_rate if analyse else 0.0}",
        f"-drift-per-second={config.drift.max_samples_per_second}",
        f"-samples-socket={metrics_dir / SAMPLES_SOCKET}",
        f"-metrics-dir={metrics_dir}",
    ]
    if config.auth is not None:
        args.append(f"-api-keys-dir={config.auth.api_keys_dir}")
    if config.rate_limit is not None and buckets_file is not None:
        limit = config.rate_limit
        args += [f"-rate-limit-file={buckets_file}", f"-rate={limit.requests_per_second}", f"-burst={limit.burst}",
                 f"-per={limit.per}"]
    return args


class FrontEndProcess:
    """The running front end, with the few methods the supervisor uses of its workers."""

    def __init__(self, binary: str, args: list[str]):
        self.listening = threading.Event()
        self.process = subprocess.Popen([binary, *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        # pidfd: readable once the process exits, so the supervisor waits on it beside the
        # workers' sentinels.
        self.sentinel = os.pidfd_open(self.process.pid)
        threading.Thread(target=self._watch_stdout, daemon=True, name="grpc-front-end-stdout").start()

    def _watch_stdout(self) -> None:
        if self.process.stdout.readline() == LISTENING:
            self.listening.set()
        self.process.stdout.read()  # nothing more is printed; keep the pipe drained until exit

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        if self.is_alive():
            self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        else:
            os.close(self.sentinel)
            self.sentinel = -1


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def read_samples(stream: BinaryIO) -> Any:
    """Yield (meta, request bytes or None, response bytes or None) from the front end's frames:
    a little-endian uint32 length and the metadata's JSON, then the request and the response,
    each a uint32 length (NO_BYTES: none) and its bytes (samples.go writes them)."""
    while True:
        try:
            (size,) = struct.unpack("<I", _read_exactly(stream, 4))
            meta = json.loads(_read_exactly(stream, size))
            parts = []
            for _ in range(2):
                (size,) = struct.unpack("<I", _read_exactly(stream, 4))
                parts.append(None if size == NO_BYTES else _read_exactly(stream, size))
        except EOFError:
            return
        yield meta, parts[0], parts[1]


def serve_samples(path: Path, consume: Callable[[dict, bytes | None, bytes | None], None],
                  stop: threading.Event) -> socket.socket:
    """Listen at ``path``; each connection's samples go to ``consume`` on a thread of its own."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def connection(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            for meta, request, response in read_samples(stream):
                consume(meta, request, response)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed at shutdown
            threading.Thread(target=connection, args=(conn,), daemon=True, name="grpc-front-end-samples").start()

    threading.Thread(target=accept, daemon=True, name="grpc-front-end-accept").start()
    return listener
