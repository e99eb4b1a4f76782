"""Where this rank's tensors live, and how batches get there.

Every tensor the training step touches follows the engine's device: batches are copied there
(through pinned memory, without blocking the host, on CUDA), noise comes from generators on
that device, and the step's scalar all-reduces use tensors there (NCCL refuses CPU tensors).
"""

from __future__ import annotations

import os

import torch

from strata_workloads.train.config import ConfigError


def device_for_rank(local_rank: int, cuda_devices: int) -> torch.device:
    """``cuda:<local rank>`` where GPUs are visible, else the CPU.

    torchrun and the deepspeed launcher number the processes on a node 0..n-1 in
    ``LOCAL_RANK``; each takes the GPU of that index, so n processes use n GPUs.
    """
    if cuda_devices == 0:
        return torch.device("cpu")
    if not 0 <= local_rank < cuda_devices:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: {cuda_devices} visible on this node; start at most "
            f"{cuda_devices} processes per node (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", local_rank)


def local_device() -> torch.device:
    """This process's device, from ``LOCAL_RANK`` (0 when launched without one)."""
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return device_for_rank(int(os.environ.get("LOCAL_RANK", "0")), cuda_devices)


def uses_pinned_copies(device: torch.device) -> bool:
    """Host-to-GPU copies go through page-locked memory so they can run without blocking the host."""
    return device.type == "cuda"


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A host batch on ``device``. On CUDA the copy is queued on the current stream and the
    host goes on preparing the next batch; the caching host allocator keeps the pinned
    buffer alive until the copy is done."""
    if batch and all(t.device == device for t in batch.values()):
        return batch
    pinned = uses_pinned_copies(device)
    return {name: (t.pin_memory() if pinned else t).to(device, non_blocking=pinned) for name, t in batch.items()}


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on ``device``: random draws on a GPU need a GPU generator."""
    return torch.Generator(device=device).manual_seed(seed)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights are (CPU for a module with none, e.g. all int8-packed)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
