"""The monitoring sidecar of a ModelDeployment pod: a proxy in front of Triton.

Run as ``python -m strata_workloads.serve --config /etc/strata/sidecar.yaml`` (or with
``$STRATA_SIDECAR_CONFIG``); the file is rendered by ``strata.render.sidecar`` (config.py
documents every setting).

For clients (Triton's own protocols; ``tritonclient`` works unchanged)
  gRPC :8001   KServe v2 GRPCInferenceService. Key in metadata: ``authorization: Bearer <key>``
               or ``x-api-key: <key>`` (``client.infer(..., headers={...})``).
  HTTP :8000   KServe v2 REST, the same headers.
  No key needed: ServerLive/ServerReady, grpc.health.v1.Health/Check, GET /v2/health/live
  and /v2/health/ready (kubelet probes can use :8000). Everything else needs a key when
  auth is on. Refused with PERMISSION_DENIED / 403: model load/unload, shared-memory
  registration, trace and log settings (a client must not reconfigure the pod's Triton).
  Refusals: no or wrong key -> UNAUTHENTICATED / 401; over the rate limit (inference calls;
  per key, client IP or globally, shared by all worker processes) -> RESOURCE_EXHAUSTED
  with trailing metadata ``retry-after: <seconds>`` / 429 with ``Retry-After`` (whole
  seconds) and ``strata-retry-after-ms``; in a ModelStreamInfer stream a limited message
  is answered in-stream with an error and the stream stays open. Triton down ->
  UNAVAILABLE / 503 until it is back (no sidecar restart needed). Triton's own errors
  (unknown model, malformed tensors) pass through with Triton's status and message.
  Request id: every inference answer carries ``strata-request-id`` (gRPC trailing
  metadata, HTTP header); over gRPC it is also put in the request's ``id`` when the client
  set none, so Triton echoes it in ``ModelInferResponse.id`` (``result.get_response().id``).
  Feedback: ``POST /v2/feedback`` on :8000, ``{"requestId": "<strata-request-id>",
  "rating": "up"|"down", "text": "..."}`` -> 201 once fsync'ed (feedback.py).

For operators and the FeedbackPolicy (:9090, no key; not exposed by the Service's client ports)
  GET /metrics   Prometheus: strata_sidecar_requests_total{protocol,call,model,outcome,key},
                 strata_sidecar_request_duration_seconds, _request_bytes, _response_bytes
                 {protocol,model}, strata_sidecar_inflight_requests{protocol},
                 strata_sidecar_feedback_total{rating}, strata_sidecar_tensor_{values_total,
                 mean,stddev,quantile}{model,side,tensor}, strata_sidecar_toxicity_score,
                 strata_sidecar_upstream_ready, _workers, _worker_restarts_total,
                 _samples_analysed_total, _samples_dropped_total, _audit_records_total.
                 ``key`` is the API key's name (its file name), never the key.
  GET /stats     drift statistics as JSON (analysis.py documents the fields); with
                 ?window=<seconds>, the token sketches of integer inputs over that window
                 and the one before (what a FeedbackPolicy's drift monitor reads); with
                 also &samples=<n>, at most n kept input rows of each (drift.inputSamplesPerMinute)
  GET /feedback?after=<offset>&limit=<n>   feedback records and the next offset
  GET /review?after=<offset>&limit=<n>     outputs scored toxic, queued for a person's review
                 (analysis.py: REVIEW_FILE); a FeedbackPolicy lists them in its status
  GET /healthz   200 when every worker is up and listening

Processes
  supervisor.py  the main process: starts N workers (``workers``, default one per CPU the
                 container may use) and the compiled gRPC front end, restarts any that dies,
                 serves :9090, consumes the data path's samples (audit log, drift statistics,
                 toxicity) off the request path
  strata-sidecar-grpc
                 the compiled gRPC front end on :8001 (Go, workloads/sidecar-grpc; see
                 grpc_front_end.py for why and for what it shares with the Python side): one
                 process on every CPU, four connections to Triton, raw bytes
  worker.py      data-path processes, all bound to :8000 (and :8001 with ``grpcFrontEnd:
                 python``) with SO_REUSEPORT (the kernel spreads connections over them), each
                 with its own event loop, its own HTTP connection pool (and gRPC channel) to
                 Triton: http_proxy.py (aiohttp), grpc_proxy.py (grpc.aio, raw bytes, a
                 generic handler for every method)
  gateway.py     auth (auth.py), rate limits (ratelimit.py: token buckets in a memory-mapped
                 file every data-path process maps, the compiled front end too), request ids
  metrics.py     per-worker counters, published every 0.5 s and merged at scrape time
  analysis.py    audit log (audit.jsonl under the state dir; numeric tensors as digests,
                 text redacted as declared), drift statistics, toxicity scores (alt-profanity-check)
  feedback.py    feedback.jsonl under the state dir, reloaded at start

Tensors are never decoded on the request path: the model name and id are scanned from the
first bytes of a ModelInferRequest (protocol.py); sampled requests are decoded in the
supervisor.
"""
