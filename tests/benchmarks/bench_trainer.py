"""Benchmark: the DeepSpeed trainer vs a plain PyTorch (DDP) loop on the same transformer and data.

Not a test (pytest does not collect it). Run::

    python tests/benchmarks/bench_trainer.py [--steps 40] [--nproc 2]

Both sides run under torchrun with the same number of ranks, model, data order, batch sizes,
gradient accumulation, clipping, AdamW and LR schedule; the trainer uses ZeRO-2 over gloo on
CPU. Throughput is measured over steady-state steps (the first few are skipped) from one run
each, and printed with their ratio: what DeepSpeed (and the trainer's reporting) costs on CPU.

Where CUDA GPUs are visible it also runs the trainer in bf16 at a size that fills a GPU and
prints tokens/s and model FLOPs utilisation against ``--peak-tflops`` per GPU (default: the
H100/H200 dense bf16 figure).
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


def model_flops_per_token(layers: int, hidden: int, context: int, vocab: int) -> float:
    """Training FLOPs per token: 6 x parameters (matmuls) + attention scores (PaLM appendix B)."""
    parameters = layers * 12 * hidden * hidden + vocab * hidden
    return 6 * parameters + 12 * layers * hidden * context


def bench_config(data: Path, steps: int, size: dict, micro_batch: int, precision: str = "fp32") -> dict:
    return {
        "model": {"family": "transformer", "size": size, "numClasses": 0},
        "deepspeed": {"zeroStage": 2, "precision": precision, "microBatchSize": micro_batch,
                      "gradientAccumulation": 2, "gradientClipping": 1.0},
        "hyperparameters": {"learningRate": 1e-3, "warmupSteps": 2, "maxSteps": steps},
        "validation": {"everySteps": 0, "maxBatches": 1},
        "data": {"path": str(data)},
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
    """One rank of the plain PyTorch loop: DDP + AdamW, same data, schedule and clipping."""
    import torch
    import torch.distributed as dist

    from strata_workloads.train.config import load_config
    from strata_workloads.train.data import ShardedSampler, load_training_data
    from strata_workloads.train.models import make_family
    from strata_workloads.train.schedule import lr_multiplier

    config = load_config(config_path)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = load_training_data(config)
    family = make_family(config, data.info)
    torch.manual_seed(config.hyperparameters.seed)
    model = torch.nn.parallel.DistributedDataParallel(family.build()["model"])
    hp, ds = config.hyperparameters, config.deepspeed
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, betas=(hp.beta1, hp.beta2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(hp))
    batches = iter(ShardedSampler(len(data.train), ds.micro_batch_size, rank, world, hp.seed))
    for step in range(1, hp.max_steps + 1):
        started = time.perf_counter()
        tokens = 0
        for _micro in range(ds.gradient_accumulation):
            batch = data.train.batch(next(batches))
            loss_sum, count = family._loss_terms(model, batch)
            # Average over micro-batches, as DeepSpeed's gradient accumulation does.
            (loss_sum / count / ds.gradient_accumulation).backward()
            tokens += family.tokens_in(batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), ds.gradient_clipping)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        totals = torch.tensor([float(tokens)])
        dist.all_reduce(totals)
        if rank == 0:
            print(json.dumps({"event": "step", "step": step,
                              "samplesPerSecond": ds.micro_batch_size * ds.gradient_accumulation * world / elapsed,
                              "tokensPerSecond": float(totals[0]) / elapsed}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="per-GPU dense bf16 peak for MFU")
    parser.add_argument("--plain-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS + 1:
        parser.error(f"--steps must exceed {WARMUP_STEPS + 1}: the first {WARMUP_STEPS} are warm-up and not measured")
    if args.plain_worker:
        plain_worker(args.plain_worker)
        return

    from strata_workloads.data.synthetic import write_text_dataset

    workdir = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
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

    import torch

    if not torch.cuda.is_available():
        print("\nNo CUDA GPU visible: tokens/s and MFU at GPU scale not measured.")
        return
    gpus = torch.cuda.device_count()
    gpu_size = {"layers": 24, "hidden": 2048, "heads": 16, "contextLength": 1024}
    gpu_config = workdir / "gpu.yaml"
    write_text_dataset(workdir / "text-long", train_rows=8192, validation_rows=64)
    gpu_config.write_text(yaml.safe_dump(bench_config(workdir / "text-long", 30, gpu_size, micro_batch=8,
                                                      precision="bf16")))
    events = torchrun(gpus, ["-m", "strata_workloads.train", "--config", str(gpu_config)])
    _samples, tokens = steady_throughput(events)
    flops = model_flops_per_token(gpu_size["layers"], gpu_size["hidden"], gpu_size["contextLength"], 259)
    mfu = tokens * flops / (gpus * args.peak_tflops * 1e12)
    print(f"\nGPU: {gpus} x {torch.cuda.get_device_name(0)}, transformer {gpu_size}, bf16, ZeRO-2")
    print(f"{'tokens/s':<32}{tokens:>12.0f}")
    print(f"{'model FLOPs utilisation':<32}{mfu:>12.1%}")


if __name__ == "__main__":
    main()
