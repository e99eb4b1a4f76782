"""Benchmark: the DeepSpeed trainer vs a plain PyTorch loop on the same transformer and data.

Not a test (pytest does not collect it). Run::

    python tests/benchmarks/bench_trainer.py [--steps 40] [--nproc 2] [--gpu-only] [--compile]

CPU: both sides run under torchrun with the same number of ranks, model, data order, batch
sizes, gradient accumulation, clipping, AdamW and LR schedule; the trainer uses ZeRO-2 over
gloo. Throughput is measured over steady-state steps (the first few are skipped) from one
run each, and printed with their ratio: what DeepSpeed (and the trainer's reporting) costs.

GPU (where CUDA is visible): the 1.2B-parameter configuration (24 layers, hidden 2048,
context 1024, bf16, ZeRO-2, one rank per GPU) on short documents *packed* into full windows,
against a plain PyTorch loop on the same model and data (bf16 autocast, fused AdamW, DDP
over NCCL when there are several GPUs). Printed: tokens/s (real tokens), their ratio, model
FLOPs utilisation against ``--peak-tflops`` per GPU (default: the H100/H200 dense bf16
figure) and peak GPU memory of each.
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
    parser.add_argument("--gpu-micro-batch", type=int, default=8)
    parser.add_argument("--compile", action="store_true", help="the trainer with performance.compile")
    parser.add_argument("--checkpointing", action="store_true",
                        help="the trainer with performance.activationCheckpointing")
    parser.add_argument("--plain-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.steps, args.gpu_steps) <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed {WARMUP_STEPS + 1}: the first {WARMUP_STEPS} are warm-up and not measured")
    if args.plain_worker:
        plain_worker(args.plain_worker)
        return

    from strata_workloads.data.synthetic import write_text_dataset

    workdir = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    if not args.gpu_only:
        cpu_benchmark(workdir, args)

    import torch

    if not torch.cuda.is_available():
        print("\nNo CUDA GPU visible: tokens/s, MFU and memory at GPU scale NOT measured.")
        return
    gpus = torch.cuda.device_count()
    gpu_size = {"layers": 24, "hidden": 2048, "heads": 16, "contextLength": 1024}
    # ~30-byte sentences: unpacked, 97% of each 1024-token example would be padding.
    write_text_dataset(workdir / "text-long", train_rows=65536, validation_rows=64, rows_per_shard=16384)
    performance = {"compile": args.compile, "activationCheckpointing": args.checkpointing}
    gpu_config = workdir / "gpu.yaml"
    gpu_config.write_text(yaml.safe_dump(bench_config(workdir / "text-long", args.gpu_steps, gpu_size,
                                                      micro_batch=args.gpu_micro_batch, precision="bf16",
                                                      packing=True, performance=performance)))
    plain_events = torchrun(gpus, [__file__, "--plain-worker", str(gpu_config)])
    trainer_events = torchrun(gpus, ["-m", "strata_workloads.train", "--config", str(gpu_config)])
    flops = model_flops_per_token(gpu_size["layers"], gpu_size["hidden"], gpu_size["contextLength"], 259)
    rows = []
    for name, events in (("plain PyTorch (autocast, fused AdamW)", plain_events),
                         ("strata trainer, DeepSpeed ZeRO-2", trainer_events)):
        _samples, tokens = steady_throughput(events)
        rows.append((name, tokens, tokens * flops / (gpus * args.peak_tflops * 1e12), peak_memory_gib(events)))
    settings = ", ".join(k for k, v in performance.items() if v) or "default performance settings"
    print(f"\nGPU: {gpus} x {torch.cuda.get_device_name(0)}, transformer {gpu_size} "
          f"({matmul_parameters(gpu_size['layers'], gpu_size['hidden'], 259) / 1e9:.2f}B parameters), bf16, micro-batch {args.gpu_micro_batch} x accumulation 2, "
          f"packed documents, {settings}; {args.gpu_steps} steps, medians after step {WARMUP_STEPS}; "
          f"MFU against {args.peak_tflops:g} TFLOP/s per GPU, real tokens only\n")
    print(f"{'loop':<40}{'tokens/s':>12}{'MFU':>8}{'peak GiB':>10}")
    for name, tokens, mfu, memory in rows:
        print(f"{name:<40}{tokens:>12.0f}{mfu:>8.1%}{memory:>10.1f}")
    print(f"{'ratio trainer / plain':<40}{rows[1][1] / rows[0][1]:>12.3f}")


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
