"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`), built once from its Go
module (devcluster/binaries.py SEAWEEDFS, cached under ~/.cache/strata) and started with one
bucket and one key pair, on loopback, or on the real node's IP where its pods must reach it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyarrow import fs

from strata.devcluster import free_port
from strata.devcluster.binaries import SEAWEEDFS, build_component

ACCESS_KEY, SECRET_KEY, BUCKET = "strata", "strata-secret", "corpora"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    client: Any  # a pyarrow S3FileSystem with the server's keys

    def put(self, key: str, data: bytes) -> None:
        with self.client.open_output_stream(f"{BUCKET}/{key}") as stream:
            stream.write(data)

    def upload(self, directory: Path, prefix: str) -> None:
        """Every file under `directory`, under `prefix` in the bucket."""
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.put(f"{prefix}/{path.relative_to(directory)}", path.read_bytes())

    def credentials(self, directory: Path, secret_key: str = SECRET_KEY) -> Path:
        """A directory laid out as a mounted Secret with the keys (the operator's credentialsPath)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY)
        (directory / "AWS_SECRET_ACCESS_KEY").write_text(secret_key + "\n")
        return directory


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


@contextlib.contextmanager
def seaweedfs(data: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    build_component(SEAWEEDFS, ["weed"])
    weed = SEAWEEDFS.cache_dir() / "weed"
    s3_port = free_port()
    # Every port it would otherwise take at a fixed number, so runs side by side do not collide.
    ports = {flag: free_port() for flag in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc", "metricsPort",
        "s3.metricsPort", "debug.port", "s3.debug.port")}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "S3_BUCKET": BUCKET}
    log = (data / "weed.log").open("w")
    process = subprocess.Popen([str(weed), "mini", f"-dir={data}", f"-ip={host}", f"-ip.bind={host}",
                                f"-s3.port={s3_port}", *(f"-{flag}={port}" for flag, port in ports.items()),
                                "-admin.port.legacy=0", "-webdav=false", "-admin.ui=false"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=f"{host}:{s3_port}",
                                 scheme="http", region="us-east-1")
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (data / "weed.log").read_text()[-2000:]
            if _port_open(host, s3_port):
                try:  # up, and the bucket it makes at start made (it may answer before that)
                    if client.get_file_info(BUCKET).type == fs.FileType.Directory:
                        break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "SeaweedFS's S3 API did not come up: " + (data / "weed.log").read_text()[-2000:]
            time.sleep(0.5)
        yield S3Server(f"http://{host}:{s3_port}", client)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
