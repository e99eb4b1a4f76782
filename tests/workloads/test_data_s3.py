"""S3 sources against a real S3-compatible server: SeaweedFS (`weed mini`), built once from its Go
module (devcluster/binaries.py SEAWEEDFS, cached under ~/.cache/strata) and started here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from strata.devcluster import free_port
from strata.devcluster.binaries import SEAWEEDFS, build_component
from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.pipeline import run_pipeline
from strata_workloads.data.sources import SourceError

ACCESS_KEY, SECRET_KEY, BUCKET = "strata", "strata-secret", "corpora"


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    build_component(SEAWEEDFS, ["weed"])
    weed = SEAWEEDFS.cache_dir() / "weed"
    data = tmp_path_factory.mktemp("seaweedfs")
    s3_port = free_port()
    # Every port it would otherwise take at a fixed number, so runs side by side do not collide.
    ports = {flag: free_port() for flag in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "admin.port", "admin.port.grpc", "metricsPort",
        "s3.metricsPort", "debug.port", "s3.debug.port")}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "S3_BUCKET": BUCKET}
    log = (data / "weed.log").open("w")
    process = subprocess.Popen([str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                f"-s3.port={s3_port}", *(f"-{flag}={port}" for flag, port in ports.items()),
                                "-admin.port.legacy=0", "-webdav=false", "-admin.ui=false"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = fs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, endpoint_override=f"127.0.0.1:{s3_port}",
                                 scheme="http", region="us-east-1")
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (data / "weed.log").read_text()[-2000:]
            if _port_open(s3_port):
                try:
                    client.get_file_info(fs.FileSelector(BUCKET, allow_not_found=True))
                    break
                except OSError:
                    pass
            assert time.monotonic() < deadline, "SeaweedFS's S3 API did not come up: " + (data / "weed.log").read_text()[-2000:]
            time.sleep(0.5)
        yield f"http://127.0.0.1:{s3_port}", client
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _put(client, key: str, data: bytes) -> None:
    with client.open_output_stream(f"{BUCKET}/{key}") as stream:
        stream.write(data)


def test_objects_under_a_prefix_are_read_with_credentials_from_a_secrets_files(s3_endpoint, tmp_path):
    endpoint, client = s3_endpoint
    _put(client, "chats/a.jsonl", "".join(json.dumps({"text": f"ticket number {i} about a late parcel"}) + "\n"
                                          for i in range(30)).encode() + b"{broken\n")
    table = pa.table({"text": [f"parquet ticket {i} about refunds" for i in range(20)] + ["ticket number 3 about a late parcel"]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _put(client, "chats/b/c.parquet", sink.getvalue().to_pybytes())
    _put(client, "other/x.jsonl", b'{"text": "not under the prefix"}\n')
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY)
    (secret / "AWS_SECRET_ACCESS_KEY").write_text(SECRET_KEY + "\n")

    def config(fmt_by_prefix: list[tuple[str, str]], credentials: Path | None):
        return PipelineConfig.model_validate({
            "sources": [{"s3": {"uri": f"s3://{BUCKET}/{prefix}", "endpoint": endpoint,
                                **({"credentialsPath": str(credentials)} if credentials else {})}, "format": fmt}
                        for prefix, fmt in fmt_by_prefix],
            "preprocessing": {"text": {"tokenizer": {"kind": "byte"}}}})

    result = run_pipeline(config([("chats/a.jsonl", "jsonl"), ("chats/b/", "parquet")], secret), tmp_path / "out")
    statistics = result.manifest.pipeline.statistics
    assert (statistics["recordsIn"], statistics["quarantined"], statistics["duplicates"], statistics["recordsOut"]) == (52, 1, 1, 50)
    lineage = result.manifest.pipeline.lineage.sources
    assert [source.source for source in lineage] == [f"s3://{BUCKET}/chats/a.jsonl", f"s3://{BUCKET}/chats/b/"]
    again = run_pipeline(config([("chats/a.jsonl", "jsonl"), ("chats/b/", "parquet")], secret), tmp_path / "out")
    assert (again.version, again.created) == (result.version, False)

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY)
    (wrong / "AWS_SECRET_ACCESS_KEY").write_text("not-the-secret")
    with pytest.raises(SourceError, match=f"s3://{BUCKET}/chats/"):
        run_pipeline(config([("chats/", "jsonl")], wrong), tmp_path / "out")
    with pytest.raises(SourceError, match="holds no objects|does not exist"):
        run_pipeline(config([("absent/", "jsonl")], secret), tmp_path / "out")
