"""Command line entry point run by each rank (under torchrun or the deepspeed launcher)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from strata_workloads.train.config import (
    ConfigError,
    TrainConfig,
    check_before_training,
    check_runtime_inputs,
    load_config,
)
from strata_workloads.train.reporting import EventLog, termination_log_path, write_termination_message

EXIT_TRAINING_FAILED = 1
EXIT_INVALID_CONFIG = 2
# 128 + SIGTERM: the conventional status of a process stopped by SIGTERM; not a success, so the
# group is restarted (and resumes from the checkpoint taken on the way out).
EXIT_INTERRUPTED = 143


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m strata_workloads.train", description=__doc__)
    parser.add_argument("--config", help="YAML/JSON trainer configuration (default: $STRATA_TRAIN_CONFIG)")
    # The deepspeed launcher passes --local_rank; torchrun uses $LOCAL_RANK. Accept both.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _fail(events: EventLog, rank: int, termination_log: str | None, reason: str, message: str, code: int) -> int:
    events.emit("failed", all_ranks=True, reason=reason, error=message)
    print(f"strata-train: {message}", file=sys.stderr, flush=True)
    if rank == 0:
        write_termination_message(termination_log_path(termination_log), {"status": "failed", "reason": reason, "error": message})
    return code


def _check_against_data(config: TrainConfig, family) -> None:
    if family.num_classes > 0 and family.info.num_classes == 0:
        raise ConfigError(f"model.numClasses: {family.num_classes} but the data has no labels")
    if config.data.packing and family.num_classes > 0:
        raise ConfigError(
            f"data.packing: a packed window holds several documents, so it cannot be conditioned on one label "
            f"(model.numClasses is {config.model.num_classes}, the data has {family.info.num_classes} classes); "
            f"set model.numClasses: 0 or packing: false"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    events = EventLog(rank)
    termination_log: str | None = None
    try:
        config = load_config(args.config)
        termination_log = config.observability.termination_log
        check_runtime_inputs(config)
    except ConfigError as error:
        return _fail(events, rank, termination_log, "InvalidConfiguration", str(error), EXIT_INVALID_CONFIG)

    # Heavy imports only once the configuration is known to be valid.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from strata_workloads.train.data import load_training_data
    from strata_workloads.train.device import local_device
    from strata_workloads.train.models import make_family

    try:
        check_before_training(config, cuda_available=torch.cuda.is_available())
        device = local_device()
        data = load_training_data(config)
        family = make_family(config, data.info)
        _check_against_data(config, family)
        if rank == 0:
            from strata_workloads.train.export import ExportTargetError, check_export_target

            try:
                check_export_target(config)
            except ExportTargetError as error:  # perhaps passing (the network, the store): a retry may pass
                return _fail(events, rank, termination_log, "TrainingError", str(error), EXIT_TRAINING_FAILED)
    except ConfigError as error:
        return _fail(events, rank, termination_log, "InvalidConfiguration", str(error), EXIT_INVALID_CONFIG)

    import deepspeed
    import torch.distributed as dist

    from strata_workloads.train.trainer import Trainer, plain_torch_linear

    backend = config.deepspeed.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        # Before the process group: NCCL binds each rank's communicator to the current device.
        torch.cuda.set_device(device)
    if device.type == "cpu" and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) == 1:
        # DeepSpeed's CPU shared-memory all-reduce serves ranks on one host; with one rank per
        # pod it has no peer, and loading it JIT-compiles C++ for minutes at every start.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=backend)
    events.emit("process", all_ranks=True, pid=os.getpid(), worldSize=dist.get_world_size())
    trainer = None
    result: dict[str, Any] | None = None
    try:
        trainer = Trainer(config, family, data, events, device)
        trainer.build_engines()
        trainer.maybe_resume()
        outcome = trainer.train()
        result = {
            "status": outcome.status,
            "step": outcome.step,
            "metrics": outcome.metrics,
            "checkpoint": outcome.checkpoint,
            "resumedFrom": outcome.resumed_from,
            "dataset": f"{data.info.dataset_name}@{data.info.dataset_version}",
            "configHash": config.config_hash(),
        }
        if outcome.status == "interrupted":
            trainer.close(result)
            if rank == 0:
                write_termination_message(termination_log_path(termination_log), result)
            return EXIT_INTERRUPTED
        modules = trainer.consolidated_modules() if config.export.dir else None
        if rank == 0 and modules is not None:
            with plain_torch_linear():
                result["export"] = _export(config, family, data, modules, outcome, events, trainer)
        trainer.close(result)
        if rank == 0:
            events.emit("completed", **result)
            write_termination_message(termination_log_path(termination_log), result)
        return 0
    except ConfigError as error:
        if trainer:
            trainer.close({"status": "failed"})
        return _fail(events, rank, termination_log, "InvalidConfiguration", str(error), EXIT_INVALID_CONFIG)
    except Exception as error:  # report any failure through the contract, then exit non-zero
        traceback.print_exc()
        if trainer:
            trainer.close({"status": "failed"})
        return _fail(events, rank, termination_log, "TrainingError", f"{type(error).__name__}: {error}",
                     EXIT_TRAINING_FAILED)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _export(config, family, data, modules, outcome, events, trainer) -> dict[str, Any]:
    import torch

    from strata_workloads.train.data import validation_batches
    from strata_workloads.train.device import make_generator, module_device
    from strata_workloads.train.export import export_triton_repository

    def evaluate(candidate: dict[str, torch.nn.Module], compute_dtype: torch.dtype) -> dict[str, float]:
        # Single process (rank 0) over the first validation batches, fixed noise, on the
        # device the candidate modules are on.
        saved, family.compute_dtype = family.compute_dtype, compute_dtype
        try:
            batches = validation_batches(data.validation, config.deepspeed.micro_batch_size, 0, 1,
                                         config.validation.max_batches)
            device = module_device(next(iter(candidate.values())))
            sums = family.evaluate_split(candidate, data.validation, batches, 0, config.hyperparameters.seed, device)
            return family.finalize_metrics({k: total / max(count, 1.0) for k, (total, count) in sums.items()})
        finally:
            family.compute_dtype = saved

    def generate(candidate: dict[str, torch.nn.Module], count: int) -> dict[str, Any]:
        device = module_device(next(iter(candidate.values())))
        samples = family.generate(candidate, count, make_generator(config.hyperparameters.seed, device))
        if "text" in samples:
            events.emit("samples", text=[s["text"] for s in samples["text"]])
        else:
            events.emit("samples", images=len(samples["images"]), shape=list(samples["images"].shape[1:]))
        return samples

    family.compute_dtype = torch.float32
    summary = export_triton_repository(
        config, family, modules, evaluate,
        training={"metrics": outcome.metrics, "step": outcome.step,
                  "dataset": {"name": data.info.dataset_name, "version": data.info.dataset_version}},
        generate=generate, device=trainer.device,
    )
    events.emit("exported", **summary)
    trainer.tracker.log_artifacts(summary["models"]["torchscript"], "export/torchscript")
    return summary
