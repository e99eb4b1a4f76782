package main

// Triton's GRPCInferenceService, forwarded as raw bytes: the behaviour of
// serve/grpc_proxy.py (its tests run against both front ends), without Python's per-call
// cost. One upstream connection carries every call, multiplexed over HTTP/2.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// rawCodec keeps messages serialized: the proxy never decodes tensors on the request path.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	// A copy: grpc may reuse the buffer, and sampled messages outlive the call.
	*(v.(*[]byte)) = append(make([]byte, 0, len(data)), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// gRPC status names as Python's grpc.StatusCode names them: the `outcome` label vocabulary.
var statusNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

func statusName(code codes.Code) string {
	if name, ok := statusNames[code]; ok {
		return name
	}
	return "UNKNOWN"
}

type proxy struct {
	upstreams      []*grpc.ClientConn
	next           atomic.Uint32
	gateway        *gateway
	metrics        *metrics
	sampler        *sampler
	defaultTimeout time.Duration
}

// upstream picks the next connection to Triton, round robin: Triton's gRPC server reads one
// connection's frames on one thread at a time, so one connection would be a ceiling.
func (p *proxy) upstream() *grpc.ClientConn {
	return p.upstreams[int(p.next.Add(1))%len(p.upstreams)]
}

// callMetadata is what a call's metadata says: the credentials, and what goes on to Triton
// (not the credentials, nor what grpc sets itself).
type callMetadata struct {
	authorization, apiKey string
	forward               metadata.MD
}

func readMetadata(ctx context.Context) callMetadata {
	incoming, _ := metadata.FromIncomingContext(ctx)
	result := callMetadata{forward: metadata.MD{}}
	for key, values := range incoming {
		switch {
		case key == "authorization":
			result.authorization = values[len(values)-1]
		case key == "x-api-key":
			result.apiKey = values[len(values)-1]
		case key == "user-agent" || key == "content-type" || key == "te" || strings.HasPrefix(key, "grpc-") ||
			strings.HasPrefix(key, ":"):
		default:
			result.forward[key] = values
		}
	}
	return result
}

func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	if tcp, ok := p.Addr.(*net.TCPAddr); ok {
		return tcp.IP.String()
	}
	return p.Addr.String()
}

// upstreamContext carries the client's deadline (or the default) and metadata to Triton.
func (p *proxy) upstreamContext(ctx context.Context, forward metadata.MD) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); ok {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, p.defaultTimeout)
	}
	return metadata.NewOutgoingContext(ctx, forward), cancel
}

func (p *proxy) refuse(stream grpc.ServerStream, r *refusal, requestID string) error {
	trailer := metadata.MD{}
	if requestID != "" {
		trailer.Set(requestIDHeader, requestID)
	}
	if r.retryAfter > 0 {
		trailer.Set(retryAfterHeader, fmt.Sprintf("%.3f", r.retryAfter))
	}
	stream.SetTrailer(trailer)
	return status.Error(r.code, r.message)
}

// handle is the server's only handler: every method arrives here.
func (p *proxy) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	switch method {
	case inferMethod:
		return p.infer(stream)
	case streamInferMethod:
		return p.streamInfer(stream)
	}
	return p.passthrough(stream, method)
}

func (p *proxy) infer(stream grpc.ServerStream) error {
	started := time.Now()
	ctx := stream.Context()
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	md := readMetadata(ctx)
	key, refused := p.gateway.authenticate(md.authorization, md.apiKey)
	model, hasID := "", false
	if refused == nil {
		model, hasID = scanInferRequest(request)
		clientIP := ""
		if p.gateway.per == "clientIP" {
			clientIP = peerIP(ctx)
		}
		refused = p.gateway.limit(key, clientIP)
	}
	if refused != nil {
		outcome := statusName(refused.code)
		p.metrics.count("infer", model, outcome, key)
		p.sampler.offer(func() sampleMeta { return p.meta(ctx, "", model, key, outcome, time.Since(started)) }, nil, nil)
		return p.refuse(stream, refused, "")
	}
	requestID := p.gateway.requestID()
	forwarded := request
	if !hasID {
		forwarded = withRequestID(request, requestID)
	}
	upstreamCtx, cancel := p.upstreamContext(ctx, md.forward)
	p.metrics.addInflight(1)
	var response []byte
	err := p.upstream().Invoke(upstreamCtx, inferMethod, &forwarded, &response)
	p.metrics.addInflight(-1)
	cancel()
	elapsed := time.Since(started)
	outcome := "OK"
	var answer *status.Status
	if err != nil {
		answer = status.Convert(err)
		outcome = statusName(answer.Code())
		response = nil
	}
	p.metrics.count("infer", model, outcome, key)
	p.metrics.observe(model, elapsed.Seconds(), len(request), len(response))
	p.sampler.offer(func() sampleMeta { return p.meta(ctx, requestID, model, key, outcome, elapsed) }, request, response)
	stream.SetTrailer(metadata.Pairs(requestIDHeader, requestID))
	if answer != nil {
		message := answer.Message()
		if answer.Code() == codes.Unavailable {
			message = "Triton is not available: " + message
		}
		return status.Error(answer.Code(), message)
	}
	return stream.SendMsg(&response)
}

// meta describes a sampled call; latency is the one the metrics observed (refusals: until now).
func (p *proxy) meta(ctx context.Context, requestID, model, key, outcome string, latency time.Duration) sampleMeta {
	return sampleMeta{Time: float64(time.Now().UnixNano()) / 1e9, RequestID: requestID, Protocol: "grpc",
		Model: model, Key: key, Client: peerIP(ctx), Outcome: outcome,
		LatencyMs: float64(latency.Microseconds()) / 1e3}
}

// streamInfer forwards a bidirectional stream, each message rate limited and counted as a
// request. A message over the limit is answered in-stream with an error (what Triton does
// for a failed request in a stream), so the stream itself stays open.
func (p *proxy) streamInfer(stream grpc.ServerStream) error {
	ctx := stream.Context()
	md := readMetadata(ctx)
	key, refused := p.gateway.authenticate(md.authorization, md.apiKey)
	if refused != nil {
		p.metrics.count("stream", "", statusName(refused.code), key)
		return p.refuse(stream, refused, "")
	}
	clientIP := peerIP(ctx)
	upstreamCtx, cancel := p.upstreamContext(ctx, md.forward)
	defer cancel()
	upstream, err := p.upstream().NewStream(upstreamCtx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		streamInferMethod)
	if err != nil {
		return status.Error(status.Code(err), status.Convert(err).Message())
	}
	var sending sync.Mutex // the client stream takes one sender at a time
	go func() {
		for {
			var message []byte
			if err := stream.RecvMsg(&message); err != nil {
				if errors.Is(err, io.EOF) {
					upstream.CloseSend()
				} else {
					cancel()
				}
				return
			}
			model, hasID := scanInferRequest(message)
			if limited := p.gateway.limit(key, clientIP); limited != nil {
				p.metrics.count("stream", model, statusName(limited.code), key)
				answer := streamError(limited.message)
				sending.Lock()
				err := stream.SendMsg(&answer)
				sending.Unlock()
				if err != nil {
					cancel()
					return
				}
				continue
			}
			p.metrics.count("stream", model, "OK", key)
			if !hasID {
				message = withRequestID(message, p.gateway.requestID())
			}
			if err := upstream.SendMsg(&message); err != nil {
				return // the upstream stream failed: the receiving side reports it
			}
		}
	}()
	for {
		var answer []byte
		if err := upstream.RecvMsg(&answer); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			s := status.Convert(err)
			return status.Error(s.Code(), s.Message())
		}
		sending.Lock()
		err := stream.SendMsg(&answer)
		sending.Unlock()
		if err != nil {
			return err
		}
	}
}

func (p *proxy) passthrough(stream grpc.ServerStream, method string) error {
	ctx := stream.Context()
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	md := readMetadata(ctx)
	call := callKind(method)
	key := "-"
	if !isHealth(method) {
		var refused *refusal
		key, refused = p.gateway.authenticate(md.authorization, md.apiKey)
		if refused == nil && isForbidden(method) {
			refused = &refusal{code: codes.PermissionDenied,
				message: method + " is not available through the Strata sidecar"}
		}
		if refused != nil {
			p.metrics.count(call, "", statusName(refused.code), key)
			return p.refuse(stream, refused, "")
		}
	}
	upstreamCtx, cancel := p.upstreamContext(ctx, md.forward)
	defer cancel()
	var response []byte
	if err := p.upstream().Invoke(upstreamCtx, method, &request, &response); err != nil {
		s := status.Convert(err)
		p.metrics.count(call, "", statusName(s.Code()), key)
		return status.Error(s.Code(), s.Message())
	}
	p.metrics.count(call, "", "OK", key)
	return stream.SendMsg(&response)
}
