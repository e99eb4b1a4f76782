"""Learning-rate schedule: linear warmup, then cosine or linear decay to ``minLearningRate``."""

from __future__ import annotations

import math

from strata_workloads.train.config import Hyperparameters


def learning_rate_at(step: int, hp: Hyperparameters) -> float:
    """Learning rate for the optimizer step with 0-based index ``step``."""
    if hp.warmup_steps and step < hp.warmup_steps:
        return hp.learning_rate * (step + 1) / hp.warmup_steps
    if hp.decay == "constant":
        return hp.learning_rate
    decay_steps = max(1, hp.max_steps - hp.warmup_steps)
    progress = min(1.0, (step - hp.warmup_steps) / decay_steps)
    if hp.decay == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0 - progress
    return hp.min_learning_rate + (hp.learning_rate - hp.min_learning_rate) * factor


def lr_multiplier(hp: Hyperparameters):
    """For ``torch.optim.lr_scheduler.LambdaLR``, whose base learning rate is ``learningRate``."""
    return lambda step: learning_rate_at(step, hp) / hp.learning_rate
