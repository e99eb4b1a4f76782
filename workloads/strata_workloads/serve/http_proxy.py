"""The HTTP/REST front end: Triton's KServe v2 REST API, forwarded byte for byte.

Bodies (JSON, or JSON plus binary tensors) are not parsed: the model comes from the path.
Responses are relayed with their own headers (compression included), plus the request
id. ``POST /v2/feedback`` is the sidecar's own (see feedback.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from strata_workloads.serve import protocol
from strata_workloads.serve.auth import API_KEY_HEADER, AUTHORIZATION
from strata_workloads.serve.feedback import FeedbackError, FeedbackStore
from strata_workloads.serve.gateway import Gateway, Refusal
from strata_workloads.serve.metrics import DataPathMetrics, Sampler

_STATUS_CODES = {"UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "PERMISSION_DENIED": 403}
# Hop-by-hop headers and those aiohttp computes itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                  "transfer-encoding", "upgrade", "host", "content-length"})
_NOT_FORWARDED = _HOP | {AUTHORIZATION, API_KEY_HEADER}
HEADER_LENGTH = "inference-header-content-length"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    # Triton's own error body, which tritonclient turns into InferenceServerException(message).
    return web.Response(status=status, body=json.dumps({"error": message}).encode(),
                        content_type="application/json", headers=headers)


class HttpProxy:
    def __init__(self, upstream: str, gateway: Gateway, metrics: DataPathMetrics, sampler: Sampler,
                 feedback: FeedbackStore, default_timeout: float):
        self.base = upstream.rstrip("/")
        self.gateway = gateway
        self.metrics = metrics
        self.sampler = sampler
        self.feedback = feedback
        self.timeout = aiohttp.ClientTimeout(total=default_timeout)
        self.session: aiohttp.ClientSession | None = None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _app) -> None:
        connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=60, ttl_dns_cache=None)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False, timeout=self.timeout,
                                             skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))

    async def _close(self, _app) -> None:
        if self.session is not None:
            await self.session.close()

    def _refusal_response(self, refusal: Refusal, request_id: str | None = None) -> web.Response:
        headers = {}
        if refusal.retry_after:
            # RFC 9110: whole seconds; the exact figure is in the message and strata-retry-after-ms.
            headers["Retry-After"] = str(max(1, int(refusal.retry_after + 0.999)))
            headers["strata-retry-after-ms"] = f"{refusal.retry_after * 1000:.0f}"
        if request_id:
            headers[protocol.REQUEST_ID_HEADER] = request_id
        return _error(_STATUS_CODES[refusal.status], refusal.message, headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        path = request.path
        call = protocol.http_call(path)
        model = protocol.http_model(path)
        key = "-"
        if path not in protocol.HTTP_HEALTH:
            key, refusal = self.gateway.authenticate(request.headers.get(AUTHORIZATION),
                                                     request.headers.get(API_KEY_HEADER))
            if refusal is None and path.startswith(protocol.HTTP_FORBIDDEN_PREFIXES):
                refusal = Refusal("PERMISSION_DENIED", f"{path} is not available through the Strata sidecar", key)
            if refusal is None and call in ("infer", "generate"):
                refusal = self.gateway.limit(key, request.remote or "")
            if refusal is not None:
                self.metrics.count("http", call, model, refusal.status, key)
                return self._refusal_response(refusal)
            if path == protocol.FEEDBACK_PATH:
                return await self._feedback(request, key)
        if call not in ("infer", "generate"):
            return await self._forward(request, call, model, key)
        return await self._infer(request, call, model, key, started)

    def _upstream_headers(self, request: web.Request) -> dict[str, str]:
        return {name: value for name, value in request.headers.items() if name.lower() not in _NOT_FORWARDED}

    @staticmethod
    def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
        return {name: value for name, value in upstream.headers.items() if name.lower() not in _HOP}

    async def _forward(self, request: web.Request, call: str, model: str, key: str) -> web.StreamResponse:
        body = await request.read()
        try:
            async with self.session.request(request.method, self.base + request.path_qs, data=body,
                                            headers=self._upstream_headers(request)) as upstream:
                payload = await upstream.read()
                status, headers = upstream.status, self._response_headers(upstream)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
            self.metrics.count("http", call, model, "UNAVAILABLE", key)
            return _error(503, f"Triton is not available: {error}")
        self.metrics.count("http", call, model, protocol.http_outcome(status), key)
        return web.Response(status=status, body=payload, headers=headers)

    async def _infer(self, request: web.Request, call: str, model: str, key: str, started: float) -> web.StreamResponse:
        request_id = self.gateway.request_id()
        body = await request.read()
        payload: bytes | None = None
        status = 503
        response_headers: dict[str, str] = {}
        self.metrics.inflight["http"] += 1
        try:
            async with self.session.request(request.method, self.base + request.path_qs, data=body,
                                            headers=self._upstream_headers(request)) as upstream:
                status = upstream.status
                response_headers = self._response_headers(upstream)
                response_headers[protocol.REQUEST_ID_HEADER] = request_id
                if path_streams(request.path):
                    # Server-sent events: relay as they come.
                    answer = web.StreamResponse(status=status, headers=response_headers)
                    await answer.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await answer.write(chunk)
                    await answer.write_eof()
                    return answer
                payload = await upstream.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as error:
            payload = None
            failure = f"Triton is not available: {error}"
        finally:
            self.metrics.inflight["http"] -= 1
            elapsed = time.perf_counter() - started
            outcome = protocol.http_outcome(status)
            self.metrics.count("http", call, model, outcome, key)
            self.metrics.observe("http", model, elapsed, len(body), len(payload) if payload else 0)
        if self.sampler.enabled:
            self.sampler.offer(self._meta(request, request_id, model, key, outcome, elapsed, response_headers),
                               None, body, payload if status == 200 else None)
        if payload is None:
            return _error(503, failure, {protocol.REQUEST_ID_HEADER: request_id})
        return web.Response(status=status, body=payload, headers=response_headers)

    @staticmethod
    def _meta(request: web.Request, request_id: str, model: str, key: str, outcome: str, elapsed: float,
              response_headers: dict[str, str]) -> dict[str, Any]:
        lowered = {name.lower(): value for name, value in response_headers.items()}
        return {"time": time.time(), "requestId": request_id, "protocol": "http", "model": model, "key": key,
                "client": request.remote or "", "outcome": outcome, "latencyMs": round(elapsed * 1e3, 3),
                "requestHeaderLength": request.headers.get(HEADER_LENGTH),
                "responseHeaderLength": lowered.get(HEADER_LENGTH)}

    async def _feedback(self, request: web.Request, key: str) -> web.Response:
        if request.method != "POST":
            return _error(405, "feedback is sent with POST", {"Allow": "POST"})
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.metrics.count("http", "feedback", "", "INVALID_ARGUMENT", key)
            return _error(400, "feedback must be a JSON object: {\"requestId\": ..., \"rating\": \"up\"|\"down\", \"text\": ...}")
        try:
            record = await self.feedback.append(body, key)
        except FeedbackError as error:
            self.metrics.count("http", "feedback", "", "INVALID_ARGUMENT", key)
            return _error(400, str(error))
        self.metrics.count("http", "feedback", "", "OK", key)
        return web.json_response({"requestId": record["requestId"], "recorded": True}, status=201)


def path_streams(path: str) -> bool:
    return path.endswith("/generate_stream")
