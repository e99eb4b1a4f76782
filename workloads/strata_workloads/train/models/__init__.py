"""Reference model families: decoder-only transformer, VAE, GAN, DDPM diffusion."""

from __future__ import annotations

from strata_workloads.train.config import TrainConfig
from strata_workloads.train.data import DataInfo
from strata_workloads.train.models.base import ModelFamily, ServingSpec, TensorSpec
from strata_workloads.train.models.diffusion import DiffusionFamily
from strata_workloads.train.models.gan import GANFamily
from strata_workloads.train.models.transformer import TransformerFamily
from strata_workloads.train.models.vae import VAEFamily

FAMILY_CLASSES: dict[str, type[ModelFamily]] = {
    "transformer": TransformerFamily,
    "vae": VAEFamily,
    "gan": GANFamily,
    "diffusion": DiffusionFamily,
}


def make_family(config: TrainConfig, info: DataInfo) -> ModelFamily:
    return FAMILY_CLASSES[config.model.family](config, info)


__all__ = ["FAMILY_CLASSES", "ModelFamily", "ServingSpec", "TensorSpec", "make_family"]
