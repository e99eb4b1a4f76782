"""Benchmark: the monitoring sidecar against direct calls to Triton, over gRPC.

Not a test (pytest does not collect it). Run::

    python tests/benchmarks/bench_sidecar.py [--seconds 2] [--rounds 2] [--workers 0] [--clients 4]
        [--protocol grpc|http] [--no-python] [--no-bare]

The real tritonserver (python backend, CPU) serves three models: ``identity`` (trivial),
``sleep-0.5ms`` and ``sleep-5ms`` (a sleep in the model stands in for GPU time), one instance
each. The sidecar runs as in a pod (``python -m strata_workloads.serve``) with API keys, a
rate limit too high to bite, audit sampling at 5% and drift sampling at 10% (capped), so
the measured cost includes auth, the limiter, metrics and sampling. Two sidecars run, one
per gRPC front end: ``compiled`` (strata-sidecar-grpc, the default) and ``python`` (the
workers' grpc.aio proxy).

Load: ``--clients`` processes (one gRPC connection each to each target), each running
concurrency/clients requests in flight, with pre-serialized requests (grpc.aio, raw bytes)
so the load generator spends as little CPU as possible. For every model and concurrency
(1, 4, 16) the direct and sidecar runs alternate, ``--rounds`` times each, in one run.

Another target, a bare Python gRPC hop (grpc.aio forwarding raw bytes, nothing else, the
same number of processes), shows the floor any Python proxy pays; the Python front end's
own logic is the difference between it and that front end.

Printed, for each proxy against direct calls: p50 and p99 latency, throughput, the ratios
and the milliseconds added at p50 and p99; then the CPU time each path costs per request
(from /proc) and the ceiling that follows (requests per second per core and for the
cores it may use), and the goals of issue 11 checked against this run for each front end.
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
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the targets per cell")
    parser.add_argument("--workers", type=int, default=0, help="sidecar data-path processes (0: one per CPU)")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (connections)")
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--audit-rate", type=float, default=0.05, help="the sidecar's audit.sampleRate")
    parser.add_argument("--drift-rate", type=float, default=0.1,
                        help="the sidecar's drift.sampleRate (0 turns drift statistics off)")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                        help="http: KServe v2 REST with binary tensors (direct and sidecar only)")
    parser.add_argument("--no-python", dest="python", action="store_false",
                        help="skip the sidecar with grpcFrontEnd: python")
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="skip the bare Python gRPC hop (the floor any Python proxy pays)")
    args = parser.parse_args()

    from sidecar_harness import Sidecar, write_model_repository
    from workload_harness import free_port, start_tritonserver

    from strata_workloads.serve.supervisor import worker_count

    work = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    repository = write_model_repository(work / "repository")
    triton, _ = start_tritonserver(repository, MODELS, work / "triton")
    keys = work / "keys"
    keys.mkdir()
    (keys / "bench").write_text(KEY)
    workers = worker_count(args.workers)
    grpc = args.protocol == "grpc"
    front_ends = ["compiled"] + (["python"] if args.python and grpc else [])
    sidecars = {front_end: Sidecar(work / f"sidecar-{front_end}", triton.grpc_port, triton.http_port,
                                   workers=workers, grpcFrontEnd=front_end, auth={"apiKeysDir": str(keys)},
                                   rateLimit={"requestsPerSecond": 1_000_000, "burst": 1_000_000, "per": "apiKey"},
                                   audit={"sampleRate": args.audit_rate},
                                   drift={"enabled": args.drift_rate > 0, "sampleRate": args.drift_rate}).start()
                for front_end in front_ends}
    bare_port = free_port()
    context = multiprocessing.get_context("spawn")
    bare = [context.Process(target=bare_hop_main, args=(f"127.0.0.1:{triton.grpc_port}", bare_port), daemon=True)
            for _ in range(workers)] if args.bare and grpc else []
    for process in bare:
        process.start()
    clients = Clients(args.clients)
    auth = (("authorization", f"Bearer {KEY}"),)
    if grpc:
        targets = {"direct": (f"127.0.0.1:{triton.grpc_port}", None)}
        targets.update({f"sidecar ({front_end})": (sidecar.grpc_url, auth) for front_end, sidecar in sidecars.items()})
        if bare:
            targets["bare Python hop"] = (f"127.0.0.1:{bare_port}", None)
    else:
        targets = {"direct": (f"http://127.0.0.1:{triton.http_port}", {}),
                   "sidecar (HTTP workers)": (f"http://{sidecars['compiled'].http_url}", {"x-api-key": KEY})}

    def sidecar_processes(sidecar, front_end: str):
        """The processes serving this protocol: the compiled front end, or the workers."""
        tree = process_tree(sidecar.process.process.pid)
        compiled = [pid for pid in tree if "strata-sidecar-grpc" in Path(f"/proc/{pid}/cmdline").read_text()]
        if grpc and front_end == "compiled":
            return compiled
        return [pid for pid in tree if pid != sidecar.process.process.pid and pid not in compiled]

    triton_pids = lambda: process_tree(triton.process.pid)  # noqa: E731 - stubs come and go
    proxy_pids = {"direct": lambda: [], "bare Python hop": lambda: [p.pid for p in bare]}
    supervisor_pids = {name: lambda: [] for name in targets}
    for front_end, sidecar in sidecars.items():
        name = f"sidecar ({front_end})" if grpc else "sidecar (HTTP workers)"
        proxy_pids[name] = lambda sidecar=sidecar, front_end=front_end: sidecar_processes(sidecar, front_end)
        supervisor_pids[name] = lambda sidecar=sidecar: [sidecar.process.process.pid]
    rows = []
    cpu = {name: {"triton": 0.0, "proxy": 0.0, "supervisor": 0.0, "requests": 0} for name in targets}
    try:
        for model in args.models:
            body = payload(model) if grpc else None
            for concurrency in CONCURRENCY:
                collected = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, (target, metadata) in targets.items():
                        triton_before, proxy_before = cpu_seconds(triton_pids()), cpu_seconds(proxy_pids[name]())
                        supervisor_before = cpu_seconds(supervisor_pids[name]())
                        if grpc:
                            latencies, errors = clients.run(target, metadata, body, concurrency, args.seconds,
                                                            args.warmup)
                        else:
                            path, data, headers = http_payload(model)
                            latencies, errors = clients.run(target + path, {**headers, **metadata}, data, concurrency,
                                                            args.seconds, args.warmup)
                        if errors:
                            raise SystemExit(f"{errors} failed requests to {name} ({model}, c={concurrency})")
                        collected[name].append(latencies)
                        if model == "identity" and concurrency == CONCURRENCY[-1]:
                            # CPU per request where the data path is busiest (warm-up included).
                            cpu[name]["triton"] += cpu_seconds(triton_pids()) - triton_before
                            cpu[name]["proxy"] += cpu_seconds(proxy_pids[name]()) - proxy_before
                            cpu[name]["supervisor"] += cpu_seconds(supervisor_pids[name]()) - supervisor_before
                            cpu[name]["requests"] += latencies.size * (1 + args.warmup / args.seconds)
                results = {name: summarise(np.concatenate(parts), args.seconds * args.rounds)
                           for name, parts in collected.items()}
                rows.append((model, concurrency, results))
                print(f"  measured {model} c={concurrency}: " + ", ".join(
                    f"{name} p50 {r['p50']:.3f} ms {r['rps']:.0f}/s" for name, r in results.items()),
                    file=sys.stderr, flush=True)
    finally:
        clients.close()
        for process in bare:
            process.kill()
        for sidecar in sidecars.values():
            sidecar.close()
        triton.close()

    print_table(rows, cpu, workers, args)
    return 0


def print_table(rows, cpu, workers, args) -> None:
    print(f"\n{'HTTP' if args.protocol == 'http' else 'gRPC'}, {args.clients} client processes (connections), "
          f"{args.rounds}x{args.seconds:g}s per cell per target, interleaved; sidecars: {workers} HTTP worker "
          f"process(es), auth + rate limiter + metrics on, audit sampling {args.audit_rate:g}, drift sampling "
          f"{args.drift_rate:g}; machine: {os.cpu_count()} CPUs shared by clients, sidecars and Triton")
    proxies = [name for name in rows[0][2] if name != "direct"]
    for proxy in proxies:
        print(f"\n{proxy} against direct calls")
        header = (f"{'model':<12} {'conc':>4} | {'direct p50':>10} {'p99':>7} {'req/s':>7} | {'proxy p50':>9} "
                  f"{'p99':>7} {'req/s':>7} | {'p50 x':>6} {'p99 x':>6} {'thr x':>6} | {'+p50 ms':>7} {'+p99 ms':>7}")
        print(header)
        print("-" * len(header))
        for model, concurrency, results in rows:
            d, s = results["direct"], results[proxy]
            print(f"{model:<12} {concurrency:>4} | {d['p50']:>10.3f} {d['p99']:>7.3f} {d['rps']:>7.0f} | "
                  f"{s['p50']:>9.3f} {s['p99']:>7.3f} {s['rps']:>7.0f} | {s['p50'] / d['p50']:>6.2f} "
                  f"{s['p99'] / d['p99']:>6.2f} {s['rps'] / d['rps']:>6.2f} | {s['p50'] - d['p50']:>7.3f} "
                  f"{s['p99'] - d['p99']:>7.3f}")

    print()
    if cpu["direct"]["requests"]:
        direct_us = cpu["direct"]["triton"] / cpu["direct"]["requests"] * 1e6
        print(f"CPU per request (identity, c={CONCURRENCY[-1]}); Triton direct: {direct_us:.0f} us")
        for proxy in proxies:
            used = cpu[proxy]
            if not used["requests"]:
                continue
            proxy_us = used["proxy"] / used["requests"] * 1e6
            supervisor = (f", the supervisor's off-path analysis {used['supervisor'] / used['requests'] * 1e6:.0f} us"
                          if proxy.startswith("sidecar") else "")
            ceiling = f"{1e6 / proxy_us:.0f} req/s per core, {workers * 1e6 / proxy_us:.0f} on {workers} free cores" \
                if proxy_us else "not measurable"
            print(f"  {proxy}: {proxy_us:.0f} us on the data path{supervisor}; Triton behind it "
                  f"{used['triton'] / used['requests'] * 1e6:.0f} us; ceiling {ceiling}")
    print()
    print("Goals (issue 11), on this run:")
    for proxy in proxies:
        if not proxy.startswith("sidecar"):
            continue
        for model, concurrency, results in rows:
            d, s = results["direct"], results[proxy]
            if concurrency == 1:
                added = s["p50"] - d["p50"]
                print(f"  {proxy}: added p50 at c=1, {model}: {added:.3f} ms (goal <= 0.35): "
                      f"{'met' if added <= 0.35 else 'not met'}")
        for model, concurrency, results in rows:
            d, s = results["direct"], results[proxy]
            if concurrency == CONCURRENCY[-1]:
                goal = 0.9 if model in MODEL_BOUND else 0.8
                ratio = s["rps"] / d["rps"]
                print(f"  {proxy}: throughput ratio at c={concurrency}, {model}: {ratio:.3f} (goal >= {goal}): "
                      f"{'met' if ratio >= goal else 'not met'}")


if __name__ == "__main__":
    sys.exit(main())
