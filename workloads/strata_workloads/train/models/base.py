"""The interface every model family implements for the trainer and the exporter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from strata_workloads.train.config import TrainConfig
from strata_workloads.train.data import DataInfo
from strata_workloads.train.device import make_generator, to_device

# A callable module: a DeepSpeed engine during training, the plain nn.Module otherwise.
Runner = Callable[..., Any]


@dataclass(frozen=True)
class TensorSpec:
    """One Triton input or output. ``dims`` exclude the batch dimension; -1 is variable."""

    name: str
    dtype: str  # Triton type name: TYPE_FP32, TYPE_INT64, ...
    dims: tuple[int, ...]


@dataclass
class ServingSpec:
    """A module whose ``forward(*inputs)`` is what Triton serves, with its I/O description."""

    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example_inputs: tuple[torch.Tensor, ...]
    # Anything a client needs to use the outputs (e.g. the diffusion noise schedule).
    notes: dict[str, Any] = field(default_factory=dict)


class ModelFamily:
    """Base class. Subclasses define modules, one micro-step of training, evaluation and serving.

    ``engine_names`` lists the separately optimised modules: one DeepSpeed engine is created per
    name (the GAN has two). Losses are computed in fp32 whatever the engine precision.

    Devices: batches arrive on the engine's device and the generator is on that device too;
    every tensor a family creates takes its device from one of them (or from the module, when
    generating), never the default. Losses come back as tensors on that device, so a step
    does not wait for the GPU until the trainer's one all-reduce at its end.
    """

    name: str = ""
    modality: str = ""
    engine_names: tuple[str, ...] = ("model",)
    # Metric names produced by evaluate(); early stopping must use one of them.
    metric_names: tuple[str, ...] = ("loss",)
    # The metric the trainer calls "the" validation loss and tests expect to decrease.
    primary_metric: str = "loss"

    def __init__(self, config: TrainConfig, info: DataInfo):
        self.config = config
        self.info = info
        self.size = config.model.size
        configured = config.model.num_classes
        self.num_classes = info.num_classes if configured < 0 else configured
        self.compute_dtype = torch.float32  # set by the trainer from deepspeed.precision

    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def train_micro_step(
        self, engines: Mapping[str, Any], batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Forward, backward and ``step()`` on each engine for one micro-batch; returns the
        losses as detached scalar tensors on the batch's device."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self, modules: Mapping[str, Runner], batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, tuple[torch.Tensor | float, torch.Tensor | float]]:
        """Return ``{metric: (sum, count)}`` so ranks and batches can be aggregated exactly;
        either may be a scalar tensor on the batch's device (read back once per validation)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate_split(self, modules: Mapping[str, Runner], split: Any, batches: list[list[int]], rank: int,
                       seed: int, device: torch.device) -> dict[str, tuple[float, float]]:
        """Sum ``evaluate`` over fixed batches with fixed noise, so validations are comparable.

        Batches are copied to ``device`` (where ``modules`` are) and the noise is drawn there;
        the sums stay on it until the single copy back at the end.
        """
        totals: dict[str, list[Any]] = {}
        for index, indices in enumerate(batches):
            generator = make_generator(seed * 7919 + rank * 104_729 + index, device)
            batch = to_device(split.batch(indices), device)
            for name, (total, count) in self.evaluate(modules, batch, generator).items():
                accumulated = totals.setdefault(name, [0.0, 0.0])
                accumulated[0] = accumulated[0] + total
                accumulated[1] = accumulated[1] + count
        names = sorted(totals)
        if not names:
            return {}
        # One copy to the host for all metrics, instead of a device sync per batch and metric.
        values = torch.stack([torch.as_tensor(v, device=device).to(torch.float64).reshape(())
                              for n in names for v in totals[n]]).tolist()
        return {name: (values[2 * i], values[2 * i + 1]) for i, name in enumerate(names)}

    def finalize_metrics(self, means: dict[str, float]) -> dict[str, float]:
        """Derived metrics from aggregated means (e.g. perplexity from loss)."""
        return means

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (not padding) tokens a host batch trains on, for tokens/s (0 for image families)."""
        return 0

    def blocks(self, module: nn.Module) -> list[nn.Module]:
        """The repeated blocks activation checkpointing and compilation work on (none by default)."""
        return []

    def serving(self, modules: Mapping[str, nn.Module]) -> ServingSpec:
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, modules: Mapping[str, nn.Module], count: int, generator: torch.Generator) -> dict[str, Any]:
        """Samples after training: text continuations or images (as nested lists / arrays)."""
        raise NotImplementedError

    # Helpers shared by families.
    def labels_of(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.num_classes <= 0:
            return None
        return batch["label"]

    def to_compute(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.compute_dtype)


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """dtype of the module's floating-point weights (float32 when there are none, e.g. all int8)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def sample_labels(num_classes: int, count: int, device: torch.device) -> torch.Tensor | None:
    if num_classes <= 0:
        return None
    return torch.arange(count, device=device) % num_classes


def randn(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise on the generator's device (a GPU generator draws on the GPU)."""
    return torch.randn(shape, generator=generator, device=generator.device)
