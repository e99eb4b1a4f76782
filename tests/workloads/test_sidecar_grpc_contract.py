"""The compiled gRPC front end and the Python side agree: on constants, on flags, on the
rate limiter's file and on the samples' frames.

Behaviour through a real Triton is tested in test_sidecar.py against both front ends; that
is where the frames the front end writes are read (audit lines of gRPC calls), where one
key's bucket is drawn from by both protocols, and where request ids and model names are
scanned from real requests.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
from pathlib import Path

import pytest
from tests_support import example_spec

from strata.api import MODEL_DEPLOYMENT
from strata.devcluster.binaries import sidecar_grpc_binary
from strata.render.sidecar import render_sidecar_config
from strata_workloads.serve import auth, gateway, metrics, protocol, ratelimit
from strata_workloads.serve.config import parse_config
from strata_workloads.serve.grpc_front_end import NO_BYTES, front_end_args, read_samples


@pytest.fixture(scope="module")
def binary() -> str:
    return str(sidecar_grpc_binary())


@pytest.fixture(scope="module")
def described(binary) -> dict:
    return json.loads(subprocess.run([binary, "-describe"], capture_output=True, text=True, check=True).stdout)


def test_the_front_end_shares_the_python_sides_constants(described):
    described = dict(described)
    assert set(described.pop("healthMethods")) == protocol.GRPC_HEALTH
    assert described == {
        "latencyBuckets": list(metrics.LATENCY_BUCKETS),
        "sizeBuckets": list(metrics.SIZE_BUCKETS),
        "maxModelLabels": metrics.MAX_MODEL_LABELS,
        "maxSampleBytes": metrics.MAX_SAMPLE_BYTES,
        "maxPendingSamples": metrics.MAX_PENDING_SAMPLES,
        "snapshotSeconds": metrics.SNAPSHOT_SECONDS,
        "bucketSlots": ratelimit.SLOTS,
        "bucketProbes": ratelimit.PROBES,
        "requestIdHeader": protocol.REQUEST_ID_HEADER,
        "retryAfterHeader": protocol.RETRY_AFTER_HEADER,
        "forbiddenPrefixes": list(protocol.GRPC_FORBIDDEN_PREFIXES),
        "missingKeyMessage": gateway.Gateway(_no_keys(), None, None).authenticate(None, None)[1].message,
        "invalidKeyMessage": gateway.Gateway(_no_keys(), None, None).authenticate("Bearer x", None)[1].message,
    }


def _no_keys():
    class Empty(auth.ApiKeys):
        def __init__(self):
            self._by_digest, self._values = {}, []
    return Empty()


RENDERINGS = [
    pytest.param({}, id="the example deployment"),
    pytest.param({"access": None}, id="open access"),
    pytest.param({"access": {"rateLimit": {"requestsPerSecond": 5, "burst": 5, "per": "clientIP"}}},
                 id="a per-client-IP limit"),
    pytest.param({"access": {"auth": {"apiKeys": {"secretRef": {"name": "keys"}}},
                             "rateLimit": {"requestsPerSecond": 0.5, "burst": 1, "per": "global"}}},
                 id="keys and a global limit below one request per second"),
    pytest.param({"monitoring": {"auditSampleRate": 0, "redact": [], "drift": False, "toxicity": False}},
                 id="monitoring all off"),
]


@pytest.mark.parametrize("change", RENDERINGS)
def test_the_front_end_accepts_the_flags_of_every_rendering(binary, tmp_path, change):
    spec = example_spec("ModelDeployment")
    for field, value in change.items():
        if value is None:
            spec.pop(field, None)
        else:
            spec[field] = value
    config = parse_config(render_sidecar_config(MODEL_DEPLOYMENT.spec_model.model_validate(spec), "lm"))
    assert config.grpc_front_end == "compiled"  # what every pod runs
    args = front_end_args(config, tmp_path, tmp_path / "buckets" if config.rate_limit else None)
    # Go's flag package refuses an unknown flag or a bad value (exit 2) before -describe runs.
    result = subprocess.run([binary, *args, "-describe"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert any(arg.startswith("-api-keys-dir=") for arg in args) == (config.auth is not None)
    assert any(arg.startswith("-per=") for arg in args) == (config.rate_limit is not None)


def test_a_bad_flag_value_stops_the_front_end_naming_it(binary):
    result = subprocess.run([binary, "-per=everyone", "-metrics-dir=/tmp"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "-per" in result.stderr


def frame(meta: dict, request: bytes | None, response: bytes | None) -> bytes:
    encoded = json.dumps(meta).encode()
    out = struct.pack("<I", len(encoded)) + encoded
    for part in (request, response):
        out += struct.pack("<I", NO_BYTES) if part is None else struct.pack("<I", len(part)) + part
    return out


def test_sample_frames_are_read_back_whole_and_a_cut_frame_ends_the_stream():
    stream = frame({"requestId": "a"}, b"req", b"") + frame({"requestId": "b"}, None, None)
    assert list(read_samples(io.BytesIO(stream))) == [({"requestId": "a"}, b"req", b""), ({"requestId": "b"}, None, None)]
    assert list(read_samples(io.BytesIO(stream[:-3]))) == [({"requestId": "a"}, b"req", b"")]


def test_the_shared_buckets_file_has_the_layout_the_front_end_maps(tmp_path):
    # gateway.go refuses a file of another size; its slots are owners, tokens, times.
    buckets = ratelimit.SharedBuckets(tmp_path / "b", rate=1.0, burst=2, create=True)
    assert (tmp_path / "b").stat().st_size == ratelimit.TABLE_BYTES == 3 * 8 * ratelimit.SLOTS
    buckets.acquire("alice", now=100.0)
    data = Path(tmp_path / "b").read_bytes()
    slot = ratelimit._identity_hash("alice") % ratelimit.SLOTS
    owner, = struct.unpack_from("<q", data, 8 * slot)
    tokens, = struct.unpack_from("<d", data, 8 * ratelimit.SLOTS + 8 * slot)
    updated, = struct.unpack_from("<d", data, 16 * ratelimit.SLOTS + 8 * slot)
    assert (owner, tokens, updated) == (ratelimit._identity_hash("alice"), 1.0, 100.0)
