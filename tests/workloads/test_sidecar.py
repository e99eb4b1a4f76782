"""The monitoring sidecar in front of the real tritonserver (python backend, CPU).

Clients are the real tritonclient (gRPC and HTTP) and plain gRPC stubs where trailing
metadata must be read. Every test of gRPC behaviour runs against both gRPC front ends: the
compiled one (strata-sidecar-grpc, the default) and the Python workers' (grpcFrontEnd: python). Nothing here sleeps for a fixed time: asynchronous effects (audit
lines, statistics, a restarted Triton) are awaited as conditions.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sidecar_harness import Sidecar, write_model_repository
from tests_support import wait_for

from strata_workloads.monitor.toxicity import score
from workload_harness import free_port, start_tritonserver

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.triton

ALICE, BOB = "alice-key-3f9d2", "bob-key-77ac1"
ALICE_HEADERS = {"authorization": f"Bearer {ALICE}"}
TEST_MODELS = ["identity", "text", "ids"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return write_model_repository(tmp_path_factory.mktemp("sidecar-repository"))


@pytest.fixture(scope="module")
def triton(repository, tmp_path_factory):
    server, _ = start_tritonserver(repository, TEST_MODELS, tmp_path_factory.mktemp("sidecar-triton"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def api_keys(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("api-keys")
    (directory / "alice").write_text(ALICE + "\n")
    (directory / "bob").write_text(BOB)
    (directory / "..data").mkdir()  # kubelet's bookkeeping in a Secret volume: not a key
    return directory


@pytest.fixture(scope="module", params=["compiled", "python"])
def front_end(request) -> str:
    """grpcFrontEnd: who serves gRPC."""
    return request.param


@pytest.fixture(scope="module")
def sidecar(triton, api_keys, tmp_path_factory, front_end):
    """Two workers, keys on, everything audited and analysed, both redactions, toxicity on."""
    instance = Sidecar(tmp_path_factory.mktemp("sidecar"), triton.grpc_port, triton.http_port, workers=2,
                       grpcFrontEnd=front_end,
                       auth={"apiKeysDir": str(api_keys)},
                       audit={"sampleRate": 1.0, "redact": ["pii", "secrets"]},
                       drift={"sampleRate": 1.0, "maxSamplesPerSecond": 10000, "inputSamplesPerMinute": 1000},
                       toxicity={"enabled": True})
    instance.start()
    yield instance
    instance.close()
    # Analysis runs off the request path, so a failure there fails no request: the log shows it.
    log = instance.process.log_path.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 200:][:3000]


def direct_grpc(triton) -> str:
    return f"127.0.0.1:{triton.grpc_port}"


def grpc_inputs(array: np.ndarray, datatype: str = "FP32") -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("INPUT", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return [tensor]


def http_inputs(array: np.ndarray, binary: bool, datatype: str = "FP32") -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("INPUT", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return [tensor]


def raw_infer(url: str, request: service_pb2.ModelInferRequest, metadata=()):
    """(response, trailing metadata as a dict) with a plain gRPC stub."""
    with grpc.insecure_channel(url) as channel:
        response, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
            request, metadata=metadata, timeout=30)
        return response, dict(call.trailing_metadata())


def identity_request(array: np.ndarray, model: str = "identity") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT", "FP32"
    tensor.shape.extend(array.shape)
    request.raw_input_contents.append(array.astype(np.float32).tobytes())
    return request


def samples(metrics_text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(metrics_text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for key, v in samples(metrics_text, name).items() if set(labels.items()) <= set(key))


def delta_in(after: str, before: str, **labels) -> float:
    return value(after, "strata_sidecar_requests_total", **labels) - value(before, "strata_sidecar_requests_total",
                                                                           **labels)


def metrics_when(sidecar: Sidecar, predicate, what: str) -> str:
    """The sidecar's metrics once ``predicate`` holds (workers publish every half second)."""
    def check():
        text = sidecar.metrics()
        return text if predicate(text) else None

    return wait_for(check, timeout=10, interval=0.1, what=what)


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# ---- forwarding ----

def test_grpc_results_through_the_sidecar_equal_direct_results(triton, sidecar):
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (16, 1024)]:
        array = rng.standard_normal(shape).astype(np.float32)
        direct = grpcclient.InferenceServerClient(direct_grpc(triton)).infer("identity", grpc_inputs(array))
        through = grpcclient.InferenceServerClient(sidecar.grpc_url).infer("identity", grpc_inputs(array),
                                                                           headers=ALICE_HEADERS)
        np.testing.assert_array_equal(through.as_numpy("OUTPUT"), direct.as_numpy("OUTPUT"))
        np.testing.assert_array_equal(through.as_numpy("OUTPUT"), array)


@pytest.mark.parametrize("binary", [pytest.param(True, id="binary tensors"), pytest.param(False, id="JSON tensors")])
def test_http_results_through_the_sidecar_equal_direct_results(triton, sidecar, binary):
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    direct = httpclient.InferenceServerClient(f"127.0.0.1:{triton.http_port}").infer(
        "identity", http_inputs(array, binary))
    through = httpclient.InferenceServerClient(sidecar.http_url).infer(
        "identity", http_inputs(array, binary), headers={"x-api-key": BOB})
    np.testing.assert_array_equal(through.as_numpy("OUTPUT"), direct.as_numpy("OUTPUT"))


def test_text_tensors_pass_through_unchanged(sidecar):
    text = np.array([["héllo wörld".encode(), b"\x00\xffbinary"]], dtype=object)
    result = grpcclient.InferenceServerClient(sidecar.grpc_url).infer("text", grpc_inputs(text, "BYTES"),
                                                                      headers=ALICE_HEADERS)
    assert result.as_numpy("OUTPUT").tolist() == text.tolist()


def test_each_response_carries_the_request_id_in_metadata_and_in_the_response(sidecar):
    response, trailing = raw_infer(sidecar.grpc_url, identity_request(np.ones((1, 2))),
                                   metadata=(("x-api-key", ALICE),))
    assert trailing["strata-request-id"] and response.id == trailing["strata-request-id"]
    # A client's own id is kept (Triton echoes it); the sidecar's id still comes in metadata.
    request = identity_request(np.ones((1, 2)))
    request.id = "client-chosen-7"
    response, trailing = raw_infer(sidecar.grpc_url, request, metadata=(("x-api-key", ALICE),))
    assert response.id == "client-chosen-7" and trailing["strata-request-id"] != "client-chosen-7"
    status, headers, _ = http_post(f"http://{sidecar.http_url}/v2/models/identity/infer",
                                   json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "FP32",
                                                           "data": [1.0]}]}).encode(), {"x-api-key": ALICE})
    assert status == 200 and headers.get("strata-request-id")


def test_streaming_inference_passes_through(sidecar):
    import queue

    answers: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=ALICE_HEADERS)
    arrays = [np.full((1, 3), index, dtype=np.float32) for index in range(5)]
    try:
        for index, array in enumerate(arrays):
            client.async_stream_infer("identity", grpc_inputs(array), request_id=f"stream-{index}")
        received = {}
        for _ in arrays:
            result, error = answers.get(timeout=30)
            assert error is None, error
            received[result.get_response().id] = result.as_numpy("OUTPUT")
    finally:
        client.stop_stream()
    assert sorted(received) == [f"stream-{i}" for i in range(5)]
    for index, array in enumerate(arrays):
        np.testing.assert_array_equal(received[f"stream-{index}"], array)


def test_health_needs_no_key_but_metadata_and_model_ready_do(sidecar):
    grpc_client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    http_client = httpclient.InferenceServerClient(sidecar.http_url)
    assert http_client.is_server_live() and http_client.is_server_ready()
    with pytest.raises(InferenceServerException) as error:
        grpc_client.get_model_metadata("identity")
    assert error.value.status() == "StatusCode.UNAUTHENTICATED"
    metadata = grpc_client.get_model_metadata("identity", headers=ALICE_HEADERS, as_json=True)
    assert metadata["name"] == "identity" and metadata["inputs"][0]["name"] == "INPUT"
    assert grpc_client.is_model_ready("identity", headers=ALICE_HEADERS)
    assert http_client.is_model_ready("identity", headers={"x-api-key": ALICE})
    assert http_client.get_model_metadata("identity", headers={"x-api-key": ALICE})["name"] == "identity"


# ---- refusals and errors ----

def test_keys_added_to_or_removed_from_the_secret_take_effect_without_a_restart(sidecar, api_keys):
    array = np.ones((1, 1), dtype=np.float32)

    def status(key: str) -> str:
        try:
            # A new client: a new connection, to whichever worker the kernel picks.
            grpcclient.InferenceServerClient(sidecar.grpc_url).infer("identity", grpc_inputs(array), headers={"x-api-key": key})
            return "OK"
        except InferenceServerException as error:
            return error.status()

    assert status("carol-key-1") == "StatusCode.UNAUTHENTICATED"
    (api_keys / "carol").write_text("carol-key-1")
    try:
        # Both workers must have reloaded: fresh clients land on either.
        wait_for(lambda: all(status("carol-key-1") == "OK" for _ in range(6)), timeout=30, interval=0.5,
                 what="the new key to be accepted")
    finally:
        (api_keys / "carol").unlink()
    wait_for(lambda: all(status("carol-key-1") == "StatusCode.UNAUTHENTICATED" for _ in range(6)), timeout=30,
             interval=0.5, what="the removed key to be refused")


@pytest.mark.parametrize(
    "headers",
    [pytest.param({}, id="no key"), pytest.param({"authorization": "Bearer wrong"}, id="a wrong bearer key"),
     pytest.param({"x-api-key": ALICE[:-1]}, id="a key one character short"),
     pytest.param({"authorization": ALICE}, id="a key without the Bearer scheme")],
)
def test_requests_without_a_valid_key_are_unauthenticated(sidecar, headers):
    array = np.ones((1, 1), dtype=np.float32)
    with pytest.raises(InferenceServerException) as grpc_error:
        grpcclient.InferenceServerClient(sidecar.grpc_url).infer("identity", grpc_inputs(array), headers=dict(headers))
    assert grpc_error.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as http_error:
        # A copy: the HTTP client adds its own headers to the dict it is given.
        httpclient.InferenceServerClient(sidecar.http_url).infer("identity", http_inputs(array, True),
                                                                 headers=dict(headers))
    assert http_error.value.status() == "401"
    assert "API key" in http_error.value.message()


def test_an_unknown_model_is_not_found_as_from_triton(triton, sidecar):
    array = np.ones((1, 1), dtype=np.float32)
    errors = []
    for url, headers in ((direct_grpc(triton), {}), (sidecar.grpc_url, ALICE_HEADERS)):
        with pytest.raises(InferenceServerException) as error:
            grpcclient.InferenceServerClient(url).infer("no-such-model", grpc_inputs(array), headers=headers)
        errors.append(error.value)
    assert [e.status() for e in errors] == ["StatusCode.NOT_FOUND"] * 2
    assert "unknown model: 'no-such-model'" in errors[1].message()
    with pytest.raises(InferenceServerException) as error:
        httpclient.InferenceServerClient(sidecar.http_url).infer("no-such-model", http_inputs(array, True),
                                                                 headers={"x-api-key": ALICE})
    assert error.value.status() == "404"


def test_a_malformed_tensor_gets_triton_s_invalid_argument(triton, sidecar):
    request = identity_request(np.ones((2, 3)))
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]  # 5 values for a 2x3 tensor
    codes = []
    for url, metadata in ((direct_grpc(triton), ()), (sidecar.grpc_url, (("x-api-key", ALICE),))):
        with pytest.raises(grpc.RpcError) as error:
            raw_infer(url, request, metadata)
        codes.append(error.value.code())
        assert "input byte size mismatch" in error.value.details()
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    body = json.dumps({"inputs": [{"name": "INPUT", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    direct = http_post(f"http://127.0.0.1:{triton.http_port}/v2/models/identity/infer", body.encode(), {})
    through = http_post(f"http://{sidecar.http_url}/v2/models/identity/infer", body.encode(), {"x-api-key": ALICE})
    assert through[0] == direct[0] >= 400 and json.loads(through[2]) == json.loads(direct[2])


def test_administrative_calls_are_refused(sidecar):
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    with pytest.raises(InferenceServerException) as error:
        client.unload_model("identity", headers=ALICE_HEADERS)
    assert error.value.status() == "StatusCode.PERMISSION_DENIED"
    status, _, _ = http_post(f"http://{sidecar.http_url}/v2/repository/models/identity/unload", b"{}",
                             {"x-api-key": ALICE})
    assert status == 403
    assert client.is_model_ready("identity", headers=ALICE_HEADERS)


def test_rate_limits_are_per_key_shared_across_workers_and_give_a_retry_hint(triton, api_keys, tmp_path, front_end):
    # 0.05/s: no token comes back during the test, so exactly `burst` requests pass per key,
    # whichever process each fresh connection lands on, gRPC and HTTP together.
    limited = Sidecar(tmp_path / "limited", triton.grpc_port, triton.http_port, workers=2, grpcFrontEnd=front_end,
                      auth={"apiKeysDir": str(api_keys)},
                      rateLimit={"requestsPerSecond": 0.05, "burst": 4, "per": "apiKey"}).start()
    try:
        array = np.ones((1, 1), dtype=np.float32)
        outcomes, hints = [], []
        for _ in range(8):
            with grpc.insecure_channel(limited.grpc_url) as channel:  # a new connection each time
                stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
                try:
                    stub.ModelInfer(identity_request(array), metadata=(("x-api-key", ALICE),), timeout=30)
                    outcomes.append("OK")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
                    hints.append(dict(error.trailing_metadata()).get("retry-after"))
        assert outcomes == ["OK"] * 4 + ["RESOURCE_EXHAUSTED"] * 4
        assert all(hint and 0 < float(hint) <= 20 for hint in hints), hints
        # Another key has its own bucket.
        grpcclient.InferenceServerClient(limited.grpc_url).infer("identity", grpc_inputs(array),
                                                                 headers={"x-api-key": BOB})
        with pytest.raises(InferenceServerException) as error:
            httpclient.InferenceServerClient(limited.http_url).infer("identity", http_inputs(array, True),
                                                                     headers={"x-api-key": ALICE})
        assert error.value.status() == "429"
        status, headers, body = http_post(f"http://{limited.http_url}/v2/models/identity/infer",
                                          b'{"inputs":[]}', {"x-api-key": ALICE})
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "retry after" in json.loads(body)["error"]
        # In a stream, a message over the limit is answered in the stream; the stream stays open.
        import queue
        answers: queue.Queue = queue.Queue()
        stream_client = grpcclient.InferenceServerClient(limited.grpc_url)
        stream_client.start_stream(callback=lambda result, error: answers.put((result, error)),
                                   headers={"x-api-key": ALICE})
        try:
            stream_client.async_stream_infer("identity", grpc_inputs(array))
            result, error = answers.get(timeout=30)
            assert result is None and "rate limit" in str(error)
            stream_client.async_stream_infer("identity", grpc_inputs(array))
            assert "rate limit" in str(answers.get(timeout=30)[1])
        finally:
            stream_client.stop_stream()
        # Health is never limited.
        assert grpcclient.InferenceServerClient(limited.grpc_url).is_server_ready()
        metrics = metrics_when(limited, lambda text: value(text, "strata_sidecar_requests_total", key="alice",
                                                           outcome="RESOURCE_EXHAUSTED") >= 8, "the refusals in the metrics")
        assert value(metrics, "strata_sidecar_requests_total", key="alice", outcome="RESOURCE_EXHAUSTED") == 8
        assert value(metrics, "strata_sidecar_requests_total", key="alice", outcome="OK", call="infer") == 4
        # Forwarded: alice's 4 and bob's 1, each a 1x1 FP32 tensor in well under 256 bytes.
        assert value(metrics, "strata_sidecar_request_duration_seconds_count", protocol="grpc", model="identity") == 5
        assert value(metrics, "strata_sidecar_request_bytes_bucket", protocol="grpc", model="identity", le="256.0") == 5
        assert value(metrics, "strata_sidecar_request_bytes_bucket", protocol="grpc", model="identity", le="+Inf") == 5
    finally:
        limited.close()


def test_connections_are_spread_over_the_worker_processes(sidecar, front_end):
    """HTTP always; gRPC too when the workers serve it (the compiled front end is one process
    on every CPU). Request ids start with a random prefix per process."""
    body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}).encode()
    http_prefixes, grpc_prefixes = set(), set()
    for _ in range(24):  # a new connection each time
        status, headers, _ = http_post(f"http://{sidecar.http_url}/v2/models/identity/infer", body, {"x-api-key": ALICE})
        assert status == 200
        http_prefixes.add(headers["strata-request-id"].split("-")[0])
        _, trailing = raw_infer(sidecar.grpc_url, identity_request(np.ones((1, 1))), (("x-api-key", ALICE),))
        grpc_prefixes.add(trailing["strata-request-id"].split("-")[0])
    assert len(http_prefixes) == 2
    assert len(grpc_prefixes) == (1 if front_end == "compiled" else 2)


# ---- observability ----

def test_metrics_count_requests_by_model_outcome_and_key(sidecar, front_end):
    before = sidecar.metrics()
    array = np.ones((2, 5), dtype=np.float32)
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    for _ in range(3):
        client.infer("identity", grpc_inputs(array), headers={"x-api-key": BOB})
    with pytest.raises(InferenceServerException):
        client.infer("identity", grpc_inputs(array), headers={"x-api-key": "nope"})

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    after = metrics_when(sidecar, lambda text: delta_in(text, before, outcome="UNAUTHENTICATED", key="invalid") >= 1
                         and delta_in(text, before, key="bob", outcome="OK") >= 3, "the requests in the metrics")

    assert delta("strata_sidecar_requests_total", protocol="grpc", call="infer", model="identity", outcome="OK",
                 key="bob") == 3
    assert delta("strata_sidecar_requests_total", protocol="grpc", outcome="UNAUTHENTICATED", key="invalid") == 1
    # Each worker's counters and histograms are published together: they always agree.
    forwarded = value(after, "strata_sidecar_requests_total", protocol="grpc", call="infer", model="identity")
    assert value(after, "strata_sidecar_request_duration_seconds_count", protocol="grpc", model="identity") == forwarded
    assert value(after, "strata_sidecar_request_bytes_count", protocol="grpc", model="identity") == forwarded
    assert value(after, "strata_sidecar_response_bytes_sum", protocol="grpc", model="identity") > 0
    assert samples(after, "strata_sidecar_inflight_requests")  # a gauge per protocol, merged over workers
    assert value(after, "strata_sidecar_workers") == (3 if front_end == "compiled" else 2)  # and the front end
    assert ALICE not in after and BOB not in after  # key names label metrics, never the keys


def test_sampled_requests_are_audited_with_declared_redaction(sidecar):
    text = np.array([[f"mail me at jane.doe@example.com, card 4111 1111 1111 1111, token {BOB} "
                      "password=hunter2 you idiot".encode()]], dtype=object)
    response, trailing = None, None
    request = service_pb2.ModelInferRequest(model_name="text")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT", "BYTES"
    tensor.shape.extend([1, 1])
    tensor.contents.bytes_contents.append(text[0, 0])
    response, trailing = raw_infer(sidecar.grpc_url, request, (("x-api-key", ALICE),))
    request_id = trailing["strata-request-id"]
    audit_path = Path(sidecar.config["stateDir"]) / "audit.jsonl"

    def audited():
        if not audit_path.exists():
            return None
        return next((json.loads(line) for line in audit_path.read_text().splitlines()
                     if json.loads(line)["requestId"] == request_id), None)

    record = wait_for(audited, timeout=30, interval=0.1, what=f"an audit line for {request_id}")
    assert record["key"] == "alice" and record["model"] == "text" and record["outcome"] == "OK"
    assert record["deployment"] == "identity"
    written = record["inputs"][0]["text"][0]
    assert "[REDACTED:email]" in written and "[REDACTED:card]" in written and "[REDACTED:api-key]" in written
    assert "password=[REDACTED:secret]" in written and "you idiot" in written
    raw_audit = audit_path.read_text()
    for secret in ("jane.doe@example.com", "4111 1111", BOB, ALICE, "hunter2", "127.0.0.1"):
        assert secret not in raw_audit
    assert record["client"].startswith("sha256:")  # the client address is pseudonymised under pii
    # The classifier's score of the output (the text model echoes its input), unredacted.
    assert record["toxicity"] == pytest.approx(score([text[0, 0].decode()])[0])
    # Numeric tensors are written as a digest, never as values.
    _, trailing = raw_infer(sidecar.grpc_url, identity_request(np.full((1, 4), 1234.5)), (("x-api-key", ALICE),))
    request_id = trailing["strata-request-id"]
    record = wait_for(audited, timeout=30, interval=0.1, what=f"an audit line for {request_id}")
    import hashlib
    assert record["inputs"][0]["sha256"] == hashlib.sha256(np.full((1, 4), 1234.5, dtype=np.float32).tobytes()).hexdigest()
    assert "1234.5" not in json.dumps(record)


def test_drift_statistics_summarise_the_sampled_inputs(sidecar):
    # Other tests send to "identity" too: look at the change in count, and at a range of values
    # only this test sends.
    before = sidecar.get("/stats")["models"].get("identity", {}).get("inputs", {}).get("INPUT", {"count": 0})
    rng = np.random.default_rng(1)
    batches = [rng.normal(50.0, 2.0, size=(1, 1000)).astype(np.float32) for _ in range(3)]
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    for batch in batches:
        client.infer("identity", grpc_inputs(batch), headers=ALICE_HEADERS)

    def counted():
        stats = sidecar.get("/stats")["models"].get("identity", {}).get("inputs", {}).get("INPUT", {"count": 0})
        return stats if stats["count"] >= before["count"] + 3000 else None

    stats = wait_for(counted, timeout=30, interval=0.1, what="the drift statistics to include the batches")
    assert stats["max"] >= max(float(b.max()) for b in batches)
    assert stats["datatype"] == "FP32" and stats["shape"][0] == 1
    assert set(stats["quantiles"]) == {"0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"}
    assert stats["quantiles"]["0.01"] <= stats["quantiles"]["0.5"] <= stats["quantiles"]["0.99"]
    metrics = sidecar.metrics()
    assert value(metrics, "strata_sidecar_tensor_values_total", model="identity", side="inputs",
                 tensor="INPUT") == stats["count"]
    assert value(metrics, "strata_sidecar_tensor_quantile", model="identity", side="inputs", tensor="INPUT",
                 quantile="0.5") == pytest.approx(stats["quantiles"]["0.5"])


def test_integer_inputs_are_sketched_per_window_as_the_dataset_pipeline_sketches_tokens(sidecar):
    """GET /stats?window= sums the per-minute token sketches of the last window ("current") and
    the one before ("previous"); a FeedbackPolicy compares them with a Dataset version's."""
    from strata_workloads.monitor.sketch import TokenSketch

    rng = np.random.default_rng(5)
    # Batched requests: each row is one sequence, as a batching client sends token ids.
    batches = [rng.integers(0, 5000, size=(rows, length)).astype(np.int64)
               for rows, length in ((1, 3), (2, 20), (4, 100), (1, 700))]
    expected = TokenSketch()
    for batch in batches:
        expected.add_sequences(list(batch))
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    for batch in batches:
        client.infer("ids", grpc_inputs(batch, "INT64"), headers=ALICE_HEADERS)

    def sketched():
        windows = sidecar.get("/stats?window=600").get("sketches", {}).get("ids", {}).get("INPUT")
        return windows if windows and windows["current"]["rows"] >= expected.rows else None

    windows = wait_for(sketched, timeout=30, interval=0.1, what="the sketches to include the requests")
    assert TokenSketch.from_dict(windows["current"]) == expected and expected.rows == 8
    assert windows["previous"]["rows"] == 0
    # Bins with lower edges 0, 4, 8, 16, 32, 64, 128, 256, 512, ...: 3, 2x20, 4x100 and 700 tokens.
    assert expected.length == [1, 0, 0, 2, 0, 4, 0, 0, 1, 0, 0, 0] and sum(expected.ids) == 3 + 40 + 400 + 700
    # Float inputs are not token ids: never sketched.
    assert "INPUT" not in sidecar.get("/stats?window=600")["sketches"].get("identity", {})
    # Text inputs are sketched as the pipeline sketches a version's text column: UTF-8 bytes.
    # Other tests of the module send text too: what these requests add is compared.
    def text_sketch() -> TokenSketch:
        window = sidecar.get("/stats?window=600").get("sketches", {}).get("text", {}).get("INPUT")
        return TokenSketch.from_dict(window["current"]) if window else TokenSketch()

    before = text_sketch()
    texts = [["Where is my PARCEL?".encode(), "ok".encode()], ["Ünïcode text".encode(), "x".encode()]]
    expected_text = TokenSketch()
    for batch in texts:
        expected_text.add_texts(batch)
        client.infer("text", grpc_inputs(np.array([batch], dtype=object), "BYTES"), headers=ALICE_HEADERS)
    after = wait_for(lambda: (sketch := text_sketch()).rows >= before.rows + 4 and sketch, timeout=30, interval=0.1,
                     what="the text sketches to include the requests")
    added = TokenSketch(after.rows - before.rows, [a - b for a, b in zip(after.length, before.length)],
                        [a - b for a, b in zip(after.ids, before.ids)])
    assert added == expected_text and expected_text.rows == 4
    for bad in ("0", "-5", "abc", str(10 ** 7)):
        with pytest.raises(urllib.error.HTTPError) as refused:
            sidecar.get(f"/stats?window={bad}")
        assert refused.value.code == 400


def test_text_and_token_inputs_are_kept_whole_for_embedding_tests(sidecar):
    """GET /stats?window=&samples=N has, under "inputSamples", at most N of each window's kept
    rows: token ids as lists (cut to the embedding contract's limit), texts redacted as audit
    lines are. A FeedbackPolicy's embedding Job embeds them."""
    from strata_workloads.monitor.embedding_contract import MAX_TOKEN_IDS

    def kept(model: str, limit: int = 5000) -> list:
        window = sidecar.get(f"/stats?window=600&samples={limit}").get("inputSamples", {}).get(model, {}).get("INPUT")
        return window["current"] if window else []

    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    marker = 4242  # an id no other test of the module sends first
    batch = np.array([[marker, 1, 2], [marker, 3, 4]], dtype=np.int64)
    long_row = np.array([[marker] + list(range(MAX_TOKEN_IDS + 50))], dtype=np.int64)
    client.infer("ids", grpc_inputs(batch, "INT64"), headers=ALICE_HEADERS)
    client.infer("ids", grpc_inputs(long_row, "INT64"), headers=ALICE_HEADERS)
    rows = wait_for(lambda: (found := [row for row in kept("ids") if row[0] == marker]) and len(found) >= 3 and found,
                    timeout=30, interval=0.1, what="the token rows to be kept")
    assert sorted(rows, key=len) == [[marker, 1, 2], [marker, 3, 4], long_row[0, :MAX_TOKEN_IDS].tolist()]

    text = "embedding sample: mail ada@example.com"
    client.infer("text", grpc_inputs(np.array([[text.encode()]], dtype=object), "BYTES"), headers=ALICE_HEADERS)
    texts = wait_for(lambda: [row for row in kept("text") if row.startswith("embedding sample")], timeout=30,
                     interval=0.1, what="the text to be kept")
    assert texts == ["embedding sample: mail [REDACTED:email]"]
    # N bounds what one read returns; nothing else changes.
    assert len(kept("ids", limit=2)) == 2 and len(kept("ids")) >= 3
    for bad in ("-1", "x", "5001"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            sidecar.get(f"/stats?window=600&samples={bad}")
        assert refused.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as refused:
        sidecar.get("/stats?samples=5")
    assert refused.value.code == 400


def test_float_inputs_are_sketched_per_window_as_value_sketches(sidecar):
    """GET /stats?window= has the float inputs' value sketches under "valueSketches": at most
    FLOAT_VALUES_PER_TENSOR values of each request's tensor, over both protocols."""
    from strata_workloads.monitor.sketch import ValueSketch
    from strata_workloads.serve.analysis import FLOAT_VALUES_PER_TENSOR

    def value_sketch() -> ValueSketch:
        window = sidecar.get("/stats?window=600").get("valueSketches", {}).get("identity", {}).get("INPUT")
        return ValueSketch.from_dict(window["current"]) if window else ValueSketch()

    # Other tests of the module send to "identity" too: what these requests add is compared.
    before = value_sketch()
    rng = np.random.default_rng(6)
    batches = [rng.normal(0, 1, (1, 300)), rng.normal(5, 2, (2, 4)), rng.normal(-3, 0.5, (1, 3 * FLOAT_VALUES_PER_TENSOR))]
    batches = [batch.astype(np.float32) for batch in batches]
    batches[1][0, 0], batches[1][1, 3] = np.nan, np.inf
    expected = ValueSketch()
    for batch in batches:
        expected.add_raw(batch.tobytes(), "FP32", list(batch.shape), FLOAT_VALUES_PER_TENSOR)
    grpc_client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    http_client = httpclient.InferenceServerClient(sidecar.http_url)
    grpc_client.infer("identity", grpc_inputs(batches[0]), headers=ALICE_HEADERS)
    # A copy: the HTTP client adds its own headers to the dict it is given.
    http_client.infer("identity", http_inputs(batches[1], binary=True), headers=dict(ALICE_HEADERS))
    grpc_client.infer("identity", grpc_inputs(batches[2]), headers=ALICE_HEADERS)
    after = wait_for(lambda: (sketch := value_sketch()).rows >= before.rows + expected.rows and sketch, timeout=30,
                     interval=0.1, what="the value sketches to include the requests")
    added = ValueSketch(after.rows - before.rows,
                        {key: n - before.counts.get(key, 0) for key, n in after.counts.items()},
                        after.nan - before.nan, after.negative_infinity - before.negative_infinity,
                        after.positive_infinity - before.positive_infinity)
    assert added == expected and expected.count == 300 + 8 + FLOAT_VALUES_PER_TENSOR
    assert (expected.nan, expected.positive_infinity) == (1, 1)
    # The token sketches stay as they were: float inputs are not among them.
    assert "INPUT" not in sidecar.get("/stats?window=600")["sketches"].get("identity", {})
    assert "valueSketches" not in sidecar.get("/stats")


def test_toxic_outputs_are_queued_for_review_redacted_and_pleasant_ones_are_not(sidecar):
    """GET /review pages the outputs scored above TOXIC_SCORE (the "text" model echoes its
    input), redacted as the audit log is; a FeedbackPolicy lists them for a person."""
    insult = "you are a worthless idiot, mail jane.doe@example.com"
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    ids = {}
    for text in (insult, "have a nice day"):
        result = client.infer("text", grpc_inputs(np.array([[text.encode()]], dtype=object), "BYTES"),
                              headers=ALICE_HEADERS)
        ids[text] = result.get_response().id

    def queued():
        items = sidecar.get("/review?limit=1000")["records"]
        return next((item for item in items if item["requestId"] == ids[insult]), None)

    item = wait_for(queued, timeout=30, interval=0.1, what="the toxic output to be queued")
    assert item["source"] == "toxicity" and item["score"] > 0.5 and item["model"] == "text" and item["key"] == "alice"
    assert item["output"] == ["you are a worthless idiot, mail [REDACTED:email]"]
    assert all(other["requestId"] != ids["have a nice day"] for other in sidecar.get("/review?limit=1000")["records"])
    page = sidecar.get("/review?after=0&limit=1")
    assert len(page["records"]) == 1 and page["next"] > 0


def test_audited_answers_text_is_served_by_request_id_for_folding_feedback_into_a_dataset(sidecar):
    """GET /exchanges?ids=: the text of audited answers (redacted as audit lines are), which a
    FeedbackPolicy with refreshDataset.includeFeedback folds into the Dataset; answers with only
    numeric tensors, and ids never seen, are absent."""
    client = grpcclient.InferenceServerClient(sidecar.grpc_url)
    question = "how do I return a parcel? mail jane.doe@example.com"
    text_id = client.infer("text", grpc_inputs(np.array([[question.encode()]], dtype=object), "BYTES"),
                           headers=ALICE_HEADERS).get_response().id
    _, trailing = raw_infer(sidecar.grpc_url, identity_request(np.ones((1, 2))), (("x-api-key", ALICE),))
    numeric_id = trailing["strata-request-id"]
    ids = ",".join([text_id, numeric_id, "never-seen"])
    exchanges = wait_for(lambda: (found := sidecar.get(f"/exchanges?ids={ids}")["exchanges"]) and found, timeout=30,
                         interval=0.1, what=f"the audited answer {text_id}")
    assert set(exchanges) == {text_id}
    redacted = "how do I return a parcel? mail [REDACTED:email]"
    assert exchanges[text_id]["input"] == [redacted] and exchanges[text_id]["output"] == [redacted]  # echoed
    assert exchanges[text_id]["model"] == "text"
    for bad in ("/exchanges", "/exchanges?ids=", "/exchanges?ids=" + ",".join(f"r{n}" for n in range(201))):
        with pytest.raises(urllib.error.HTTPError) as refused:
            sidecar.get(bad)
        assert refused.value.code == 400


def test_feedback_is_recorded_validated_and_survives_a_restart(triton, api_keys, tmp_path):
    instance = Sidecar(tmp_path / "feedback", triton.grpc_port, triton.http_port, workers=2,
                       auth={"apiKeysDir": str(api_keys)}).start()
    try:
        _, trailing = raw_infer(instance.grpc_url, identity_request(np.ones((1, 1))), (("x-api-key", ALICE),))
        request_id = trailing["strata-request-id"]
        url = f"http://{instance.http_url}/v2/feedback"
        status, _, body = http_post(url, json.dumps({"requestId": request_id, "rating": "down",
                                                     "text": "wrong answer"}).encode(), {"x-api-key": ALICE})
        assert status == 201 and json.loads(body) == {"requestId": request_id, "recorded": True}
        assert http_post(url, json.dumps({"requestId": request_id, "rating": "up"}).encode(),
                         {"authorization": f"Bearer {BOB}"})[0] == 201
        status, _, body = http_post(url, json.dumps({"requestId": request_id, "rating": "meh"}).encode(),
                                    {"x-api-key": ALICE})
        assert status == 400 and "rating: must be 'up' or 'down'" in json.loads(body)["error"]
        assert http_post(url, b'{"requestId": "x", "rating": "up"}', {})[0] == 401
        assert value(instance.metrics(), "strata_sidecar_feedback_total", rating="down") == 1

        instance.kill()  # SIGKILL: nothing gets to flush anything
        instance.start()
        records = instance.get("/feedback")["records"]
        assert [(r["requestId"], r["rating"], r["text"], r["key"]) for r in records] == [
            (request_id, "down", "wrong answer", "alice"), (request_id, "up", "", "bob")]
        metrics = instance.metrics()
        assert value(metrics, "strata_sidecar_feedback_total", rating="down") == 1
        assert value(metrics, "strata_sidecar_feedback_total", rating="up") == 1
        page = instance.get(f"/feedback?after={instance.get('/feedback?limit=1')['next']}")
        assert [r["rating"] for r in page["records"]] == ["up"]
    finally:
        instance.close()


def test_with_shared_state_a_new_pods_sidecar_serves_a_gone_pods_feedback_review_and_exchanges(triton, api_keys, tmp_path):
    """monitoring.storage: each pod's state is its own directory of one volume (the Deployment
    mounts it by subPathExpr); a pod replaced by a rollout leaves its records there, and the
    next pod's sidecar serves them (GET /pods, then pod= on /feedback and /review)."""
    shared = tmp_path / "claim"

    def pod(name: str) -> Sidecar:
        return Sidecar(tmp_path / name, triton.grpc_port, triton.http_port, workers=1, modelName="text",
                       auth={"apiKeysDir": str(api_keys)}, audit={"sampleRate": 1.0},
                       stateDir=str(shared / name), sharedStateDir=str(shared), sharedStateRetentionDays=1)

    old = pod("serve-abc").start()
    try:
        request_id = grpcclient.InferenceServerClient(old.grpc_url).infer(
            "text", grpc_inputs(np.array([[b"where is my parcel"]], dtype=object), "BYTES"),
            headers=ALICE_HEADERS).get_response().id
        assert http_post(f"http://{old.http_url}/v2/feedback", json.dumps({"requestId": request_id, "rating": "up"}).encode(),
                         {"x-api-key": ALICE})[0] == 201
        wait_for(lambda: old.get(f"/exchanges?ids={request_id}")["exchanges"], what="the audit line")
    finally:
        old.kill()  # the pod is gone; its directory stays on the volume
    # A third pod gone for longer than the retention: the next sidecar to start removes it.
    stale = shared / "serve-old"
    stale.mkdir()
    (stale / "feedback.jsonl").write_text(json.dumps({"requestId": "r-0", "rating": "down"}) + "\n")
    os.utime(stale / "feedback.jsonl", (time.time() - 2 * 86400, time.time() - 2 * 86400))
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))

    new = pod("serve-def").start()
    try:
        pods = new.get("/pods")
        assert pods["shared"] and [entry["pod"] for entry in pods["pods"]] == ["serve-abc", "serve-def"]
        assert not new.get("/feedback")["records"]  # its own log starts empty
        gone = new.get("/feedback?pod=serve-abc")["records"]
        assert [(r["requestId"], r["rating"]) for r in gone] == [(request_id, "up")]
        assert new.get("/review?pod=serve-abc")["records"] == []
        assert new.get(f"/exchanges?ids={request_id}")["exchanges"][request_id]["input"] == ["where is my parcel"]
        for bad in ("serve-xyz", "..%2Fserve-abc", "serve-abc%2F..%2Fserve-def"):  # unknown, or not a pod's name
            with pytest.raises(urllib.error.HTTPError) as refused:
                new.get(f"/feedback?pod={bad}")
            assert refused.value.code == 404

        # A FeedbackPolicy reads every pod's records once, whichever live sidecars it asks.
        from strata.controllers.feedback_signals import read_signals

        other = pod("serve-ghi").start()
        try:
            urls = [f"http://127.0.0.1:{live.metrics_port}" for live in (new, other)]
            signals = read_signals(urls, 60)
            assert signals.sources == 2 and [r["requestId"] for r in signals.feedback] == [request_id]
        finally:
            other.close()
    finally:
        new.close()


def test_without_shared_state_pod_is_refused_and_pods_is_empty(sidecar):
    assert sidecar.get("/pods") == {"shared": False, "pods": []}
    with pytest.raises(urllib.error.HTTPError) as refused:
        sidecar.get("/feedback?pod=serve-abc")
    assert refused.value.code == 404


# ---- Triton going away and coming back ----

LOADING_SECONDS = 30  # long enough for a default backoff to grow past ten seconds


def test_a_sidecar_started_before_triton_serves_as_soon_as_triton_is_ready(repository, tmp_path, api_keys,
                                                                          front_end):
    """As in a pod: both containers start together and Triton loads its model for a while.
    A default reconnect backoff (growing towards two minutes) would keep gRPC calls failing
    for many seconds after Triton is ready; the real node caught that once."""
    grpc_port, http_port = free_port(), free_port()
    instance = Sidecar(tmp_path / "sidecar", grpc_port, http_port, workers=1, grpcFrontEnd=front_end,
                       auth={"apiKeysDir": str(api_keys)}).start(upstream_up=False)
    try:
        array = np.ones((1, 2), dtype=np.float32)
        client = grpcclient.InferenceServerClient(instance.grpc_url)
        with pytest.raises(InferenceServerException) as error:
            client.infer("identity", grpc_inputs(array), headers=ALICE_HEADERS)
        assert error.value.status() == "StatusCode.UNAVAILABLE"
        time.sleep(LOADING_SECONDS)  # the scenario itself: Triton still loading, nothing to await
        server, _ = start_tritonserver(repository, ["identity"], tmp_path / "triton", grpc_port=grpc_port,
                                       http_port=http_port)  # returns once Triton answers ready
        try:
            def answers():
                try:
                    return client.infer("identity", grpc_inputs(array), headers=ALICE_HEADERS).as_numpy(
                        "OUTPUT").tolist()
                except InferenceServerException:
                    return None

            assert wait_for(answers, timeout=3, interval=0.1, what="the first answer") == array.tolist()
        finally:
            server.close()
    finally:
        instance.close()


def test_a_triton_restart_is_unavailable_while_down_and_recovers_without_restarting_the_sidecar(
        repository, tmp_path, api_keys, front_end):
    server, _ = start_tritonserver(repository, ["identity"], tmp_path / "triton-1")
    grpc_port, http_port = server.grpc_port, server.http_port
    instance = Sidecar(tmp_path / "sidecar", grpc_port, http_port, workers=2, grpcFrontEnd=front_end,
                       auth={"apiKeysDir": str(api_keys)}).start()
    try:
        array = np.ones((1, 2), dtype=np.float32)
        client = grpcclient.InferenceServerClient(instance.grpc_url)
        client.infer("identity", grpc_inputs(array), headers=ALICE_HEADERS)
        http_client = httpclient.InferenceServerClient(instance.http_url)
        pid = instance.process.process.pid

        server.close()
        with pytest.raises(InferenceServerException) as error:
            client.infer("identity", grpc_inputs(array), headers=ALICE_HEADERS)
        assert error.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises(InferenceServerException) as error:
            http_client.infer("identity", http_inputs(array, True), headers={"x-api-key": ALICE})
        assert error.value.status() == "503"
        assert not http_client.is_server_ready()  # a readiness probe on the sidecar's port sees Triton down
        wait_for(lambda: value(instance.metrics(), "strata_sidecar_upstream_ready") == 0, timeout=30,
                 interval=0.2, what="the sidecar to report Triton not ready")

        server, _ = start_tritonserver(repository, ["identity"], tmp_path / "triton-2", grpc_port=grpc_port,
                                       http_port=http_port)

        def answers():
            try:
                return client.infer("identity", grpc_inputs(array), headers=ALICE_HEADERS).as_numpy("OUTPUT").tolist()
            except InferenceServerException:
                return None

        assert wait_for(answers, timeout=30, interval=0.2, what="inference after the restart") == array.tolist()
        assert http_client.infer("identity", http_inputs(array, True), headers={"x-api-key": ALICE}).as_numpy(
            "OUTPUT").tolist() == array.tolist()
        assert instance.process.process.pid == pid and instance.process.alive()
    finally:
        instance.close()
        server.close()


def test_a_dead_worker_is_started_again(sidecar, front_end):
    def children() -> list[int]:
        pid = sidecar.process.process.pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def data_path() -> list[int]:
        # The workers and the compiled front end, not multiprocessing's resource tracker.
        return [pid for pid in children() if any(
            name in Path(f"/proc/{pid}/cmdline").read_text() for name in ("spawn_main", "strata-sidecar-grpc"))]

    before = data_path()
    assert len(before) == (3 if front_end == "compiled" else 2)
    restarts = value(sidecar.metrics(), "strata_sidecar_worker_restarts_total")
    for pid in before:  # every one of them, one after the other
        os.kill(pid, signal.SIGKILL)
        restarts += 1
        wait_for(lambda: (sidecar.get_or_none("/healthz") or {}).get("ready") == len(before)
                 and value(sidecar.metrics(), "strata_sidecar_worker_restarts_total") == restarts,
                 timeout=60, interval=0.2, what="the supervisor to replace the process")
        assert pid not in children()
    # And the sidecar keeps answering on fresh connections.
    for _ in range(4):
        grpcclient.InferenceServerClient(sidecar.grpc_url).infer("identity", grpc_inputs(np.ones((1, 1), np.float32)),
                                                                 headers=ALICE_HEADERS)


# ---- a repository exported by the real trainer ----

@pytest.mark.deepspeed
def test_a_trainer_exported_model_answers_the_same_through_the_sidecar(transformer_run, api_keys, tmp_path):
    assert transformer_run.returncode == 0, transformer_run.stderr[-4000:]
    repository = Path(transformer_run.one("exported")["repository"])
    server, _ = start_tritonserver(repository, ["textgen-python"], tmp_path / "triton")
    instance = Sidecar(tmp_path / "sidecar", server.grpc_port, server.http_port, workers=1, modelName="textgen-python",
                       auth={"apiKeysDir": str(api_keys)}, drift={"sampleRate": 1.0}).start()
    try:
        tokens = np.array([[256] + list(b"The cat sat")], dtype=np.int64)
        label = np.array([[1]], dtype=np.int64)

        def inputs():
            request = []
            for name, array in (("tokens", tokens), ("label", label)):
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                request.append(tensor)
            return request

        direct = grpcclient.InferenceServerClient(direct_grpc(server)).infer("textgen-python", inputs())
        through = grpcclient.InferenceServerClient(instance.grpc_url).infer("textgen-python", inputs(),
                                                                            headers=ALICE_HEADERS)
        assert through.as_numpy("logits").shape == (1, tokens.shape[1], 259)
        np.testing.assert_allclose(through.as_numpy("logits"), direct.as_numpy("logits"), atol=1e-5, rtol=0)
        stats = wait_for(lambda: instance.get("/stats")["models"].get("textgen-python"), timeout=30, interval=0.1,
                         what="drift statistics of the exported model")
        assert stats["inputs"]["tokens"]["count"] == tokens.size
        assert stats["inputs"]["tokens"]["max"] == 256 and stats["inputs"]["tokens"]["datatype"] == "INT64"
        assert stats["outputs"]["logits"]["count"] == tokens.shape[1] * 259
        # The exported model's token input has the Dataset column's name: drift compares the two.
        from strata_workloads.monitor.sketch import TOKENS_COLUMN

        sketches = instance.get("/stats?window=600")["sketches"]["textgen-python"]
        assert sketches[TOKENS_COLUMN]["current"]["rows"] == 1 and "label" in sketches
    finally:
        instance.close()
        server.close()
