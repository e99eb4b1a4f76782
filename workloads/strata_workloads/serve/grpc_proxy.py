"""The gRPC front end: Triton's GRPCInferenceService, forwarded as raw bytes.

A generic handler accepts every method; requests and responses stay serialized (no
protobuf decoding: the model name and id are scanned from the first bytes, see
protocol.scan_infer_request). One upstream channel per worker process carries all calls,
multiplexed over HTTP/2; it reconnects by itself when Triton comes back (short backoff).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from strata_workloads.serve import protocol
from strata_workloads.serve.auth import API_KEY_HEADER, AUTHORIZATION
from strata_workloads.serve.gateway import Gateway, Refusal
from strata_workloads.serve.metrics import DataPathMetrics, Sampler

log = logging.getLogger(__name__)

MESSAGE_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
UPSTREAM_OPTIONS = MESSAGE_OPTIONS + [
    # Triton restarting: try again within a second rather than grpc's default (up to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
SERVER_OPTIONS = MESSAGE_OPTIONS + [("grpc.so_reuseport", 1)]
# Not forwarded to Triton: the credentials, and what grpc sets itself.
_DROPPED_METADATA = frozenset({AUTHORIZATION, API_KEY_HEADER, "user-agent"})
_STATUS = {code.name: code for code in grpc.StatusCode}


def _peer_ip(peer: str) -> str:
    # "ipv4:10.0.0.3:5312", "ipv6:[::1]:5312", "unix:..."
    address = peer.split(":", 1)[-1]
    return address.rsplit(":", 1)[0].strip("[]") if address.count(":") else address


def _split_metadata(metadata) -> tuple[str | None, str | None, tuple | None]:
    authorization = api_key = None
    forward = []
    for key, value in metadata or ():
        if key == AUTHORIZATION:
            authorization = value
        elif key == API_KEY_HEADER:
            api_key = value
        elif key not in _DROPPED_METADATA and not key.startswith("grpc-") and not key.startswith(":"):
            forward.append((key, value))
    return authorization, api_key, tuple(forward) if forward else None


class GrpcProxy(grpc.GenericRpcHandler):
    def __init__(self, upstream: str, gateway: Gateway, metrics: DataPathMetrics, sampler: Sampler,
                 default_timeout: float):
        self.gateway = gateway
        self.metrics = metrics
        self.sampler = sampler
        self.default_timeout = default_timeout
        self.channel = grpc.aio.insecure_channel(upstream, options=UPSTREAM_OPTIONS)
        self._infer_upstream = self.channel.unary_unary(protocol.INFER)
        self._stream_upstream = self.channel.stream_stream(protocol.STREAM_INFER)
        self._handlers: dict[str, grpc.RpcMethodHandler] = {
            protocol.INFER: grpc.unary_unary_rpc_method_handler(self.infer),
            protocol.STREAM_INFER: grpc.stream_stream_rpc_method_handler(self.stream_infer),
        }

    # grpc.GenericRpcHandler
    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._handlers[method] = grpc.unary_unary_rpc_method_handler(self._passthrough(method))
        return handler

    def _timeout(self, context) -> float:
        remaining = context.time_remaining()
        return remaining if remaining is not None and remaining < 1e9 else self.default_timeout

    async def _refuse(self, context, refusal: Refusal, request_id: str | None = None) -> None:
        trailing = [(protocol.REQUEST_ID_HEADER, request_id)] if request_id else []
        if refusal.retry_after:
            trailing.append((protocol.RETRY_AFTER_HEADER, f"{refusal.retry_after:.3f}"))
        await context.abort(_STATUS[refusal.status], refusal.message, trailing_metadata=tuple(trailing))

    async def infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        authorization, api_key, forward = _split_metadata(context.invocation_metadata())
        key, refusal = self.gateway.authenticate(authorization, api_key)
        model = ""
        if refusal is None:
            model, has_id = protocol.scan_infer_request(request)
            refusal = self.gateway.limit(key, _peer_ip(context.peer()) if self.gateway.per == "clientIP" else "")
        if refusal is not None:
            self.metrics.count("grpc", "infer", model, refusal.status, key)
            self.sampler.offer(None, lambda: self._meta(context, "", model, key, refusal.status, started), None, None)
            await self._refuse(context, refusal)
        request_id = self.gateway.request_id()
        outcome, response = "OK", None
        self.metrics.inflight["grpc"] += 1
        try:
            forwarded = request if has_id else protocol.with_request_id(request, request_id)
            response = await self._infer_upstream(forwarded, metadata=forward, timeout=self._timeout(context))
        except grpc.aio.AioRpcError as error:
            outcome = error.code().name
            details = error.details() or ""
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                details = f"Triton is not available: {details}"
        finally:
            self.metrics.inflight["grpc"] -= 1
            elapsed = time.perf_counter() - started
            self.metrics.count("grpc", "infer", model, outcome, key)
            self.metrics.observe("grpc", model, elapsed, len(request), len(response) if response else 0)
        if self.sampler.enabled:
            self.sampler.offer(None, lambda: self._meta(context, request_id, model, key, outcome, started, elapsed),
                               request, response)
        if response is None:
            await context.abort(_STATUS[outcome], details,
                                trailing_metadata=((protocol.REQUEST_ID_HEADER, request_id),))
        context.set_trailing_metadata(((protocol.REQUEST_ID_HEADER, request_id),))
        return response

    @staticmethod
    def _meta(context, request_id: str, model: str, key: str, outcome: str, started: float,
              elapsed: float | None = None) -> dict[str, Any]:
        return {"time": time.time(), "requestId": request_id, "protocol": "grpc", "model": model, "key": key,
                "client": _peer_ip(context.peer()), "outcome": outcome,
                "latencyMs": round((elapsed if elapsed is not None else time.perf_counter() - started) * 1e3, 3)}

    async def stream_infer(self, requests, context: grpc.aio.ServicerContext):
        """Bidirectional streaming: each message is rate limited and counted as a request.

        A message over the limit is answered in-stream with a ModelStreamInferResponse
        carrying the error (what Triton does for a failed request in a stream), so the
        stream itself stays open.
        """
        authorization, api_key, forward = _split_metadata(context.invocation_metadata())
        key, refusal = self.gateway.authenticate(authorization, api_key)
        if refusal is not None:
            self.metrics.count("grpc", "stream", "", refusal.status, key)
            await self._refuse(context, refusal)
        client_ip = _peer_ip(context.peer())
        call = self._stream_upstream(metadata=forward, timeout=self._timeout(context))
        answers: asyncio.Queue = asyncio.Queue()
        done = object()

        async def pump_requests():
            try:
                async for message in requests:
                    model, has_id = protocol.scan_infer_request(message)
                    limited = self.gateway.limit(key, client_ip)
                    if limited is not None:
                        self.metrics.count("grpc", "stream", model, limited.status, key)
                        await answers.put(protocol.stream_error(limited.message))
                        continue
                    self.metrics.count("grpc", "stream", model, "OK", key)
                    await call.write(message if has_id else protocol.with_request_id(message, self.gateway.request_id()))
                await call.done_writing()
            except grpc.aio.AioRpcError:
                pass  # the upstream call failed; pump_answers reports it

        async def pump_answers():
            try:
                async for answer in call:
                    await answers.put(answer)
            except grpc.aio.AioRpcError as error:
                await answers.put(error)
            await answers.put(done)

        tasks = [asyncio.ensure_future(pump_requests()), asyncio.ensure_future(pump_answers())]
        try:
            while True:
                answer = await answers.get()
                if answer is done:
                    break
                if isinstance(answer, grpc.aio.AioRpcError):
                    await context.abort(answer.code(), answer.details() or "")
                yield answer
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()

    def _passthrough(self, method: str):
        health = method in protocol.GRPC_HEALTH
        forbidden = method.startswith(protocol.GRPC_FORBIDDEN_PREFIXES)
        call_kind = protocol.grpc_call(method)
        upstream = self.channel.unary_unary(method)

        async def forward_call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            authorization, api_key, forward = _split_metadata(context.invocation_metadata())
            key = "-"
            if not health:
                key, refusal = self.gateway.authenticate(authorization, api_key)
                if refusal is None and forbidden:
                    refusal = Refusal("PERMISSION_DENIED", f"{method} is not available through the Strata sidecar", key)
                if refusal is not None:
                    self.metrics.count("grpc", call_kind, "", refusal.status, key)
                    await self._refuse(context, refusal)
            try:
                response = await upstream(request, metadata=forward, timeout=self._timeout(context))
            except grpc.aio.AioRpcError as error:
                self.metrics.count("grpc", call_kind, "", error.code().name, key)
                await context.abort(error.code(), error.details() or "")
            self.metrics.count("grpc", call_kind, "", "OK", key)
            return response

        return forward_call

    async def close(self) -> None:
        await self.channel.close()
