"""The monitoring sidecar of a ModelDeployment pod: a proxy in front of Triton.

Clients use Triton's own protocols (KServe v2 over gRPC and HTTP/REST; ``tritonclient``
works unchanged, with an ``authorization: Bearer <key>`` or ``x-api-key`` header when auth is
on). The sidecar authenticates, rate limits, counts, samples and forwards; tensors are not
decoded on the request path.

  config.py      the config file (rendered by strata.render.sidecar)
  supervisor.py  main process: workers, analysis, metrics port
  worker.py      data-path processes (SO_REUSEPORT): grpc_proxy.py, http_proxy.py
  gateway.py     auth (auth.py), rate limits (ratelimit.py), request ids
  analysis.py    audit log, drift statistics, toxicity (off the request path)
  feedback.py    POST /v2/feedback, persisted under the state dir
"""
