"""The sidecar's main process: starts the data-path workers and does everything else.

  workers      N processes (worker.py) serving HTTP (and gRPC with grpcFrontEnd: python)
               on shared ports; restarted when one dies
  gRPC         the compiled front end (grpc_front_end.py), restarted when it dies
  analysis     threads consuming the data path's samples: audit log, drift stats, toxicity
  metrics port Prometheus /metrics (all workers merged, plus the supervisor's own),
               GET /stats (drift), GET /feedback?after=&limit= (records), GET /review?after=&limit=
               (outputs queued for review), GET /exchanges?ids=a,b (audited answers' text),
               GET /healthz; with shared state (state.py) GET /pods, and pod=<name> on
               /feedback and /review
  shared state a thread keeping this pod's heartbeat and removing long-gone pods' records
  upstream     a thread probing Triton's readiness (strata_sidecar_upstream_ready)
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from strata_workloads.serve.config import SidecarConfig
from strata_workloads.serve import metrics as data_path_metrics

log = logging.getLogger(__name__)

SAMPLE_QUEUE_SIZE = 64  # batches
# Request ids one GET /exchanges may ask about (a FeedbackPolicy asks in pages of this size).
MAX_EXCHANGE_IDS = 200
# Kept input rows one GET /stats?samples= returns per input and window at most.
MAX_SAMPLES_PER_READ = 5000


def worker_count(configured: int) -> int:
    """``workers`` from the config, or the CPUs this container may use (its cgroup quota)."""
    if configured:
        return configured
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Supervisor:
    def __init__(self, config: SidecarConfig):
        self.config = config
        self.stop = threading.Event()
        config.state_path.mkdir(parents=True, exist_ok=True)
        # Workers' metric snapshots; fresh every start: counters restart from zero, as
        # Prometheus expects of a new process.
        self.metrics_dir = tempfile.mkdtemp(prefix="strata-sidecar-metrics-")
        self.context = multiprocessing.get_context("spawn")
        self.buckets = None
        if config.rate_limit is not None:
            from strata_workloads.serve.ratelimit import SharedBuckets
            self.buckets = SharedBuckets(Path(self.metrics_dir) / "rate-limit.buckets",
                                         config.rate_limit.requests_per_second, config.rate_limit.burst, create=True)
        self.samples = self.context.Queue(maxsize=SAMPLE_QUEUE_SIZE)
        self.workers: list[multiprocessing.process.BaseProcess] = []
        self.listening = None  # per worker: 1 once its ports are open
        self.worker_restarts = 0
        self.grpc_binary = None
        self.grpc_front_end = None  # grpc_front_end.FrontEndProcess
        if config.grpc_front_end == "compiled":
            from strata_workloads.serve.grpc_front_end import find_binary
            self.grpc_binary = find_binary()  # fails the start, saying what is missing
        self._analysing = threading.Lock()  # the workers' and the front end's samples
        self.upstream_ready = 0.0

        from strata_workloads.serve.analysis import Analysis
        from strata_workloads.serve.auth import ApiKeys
        from strata_workloads.serve.analysis import REVIEW_FILE
        from strata_workloads.serve.feedback import FeedbackLog, JsonLines

        self.api_keys = ApiKeys(config.auth.api_keys_dir) if config.auth else None
        if self.api_keys is not None:
            self.api_keys.watch(self.stop)
        self.analysis = Analysis(config, self.api_keys)
        self.feedback = FeedbackLog(config.state_path)
        self.review = JsonLines(config.state_path / REVIEW_FILE)
        self.shared = None
        if config.shared_state_dir is not None:
            from strata_workloads.serve.state import SharedState

            self.shared = SharedState(Path(config.shared_state_dir), config.state_path,
                                      config.shared_state_retention_days * 86400)
        log.info("%d feedback record(s) on disk (up: %d, down: %d)", sum(self.feedback.counts.values()),
                 self.feedback.counts["up"], self.feedback.counts["down"])

    # ---- workers ----

    def _spawn(self, index: int):
        from strata_workloads.serve.worker import worker_main
        self.listening[index] = 0
        process = self.context.Process(target=worker_main, name=f"sidecar-worker-{index}",
                                       args=(index, self.config.model_dump(by_alias=True), self.buckets, self.samples,
                                             self.listening, self.metrics_dir))
        process.start()
        return process

    def _start_grpc_front_end(self):
        from strata_workloads.serve.grpc_front_end import FrontEndProcess, front_end_args

        return FrontEndProcess(self.grpc_binary, front_end_args(
            self.config, Path(self.metrics_dir), self.buckets.path if self.buckets is not None else None))

    def data_path(self) -> list:
        """Every data-path process: the workers and the compiled gRPC front end."""
        return self.workers + ([self.grpc_front_end] if self.grpc_front_end is not None else [])

    def ready(self) -> tuple[int, int]:
        """(data-path processes alive and listening, all of them)."""
        ready = sum(p.is_alive() and self.listening[i] for i, p in enumerate(self.workers))
        if self.grpc_front_end is not None:
            ready += self.grpc_front_end.is_alive() and self.grpc_front_end.listening.is_set()
        return ready, len(self.data_path())

    def run(self) -> int:
        count = worker_count(self.config.workers)
        log.info("starting %d data-path worker(s)", count)
        self.listening = self.context.RawArray("b", count)
        samples_listener = None
        if self.grpc_binary is not None:
            from strata_workloads.serve.grpc_front_end import SAMPLES_SOCKET, serve_samples

            samples_listener = serve_samples(Path(self.metrics_dir) / SAMPLES_SOCKET, self._consume, self.stop)
            log.info("starting the compiled gRPC front end (%s)", self.grpc_binary)
            self.grpc_front_end = self._start_grpc_front_end()
        self.workers = [self._spawn(index) for index in range(count)]
        for target in (self._consume_samples, self._probe_upstream, self._keep_shared_state):
            threading.Thread(target=target, daemon=True, name=target.__name__).start()
        server = self._metrics_server()
        threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        while not self.stop.is_set():
            wait([process.sentinel for process in self.data_path()], timeout=0.5)
            for index, process in enumerate(self.workers):
                if not process.is_alive() and not self.stop.is_set():
                    log.error("worker %d exited (code %s); starting it again", index, process.exitcode)
                    self.worker_restarts += 1
                    self.workers[index] = self._spawn(index)
            front_end = self.grpc_front_end
            if front_end is not None and not front_end.is_alive() and not self.stop.is_set():
                log.error("the gRPC front end exited (code %s); starting it again", front_end.exitcode)
                front_end.join()
                self.worker_restarts += 1
                self.grpc_front_end = self._start_grpc_front_end()
        log.info("stopping workers")
        for process in self.data_path():
            if process.is_alive():
                process.terminate()
        for process in self.data_path():
            process.join(timeout=15)
            if process.is_alive():
                process.kill()
                process.join()
        if samples_listener is not None:
            samples_listener.close()
        server.shutdown()
        self.analysis.close()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0

    # ---- analysis and upstream ----

    def _consume_samples(self) -> None:
        while not self.stop.is_set():
            try:
                batch = self.samples.get(timeout=0.5)  # a worker's samples since its last flush
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            for meta, request, response in batch:
                self._consume(meta, request, response)

    def _consume(self, meta: dict[str, Any], request: bytes | None, response: bytes | None) -> None:
        with self._analysing:
            try:
                self.analysis.consume(meta, request, response)
            except Exception:
                log.exception("analysing a sampled request failed")

    def _keep_shared_state(self) -> None:
        from strata_workloads.serve.state import HEARTBEAT_SECONDS

        while self.shared is not None and not self.stop.is_set():
            try:
                self.shared.heartbeat()
                self.shared.remove_expired()
            except OSError as error:  # the volume hiccuped: the next round tries again
                log.warning("shared state: %s", error)
            self.stop.wait(HEARTBEAT_SECONDS)

    def _log_of(self, path: str, pod: str | None):
        """The paged log GET /feedback or /review reads: this pod's, or another's by name."""
        from strata_workloads.serve.analysis import REVIEW_FILE
        from strata_workloads.serve.feedback import FEEDBACK_FILE, JsonLines

        if pod is None:
            return self.feedback if path == "/feedback" else self.review
        if self.shared is None:
            raise LookupError("pod: this sidecar has no shared state (monitoring.storage is unset)")
        return JsonLines(self.shared.directory(pod) / (FEEDBACK_FILE if path == "/feedback" else REVIEW_FILE))

    def _probe_upstream(self) -> None:
        upstream = self.config.upstream
        url = f"http://{upstream.host}:{upstream.http_port}/v2/health/ready"
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    self.upstream_ready = 1.0 if response.status == 200 else 0.0
            except OSError:
                self.upstream_ready = 0.0
            self.stop.wait(2.0)

    # ---- the metrics port ----

    def _collector(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        supervisor = self

        class SupervisorCollector:
            def collect(self):
                alive = {p.pid for p in supervisor.data_path() if p.is_alive()}
                yield from data_path_metrics.collect(Path(supervisor.metrics_dir), alive)
                supervisor.feedback.refresh()
                feedback = CounterMetricFamily("strata_sidecar_feedback", "Feedback records on disk, by rating.",
                                               labels=["rating"])
                for rating, count in supervisor.feedback.counts.items():
                    feedback.add_metric([rating], count)
                yield feedback
                stats = supervisor.analysis.stats()
                yield CounterMetricFamily("strata_sidecar_samples_analysed", "Sampled requests analysed.",
                                          value=stats["sampled"])
                yield CounterMetricFamily("strata_sidecar_audit_records", "Lines written to the audit log.",
                                          value=supervisor.analysis.audited)
                yield GaugeMetricFamily("strata_sidecar_upstream_ready", "1 when Triton answers ready.",
                                        value=supervisor.upstream_ready)
                yield GaugeMetricFamily("strata_sidecar_workers",
                                        "Data-path processes alive (workers and the compiled gRPC front end).",
                                        value=sum(p.is_alive() for p in supervisor.data_path()))
                yield CounterMetricFamily("strata_sidecar_worker_restarts",
                                          "Data-path processes started again after exiting.",
                                          value=supervisor.worker_restarts)
                labels = ["model", "side", "tensor"]
                count = CounterMetricFamily("strata_sidecar_tensor_values", "Values seen in sampled tensors.", labels=labels)
                mean = GaugeMetricFamily("strata_sidecar_tensor_mean", "Mean of sampled tensor values.", labels=labels)
                std = GaugeMetricFamily("strata_sidecar_tensor_stddev", "Standard deviation of sampled tensor values.", labels=labels)
                quantile = GaugeMetricFamily("strata_sidecar_tensor_quantile", "Quantiles of sampled tensor values.",
                                             labels=labels + ["quantile"])
                for model, sides in stats["models"].items():
                    for side, tensors in sides.items():
                        for name, summary in tensors.items():
                            if not summary["count"]:
                                continue
                            count.add_metric([model, side, name], summary["count"])
                            mean.add_metric([model, side, name], summary["mean"])
                            std.add_metric([model, side, name], summary["std"])
                            for q, value in summary["quantiles"].items():
                                quantile.add_metric([model, side, name, q], value)
                yield from (count, mean, std, quantile)
                if supervisor.config.toxicity.enabled:
                    buckets, total = supervisor.analysis.toxicity_histogram()
                    histogram = HistogramMetricFamily("strata_sidecar_toxicity_score",
                                                      "Toxicity scores of sampled text responses (an offline classifier).")
                    histogram.add_metric([], buckets, total)
                    yield histogram

        return SupervisorCollector()

    def _metrics_server(self) -> ThreadingHTTPServer:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(self._collector())
        supervisor = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args):
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, value: Any, status: int = 200) -> None:
                self._send(status, json.dumps(value).encode(), "application/json")

            def do_GET(self):
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif url.path == "/stats":
                    from strata_workloads.serve.analysis import SKETCH_RETENTION_SECONDS

                    window = query.get("window", [None])[0]
                    try:
                        window = None if window is None else float(window)
                        if window is not None and not 0 < window <= SKETCH_RETENTION_SECONDS / 2:
                            raise ValueError
                    except ValueError:
                        return self._json({"error": f"window must be seconds in (0, {SKETCH_RETENTION_SECONDS // 2}]"}, 400)
                    try:
                        samples = int(query.get("samples", ["0"])[0])
                        if not 0 <= samples <= MAX_SAMPLES_PER_READ:
                            raise ValueError
                    except ValueError:
                        return self._json({"error": f"samples must be an integer in [0, {MAX_SAMPLES_PER_READ}]"}, 400)
                    if samples and window is None:
                        return self._json({"error": "samples needs a window"}, 400)
                    self._json(supervisor.analysis.stats(window, samples=samples))
                elif url.path in ("/feedback", "/review"):
                    try:
                        after = int(query.get("after", ["0"])[0])
                        limit = min(10_000, int(query.get("limit", ["1000"])[0]))
                    except ValueError:
                        return self._json({"error": "after and limit must be integers"}, 400)
                    try:
                        records = supervisor._log_of(url.path, query.get("pod", [None])[0])
                    except LookupError as error:
                        return self._json({"error": str(error)}, 404)
                    self._json(records.page(after, limit))
                elif url.path == "/pods":
                    self._json({"shared": supervisor.shared is not None,
                                "pods": supervisor.shared.pods() if supervisor.shared is not None else []})
                elif url.path == "/exchanges":
                    ids = {i for value in query.get("ids", []) for i in value.split(",") if i}
                    if not 0 < len(ids) <= MAX_EXCHANGE_IDS:
                        return self._json({"error": f"ids: 1 to {MAX_EXCHANGE_IDS} request ids, comma-separated"}, 400)
                    directories = supervisor.shared.directories() if supervisor.shared is not None else None
                    self._json({"exchanges": supervisor.analysis.exchanges(ids, directories)})
                elif url.path == "/healthz":
                    # Ready when every data-path process is alive and listening.
                    ready, total = supervisor.ready()
                    self._json({"workers": total, "ready": ready,
                                "grpcFrontEnd": supervisor.config.grpc_front_end}, 200 if ready == total else 503)
                else:
                    self._json({"error": f"not found: {url.path}; try /metrics, /stats, /feedback, /review, "
                                         f"/exchanges, /pods or /healthz"}, 404)

        listen = self.config.listen
        server = ThreadingHTTPServer((listen.host, listen.metrics_port), Handler)
        server.daemon_threads = True
        return server
