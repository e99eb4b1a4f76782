"""DDPM: a small U-Net predicting the added noise, with timestep embedding and optional class conditioning."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from strata_workloads.train.config import FAMILY_METRICS
from strata_workloads.train.device import module_device
from strata_workloads.train.models.base import (
    ModelFamily,
    ServingSpec,
    TensorSpec,
    parameter_dtype,
    randn,
    sample_labels,
)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``[B]`` -> ``[B, dim]`` (as in the DDPM paper)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.float().unsqueeze(1) * frequencies.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResidualBlock(nn.Module):
    """Two convolutions with the time(+class) embedding added in between, plus a skip path."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embedding(embedding)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class SmallUNet(nn.Module):
    """Two resolutions: down (stride-2 conv), middle, up (nearest + conv) with a concatenated skip."""

    def __init__(self, channels: int, base_channels: int, num_classes: int, checkpoint_blocks: bool = False):
        super().__init__()
        # Recompute the residual blocks in the backward pass instead of keeping their activations.
        self.checkpoint_blocks = checkpoint_blocks
        c = base_channels
        self.embedding_dim = 4 * c
        self.time_mlp = nn.Sequential(nn.Linear(c, self.embedding_dim), nn.SiLU(), nn.Linear(self.embedding_dim, self.embedding_dim))
        self.label_embedding = nn.Embedding(num_classes, self.embedding_dim) if num_classes > 0 else None
        self.stem = nn.Conv2d(channels, c, 3, padding=1)
        self.down_block = ResidualBlock(c, c, self.embedding_dim)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.middle_block = ResidualBlock(2 * c, 2 * c, self.embedding_dim)
        self.upsample = nn.Conv2d(2 * c, c, 3, padding=1)
        self.up_block = ResidualBlock(2 * c, c, self.embedding_dim)  # input: upsampled + skip
        self.out = nn.Sequential(nn.GroupNorm(_groups(c), c), nn.SiLU(), nn.Conv2d(c, channels, 3, padding=1))
        self.base_channels = c

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.time_mlp(timestep_embedding(timesteps.view(-1), self.base_channels).to(noisy.dtype))
        if self.label_embedding is not None:
            embedding = embedding + self.label_embedding(labels.view(-1)).to(embedding.dtype)
        h = self.stem(noisy)
        skip = self._block(self.down_block, h, embedding)
        h = self._block(self.middle_block, self.downsample(skip), embedding)
        h = self.upsample(F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
        h = self._block(self.up_block, torch.cat([h, skip], dim=1), embedding)
        return self.out(h)

    def _block(self, block: nn.Module, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_blocks and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, embedding, use_reentrant=False)
        return block(x, embedding)


class NoiseSchedule:
    """Linear beta schedule and the closed forms used for training and ancestral sampling."""

    def __init__(self, steps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
        # Scale the DDPM endpoints so short schedules (tests use few steps) still reach noise.
        scale = 1000.0 / steps
        self.steps = steps
        # Kept on the host in float64 (the sampler reads single values); alpha_bars_on() copies
        # what the training step indexes to the step's device.
        self.betas = torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), steps, dtype=torch.float64,
                                    device="cpu")
        self.alphas = 1.0 - self.betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self._alpha_bars_on: dict[torch.device, torch.Tensor] = {}

    def alpha_bars_on(self, device: torch.device) -> torch.Tensor:
        """The schedule where the timesteps are (indexing needs both on one device), copied once."""
        if device not in self._alpha_bars_on:
            self._alpha_bars_on[device] = self.alpha_bars.float().to(device)
        return self._alpha_bars_on[device]

    def add_noise(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha_bar = self.alpha_bars_on(timesteps.device)[timesteps].view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * images + (1 - alpha_bar).sqrt() * noise


class _DenoiserServing(nn.Module):
    def __init__(self, unet: SmallUNet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy_image: torch.Tensor, timestep: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.unet)
        return self.unet(noisy_image.to(dtype), timestep, label).float()


class _UnconditionalDenoiserServing(nn.Module):
    def __init__(self, unet: SmallUNet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy_image: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.unet)
        return self.unet(noisy_image.to(dtype), timestep).float()


class DiffusionFamily(ModelFamily):
    name = "diffusion"
    modality = "image"
    metric_names = FAMILY_METRICS["diffusion"]

    def __init__(self, config, info):
        super().__init__(config, info)
        self.schedule = NoiseSchedule(self.size.diffusion_steps)

    def build(self):
        return {"model": SmallUNet(self.info.image_shape[0], self.size.base_channels, self.num_classes,
                                   checkpoint_blocks=self.config.performance.activation_checkpointing)}

    def _loss_per_example(self, model, batch, generator) -> torch.Tensor:
        images = batch["image"]
        count = images.shape[0]
        timesteps = torch.randint(0, self.schedule.steps, (count,), generator=generator, device=generator.device)
        noise = randn(tuple(images.shape), generator)
        noisy = self.schedule.add_noise(images, noise, timesteps)
        predicted = model(self.to_compute(noisy), timesteps, self.labels_of(batch)).float()
        return (predicted - noise).pow(2).flatten(1).mean(1)

    def train_micro_step(self, engines, batch, generator):
        engine = engines["model"]
        loss = self._loss_per_example(engine, batch, generator).mean()
        engine.backward(loss)
        engine.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, modules, batch, generator):
        losses = self._loss_per_example(modules["model"], batch, generator)
        return {"loss": (losses.sum(), float(losses.shape[0]))}

    def blocks(self, module):
        return [module.down_block, module.middle_block, module.up_block]

    def serving(self, modules) -> ServingSpec:
        unet = modules["model"]
        shape = tuple(self.info.image_shape)
        inputs = [TensorSpec("noisy_image", "TYPE_FP32", shape), TensorSpec("timestep", "TYPE_INT64", (1,))]
        outputs = [TensorSpec("predicted_noise", "TYPE_FP32", shape)]
        device = module_device(unet)
        generator = torch.Generator(device).manual_seed(0)
        example = (torch.randn((2, *shape), generator=generator, device=device),
                   torch.tensor([[3], [7]], dtype=torch.long, device=device))
        # Clients run the reverse process themselves; they need the schedule.
        notes = {"noiseSchedule": {"kind": "linear", "steps": self.schedule.steps,
                                   "betaStart": float(self.schedule.betas[0]), "betaEnd": float(self.schedule.betas[-1])}}
        if self.num_classes > 0:
            return ServingSpec(_DenoiserServing(unet), inputs + [TensorSpec("label", "TYPE_INT64", (1,))], outputs,
                               example + (torch.zeros((2, 1), dtype=torch.long, device=device),), notes)
        return ServingSpec(_UnconditionalDenoiserServing(unet), inputs, outputs, example, notes)

    @torch.no_grad()
    def sample(self, unet: nn.Module, count: int, generator: torch.Generator, labels: torch.Tensor | None) -> torch.Tensor:
        """Ancestral DDPM sampling from pure noise over all T steps."""
        dtype = parameter_dtype(unet)
        x = randn((count, *self.info.image_shape), generator)
        for t in reversed(range(self.schedule.steps)):
            timesteps = torch.full((count,), t, dtype=torch.long, device=x.device)
            predicted = unet(x.to(dtype), timesteps, labels).float()
            alpha, alpha_bar, beta = (float(v[t]) for v in (self.schedule.alphas, self.schedule.alpha_bars, self.schedule.betas))
            x = (x - beta / math.sqrt(1 - alpha_bar) * predicted) / math.sqrt(alpha)
            if t > 0:
                x = x + math.sqrt(beta) * randn(tuple(x.shape), generator)
        return x.clamp(-1, 1)

    @torch.no_grad()
    def generate(self, modules, count, generator) -> dict[str, Any]:
        labels = sample_labels(self.num_classes, count, generator.device)
        return {"images": self.sample(modules["model"], count, generator, labels), "labels": labels}
