"""S3 sources against a real S3-compatible server: SeaweedFS (s3_support.py, the session's s3_server)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_support import BUCKET

from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.pipeline import run_pipeline
from strata_workloads.data.sources import SourceError


def test_objects_under_a_prefix_are_read_with_credentials_from_a_secrets_files(s3_server, tmp_path):
    endpoint = s3_server.endpoint
    s3_server.put("chats/a.jsonl", "".join(json.dumps({"text": f"ticket number {i} about a late parcel"}) + "\n"
                                          for i in range(30)).encode() + b"{broken\n")
    table = pa.table({"text": [f"parquet ticket {i} about refunds" for i in range(20)] + ["ticket number 3 about a late parcel"]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    s3_server.put("chats/b/c.parquet", sink.getvalue().to_pybytes())
    s3_server.put("other/x.jsonl", b'{"text": "not under the prefix"}\n')
    secret = s3_server.credentials(tmp_path / "secret")

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

    wrong = s3_server.credentials(tmp_path / "wrong", secret_key="not-the-secret")
    with pytest.raises(SourceError, match=f"s3://{BUCKET}/chats/"):
        run_pipeline(config([("chats/", "jsonl")], wrong), tmp_path / "out")
    with pytest.raises(SourceError, match="holds no objects|does not exist"):
        run_pipeline(config([("absent/", "jsonl")], secret), tmp_path / "out")
