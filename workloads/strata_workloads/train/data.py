"""Training data: versioned dataset directories, plain files, tokenisation and sharded sampling.

Sources (``data.path``):

* a versioned dataset directory (``manifest.json`` + sharded Parquet, see
  :mod:`strata_workloads.data.layout`): text or image modality, optional labels;
* a plain ``.txt`` file (or a directory of them) for quick starts: the bytes are cut into
  windows of ``contextLength + 1`` tokens;
* a plain ``.npy`` file of images ``[N, C, H, W]`` scaled to [-1, 1], with labels in a
  sibling ``<name>.labels.npy`` when present.

The whole split is held in memory as tensors: the reference models train on small data, and
it keeps sampling exact and resumable. Each rank reads only the examples the
:class:`ShardedSampler` assigns to it, so ranks see disjoint data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from strata_workloads.data import layout
from strata_workloads.train.config import IMAGE_FAMILIES, ConfigError, TrainConfig

# Byte-level tokenizer: ids 0..255 are bytes, then three specials. No vocabulary file to ship.
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB_SIZE = 259


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(token_ids: list[int]) -> str:
    return bytes(t for t in token_ids if 0 <= t < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DataInfo:
    """What the models need to know about the data."""

    modality: str  # "text" | "image"
    num_classes: int
    dataset_name: str
    dataset_version: str
    vocab_size: int = VOCAB_SIZE
    image_shape: tuple[int, int, int] | None = None


@dataclass
class Split:
    """One split held as tensors; ``tensors`` share the first dimension."""

    tensors: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def batch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return {name: tensor.index_select(0, index) for name, tensor in self.tensors.items()}


@dataclass
class TrainingData:
    info: DataInfo
    train: Split
    validation: Split


def text_examples(texts: list[str], context_length: int) -> dict[str, torch.Tensor]:
    """One example per document: BOS + bytes + EOS, truncated/padded to contextLength + 1."""
    width = context_length + 1
    tokens = torch.full((len(texts), width), PAD_ID, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = ([BOS_ID] + encode(text) + [EOS_ID])[:width]
        tokens[row, : len(ids)] = torch.as_tensor(ids)
    return {"tokens": tokens, "mask": tokens != PAD_ID}


def packed_examples(texts: list[str], context_length: int) -> dict[str, torch.Tensor]:
    """Documents joined as BOS text EOS BOS text EOS ... and cut into full windows.

    Every token is real (no padding), so no compute goes to padding; the tail that does not
    fill a window is dropped. ``segments`` numbers the documents within each window from 0
    (a window that starts mid-document starts with that document's remainder as segment 0):
    what document-masked attention and per-document positions need.
    """
    width = context_length + 1
    pieces, lengths = [], []
    for text in texts:
        ids = [BOS_ID] + encode(text) + [EOS_ID]
        pieces.append(torch.as_tensor(ids, dtype=torch.long))
        lengths.append(len(ids))
    total = sum(lengths)
    count = total // width
    if count == 0:
        raise ConfigError(f"data.packing: the documents hold {total} tokens, fewer than one window of {width}")
    stream = torch.cat(pieces)[: count * width]
    tokens = stream.view(count, width)
    starts = tokens == BOS_ID
    # A document starts at each BOS except at a window's first position, where the count is 0 anyway.
    segments = torch.cumsum(starts.long(), dim=1) - starts[:, :1].long()
    return {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool), "segments": segments}


def document_positions(segments: torch.Tensor) -> torch.Tensor:
    """Position of each token within its document's part of the window: 0 at every document start."""
    length = segments.shape[1]
    index = torch.arange(length, device=segments.device).expand_as(segments)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    start_index = torch.where(starts, index, torch.zeros_like(index))
    return index - torch.cummax(start_index, dim=1).values


def stream_examples(text: str, context_length: int) -> dict[str, torch.Tensor]:
    """Plain text: consecutive non-overlapping windows of the byte stream."""
    ids = torch.as_tensor(encode(text), dtype=torch.long)
    width = context_length + 1
    count = len(ids) // width
    if count == 0:
        raise ConfigError(f"data.path: text has {len(ids)} bytes, fewer than one window of {width}")
    tokens = ids[: count * width].view(count, width)
    return {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}


def _split_off(tensors: dict[str, torch.Tensor], fraction: float, seed: int) -> tuple[Split, Split]:
    count = next(iter(tensors.values())).shape[0]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held_out = max(1, int(round(count * fraction))) if fraction > 0 else 0
    if count - held_out < 1:
        raise ConfigError(f"data.path: {count} examples are too few to hold out a validation split")
    val_index, train_index = order[:held_out], order[held_out:]
    train = Split({k: v.index_select(0, train_index) for k, v in tensors.items()})
    # Without a held-out fraction, validate on the training data (still a useful signal).
    validation = Split({k: v.index_select(0, val_index) for k, v in tensors.items()}) if held_out else train
    return train, validation


def _split_documents(texts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = max(1, int(round(len(texts) * fraction))) if fraction > 0 else 0
    if len(texts) - held_out < 1:
        raise ConfigError(f"data.path: {len(texts)} documents are too few to hold out a validation split")
    train = [texts[i] for i in order[held_out:]]
    return train, ([texts[i] for i in order[:held_out]] if held_out else train)


def _load_dataset_directory(config: TrainConfig, root: Path) -> TrainingData:
    manifest = layout.read_manifest(root)
    wants_images = config.model.family in IMAGE_FAMILIES
    if manifest.modality != ("image" if wants_images else "text"):
        raise ConfigError(
            f"data.path: the {config.model.family} family needs "
            f"{'an image' if wants_images else 'a text'} dataset, {root} is {manifest.modality}"
        )
    splits: dict[str, Split] = {}
    texts: dict[str, list[str]] = {}
    for role, split_name in (("train", config.data.train_split), ("validation", config.data.validation_split)):
        if split_name not in manifest.splits:
            if role == "validation":
                continue
            raise ConfigError(f"data.trainSplit: {root} has no split {split_name!r} (has {sorted(manifest.splits)})")
        table = layout.read_split(root, split_name, manifest=manifest)
        if manifest.modality == "text" and config.data.packing:
            texts[role] = table.column("text").to_pylist()
            continue  # packed below, once the validation documents are known
        if manifest.modality == "text":
            tensors = text_examples(table.column("text").to_pylist(), config.model.size.context_length)
        else:
            flat = np.asarray(table.column("image").combine_chunks().flatten(), dtype=np.float32)
            tensors = {"image": torch.from_numpy(flat.reshape(-1, *manifest.image_shape).copy())}
        if "label" in table.column_names:
            tensors["label"] = torch.as_tensor(table.column("label").to_numpy().copy(), dtype=torch.long)
        splits[role] = Split(tensors)
    if texts:
        # Hold out whole documents (not windows), so no document is in both splits.
        if "validation" not in texts:
            texts["train"], texts["validation"] = _split_documents(
                texts["train"], config.data.validation_fraction, config.hyperparameters.seed)
        for role, documents in texts.items():
            splits[role] = Split(packed_examples(documents, config.model.size.context_length))
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_off(
            splits["train"].tensors, config.data.validation_fraction, config.hyperparameters.seed
        )
    info = DataInfo(
        modality=manifest.modality,
        num_classes=manifest.num_classes,
        dataset_name=manifest.name,
        dataset_version=manifest.version,
        image_shape=tuple(manifest.image_shape) if manifest.image_shape else None,
    )
    return TrainingData(info, splits["train"], splits["validation"])


def _load_plain_files(config: TrainConfig, path: Path) -> TrainingData:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    wants_images = config.model.family in IMAGE_FAMILIES
    if wants_images:
        arrays = [f for f in files if f.suffix == ".npy" and not f.name.endswith(".labels.npy")]
        if not arrays:
            raise ConfigError(f"data.path: {path} has no .npy image file for the {config.model.family} family")
        images = np.concatenate([np.load(f).astype(np.float32) for f in arrays])
        if images.ndim != 4:
            raise ConfigError(f"data.path: images must be [N, C, H, W], got shape {list(images.shape)}")
        tensors = {"image": torch.from_numpy(images)}
        label_files = [f.with_name(f.stem + ".labels.npy") for f in arrays]
        if all(f.exists() for f in label_files):
            tensors["label"] = torch.from_numpy(np.concatenate([np.load(f) for f in label_files]).astype(np.int64))
        image_shape = tuple(int(s) for s in images.shape[1:])
    else:
        texts = [f.read_text(encoding="utf-8") for f in files if f.suffix == ".txt"]
        if not texts:
            raise ConfigError(f"data.path: {path} has no .txt file for the transformer family")
        if config.data.packing:
            # Each file is a document: separators between files, and document attention can
            # keep them apart.
            tensors = packed_examples(texts, config.model.size.context_length)
        else:
            tensors = stream_examples("\n".join(texts), config.model.size.context_length)
        image_shape = None
    num_classes = int(tensors["label"].max()) + 1 if "label" in tensors else 0
    train, validation = _split_off(tensors, config.data.validation_fraction, config.hyperparameters.seed)
    info = DataInfo(
        modality="image" if wants_images else "text",
        num_classes=num_classes,
        dataset_name=path.name,
        dataset_version="plain-files",
        image_shape=image_shape,
    )
    return TrainingData(info, train, validation)


def load_training_data(config: TrainConfig) -> TrainingData:
    path = Path(config.data.path)
    fmt = config.data.format
    if fmt == "dataset" or (fmt == "auto" and layout.is_dataset_directory(path)):
        try:
            return _load_dataset_directory(config, path)
        except layout.DatasetLayoutError as error:
            raise ConfigError(f"data.path: {error}") from None
    return _load_plain_files(config, path)


class ShardedSampler:
    """Deterministic, resumable, rank-disjoint batches.

    Epoch ``e`` is a permutation of the dataset seeded by ``seed + e``; rank ``r`` of ``w`` takes
    positions ``r, r + w, ...`` of it (dropping the tail so every rank has the same number of
    batches and collective calls stay in lock-step). The only state is the number of batches
    consumed, which the trainer stores in checkpoints: resuming replays the exact sequence.
    """

    def __init__(self, dataset_size: int, batch_size: int, rank: int, world_size: int, seed: int):
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.batches_per_epoch = dataset_size // (world_size * batch_size)
        if self.batches_per_epoch < 1:
            raise ConfigError(
                f"deepspeed.microBatchSize: {batch_size} x {world_size} ranks exceeds the {dataset_size} training examples"
            )
        self.consumed_batches = 0

    def epoch_indices(self, epoch: int) -> list[int]:
        order = torch.randperm(self.dataset_size, generator=torch.Generator().manual_seed(self.seed + epoch))
        usable = self.batches_per_epoch * self.batch_size * self.world_size
        return order[:usable][self.rank :: self.world_size].tolist()

    @property
    def epoch(self) -> int:
        return self.consumed_batches // self.batches_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            epoch, position = divmod(self.consumed_batches, self.batches_per_epoch)
            indices = self.epoch_indices(epoch)
            for batch in range(position, self.batches_per_epoch):
                self.consumed_batches += 1
                yield indices[batch * self.batch_size : (batch + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"consumedBatches": self.consumed_batches, "worldSize": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("worldSize", self.world_size) != self.world_size:
            # A different world size reshuffles the assignment; keep the position in examples.
            examples = state["consumedBatches"] * state["worldSize"]
            self.consumed_batches = examples // self.world_size
        else:
            self.consumed_batches = int(state["consumedBatches"])


def validation_batches(split: Split, batch_size: int, rank: int, world_size: int, max_batches: int) -> list[list[int]]:
    """Fixed (unshuffled) validation batches for this rank: the same every validation.

    Every rank gets the same number of batches (the tail that does not divide evenly is
    dropped) because under ZeRO-3 each forward pass is a collective operation.
    """
    per_rank_count = len(split) // world_size
    if per_rank_count < 1:
        raise ConfigError(f"data.path: the validation split has {len(split)} examples, fewer than the {world_size} ranks")
    per_rank = list(range(rank, per_rank_count * world_size, world_size))
    count = min(max_batches, math.ceil(per_rank_count / batch_size))
    return [per_rank[i * batch_size : (i + 1) * batch_size] for i in range(count)]
