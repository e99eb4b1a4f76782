"""One data-path process: the HTTP front end (and the gRPC one with ``grpcFrontEnd:
python``) on shared ports, its own upstreams.

Every worker binds the same ports with SO_REUSEPORT, so the kernel spreads client
connections over the workers; each has its own event loop, its own gRPC channel and HTTP
connection pool to Triton, and no state shared with the others except the rate limiter's
buckets (shared memory) and the metrics files.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import threading
from typing import Any

from strata_workloads.serve.config import SidecarConfig, parse_config

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A worker outliving its supervisor would keep the ports (SO_REUSEPORT lets a restarted
    # sidecar bind beside it) and serve without anyone watching.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the supervisor (no prctl)")


def worker_main(index: int, raw_config: dict[str, Any], buckets, samples, listening, metrics_dir: str) -> None:
    _die_with_parent()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{index} %(levelname)s %(name)s: %(message)s")
    config = parse_config(raw_config)
    asyncio.run(serve(config, buckets, samples, metrics_dir, lambda: listening.__setitem__(index, 1)))


async def serve(config: SidecarConfig, buckets, samples, metrics_dir: str, on_listening=lambda: None) -> None:
    import grpc
    from aiohttp import web

    from strata_workloads.serve.auth import ApiKeys
    from strata_workloads.serve.feedback import FeedbackStore
    from strata_workloads.serve.gateway import Gateway
    from strata_workloads.serve.grpc_proxy import SERVER_OPTIONS, GrpcProxy
    from strata_workloads.serve.http_proxy import HttpProxy
    from strata_workloads.serve.metrics import DataPathMetrics, Sampler

    stop_threads = threading.Event()
    keys = None
    if config.auth is not None:
        keys = ApiKeys(config.auth.api_keys_dir)
        keys.watch(stop_threads)
    metrics = DataPathMetrics(metrics_dir)
    analyse = config.drift.enabled or config.toxicity.enabled
    sampler = Sampler(samples, metrics, config.audit.sample_rate, config.drift.sample_rate if analyse else 0.0,
                      config.drift.max_samples_per_second)
    gateway = Gateway(keys, buckets, config.rate_limit.per if config.rate_limit else None)
    upstream = config.upstream
    listen = config.listen

    grpc_proxy = server = None
    if config.grpc_front_end == "python":  # else strata-sidecar-grpc serves it
        grpc_proxy = GrpcProxy(f"{upstream.host}:{upstream.grpc_port}", gateway, metrics, sampler,
                               upstream.timeout_seconds)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((grpc_proxy,))
        if server.add_insecure_port(f"{listen.host}:{listen.grpc_port}") == 0:
            raise SystemExit(f"cannot listen for gRPC on {listen.host}:{listen.grpc_port}")
        await server.start()

    feedback = FeedbackStore(config.state_path, config.model_name)
    http_proxy = HttpProxy(f"http://{upstream.host}:{upstream.http_port}", gateway, metrics, sampler, feedback,
                           upstream.timeout_seconds)
    runner = web.AppRunner(http_proxy.application(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, listen.host, listen.http_port, reuse_port=True, backlog=1024).start()
    if server is not None:
        log.info("serving gRPC on %s:%d for Triton at %s", listen.host, listen.grpc_port, upstream.host)
    log.info("serving HTTP on %s:%d for Triton at %s", listen.host, listen.http_port, upstream.host)
    on_listening()

    stopping = asyncio.Event()
    publishing = asyncio.ensure_future(metrics.publish(stopping))
    sampling = asyncio.ensure_future(sampler.run(stopping))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: finishing requests in flight")
    stop_threads.set()
    await asyncio.gather(runner.cleanup(), *([server.stop(grace=10)] if server is not None else []))
    if grpc_proxy is not None:
        await grpc_proxy.close()
    await asyncio.gather(publishing, sampling)
    feedback.close()
