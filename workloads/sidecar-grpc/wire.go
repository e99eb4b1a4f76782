package main

// What the front end reads of Triton's protocol without decoding tensors: the same rules
// as strata_workloads/serve/protocol.py (scan_infer_request, with_request_id, stream_error,
// grpc_call), which tests/workloads/test_sidecar_grpc_contract.py holds the two to.

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

const (
	service           = "/inference.GRPCInferenceService/"
	inferMethod       = service + "ModelInfer"
	streamInferMethod = service + "ModelStreamInfer"
	requestIDHeader   = "strata-request-id"
	retryAfterHeader  = "retry-after"
)

// No key needed: kubelet probes and load balancers call these.
var healthMethods = []string{service + "ServerLive", service + "ServerReady", "/grpc.health.v1.Health/Check"}

// Administrative calls a client of one deployment must not make (protocol.GRPC_FORBIDDEN_PREFIXES).
var forbiddenPrefixes = []string{service + "RepositoryModel", service + "SystemSharedMemory",
	service + "CudaSharedMemory", service + "TraceSetting", service + "LogSettings"}

func isHealth(method string) bool {
	for _, m := range healthMethods {
		if m == method {
			return true
		}
	}
	return false
}

func isForbidden(method string) bool {
	for _, prefix := range forbiddenPrefixes {
		if strings.HasPrefix(method, prefix) {
			return true
		}
	}
	return false
}

// callKind is the metrics' `call` label of a method.
func callKind(method string) string {
	if isHealth(method) {
		return "health"
	}
	name := method[strings.LastIndexByte(method, '/')+1:]
	switch name {
	case "ModelInfer":
		return "infer"
	case "ModelStreamInfer":
		return "stream"
	case "ModelReady":
		return "ready"
	case "ModelMetadata", "ServerMetadata", "ModelConfig":
		return "metadata"
	}
	return "other"
}

// scanInferRequest returns the model name and whether the client set an id, from the
// leading fields of a serialized ModelInferRequest (model_name, model_version and id,
// fields 1..3, which every protobuf encoder writes first). A truncated message yields what
// was read: Triton says what is wrong with it.
func scanInferRequest(data []byte) (model string, hasID bool) {
	for len(data) > 0 {
		tag := data[0]
		if tag != 0x0a && tag != 0x12 && tag != 0x1a {
			break
		}
		length, n := protowire.ConsumeVarint(data[1:])
		if n < 0 || uint64(len(data)-1-n) < length {
			if n >= 0 && tag == 0x0a {
				model = validUTF8(data[1+n:])
			}
			break
		}
		value := data[1+n : 1+n+int(length)]
		switch tag {
		case 0x0a:
			model = validUTF8(value)
		case 0x1a:
			hasID = length > 0
		}
		data = data[1+n+int(length):]
	}
	return model, hasID
}

func validUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// withRequestID appends field 3 (id): the last occurrence of a scalar field wins, so Triton
// sees this id and echoes it in ModelInferResponse.id.
func withRequestID(data []byte, id string) []byte {
	out := make([]byte, 0, len(data)+len(id)+6)
	out = append(out, data...)
	out = protowire.AppendTag(out, 3, protowire.BytesType)
	return protowire.AppendString(out, id)
}

// streamError is a ModelStreamInferResponse carrying only error_message (field 1).
func streamError(message string) []byte {
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendString(out, message)
}
