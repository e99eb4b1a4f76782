"""Variational autoencoder: Gaussian encoder, reparameterisation, reconstruction + KL, prior sampling."""

from __future__ import annotations

import math
from typing import Any

import torch
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


class ConditionalVAE(nn.Module):
    """MLP encoder/decoder over flattened images; labels (if any) condition both halves."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int, latent_dim: int, num_classes: int):
        super().__init__()
        self.image_shape = image_shape
        self.latent_dim = latent_dim
        pixels = math.prod(image_shape)
        self.label_embedding = nn.Embedding(num_classes, hidden) if num_classes > 0 else None
        self.encoder_in = nn.Linear(pixels, hidden)
        self.encoder = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.to_mean = nn.Linear(hidden, latent_dim)
        self.to_log_variance = nn.Linear(hidden, latent_dim)
        self.decoder_in = nn.Linear(latent_dim, hidden)
        self.decoder = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, pixels))

    def _condition(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_embedding is None:
            return h
        return h + self.label_embedding(labels.view(-1)).to(h.dtype)

    def encode(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self._condition(self.encoder_in(images.flatten(1)), labels))
        return self.to_mean(h), self.to_log_variance(h).clamp(-10, 10)

    def decode(self, latent: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self._condition(self.decoder_in(latent), labels)
        return torch.tanh(self.decoder(h)).view(-1, *self.image_shape)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None, noise: torch.Tensor):
        mean, log_variance = self.encode(images, labels)
        latent = mean + noise * torch.exp(0.5 * log_variance)
        return self.decode(latent, labels), mean, log_variance


class _DecoderServing(nn.Module):
    def __init__(self, vae: ConditionalVAE, conditioned: bool):
        super().__init__()
        self.vae = vae
        self.conditioned = conditioned

    def forward(self, latent: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.vae)
        return self.vae.decode(latent.to(dtype), label if self.conditioned else None).float()


class _UnconditionalDecoderServing(nn.Module):
    def __init__(self, vae: ConditionalVAE):
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        dtype = parameter_dtype(self.vae)
        return self.vae.decode(latent.to(dtype), None).float()


class VAEFamily(ModelFamily):
    name = "vae"
    modality = "image"
    metric_names = FAMILY_METRICS["vae"]

    def build(self):
        return {"model": ConditionalVAE(self.info.image_shape, self.size.hidden, self.size.latent_dim, self.num_classes)}

    def _terms(self, model, batch, generator):
        images = self.to_compute(batch["image"])
        noise = self.to_compute(randn((images.shape[0], self.size.latent_dim), generator))
        reconstruction, mean, log_variance = model(images, self.labels_of(batch), noise)
        # Per-example sums (Gaussian likelihood with unit variance up to constants, and the
        # closed-form KL to N(0, I)); the loss is their batch mean: the negative ELBO.
        reconstruction_error = 0.5 * (reconstruction.float() - batch["image"]).pow(2).flatten(1).sum(1)
        mean, log_variance = mean.float(), log_variance.float()
        kl = -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(1)
        return reconstruction_error, kl

    def train_micro_step(self, engines, batch, generator):
        engine = engines["model"]
        reconstruction_error, kl = self._terms(engine, batch, generator)
        loss = (reconstruction_error + kl).mean()
        engine.backward(loss)
        engine.step()
        return {"loss": loss.detach(), "reconstruction": reconstruction_error.detach().mean(), "kl": kl.detach().mean()}

    @torch.no_grad()
    def evaluate(self, modules, batch, generator):
        reconstruction_error, kl = self._terms(modules["model"], batch, generator)
        n = float(reconstruction_error.shape[0])
        return {
            "loss": ((reconstruction_error + kl).sum(), n),
            "reconstruction": (reconstruction_error.sum(), n),
            "kl": (kl.sum(), n),
        }

    def serving(self, modules) -> ServingSpec:
        vae = modules["model"]
        latent = TensorSpec("latent", "TYPE_FP32", (self.size.latent_dim,))
        image = TensorSpec("image", "TYPE_FP32", tuple(self.info.image_shape))
        device = module_device(vae)
        example_latent = torch.randn((2, self.size.latent_dim), generator=torch.Generator(device).manual_seed(0),
                                     device=device)
        if self.num_classes > 0:
            return ServingSpec(_DecoderServing(vae, True), [latent, TensorSpec("label", "TYPE_INT64", (1,))], [image],
                               (example_latent, torch.zeros((2, 1), dtype=torch.long, device=device)))
        return ServingSpec(_UnconditionalDecoderServing(vae), [latent], [image], (example_latent,))

    @torch.no_grad()
    def generate(self, modules, count, generator) -> dict[str, Any]:
        vae = modules["model"]
        latent = randn((count, self.size.latent_dim), generator)  # sample from the prior
        labels = sample_labels(self.num_classes, count, generator.device)
        images = vae.decode(latent.to(parameter_dtype(vae)), labels).float()
        return {"images": images, "labels": labels}
