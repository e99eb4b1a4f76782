"""Small synthetic datasets in the standard layout, for tests, benchmarks and quick starts.

They are deliberately learnable in a few optimizer steps: templated sentences whose wording
depends on the label, and 8x8 images of a bright bar whose orientation is the label.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from strata_workloads.data.layout import DatasetManifest, write_dataset

_SUBJECTS = [["the cat", "a kitten", "my cat"], ["the dog", "a puppy", "our dog"]]
_VERBS = [["sat on", "slept on", "purred on"], ["ran to", "barked at", "jumped over"]]
_OBJECTS = [["the mat", "a warm rug", "the sofa"], ["the park", "a red ball", "the gate"]]


def sentences(count: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        label = rng.randrange(2)
        text = f"{rng.choice(_SUBJECTS[label])} {rng.choice(_VERBS[label])} {rng.choice(_OBJECTS[label])}."
        texts.append(text.capitalize())
        labels.append(label)
    return texts, labels


def bar_images(count: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``[count, 1, size, size]`` in [-1, 1]: label 0 a horizontal bar, label 1 a vertical bar."""
    rng = np.random.default_rng(seed)
    images = np.full((count, 1, size, size), -1.0, dtype=np.float32)
    labels = rng.integers(0, 2, size=count)
    positions = rng.integers(1, size - 1, size=count)
    for index, (label, position) in enumerate(zip(labels, positions, strict=True)):
        if label == 0:
            images[index, 0, position, :] = 1.0
        else:
            images[index, 0, :, position] = 1.0
    images += rng.normal(0.0, 0.05, size=images.shape).astype(np.float32)
    return np.clip(images, -1.0, 1.0), labels.astype(np.int64)


def write_text_dataset(root: str | Path, train_rows: int = 256, validation_rows: int = 64,
                       rows_per_shard: int = 100, version: str = "v1") -> DatasetManifest:
    train_texts, train_labels = sentences(train_rows, seed=1)
    val_texts, val_labels = sentences(validation_rows, seed=2)
    return write_dataset(
        root, name="synthetic-text", version=version, modality="text", num_classes=2,
        rows_per_shard=rows_per_shard,
        splits={"train": {"text": train_texts, "label": train_labels},
                "validation": {"text": val_texts, "label": val_labels}},
    )


def write_image_dataset(root: str | Path, train_rows: int = 256, validation_rows: int = 64,
                        rows_per_shard: int = 100, version: str = "v1", size: int = 8) -> DatasetManifest:
    def columns(count: int, seed: int) -> dict:
        images, labels = bar_images(count, seed, size)
        return {"image": [row.ravel().tolist() for row in images], "label": labels.tolist()}

    return write_dataset(
        root, name="synthetic-bars", version=version, modality="image", num_classes=2,
        image_shape=(1, size, size), rows_per_shard=rows_per_shard,
        splits={"train": columns(train_rows, seed=1), "validation": columns(validation_rows, seed=2)},
    )
