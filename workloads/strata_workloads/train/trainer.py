"""The DeepSpeed training loop: engines, checkpoints and resume, validation, early stopping, export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from strata_workloads.train.config import ConfigError, TrainConfig
from strata_workloads.train.data import ShardedSampler, TrainingData, validation_batches
from strata_workloads.train.device import local_device, make_generator, to_device
from strata_workloads.train.models import ModelFamily
from strata_workloads.train.reporting import EventLog, Metrics
from strata_workloads.train.schedule import lr_multiplier
from strata_workloads.train.tracking import Tracker

LATEST_FILENAME = "latest.json"
TAG_PREFIX = "step"


def deepspeed_config(config: TrainConfig) -> dict[str, Any]:
    """Translate the ``deepspeed`` section into a DeepSpeed JSON config."""
    ds = config.deepspeed
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu"}
        if ds.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": ds.micro_batch_size,
        "gradient_accumulation_steps": ds.gradient_accumulation,
        "gradient_clipping": ds.gradient_clipping,
        "zero_optimization": zero,
        "bf16": {"enabled": ds.precision == "bf16"},
        "fp16": {"enabled": ds.precision == "fp16", "initial_scale_power": 12},
        # The optimizer is torch's AdamW (DeepSpeed's fused/CPU Adam need compiled ops); allow
        # it together with ZeRO-Offload, which otherwise insists on DeepSpeedCPUAdam.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,  # progress is reported by our own JSON lines
        "wall_clock_breakdown": False,
    }


def fused_adamw_supported(device: torch.device) -> bool:
    """Whether torch has the single-kernel AdamW step for parameters on ``device``."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the helper: only CUDA had fused kernels then
        return device.type == "cuda"
    return device.type in _get_fused_kernels_supported_devices()


def make_optimizer(module: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """torch's AdamW on ``module``'s parameters; fused where ``performance.fusedOptimizer`` asks.

    DeepSpeed's ZeRO optimizers run this optimizer's step on their fp32 partitions, which
    live on ``device`` (or on the CPU with offload).
    """
    hp, setting = config.hyperparameters, config.performance.fused_optimizer
    step_device = torch.device("cpu") if config.deepspeed.offload == "cpu" else device
    supported = fused_adamw_supported(step_device)
    if setting == "on" and not supported:
        raise ConfigError(f"performance.fusedOptimizer: torch {torch.__version__} has no fused AdamW for "
                          f"{step_device.type} parameters; use fusedOptimizer: auto or off")
    fused = setting == "on" or (setting == "auto" and supported)
    # fused=False would still let torch pick its foreach step; None leaves that choice to torch.
    return torch.optim.AdamW(module.parameters(), lr=hp.learning_rate, betas=(hp.beta1, hp.beta2),
                             weight_decay=hp.weight_decay, fused=True if fused else None)


def parameter_count(modules) -> int:
    """Parameters of the full model, also under ZeRO-3, where each rank holds only a slice
    (``numel()`` is 0 for a partitioned parameter; ``ds_numel`` is its full size)."""
    return sum(getattr(p, "ds_numel", p.numel()) for module in modules for p in module.parameters())


def compile_blocks(family: ModelFamily, module: torch.nn.Module, backend: str = "inductor") -> int:
    """torch.compile each of the module's blocks in place; returns how many.

    Regional compilation: the blocks repeat, so one compilation serves them all (short
    compile times), and parameter names, checkpoints and the exported (uncompiled) model
    are unchanged.
    """
    blocks = family.blocks(module)
    for block in blocks:
        block.compile(backend=backend)
    return len(blocks)


def step_seed(seed: int, rank: int, step: int, micro: int) -> int:
    """Seed for a micro-step's noise: a function of position only, so resume replays it exactly."""
    return (seed * 1_000_003 + rank * 100_003 + step * 1_009 + micro) % (2**63 - 1)


@contextmanager
def plain_torch_linear():
    """Undo ZeRO-3's process-wide replacement of ``torch.nn.functional.linear`` for a while.

    ZeRO-3 swaps in an autograd Function (memory-efficient linear) that TorchScript cannot
    trace; export and rank-0 evaluation of the consolidated modules need the original.
    """
    try:
        from deepspeed.runtime.zero.partition_parameters import InsertPostInitMethodToModuleSubClasses as patcher
    except ImportError:
        patcher = None
    original = getattr(patcher, "linear_bk", None)
    current = torch.nn.functional.linear
    if original is None or current is original:
        yield
        return
    torch.nn.functional.linear = original
    try:
        yield
    finally:
        torch.nn.functional.linear = current


@dataclass
class EarlyStopping:
    metric: str
    patience: int
    mode: str
    min_delta: float
    best: float | None = None
    bad_validations: int = 0

    def update(self, value: float) -> bool:
        """Record one validation; return True when training should stop."""
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.bad_validations = value, 0
        else:
            self.bad_validations += 1
        return self.bad_validations >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "badValidations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_validations = state.get("best"), int(state.get("badValidations", 0))


@dataclass
class TrainingResult:
    status: str  # succeeded | early-stopped | interrupted
    step: int
    metrics: dict[str, float]
    checkpoint: str | None = None
    export: dict[str, Any] | None = None
    resumed_from: int | None = None
    validation_history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    def __init__(self, config: TrainConfig, family: ModelFamily, data: TrainingData, events: EventLog,
                 device: torch.device | None = None):
        self.config = config
        # This rank's device (cuda:LOCAL_RANK, or the CPU); every tensor of a step goes there.
        self.device = device if device is not None else local_device()
        self.family = family
        self.data = data
        self.events = events
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.family.compute_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            config.deepspeed.precision
        ]
        self.sampler = ShardedSampler(
            len(data.train), config.deepspeed.micro_batch_size, self.rank, self.world_size, config.hyperparameters.seed
        )
        self.validation_index = validation_batches(
            data.validation, config.deepspeed.micro_batch_size, self.rank, self.world_size,
            config.validation.max_batches,
        )
        stopping = config.validation.early_stopping
        self.early_stopping = (
            EarlyStopping(stopping.metric, stopping.patience, stopping.mode, stopping.min_delta) if stopping else None
        )
        self.metrics = Metrics(config.observability.metrics_port, self.rank == 0, config.model.family)
        self.tracker = Tracker(config.tracking, enabled=self.rank == 0, on_failure=self._tracking_failed)
        self.step = 0
        self.resumed_from: int | None = None
        self.last_checkpoint: str | None = None
        self.validation_history: list[dict[str, Any]] = []
        self.termination_requested = False

    # Engines -------------------------------------------------------------------------------

    def build_engines(self) -> None:
        import deepspeed

        # Same seed on every rank: identical initial weights before DeepSpeed partitions them.
        torch.manual_seed(self.config.hyperparameters.seed)
        modules = self.family.build()
        hp = self.config.hyperparameters
        self.engines = {}
        for name in self.family.engine_names:
            # On the device before the optimizer sees the parameters (DeepSpeed would move the
            # module anyway; the fused step is chosen for where the parameters live).
            module = modules[name].to(self.device)
            if self.config.performance.compile:
                compile_blocks(self.family, module)
            optimizer = make_optimizer(module, self.config, self.device)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(hp))
            engine, _, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizer, lr_scheduler=scheduler,
                config=deepspeed_config(self.config), dist_init_required=False,
            )
            if engine.device != self.device:
                raise RuntimeError(f"DeepSpeed placed the {name} engine on {engine.device}, the trainer expected "
                                   f"{self.device} (LOCAL_RANK={os.environ.get('LOCAL_RANK')})")
            self.engines[name] = engine
        self.parameter_count = parameter_count(modules.values())

    @property
    def primary_engine(self):
        return self.engines[self.family.engine_names[0]]

    # Checkpoints ---------------------------------------------------------------------------

    def _checkpoint_root(self) -> Path | None:
        directory = self.config.checkpoints.dir
        return Path(directory) if directory else None

    def save_checkpoint(self) -> None:
        root = self._checkpoint_root()
        if root is None:
            return
        tag = f"{TAG_PREFIX}{self.step:08d}"
        client_state = {
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "earlyStopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "validationHistory": self.validation_history[-20:],
            "configHash": self.config.config_hash(),
        }
        for name, engine in self.engines.items():
            engine.save_checkpoint(str(root / name), tag=tag, client_state=client_state)
        # Only after every rank wrote every engine's shards does the checkpoint become "latest":
        # a rank killed mid-save leaves the previous checkpoint in charge.
        dist.barrier()
        if self.rank == 0:
            latest = {"step": self.step, "tag": tag, "engines": list(self.engines), "configHash": self.config.config_hash()}
            temporary = root / (LATEST_FILENAME + ".tmp")
            temporary.write_text(json.dumps(latest))
            os.replace(temporary, root / LATEST_FILENAME)
            self._prune_checkpoints(root, keep=self.config.checkpoints.keep)
        dist.barrier()
        self.last_checkpoint = str(root)
        self.metrics.record_checkpoint(self.step)
        self.events.emit("checkpoint", step=self.step, tag=tag, path=str(root))
        if self.config.tracking.log_checkpoints:
            for name in self.engines:
                self.tracker.log_artifacts(root / name / tag, f"checkpoints/{tag}/{name}")

    def _prune_checkpoints(self, root: Path, keep: int) -> None:
        for name in self.engines:
            tags = sorted(p for p in (root / name).glob(f"{TAG_PREFIX}*") if p.is_dir())
            for stale in tags[:-keep]:
                shutil.rmtree(stale, ignore_errors=True)

    def maybe_resume(self) -> None:
        root = self._checkpoint_root()
        latest_path = root / LATEST_FILENAME if root else None
        if latest_path is None or not latest_path.exists():
            return
        latest = json.loads(latest_path.read_text())
        client_state: dict[str, Any] = {}
        for name, engine in self.engines.items():
            loaded_path, state = engine.load_checkpoint(str(root / name), tag=latest["tag"])
            if loaded_path is None:
                raise RuntimeError(f"checkpoints.dir: cannot load {name} checkpoint {latest['tag']} from {root}")
            client_state = client_state or state
        self.step = int(client_state["step"])
        self.sampler.load_state_dict(client_state["sampler"])
        if self.early_stopping and client_state.get("earlyStopping"):
            self.early_stopping.load_state_dict(client_state["earlyStopping"])
        self.validation_history = list(client_state.get("validationHistory") or [])
        self.resumed_from = self.step
        self.metrics.record_resumed(self.step)
        self.metrics.record_checkpoint(self.step)
        self.last_checkpoint = str(root)
        self.events.emit("resumed", step=self.step, tag=latest["tag"], path=str(root),
                         configChanged=client_state.get("configHash") != self.config.config_hash())

    # Validation ----------------------------------------------------------------------------

    def _tracking_failed(self, action: str, error: Exception, disabled: bool) -> None:
        self.events.emit("tracking_failed", action=action, error=f"{type(error).__name__}: {error}"[:500],
                         disabled=disabled)

    def validate(self) -> dict[str, float]:
        for engine in self.engines.values():
            engine.eval()
        modules = {name: engine.module for name, engine in self.engines.items()}
        metric_sums = self.family.evaluate_split(modules, self.data.validation, self.validation_index, self.rank,
                                                 self.config.hyperparameters.seed, self.device)
        names = sorted(metric_sums)
        # On the engine's device: NCCL reduces only GPU tensors.
        totals = torch.tensor([[metric_sums[n][0], metric_sums[n][1]] for n in names], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
        means = {n: float(totals[i, 0] / max(totals[i, 1], 1.0)) for i, n in enumerate(names)}
        metrics = self.family.finalize_metrics(means)
        for engine in self.engines.values():
            engine.train()
        self.validation_history.append({"step": self.step, **metrics})
        self.metrics.record_validation(metrics)
        self.tracker.log_metrics({f"validation/{k}": v for k, v in metrics.items()}, self.step)
        self.events.emit("validation", step=self.step, metrics=metrics)
        return metrics

    # Loop ----------------------------------------------------------------------------------

    def _reduce_step(self, losses: dict[str, torch.Tensor], tokens: int) -> tuple[dict[str, float], int, bool]:
        """Average losses over ranks, sum tokens, and learn whether any rank was asked to stop.

        Folding the stop request into this per-step collective makes every rank see it at the
        same step, so they all take the same checkpoint-and-exit path. The losses stay on the
        device until here: this is the step's one wait for the device.
        """
        names = sorted(losses)
        counters = torch.tensor([float(tokens), float(self.termination_requested)], dtype=torch.float64,
                                device=self.device)
        values = torch.cat([torch.stack([losses[n].to(torch.float64) for n in names]), counters])
        dist.all_reduce(values)
        values = values.tolist()
        averaged = {n: values[i] / self.world_size for i, n in enumerate(names)}
        return averaged, int(values[-2]), values[-1] > 0

    def _request_termination(self, signum, _frame) -> None:
        # Kubernetes sends SIGTERM before killing a pod (eviction, preemption, deletion); the
        # launcher forwards it to every rank. Finish the current step, checkpoint, then exit.
        self.termination_requested = True

    def train(self) -> TrainingResult:
        hp, ds = self.config.hyperparameters, self.config.deepspeed
        self.tracker.start(self.config, parameters=self.parameter_count, world_size=self.world_size,
                           dataset=f"{self.data.info.dataset_name}@{self.data.info.dataset_version}")
        self.events.emit("started", step=self.step, totalSteps=hp.max_steps, family=self.config.model.family,
                         parameters=self.parameter_count, worldSize=self.world_size, zeroStage=ds.zero_stage,
                         precision=ds.precision, dataset=self.data.info.dataset_version)
        validate_every = self.config.validation.every_steps
        checkpoint_every = self.config.checkpoints.every_steps
        status = "succeeded"
        metrics: dict[str, float] = {}
        validated_at = checkpointed_at = -1
        batches = iter(self.sampler)
        for engine in self.engines.values():
            engine.train()
        signal.signal(signal.SIGTERM, self._request_termination)
        while self.step < hp.max_steps:
            started = time.perf_counter()
            # The rate this step applies (the scheduler advances inside engine.step()).
            learning_rate = self.primary_engine.get_lr()[0]
            micro_losses: list[dict[str, torch.Tensor]] = []
            tokens = 0
            for micro in range(ds.gradient_accumulation):
                host_batch = self.data.train.batch(next(batches))
                tokens += self.family.tokens_in(host_batch)  # counted on the host: no device sync
                batch = to_device(host_batch, self.device)
                generator = make_generator(step_seed(hp.seed, self.rank, self.step, micro), self.device)
                micro_losses.append(self.family.train_micro_step(self.engines, batch, generator))
            self.step += 1
            local = {k: torch.stack([m[k] for m in micro_losses]).mean() for k in micro_losses[0]}
            losses, group_tokens, stop_requested = self._reduce_step(local, tokens)
            # After the reduce, which waits for the device: the time the step really took.
            elapsed = time.perf_counter() - started
            samples_per_second = ds.micro_batch_size * ds.gradient_accumulation * self.world_size / elapsed
            tokens_per_second = group_tokens / elapsed
            self.metrics.record_step(self.step, hp.max_steps, losses, samples_per_second, tokens_per_second, learning_rate)
            if self.step % self.config.observability.log_every_steps == 0 or self.step == hp.max_steps:
                memory = ({"peakMemoryBytes": torch.cuda.max_memory_allocated(self.device)}
                          if self.device.type == "cuda" else {})
                self.events.emit("step", step=self.step, totalSteps=hp.max_steps, losses=losses,
                                 learningRate=learning_rate, samplesPerSecond=round(samples_per_second, 3),
                                 tokensPerSecond=round(tokens_per_second, 3), epoch=self.sampler.epoch, **memory)
                self.tracker.log_metrics({f"train/{k}": v for k, v in losses.items()}
                                         | {"train/samplesPerSecond": samples_per_second,
                                            "train/tokensPerSecond": tokens_per_second,
                                            "train/learningRate": learning_rate}, self.step)
            stop_early = False
            if validate_every and self.step % validate_every == 0:
                metrics = self.validate()
                validated_at = self.step
                if self.early_stopping:
                    stop_early = self.early_stopping.update(metrics[self.early_stopping.metric])
            if checkpoint_every and self.step % checkpoint_every == 0:
                self.save_checkpoint()
                checkpointed_at = self.step
            if stop_requested:
                if checkpointed_at != self.step:
                    self.save_checkpoint()
                self.events.emit("interrupted", step=self.step, signal="SIGTERM", checkpoint=self.last_checkpoint)
                return TrainingResult(status="interrupted", step=self.step, metrics=metrics,
                                      checkpoint=self.last_checkpoint, resumed_from=self.resumed_from,
                                      validation_history=self.validation_history)
            if stop_early:
                status = "early-stopped"
                self.events.emit("early_stopped", step=self.step, metric=self.early_stopping.metric,
                                 best=self.early_stopping.best, patience=self.early_stopping.patience)
                break
        if validated_at != self.step:
            metrics = self.validate()
        if checkpointed_at != self.step:
            self.save_checkpoint()
        return TrainingResult(status=status, step=self.step, metrics=metrics, checkpoint=self.last_checkpoint,
                              resumed_from=self.resumed_from, validation_history=self.validation_history)

    # After training ------------------------------------------------------------------------

    def consolidated_modules(self) -> dict[str, torch.nn.Module] | None:
        """Full-precision copies of the trained modules on rank 0 (None elsewhere).

        Under ZeRO-3 every rank holds a slice of each parameter, so all ranks must take part in
        gathering them; for lower stages GatheredParameters is a no-op.
        """
        import deepspeed

        states: dict[str, dict[str, torch.Tensor]] = {}
        for name, engine in self.engines.items():
            parameters = list(engine.module.parameters())
            with deepspeed.zero.GatheredParameters(parameters, modifier_rank=None):
                if self.rank == 0:
                    states[name] = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
        if self.rank != 0:
            return None
        torch.manual_seed(self.config.hyperparameters.seed)
        modules = self.family.build()
        for name, module in modules.items():
            module.load_state_dict(states[name])
            module.eval()
        return modules

    def close(self, result: dict[str, Any] | None = None) -> None:
        self.tracker.finish(result)
        self.metrics.close()
