"""GAN: a generator and a discriminator, each its own DeepSpeed engine, trained alternately."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


class Generator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: int, latent_dim: int, num_classes: int):
        super().__init__()
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        self.label_embedding = nn.Embedding(num_classes, latent_dim) if num_classes > 0 else None
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, math.prod(image_shape)), nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            noise = noise + self.label_embedding(labels.view(-1)).to(noise.dtype)
        return self.net(noise).view(-1, *self.image_shape)


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: int, num_classes: int):
        super().__init__()
        pixels = math.prod(image_shape)
        self.label_embedding = nn.Embedding(num_classes, pixels) if num_classes > 0 else None
        self.net = nn.Sequential(
            nn.Linear(pixels, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.flatten(1)
        if self.label_embedding is not None:
            x = x + self.label_embedding(labels.view(-1)).to(x.dtype)
        return self.net(x).squeeze(1)


class _GeneratorServing(nn.Module):
    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.generator)
        return self.generator(noise.to(dtype), label).float()


class _UnconditionalGeneratorServing(nn.Module):
    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.generator)
        return self.generator(noise.to(dtype)).float()


def moment_distance(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Distance between per-pixel means and standard deviations of two image batches.

    GAN losses are adversarial and do not decrease monotonically, so progress is measured by
    how close generated images' pixel statistics are to the data's (0 when they match).
    """
    real, fake = real.flatten(1).float(), fake.flatten(1).float()
    return (real.mean(0) - fake.mean(0)).abs().mean() + (real.std(0) - fake.std(0)).abs().mean()


class GANFamily(ModelFamily):
    name = "gan"
    modality = "image"
    engine_names = ("generator", "discriminator")
    metric_names = FAMILY_METRICS["gan"]
    primary_metric = "momentDistance"

    def build(self):
        shape, hidden = self.info.image_shape, self.size.hidden
        return {
            "generator": Generator(shape, hidden, self.size.latent_dim, self.num_classes),
            "discriminator": Discriminator(shape, hidden, self.num_classes),
        }

    def _noise(self, count: int, generator: torch.Generator) -> torch.Tensor:
        return self.to_compute(randn((count, self.size.latent_dim), generator))

    def train_micro_step(self, engines, batch, generator):
        g_engine, d_engine = engines["generator"], engines["discriminator"]
        labels = self.labels_of(batch)
        real = self.to_compute(batch["image"])
        count = real.shape[0]

        # Discriminator: real -> 1, fake -> 0. The fake batch is detached so no generator grads.
        with torch.no_grad():
            fake = g_engine(self._noise(count, generator), labels)
        d_logits = torch.cat([d_engine(real, labels), d_engine(fake, labels)]).float()
        d_targets = torch.cat([torch.ones_like(d_logits[:count]), torch.zeros_like(d_logits[count:])])
        d_loss = F.binary_cross_entropy_with_logits(d_logits, d_targets)
        d_engine.backward(d_loss)
        d_engine.step()

        # Generator (non-saturating loss): make the discriminator call fakes real. The
        # discriminator's parameters are frozen for this pass so its engine does not
        # accumulate (and later apply) gradients from the generator's objective.
        d_parameters = list(d_engine.module.parameters())
        for parameter in d_parameters:
            parameter.requires_grad_(False)
        try:
            fake = g_engine(self._noise(count, generator), labels)
            g_logits = d_engine(fake, labels).float()
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
            g_engine.backward(g_loss)
            g_engine.step()
        finally:
            for parameter in d_parameters:
                parameter.requires_grad_(True)
        g_loss, d_loss = g_loss.detach(), d_loss.detach()
        return {"loss": g_loss + d_loss, "generatorLoss": g_loss, "discriminatorLoss": d_loss}

    @torch.no_grad()
    def evaluate(self, modules, batch, generator):
        g, d = modules["generator"], modules["discriminator"]
        labels = self.labels_of(batch)
        real = self.to_compute(batch["image"])
        count = real.shape[0]
        fake = g(self._noise(count, generator), labels)
        real_logits, fake_logits = d(real, labels).float(), d(fake, labels).float()
        ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, ones, reduction="sum")
                        + F.binary_cross_entropy_with_logits(fake_logits, zeros, reduction="sum"))
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, ones, reduction="sum")
        n = float(count)
        # Batch statistic: weighted by batch size, so the aggregate is a mean over batches.
        distance = moment_distance(batch["image"], fake)
        return {
            "loss": (g_loss + d_loss, n),
            "generatorLoss": (g_loss, n),
            "discriminatorLoss": (d_loss, n),
            "momentDistance": (distance * n, n),
        }

    def serving(self, modules) -> ServingSpec:
        g = modules["generator"]
        noise = TensorSpec("noise", "TYPE_FP32", (self.size.latent_dim,))
        image = TensorSpec("image", "TYPE_FP32", tuple(self.info.image_shape))
        device = module_device(g)
        example = torch.randn((2, self.size.latent_dim), generator=torch.Generator(device).manual_seed(0), device=device)
        if self.num_classes > 0:
            return ServingSpec(_GeneratorServing(g), [noise, TensorSpec("label", "TYPE_INT64", (1,))], [image],
                               (example, torch.zeros((2, 1), dtype=torch.long, device=device)))
        return ServingSpec(_UnconditionalGeneratorServing(g), [noise], [image], (example,))

    @torch.no_grad()
    def generate(self, modules, count, generator) -> dict[str, Any]:
        g = modules["generator"]
        labels = sample_labels(self.num_classes, count, generator.device)
        noise = randn((count, self.size.latent_dim), generator)
        return {"images": g(noise.to(parameter_dtype(g)), labels).float(), "labels": labels}
