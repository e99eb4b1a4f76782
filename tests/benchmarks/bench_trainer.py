"""Benchmark: the DeepSpeed trainer vs a plain PyTorch loop on the same transformer and data.

Not a test (pytest does not collect it). Run::

    python tests/benchmarks/bench_trainer.py [--steps 40] [--nproc 2] [--gpu-only] [--variants default,compile]

CPU: both sides run under torchrun with the same number of ranks, model, data order, batch
sizes, gradient accumulation, clipping, AdamW and LR schedule; the trainer uses ZeRO-2 over
gloo. Throughput is measured over steady-state steps (the first few are skipped) from one
run each, and printed with their ratio: what DeepSpeed (and the trainer's reporting) costs.

GPU (where CUDA is visible): the 1.2B-parameter configuration (24 layers, hidden 2048,
context 1024, bf16, ZeRO-2, one rank per GPU) on short documents *packed* into full windows,
against a plain PyTorch loop on the same model and data (bf16 autocast, fused AdamW, DDP
over NCCL when there are several GPUs). Printed: tokens/s (real tokens), their ratio, model
FLOPs utilisation against ``--peak-tflops`` per GPU (default: the H100/H200 dense bf16
figure, and against a bf16 matrix product measured in the same run) and peak GPU memory of
each. The plain loop runs once; the trainer once per ``--variants`` entry (its performance
settings), each row printed as soon as it is measured so that a run cut short keeps them.

``--cpu-rehearsal`` runs the GPU section's whole flow with a tiny model on one CPU rank: a
check, on a machine without CUDA, that a call on a GPU machine will not fail on anything
but the GPU itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from strata.devcluster import free_port

WARMUP_STEPS = 5

# The trainer's performance settings measured on a GPU, by name.
VARIANTS = {
    "default": {},
    "compile": {"compile": True},
    "checkpointing": {"activationCheckpointing": True},
    "compile+checkpointing": {"compile": True, "activationCheckpointing": True},
}


def matmul_parameters(layers: int, hidden: int, vocab: int) -> int:
    return layers * 12 * hidden * hidden + vocab * hidden


def model_flops_per_token(layers: int, hidden: int, context: int, vocab: int) -> float:
    """Training FLOPs per token: 6 x parameters (matmuls) + attention scores (PaLM appendix B)."""
    return 6 * matmul_parameters(layers, hidden, vocab) + 12 * layers * hidden * context


def bench_config(data: Path, steps: int, size: dict, micro_batch: int, precision: str = "fp32",
                 packing: bool = False, performance: dict | None = None, accumulation: int = 2) -> dict:
    return {
        "model": {"family": "transformer", "size": size, "numClasses": 0},
        "deepspeed": {"zeroStage": 2, "precision": precision, "microBatchSize": micro_batch,
                      "gradientAccumulation": accumulation, "gradientClipping": 1.0},
        "hyperparameters": {"learningRate": 1e-3 if precision == "fp32" else 2e-4, "warmupSteps": 2,
                            "maxSteps": steps},
        "validation": {"everySteps": 0, "maxBatches": 1},
        "data": {"path": str(data), "packing": packing},
        "performance": performance or {},
        "observability": {"metricsPort": 0, "terminationLog": os.devnull},
    }


def torchrun(nproc: int, module_args: list[str]) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", *module_args]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def steady_throughput(events: list[dict]) -> tuple[float, float]:
    """(samples/s, tokens/s): medians over steps after warm-up."""
    steps = [e for e in events if e["event"] == "step" and e["step"] > WARMUP_STEPS]
    return (statistics.median(e["samplesPerSecond"] for e in steps),
            statistics.median(e["tokensPerSecond"] for e in steps))


def plain_worker(config_path: str) -> None:
    """One rank of the plain PyTorch loop: (DDP +) AdamW, same data, schedule and clipping.

    On a GPU: the model in fp32 under bf16 autocast, fused AdamW, batches copied like the
    trainer's (pinned, non-blocking); the step ends with one host sync (the loss), as the
    trainer's ends with its all-reduce.
    """
    import contextlib

    import torch
    import torch.distributed as dist

    from strata_workloads.train.config import load_config
    from strata_workloads.train.data import ShardedSampler, load_training_data
    from strata_workloads.train.device import local_device, to_device
    from strata_workloads.train.models import make_family
    from strata_workloads.train.schedule import lr_multiplier

    config = load_config(config_path)
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = load_training_data(config)
    family = make_family(config, data.info)
    torch.manual_seed(config.hyperparameters.seed)
    module = family.build()["model"].to(device)
    model = torch.nn.parallel.DistributedDataParallel(module) if world > 1 or device.type == "cpu" else module
    hp, ds = config.hyperparameters, config.deepspeed
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, betas=(hp.beta1, hp.beta2),
                                  fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(hp))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and ds.precision == "bf16"
                else contextlib.nullcontext())
    batches = iter(ShardedSampler(len(data.train), ds.micro_batch_size, rank, world, hp.seed))
    for step in range(1, hp.max_steps + 1):
        started = time.perf_counter()
        tokens = 0
        total = torch.zeros((), device=device)
        for _micro in range(ds.gradient_accumulation):
            host_batch = data.train.batch(next(batches))
            tokens += family.tokens_in(host_batch)
            batch = to_device(host_batch, device)
            with autocast:
                loss_sum, count = family._loss_terms(model, batch)
            # Average over micro-batches, as DeepSpeed's gradient accumulation does.
            loss = loss_sum / count / ds.gradient_accumulation
            loss.backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ds.gradient_clipping)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals = torch.tensor([float(tokens)], device=device)
        dist.all_reduce(totals)
        group_tokens = float(totals[0])  # waits for the step, like the trainer's reduce
        elapsed = time.perf_counter() - started
        if rank == 0:
            memory = {"peakMemoryBytes": torch.cuda.max_memory_allocated(device)} if device.type == "cuda" else {}
            print(json.dumps({"event": "step", "step": step, "loss": float(total),
                              "samplesPerSecond": ds.micro_batch_size * ds.gradient_accumulation * world / elapsed,
                              "tokensPerSecond": group_tokens / elapsed, **memory}), flush=True)
    dist.destroy_process_group()


def peak_memory_gib(events: list[dict]) -> float:
    return max(e.get("peakMemoryBytes", 0) for e in events if e["event"] == "step") / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--nproc", type=int, default=2, help="CPU ranks")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU dense bf16 peak for MFU")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU comparison")
    parser.add_argument("--gpu-steps", type=int, default=30)
    # 16 x 1024 tokens per micro-batch: at 8 the trainer's fixed per-step cost showed (0.970 and
    # 0.913 of plain in two runs on an H200) and both loops were under 50% MFU; at 16, 0.992 and
    # 50.3% (tests/benchmarks/gpu-results.md). The H200 has room: 43.6 GiB at 16.
    parser.add_argument("--gpu-micro-batch", type=int, default=16)
    parser.add_argument("--variants", default="default",
                        help=f"comma-separated trainer settings to measure on the GPU: {', '.join(VARIANTS)}")
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help="the GPU section's flow with a tiny model on one CPU rank (no figures)")
    parser.add_argument("--plain-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.steps, args.gpu_steps) <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed {WARMUP_STEPS + 1}: the first {WARMUP_STEPS} are warm-up and not measured")
    if args.plain_worker:
        plain_worker(args.plain_worker)
        return
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    workdir = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    if not args.gpu_only:
        cpu_benchmark(workdir, args)

    import torch

    if args.cpu_rehearsal:
        gpu_benchmark(workdir, args, variants, ranks=1, rehearsal=True)
    elif not torch.cuda.is_available():
        print("\nNo CUDA GPU visible: tokens/s, MFU and memory at GPU scale NOT measured.")
    else:
        gpu_benchmark(workdir, args, variants, ranks=torch.cuda.device_count())


def measured_matmul_tflops() -> float:
    """The card's bf16 matrix rate as found: 8192^3 products on random data, median of 10 after 3."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / statistics.median(times) / 1e12


def gpu_benchmark(workdir: Path, args, variants: list[str], ranks: int, rehearsal: bool = False) -> None:
    from strata_workloads.data.synthetic import write_text_dataset

    import torch

    if rehearsal:
        size, rows, micro_batch, precision = {"layers": 2, "hidden": 64, "heads": 4, "contextLength": 128}, 2048, 4, "fp32"
        device_name, matmul_tflops = "CPU rehearsal (no figures)", float("nan")
    else:
        size = {"layers": 24, "hidden": 2048, "heads": 16, "contextLength": 1024}
        rows, micro_batch, precision = 65536, args.gpu_micro_batch, "bf16"
        device_name, matmul_tflops = torch.cuda.get_device_name(0), measured_matmul_tflops()
    # ~30-byte sentences: unpacked, 97% of each 1024-token example would be padding.
    write_text_dataset(workdir / "text-long", train_rows=rows, validation_rows=64, rows_per_shard=16384)
    flops = model_flops_per_token(size["layers"], size["hidden"], size["contextLength"], 259)
    print(f"\nGPU: {ranks} x {device_name}, transformer {size} "
          f"({matmul_parameters(size['layers'], size['hidden'], 259) / 1e9:.2f}B parameters), {precision}, "
          f"micro-batch {micro_batch} x accumulation 2, packed documents; {args.gpu_steps} steps, medians after "
          f"step {WARMUP_STEPS}; MFU on real tokens against {args.peak_tflops:g} TFLOP/s (datasheet) and against "
          f"{matmul_tflops:.0f} TFLOP/s (an 8192^3 bf16 matrix product measured now), per GPU\n", flush=True)
    print(f"{'loop':<44}{'tokens/s':>12}{'MFU':>8}{'MFU meas.':>10}{'peak GiB':>10}{'vs plain':>10}", flush=True)
    plain_tokens = None
    runs = [("plain PyTorch (autocast, fused AdamW)", None)] + [(f"strata trainer, ZeRO-2, {v}", v) for v in variants]
    for name, variant in runs:
        config = workdir / f"gpu-{variant or 'plain'}.yaml"
        config.write_text(yaml.safe_dump(bench_config(workdir / "text-long", args.gpu_steps, size, micro_batch=micro_batch,
                                                      precision=precision, packing=True,
                                                      performance=VARIANTS[variant] if variant else {})))
        module_args = ([__file__, "--plain-worker", str(config)] if variant is None
                       else ["-m", "strata_workloads.train", "--config", str(config)])
        events = torchrun(ranks, module_args)
        _samples, tokens = steady_throughput(events)
        plain_tokens = plain_tokens or tokens
        achieved = tokens * flops / ranks / 1e12
        print(f"{name:<44}{tokens:>12.0f}{achieved / args.peak_tflops:>8.1%}{achieved / matmul_tflops:>10.1%}"
              f"{peak_memory_gib(events):>10.1f}{tokens / plain_tokens:>10.3f}", flush=True)


def cpu_benchmark(workdir: Path, args) -> None:
    from strata_workloads.data.synthetic import write_text_dataset

    data = workdir / "text"
    write_text_dataset(data, train_rows=2048, validation_rows=64)
    size = {"layers": 4, "hidden": 128, "heads": 4, "contextLength": 64}
    config_path = workdir / "cpu.yaml"
    config_path.write_text(yaml.safe_dump(bench_config(data, args.steps, size, micro_batch=16)))

    trainer_events = torchrun(args.nproc, ["-m", "strata_workloads.train", "--config", str(config_path)])
    plain_events = torchrun(args.nproc, [__file__, "--plain-worker", str(config_path)])
    trainer_samples, trainer_tokens = steady_throughput(trainer_events)
    plain_samples, plain_tokens = steady_throughput(plain_events)

    print(f"\nTransformer {size}, {args.nproc} CPU ranks (gloo), micro-batch 16 x accumulation 2, "
          f"{args.steps} steps, medians after step {WARMUP_STEPS}\n")
    print(f"{'loop':<32}{'samples/s':>12}{'tokens/s':>12}")
    print(f"{'plain PyTorch DDP + AdamW':<32}{plain_samples:>12.1f}{plain_tokens:>12.0f}")
    print(f"{'strata trainer, DeepSpeed ZeRO-2':<32}{trainer_samples:>12.1f}{trainer_tokens:>12.0f}")
    print(f"{'ratio trainer / plain':<32}{trainer_samples / plain_samples:>12.3f}")


if __name__ == "__main__":
    main()
