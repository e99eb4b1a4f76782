"""The sidecar's pure parts: wire scanning, rate-limit buckets, redaction, statistics, feedback files."""

from __future__ import annotations

import json
import multiprocessing

import numpy as np
import pytest

from strata_workloads.serve import protocol
from strata_workloads.monitor.toxicity import score
from strata_workloads.serve.analysis import Redactor, TensorStats
from strata_workloads.serve.feedback import FeedbackError, FeedbackLog, FeedbackStore, validate
from strata_workloads.serve.ratelimit import SLOTS, SharedBuckets
from tritonclient.grpc import service_pb2


def infer_request(**fields) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(**fields)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT", "FP32"
    tensor.shape.extend([2, 2])
    request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    return request


@pytest.mark.parametrize(
    "fields, model, has_id",
    [
        pytest.param({"model_name": "textgen"}, "textgen", False, id="a model name alone"),
        pytest.param({"model_name": "m", "model_version": "3", "id": "req-1"}, "m", True, id="name, version and id"),
        pytest.param({"model_name": "ünïcode-model"}, "ünïcode-model", False, id="a non-ASCII name"),
        pytest.param({"model_name": "x" * 300}, "x" * 300, False, id="a name longer than a one-byte length"),
        pytest.param({}, "", False, id="no name at all"),
    ],
)
def test_the_model_name_and_id_are_read_from_the_first_bytes(fields, model, has_id):
    assert protocol.scan_infer_request(infer_request(**fields).SerializeToString()) == (model, has_id)


def test_a_truncated_request_is_scanned_without_an_error():
    data = infer_request(model_name="identity").SerializeToString()
    assert protocol.scan_infer_request(data[:5]) == ("ide", False)


def test_the_request_id_is_appended_so_triton_sees_it():
    data = protocol.with_request_id(infer_request(model_name="m").SerializeToString(), "abc123-1f")
    parsed = service_pb2.ModelInferRequest.FromString(data)
    assert parsed.id == "abc123-1f" and parsed.model_name == "m"
    assert parsed.raw_input_contents[0] == np.arange(4, dtype=np.float32).tobytes()


def test_a_stream_error_is_a_model_stream_infer_response():
    parsed = service_pb2.ModelStreamInferResponse.FromString(protocol.stream_error("rate limit exceeded"))
    assert parsed.error_message == "rate limit exceeded"


def test_grpc_tensors_decode_raw_and_typed_contents():
    request = infer_request(model_name="m")
    text = request.inputs.add()
    text.name, text.datatype = "TEXT", "BYTES"
    text.shape.extend([1])
    text.contents.bytes_contents.append(b"hello")
    # raw_input_contents covers the first input only; the second uses typed contents.
    inputs, outputs = protocol.grpc_tensors(request.SerializeToString(), None)
    assert [t.name for t in inputs] == ["INPUT", "TEXT"] and outputs == []
    assert inputs[0].values.tolist() == [0, 1, 2, 3] and inputs[1].values == [b"hello"]


def test_http_tensors_decode_the_binary_extension_and_json():
    import tritonclient.http as httpclient

    binary = httpclient.InferInput("A", [2, 2], "FP32")
    binary.set_data_from_numpy(np.full((2, 2), 1.5, dtype=np.float32), binary_data=True)
    listed = httpclient.InferInput("B", [1, 2], "BYTES")
    listed.set_data_from_numpy(np.array([[b"x", b"yz"]], dtype=object), binary_data=False)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([binary, listed])
    inputs, _ = protocol.http_tensors(body, str(header_length) if header_length else None, None, None)
    assert inputs[0].values.tolist() == [1.5] * 4 and inputs[1].values == [b"x", b"yz"]


@pytest.mark.parametrize(
    "peer, address",
    [pytest.param("ipv4:10.0.0.3:5312", "10.0.0.3", id="IPv4"), pytest.param("ipv6:[fd00::1]:5312", "fd00::1", id="IPv6"),
     pytest.param("unix:/tmp/socket", "/tmp/socket", id="a unix socket")],
)
def test_the_client_address_for_per_ip_limits_comes_from_the_grpc_peer(peer, address):
    from strata_workloads.serve.grpc_proxy import _peer_ip

    assert _peer_ip(peer) == address


# ---- rate limits ----

@pytest.fixture
def buckets(tmp_path):
    return SharedBuckets(tmp_path / "buckets", rate=2.0, burst=3, create=True)


def test_a_burst_passes_then_the_wait_is_until_the_next_token(buckets):
    assert [buckets.acquire("k", now=10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.acquire("k", now=10.0) == pytest.approx(0.5)  # one token per 0.5 s at 2/s
    assert buckets.acquire("k", now=10.25) == pytest.approx(0.25)
    assert buckets.acquire("k", now=10.5) == 0.0


def test_identities_have_their_own_buckets(buckets):
    for _ in range(3):
        buckets.acquire("a", now=0.0)
    assert buckets.acquire("a", now=0.0) > 0
    assert buckets.acquire("b", now=0.0) == 0.0


def test_a_full_table_reuses_the_least_recently_used_slot(tmp_path):
    small = SharedBuckets(tmp_path / "buckets", rate=1.0, burst=1, create=True)
    for index in range(SLOTS + 50):
        assert small.acquire(f"10.0.{index // 256}.{index % 256}", now=float(index)) == 0.0


def test_buckets_are_shared_between_processes(buckets):
    context = multiprocessing.get_context("spawn")
    for _ in range(2):
        process = context.Process(target=buckets.acquire, args=("k", 5.0))
        process.start()
        process.join()
        assert process.exitcode == 0
    assert buckets.acquire("k", now=5.0) == 0.0  # the third token
    assert buckets.acquire("k", now=5.0) > 0  # the others were taken by the two processes


# ---- redaction and toxicity ----

@pytest.mark.parametrize(
    "kinds, text, expected",
    [
        pytest.param(["pii"], "write to a.b@example.org", "write to [REDACTED:email]", id="an email"),
        pytest.param(["pii"], "card 4111-1111-1111-1111 ok", "card [REDACTED:card] ok", id="a card number"),
        pytest.param(["pii"], "ssn 123-45-6789", "ssn [REDACTED:ssn]", id="a social security number"),
        pytest.param(["pii"], "call +1 415 555 0100 now", "call [REDACTED:phone] now", id="a phone number"),
        pytest.param(["secrets"], "use sk-abcdefghijklmnopqrstuv", "use [REDACTED:token]", id="an API token"),
        pytest.param(["secrets"], "AKIAABCDEFGHIJKLMNOP", "[REDACTED:aws-key]", id="an AWS key"),
        pytest.param(["secrets"], "password: hunter2!", "password: [REDACTED:secret]", id="a password assignment"),
        pytest.param(["secrets"], "a.b@example.org", "a.b@example.org", id="secrets leaves PII alone"),
        pytest.param([], "a.b@example.org password=x", "a.b@example.org password=x", id="nothing declared"),
    ],
)
def test_redaction_removes_what_was_declared(kinds, text, expected):
    assert Redactor(kinds)(text) == expected


def test_the_client_address_is_a_pseudonym_only_under_pii():
    assert Redactor(["pii"]).client("10.1.2.3").startswith("sha256:")
    assert Redactor(["pii"]).client("10.1.2.3") == Redactor(["pii"]).client("10.1.2.3")
    assert Redactor([]).client("10.1.2.3") == "10.1.2.3"


def test_the_sidecars_classifier_scores_insults_above_plain_text():
    assert score(["thank you, that helped", "you stupid idiot"]) == [pytest.approx(0, abs=0.2), pytest.approx(1, abs=0.2)]


# ---- drift statistics ----

def test_statistics_over_several_batches_equal_those_of_all_values():
    rng = np.random.default_rng(3)
    batches = [rng.normal(loc, 1.0, size=size) for loc, size in ((0, 100), (5, 1000), (-2, 7))]
    stats = TensorStats(reservoir_size=5000, rng=rng)
    for batch in batches:
        stats.add("FP64", [batch.size], batch)
    everything = np.concatenate(batches)
    summary = stats.summary()
    assert summary["count"] == everything.size and summary["requests"] == 3
    assert summary["mean"] == pytest.approx(everything.mean()) and summary["std"] == pytest.approx(everything.std())
    assert summary["min"] == everything.min() and summary["max"] == everything.max()
    # Everything fit in the reservoir: the quantiles are exact.
    assert summary["quantiles"]["0.5"] == pytest.approx(np.quantile(everything, 0.5))


def test_the_reservoir_is_a_uniform_sample_once_full():
    rng = np.random.default_rng(4)
    stats = TensorStats(reservoir_size=2000, rng=rng)
    for _ in range(50):
        stats.add("FP32", [1000], rng.uniform(0, 1, size=1000))
    quantiles = stats.summary()["quantiles"]
    assert quantiles["0.25"] == pytest.approx(0.25, abs=0.05) and quantiles["0.95"] == pytest.approx(0.95, abs=0.03)


def test_non_finite_values_are_left_out():
    stats = TensorStats(reservoir_size=16, rng=np.random.default_rng(0))
    stats.add("FP32", [3], np.array([1.0, np.nan, np.inf]))
    assert stats.summary()["count"] == 1 and stats.summary()["mean"] == 1.0


# ---- feedback files ----

@pytest.mark.parametrize(
    "body, message",
    [
        pytest.param([], "must be a JSON object", id="not an object"),
        pytest.param({"requestId": "a b", "rating": "up"}, "requestId:", id="an id with a space"),
        pytest.param({"requestId": "r", "rating": "good"}, "rating: must be 'up' or 'down'", id="an unknown rating"),
        pytest.param({"requestId": "r", "rating": "up", "text": 5}, "text: must be a string", id="text not a string"),
        pytest.param({"requestId": "r", "rating": "up", "score": 5}, "unknown feedback field(s) score", id="an extra field"),
        pytest.param({"requestId": "r", "rating": "up", "attributes": {"locale": 5}}, "attributes:",
                     id="an attribute that is not a string"),
        pytest.param({"requestId": "r", "rating": "up", "attributes": ["de"]}, "attributes:", id="attributes not an object"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(body, message):
    with pytest.raises(FeedbackError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(body)


def test_feedback_keeps_the_attributes_the_bias_monitor_groups_by():
    record = validate({"requestId": "r", "rating": "down", "attributes": {"locale": "de"}})
    assert record["attributes"] == {"locale": "de"}


def test_feedback_is_read_back_and_a_torn_last_line_is_skipped(tmp_path):
    store = FeedbackStore(tmp_path, "m")
    store.append_sync({"requestId": "r1", "rating": "up"}, "alice")
    store.append_sync({"requestId": "r2", "rating": "down", "text": "no"}, "bob")
    store.close()
    with (tmp_path / "feedback.jsonl").open("a") as handle:
        handle.write('{"requestId": "r3", "rat')  # a crash mid-write: never acknowledged
    log = FeedbackLog(tmp_path)
    assert log.counts == {"up": 1, "down": 1}
    page = log.page(limit=1)
    assert [r["requestId"] for r in page["records"]] == ["r1"]
    rest = log.page(after=page["next"])
    assert [(r["requestId"], r["key"], r["model"]) for r in rest["records"]] == [("r2", "bob", "m")]
    assert json.loads((tmp_path / "feedback.jsonl").read_text().splitlines()[0])["rating"] == "up"
