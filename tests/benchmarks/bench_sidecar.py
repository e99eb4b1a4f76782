"""Benchmark: the monitoring sidecar against direct calls to Triton, over gRPC.

Not a test (pytest does not collect it). Run::

    python tests/benchmarks/bench_sidecar.py [--seconds 2] [--rounds 2] [--workers 0] [--clients 4]
        [--protocol grpc|http] [--compiled-hop BINARY]

The real tritonserver (python backend, CPU) serves three models: ``identity`` (trivial),
``sleep-0.5ms`` and ``sleep-5ms`` (a sleep in the model stands in for GPU time), one instance
each. The sidecar runs as in a pod (``python -m strata_workloads.serve``) with API keys, a
rate limit too high to bite, audit sampling at 5% and drift sampling at 10% (capped), so
the measured cost includes auth, the limiter, metrics and sampling.

Load: ``--clients`` processes (one gRPC connection each to each target), each running
concurrency/clients requests in flight, with pre-serialized requests (grpc.aio, raw bytes)
so the load generator spends as little CPU as possible. For every model and concurrency
(1, 4, 16) the direct and sidecar runs alternate, ``--rounds`` times each, in one run.

A third target, a bare Python gRPC hop (grpc.aio forwarding raw bytes, nothing else, the
same number of processes), shows the floor any Python proxy pays; the sidecar's own logic
is the difference between it and the sidecar.

Printed: p50 and p99 latency, throughput, the sidecar/direct ratios and the milliseconds the
sidecar adds at p50 and p99; then the CPU time each path costs per request (from /proc)
and the sidecar's own ceiling that follows (requests per second per core and for all its
workers), and the goals of issue 11 checked against this run.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests" / "workloads"), str(REPO / "tests")]

INFER = "/inference.GRPCInferenceService/ModelInfer"
MODELS = ["identity", "sleep-0.5ms", "sleep-5ms"]
MODEL_BOUND = ["sleep-0.5ms", "sleep-5ms"]
CONCURRENCY = [1, 4, 16]
KEY = "bench-key-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def payload(model: str) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "INPUT", "FP32"
    tensor.shape.extend([1, 16])
    request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    return request.SerializeToString()


def http_payload(model: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a KServe v2 REST request with the tensor in binary form."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("INPUT", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.arange(16, dtype=np.float32).reshape(1, 16), binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor])
    return (f"/v2/models/{model}/infer", body,
            {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"})


# ---- load generator (runs in client processes) ----

def client_main(connection) -> None:
    import grpc

    async def serve():
        import aiohttp

        channels: dict[str, grpc.aio.Channel] = {}
        sessions: dict[str, aiohttp.ClientSession] = {}
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, connection.recv)
            if command is None:
                break
            target, metadata, body, inflight, seconds, warmup = command
            if target.startswith("http://"):
                # HTTP: metadata holds the headers, target the whole URL; one connection per request in flight.
                if target not in sessions:
                    sessions[target] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
                session = sessions[target]

                async def call(payload, metadata, timeout, url=target):
                    async with session.post(url, data=payload, headers=metadata) as response:
                        await response.read()
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}")
            else:
                if target not in channels:
                    channels[target] = grpc.aio.insecure_channel(target)
                call = channels[target].unary_unary(INFER)
            latencies: list[float] = []
            start = time.perf_counter()
            record_from, stop_at = start + warmup, start + warmup + seconds
            errors = 0

            async def loop_one():
                nonlocal errors
                while True:
                    sent = time.perf_counter()
                    if sent >= stop_at:
                        return
                    try:
                        await call(body, metadata=metadata, timeout=30)
                    except Exception:  # grpc.aio.AioRpcError, aiohttp's errors, an HTTP error status
                        errors += 1
                        continue
                    done = time.perf_counter()
                    if sent >= record_from and done <= stop_at:
                        latencies.append(done - sent)

            await asyncio.gather(*(loop_one() for _ in range(inflight)))
            connection.send((np.asarray(latencies), errors))
        for channel in channels.values():
            await channel.close()
        for session in sessions.values():
            await session.close()

    asyncio.run(serve())


class Clients:
    def __init__(self, count: int):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        for _ in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=client_main, args=(child,), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def run(self, target: str, metadata, body: bytes, concurrency: int, seconds: float, warmup: float):
        users = min(concurrency, len(self.pipes))
        per = [concurrency // users + (1 if i < concurrency % users else 0) for i in range(users)]
        for pipe, inflight in zip(self.pipes, per):
            pipe.send((target, metadata, body, inflight, seconds, warmup))
        results = [pipe.recv() for pipe in self.pipes[:users]]
        latencies = np.concatenate([r[0] for r in results])
        return latencies, sum(r[1] for r in results)

    def close(self):
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)


# ---- the floor: a bare Python gRPC hop (no auth, limits, metrics or sampling) ----

def bare_hop_main(upstream: str, port: int) -> None:
    """What the sidecar's data path costs at least: grpc.aio forwarding raw bytes."""
    import grpc

    async def serve():
        call = grpc.aio.insecure_channel(upstream).unary_unary(INFER)

        async def forward(request, _context):
            return await call(request)

        handler = grpc.unary_unary_rpc_method_handler(forward)

        class Generic(grpc.GenericRpcHandler):
            def service(self, _details):
                return handler

        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers((Generic(),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


# ---- CPU accounting ----

def process_tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total / CLK_TCK


# ---- the run ----

def summarise(latencies: np.ndarray, seconds: float) -> dict[str, float]:
    return {"p50": float(np.percentile(latencies, 50)) * 1e3 if latencies.size else float("nan"),
            "p99": float(np.percentile(latencies, 99)) * 1e3 if latencies.size else float("nan"),
            "rps": latencies.size / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=2, help="direct/sidecar alternations per cell")
    parser.add_argument("--workers", type=int, default=0, help="sidecar data-path processes (0: one per CPU)")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (connections)")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--audit-rate", type=float, default=0.05, help="the sidecar's audit.sampleRate")
    parser.add_argument("--drift-rate", type=float, default=0.1,
                        help="the sidecar's drift.sampleRate (0 turns drift statistics off)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                        help="http: KServe v2 REST with binary tensors (direct and sidecar only)")
    parser.add_argument("--compiled-hop", metavar="BINARY",
                        help="also measure a compiled raw gRPC hop (BINARY --listen HOST:PORT --upstream HOST:PORT), "
                             "e.g. tests/benchmarks/grpc_hop_go built with `go build`")
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="skip the bare Python gRPC hop (the floor any Python proxy pays)")
    args = parser.parse_args()

    from sidecar_harness import Sidecar, write_model_repository
    from workload_harness import start_tritonserver

    from strata_workloads.serve.supervisor import worker_count

    work = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    repository = write_model_repository(work / "repository")
    triton, _ = start_tritonserver(repository, MODELS, work / "triton")
    keys = work / "keys"
    keys.mkdir()
    (keys / "bench").write_text(KEY)
    workers = worker_count(args.workers)
    sidecar = Sidecar(work / "sidecar", triton.grpc_port, triton.http_port, workers=workers,
                      auth={"apiKeysDir": str(keys)},
                      rateLimit={"requestsPerSecond": 1_000_000, "burst": 1_000_000, "per": "apiKey"},
                      audit={"sampleRate": args.audit_rate},
                      drift={"enabled": args.drift_rate > 0, "sampleRate": args.drift_rate}).start()
    from workload_harness import free_port

    bare_port = free_port()
    context = multiprocessing.get_context("spawn")
    bare = [context.Process(target=bare_hop_main, args=(f"127.0.0.1:{triton.grpc_port}", bare_port), daemon=True)
            for _ in range(workers)]
    for process in bare:
        process.start()
    clients = Clients(args.clients)
    targets = {"direct": (f"127.0.0.1:{triton.grpc_port}", None),
               "sidecar": (sidecar.grpc_url, (("authorization", f"Bearer {KEY}"),))}
    if args.bare and args.protocol == "grpc":
        targets["bare hop"] = (f"127.0.0.1:{bare_port}", None)
    if args.protocol == "http":
        targets = {"direct": (f"http://127.0.0.1:{triton.http_port}", {}),
                   "sidecar": (f"http://{sidecar.http_url}", {"x-api-key": KEY})}
    compiled = None
    if args.compiled_hop and args.protocol == "grpc":
        import subprocess

        from tests_support import wait_for
        compiled_port = free_port()
        compiled = subprocess.Popen([args.compiled_hop, "--listen", f"127.0.0.1:{compiled_port}",
                                     "--upstream", f"127.0.0.1:{triton.grpc_port}"])
        import socket
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", compiled_port)) == 0, timeout=30, interval=0.1,
                 what="the compiled hop")
        targets["compiled hop"] = (f"127.0.0.1:{compiled_port}", None)
    triton_pids = lambda: process_tree(triton.process.pid)  # noqa: E731 - stubs come and go
    sidecar_pids = lambda: process_tree(sidecar.process.process.pid)  # noqa: E731
    rows = []
    supervisor_pid = lambda: [sidecar.process.process.pid]  # noqa: E731
    proxy_pids = {"direct": lambda: [], "sidecar": sidecar_pids, "bare hop": lambda: [p.pid for p in bare],
                  "compiled hop": lambda: [compiled.pid] if compiled else []}
    cpu = {name: {"triton": 0.0, "proxy": 0.0, "supervisor": 0.0, "requests": 0} for name in targets}
    try:
        for model in args.models:
            body = payload(model) if args.protocol == "grpc" else None
            for concurrency in CONCURRENCY:
                collected = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, (target, metadata) in targets.items():
                        triton_before, proxy_before = cpu_seconds(triton_pids()), cpu_seconds(proxy_pids[name]())
                        supervisor_before = cpu_seconds(supervisor_pid())
                        if args.protocol == "http":
                            path, data, headers = http_payload(model)
                            latencies, errors = clients.run(target + path, {**headers, **metadata}, data, concurrency,
                                                            args.seconds, args.warmup)
                        else:
                            latencies, errors = clients.run(target, metadata, body, concurrency, args.seconds,
                                                            args.warmup)
                        if errors:
                            raise SystemExit(f"{errors} failed requests to {name} ({model}, c={concurrency})")
                        collected[name].append(latencies)
                        if model == "identity" and concurrency == CONCURRENCY[-1]:
                            # CPU per request where the data path is busiest (warm-up included).
                            cpu[name]["triton"] += cpu_seconds(triton_pids()) - triton_before
                            cpu[name]["proxy"] += cpu_seconds(proxy_pids[name]()) - proxy_before
                            cpu[name]["supervisor"] += cpu_seconds(supervisor_pid()) - supervisor_before
                            cpu[name]["requests"] += latencies.size * (1 + args.warmup / args.seconds)
                results = {name: summarise(np.concatenate(parts), args.seconds * args.rounds)
                           for name, parts in collected.items()}
                rows.append((model, concurrency, results["direct"], results["sidecar"], results.get("bare hop"),
                             results.get("compiled hop")))
                d, s = results["direct"], results["sidecar"]
                print(f"  measured {model} c={concurrency}: " + ", ".join(
                    f"{name} p50 {r['p50']:.3f} ms {r['rps']:.0f}/s" for name, r in results.items()),
                    file=sys.stderr, flush=True)
    finally:
        clients.close()
        for process in bare:
            process.kill()
        if compiled is not None:
            compiled.kill()
        sidecar.close()
        triton.close()

    print_table(rows, cpu, workers, args)
    return 0


def print_table(rows, cpu, workers, args) -> None:
    print(f"\n{args.protocol.upper() if args.protocol == 'http' else 'gRPC'}, {args.clients} client processes (connections), {args.rounds}x{args.seconds:g}s per cell per "
          f"target, interleaved; sidecar: {workers} worker process(es), auth + rate limiter + metrics on, "
          f"audit sampling {args.audit_rate:g}, drift sampling {args.drift_rate:g}; "
          f"machine: {os.cpu_count()} CPUs shared by clients, sidecar and Triton\n")
    header = (f"{'model':<12} {'conc':>4} | {'direct p50':>10} {'p99':>7} {'req/s':>7} | {'sidecar p50':>11} {'p99':>7} "
              f"{'req/s':>7} | {'p50 x':>6} {'p99 x':>6} {'thr x':>6} | {'+p50 ms':>7} {'+p99 ms':>7}")
    has_bare, has_compiled = any(row[4] for row in rows), any(row[5] for row in rows)
    if has_bare:
        header += f" || {'bare hop p50':>12} {'req/s':>7} {'+p50 ms':>7}"
    if has_compiled:
        header += f" || {'compiled p50':>12} {'req/s':>7} {'+p50 ms':>7}"
    print(header)
    print("-" * len(header))
    for model, concurrency, d, s, b, c in rows:
        extra = f" || {b['p50']:>12.3f} {b['rps']:>7.0f} {b['p50'] - d['p50']:>7.3f}" if b else ""
        if c:
            extra += f" || {c['p50']:>12.3f} {c['rps']:>7.0f} {c['p50'] - d['p50']:>7.3f}"
        print(f"{model:<12} {concurrency:>4} | {d['p50']:>10.3f} {d['p99']:>7.3f} {d['rps']:>7.0f} | {s['p50']:>11.3f} "
              f"{s['p99']:>7.3f} {s['rps']:>7.0f} | {s['p50'] / d['p50']:>6.2f} {s['p99'] / d['p99']:>6.2f} "
              f"{s['rps'] / d['rps']:>6.2f} | {s['p50'] - d['p50']:>7.3f} {s['p99'] - d['p99']:>7.3f}{extra}")

    print()
    if cpu["sidecar"]["requests"]:
        direct_us = cpu["direct"]["triton"] / cpu["direct"]["requests"] * 1e6
        triton_us = cpu["sidecar"]["triton"] / cpu["sidecar"]["requests"] * 1e6
        sidecar_us = cpu["sidecar"]["proxy"] / cpu["sidecar"]["requests"] * 1e6
        bare_text = "".join(f"; {label} {cpu[name]['proxy'] / cpu[name]['requests'] * 1e6:.0f} us"
                            for name, label in (("bare hop", "a bare Python gRPC hop"), ("compiled hop", "the compiled hop"))
                            if name in cpu and cpu[name]["requests"])
        print(f"CPU per request (identity, c={CONCURRENCY[-1]}): Triton {direct_us:.0f} us direct, {triton_us:.0f} us "
              f"behind the sidecar; the sidecar itself {sidecar_us:.0f} us (all its processes; of which the "
              f"supervisor's off-path analysis {cpu['sidecar']['supervisor'] / cpu['sidecar']['requests'] * 1e6:.0f} us)"
              f"{bare_text}")
        print(f"Sidecar ceiling: {1e6 / sidecar_us:.0f} req/s per core (one worker process saturating one core); "
              f"{workers * 1e6 / sidecar_us:.0f} req/s for {workers} workers on {workers} free cores")
    print()
    print("Goals (issue 11), on this run:")
    for model, concurrency, d, s, *_ in rows:
        if concurrency == 1:
            added = s["p50"] - d["p50"]
            print(f"  added p50 at c=1, {model}: {added:.3f} ms (goal <= 0.35): {'met' if added <= 0.35 else 'not met'}")
    for model, concurrency, d, s, *_ in rows:
        if concurrency == CONCURRENCY[-1]:
            goal = 0.9 if model in MODEL_BOUND else 0.8
            ratio = s["rps"] / d["rps"]
            print(f"  throughput ratio at c={concurrency}, {model}: {ratio:.3f} (goal >= {goal}): "
                  f"{'met' if ratio >= goal else 'not met'}")


if __name__ == "__main__":
    sys.exit(main())
