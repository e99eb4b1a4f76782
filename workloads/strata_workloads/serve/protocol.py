"""What the sidecar reads of Triton's protocols, without decoding tensors on the request path.

On the data path only the first fields of a serialized ``ModelInferRequest`` are scanned
(model name and id, fields 1 and 3, which every protobuf encoder writes first); the request
id is added by appending field 3 to the bytes (protobuf: the last occurrence of a scalar
field wins), so Triton echoes it in ``ModelInferResponse.id``. Full decoding into numpy arrays
happens only for sampled requests, in the supervisor (:func:`grpc_tensors`, :func:`http_tensors`).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

SERVICE = "/inference.GRPCInferenceService/"
INFER = SERVICE + "ModelInfer"
STREAM_INFER = SERVICE + "ModelStreamInfer"
# No key needed: kubelet probes and load balancers call these.
GRPC_HEALTH = frozenset({SERVICE + "ServerLive", SERVICE + "ServerReady", "/grpc.health.v1.Health/Check"})
# Administrative calls a client of one deployment must not make: loading and unloading models,
# registering shared memory (a region of the pod's memory Triton would read), tracing, logging.
GRPC_FORBIDDEN_PREFIXES = (SERVICE + "RepositoryModel", SERVICE + "SystemSharedMemory", SERVICE + "CudaSharedMemory",
                           SERVICE + "TraceSetting", SERVICE + "LogSettings")
HTTP_HEALTH = frozenset({"/v2/health/live", "/v2/health/ready"})
HTTP_FORBIDDEN_PREFIXES = ("/v2/repository/models/", "/v2/systemsharedmemory", "/v2/cudasharedmemory", "/v2/trace",
                           "/v2/logging")
FEEDBACK_PATH = "/v2/feedback"
REQUEST_ID_HEADER = "strata-request-id"
RETRY_AFTER_HEADER = "retry-after"

# gRPC status names by HTTP status, so both protocols share one `outcome` label vocabulary.
HTTP_OUTCOMES = {200: "OK", 201: "OK", 204: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def http_outcome(status: int) -> str:
    return HTTP_OUTCOMES.get(status) or ("OK" if status < 400 else "INVALID_ARGUMENT" if status < 500 else "INTERNAL")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def scan_infer_request(data: bytes) -> tuple[str, bool]:
    """(model name, whether the client set an id) from a serialized ModelInferRequest."""
    model, has_id, pos, end = "", False, 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            # Fields 1..3 (model_name, model_version, id) are length-delimited: tags 0x0a, 0x12, 0x1a.
            if tag not in (0x0A, 0x12, 0x1A):
                break
            length, pos = _varint(data, pos + 1)
            if tag == 0x0A:
                model = data[pos:pos + length].decode("utf-8", "replace")
            elif tag == 0x1A:
                has_id = length > 0
            pos += length
    except IndexError:
        pass  # truncated: Triton will say what is wrong with it
    return model, has_id


def with_request_id(data: bytes, request_id: str) -> bytes:
    encoded = request_id.encode()
    return data + b"\x1a" + encode_varint(len(encoded)) + encoded


def stream_error(message: str) -> bytes:
    """A ModelStreamInferResponse carrying only ``error_message`` (field 1)."""
    encoded = message.encode()
    return b"\x0a" + encode_varint(len(encoded)) + encoded


def http_model(path: str) -> str:
    """The model named by a /v2/models/<name>/... path ('' for other paths)."""
    if path.startswith("/v2/models/"):
        return path[11:].split("/", 1)[0]
    return ""


def http_call(path: str) -> str:
    """What kind of call a path is, for the metrics' ``call`` label."""
    if path in HTTP_HEALTH:
        return "health"
    if path.startswith("/v2/models/"):
        if path.endswith("/infer"):
            return "infer"
        if path.endswith("/generate") or path.endswith("/generate_stream"):
            return "generate"
        if path.endswith("/ready"):
            return "ready"
        return "metadata"
    return "other"


def grpc_call(method: str) -> str:
    name = method.rsplit("/", 1)[-1]
    if method in GRPC_HEALTH:
        return "health"
    return {"ModelInfer": "infer", "ModelStreamInfer": "stream", "ModelReady": "ready",
            "ModelMetadata": "metadata", "ServerMetadata": "metadata", "ModelConfig": "metadata"}.get(name, "other")


# ---- full decoding, for sampled requests only ----

NUMPY_TYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
               "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
               "FP32": np.float32, "FP64": np.float64}
_CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                   "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                   "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                   "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def deserialize_bytes(raw: bytes) -> list[bytes]:
    """Triton's BYTES wire form: each element a 4-byte little-endian length, then the bytes."""
    items, pos = [], 0
    while pos + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + length])
        pos += 4 + length
    return items


def _from_raw(datatype: str, raw: bytes) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        return deserialize_bytes(raw)
    if datatype == "BF16":
        return np.frombuffer(raw, dtype=np.uint16).astype(np.uint32).__lshift__(16).view(np.float32)
    return np.frombuffer(raw, dtype=NUMPY_TYPES[datatype])


class Tensor:
    __slots__ = ("name", "datatype", "shape", "values", "raw")

    def __init__(self, name: str, datatype: str, shape: list[int], values: np.ndarray | list[bytes], raw: bytes):
        self.name, self.datatype, self.shape, self.values, self.raw = name, datatype, shape, values, raw


def _grpc_tensors(specs, raw_contents) -> list[Tensor]:
    tensors = []
    for index, spec in enumerate(specs):
        datatype = spec.datatype
        if index < len(raw_contents):
            raw = raw_contents[index]
            values = _from_raw(datatype, raw)
        elif datatype in _CONTENTS_FIELD:
            listed = list(getattr(spec.contents, _CONTENTS_FIELD[datatype]))
            values = listed if datatype == "BYTES" else np.asarray(listed, dtype=NUMPY_TYPES[datatype])
            raw = b"".join(listed) if datatype == "BYTES" else values.tobytes()
        else:
            continue
        tensors.append(Tensor(spec.name, datatype, list(spec.shape), values, raw))
    return tensors


def grpc_tensors(request: bytes, response: bytes | None) -> tuple[list[Tensor], list[Tensor]]:
    from tritonclient.grpc import service_pb2

    parsed = service_pb2.ModelInferRequest.FromString(request)
    inputs = _grpc_tensors(parsed.inputs, parsed.raw_input_contents)
    outputs: list[Tensor] = []
    if response:
        answer = service_pb2.ModelInferResponse.FromString(response)
        outputs = _grpc_tensors(answer.outputs, answer.raw_output_contents)
    return inputs, outputs


def _http_split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length:
        length = int(header_length)
        return json.loads(body[:length]), body[length:]
    return json.loads(body) if body else {}, b""


def _http_side(entries: list[dict[str, Any]], binary: bytes) -> list[Tensor]:
    tensors, offset = [], 0
    for entry in entries:
        datatype, shape = entry.get("datatype", ""), list(entry.get("shape", []))
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[offset:offset + size]
            offset += size
            values = _from_raw(datatype, raw)
        elif "data" in entry:
            data = entry["data"]
            flat = np.asarray(data, dtype=object).reshape(-1).tolist() if isinstance(data, list) else [data]
            if datatype == "BYTES":
                values = [item.encode() if isinstance(item, str) else bytes(item) for item in flat]
                raw = b"".join(values)
            else:
                values = np.asarray(flat, dtype=NUMPY_TYPES.get(datatype, np.float64))
                raw = values.tobytes()
        else:
            continue
        tensors.append(Tensor(entry.get("name", ""), datatype, shape, values, raw))
    return tensors


def http_tensors(request: bytes, request_header_length: str | None, response: bytes | None,
                 response_header_length: str | None) -> tuple[list[Tensor], list[Tensor]]:
    header, binary = _http_split(request, request_header_length)
    inputs = _http_side(header.get("inputs", []), binary)
    outputs: list[Tensor] = []
    if response:
        answer, answer_binary = _http_split(response, response_header_length)
        outputs = _http_side(answer.get("outputs", []), answer_binary)
    return inputs, outputs
