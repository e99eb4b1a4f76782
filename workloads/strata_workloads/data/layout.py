"""The versioned dataset directory layout.

The Dataset pipeline writes exactly this layout and the trainer reads it; both go through
:func:`write_dataset` and :func:`read_manifest` / :func:`read_split` so the two never drift.

Layout of one dataset version::

    <root>/
      manifest.json                       # written last: a directory without it is incomplete
      <split>/part-00000.parquet          # sharded Parquet, one directory per split
      <split>/part-00001.parquet
      ...

``manifest.json`` (camelCase keys, like the Kubernetes resources that point at it)::

    {
      "formatVersion": 1,
      "name": "tiny-text", "version": "v3", "createdAt": "2024-05-01T12:00:00Z",
      "modality": "text" | "image" | "audio",
      "columns": [{"name": "text", "type": "string"}, {"name": "label", "type": "int64"}],
      "imageShape": [1, 8, 8],            # image datasets only: C, H, W
      "audioShape": [80, 101],            # audio datasets only: [samples] or [nMels, frames]
      "sampleRate": 16000,                # audio datasets only
      "numClasses": 2,                    # 0 when there is no "label" column
      "splits": {
        "train": {"rows": 96, "shards": [{"path": "train/part-00000.parquet",
                                            "rows": 64, "bytes": 2048, "sha256": "..."}],
                  "statistics": {...}},
        "validation": {...}
      },
      "pipeline": {...}                   # written by the Dataset pipeline (PipelineReport): lineage,
                                          # counts per step, statistics, reference statistics,
                                          # tokenizer.json and quarantine.jsonl paths
    }

Columns by modality: ``text`` datasets have a ``text`` string column, ``image`` datasets an
``image`` column holding the flattened C*H*W float32 pixels scaled to [-1, 1], ``audio``
datasets an ``audio`` column holding each clip flattened (float32 samples in [-1, 1], or a
natural-log mel spectrogram, nMels x frames). Any may have an int64 ``label`` column in ``[0, numClasses)`` used for conditioning. Text versions made by the
Dataset pipeline also have ``tokens`` (list<int32>: ids from the version's ``tokenizer.json``,
or UTF-8 bytes for a byte tokenizer) and ``synthetic`` (bool: made by augmentation).

Per-split statistics: ``text`` -> rows, totalBytes, meanBytes, maxBytes; ``image`` -> rows,
pixelMean, pixelStd; ``audio`` -> rows, valueMean, valueStd; with labels also labelCounts. They let consumers size things (context
length, normalisation) without reading the shards.

This module needs pyarrow but not torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

FORMAT_VERSION = 1
MANIFEST_FILENAME = "manifest.json"

Modality = Literal["text", "image", "audio"]

# The Arrow types each well-known column must have; written into the manifest's "columns".
_COLUMN_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "image": pa.list_(pa.float32()),
    "audio": pa.list_(pa.float32()),
    "label": pa.int64(),
}


class DatasetLayoutError(ValueError):
    """A dataset directory does not follow the layout; the message names the file and the problem."""


class _CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ColumnSpec(_CamelModel):
    name: str
    type: str


class ShardInfo(_CamelModel):
    path: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str


class SplitInfo(_CamelModel):
    rows: int = Field(ge=0)
    shards: list[ShardInfo]
    statistics: dict[str, Any] = Field(default_factory=dict)


class StepCounts(_CamelModel):
    """Records entering and leaving one pipeline step (``records_in - records_out`` were removed)."""

    step: str
    records_in: int = Field(ge=0)
    records_out: int = Field(ge=0)


class SourceLineage(_CamelModel):
    source: str  # the path or URL as configured
    sha256: str  # of the bytes read, in order
    bytes: int = Field(ge=0)
    records: int = Field(ge=0)


class Lineage(_CamelModel):
    sources: list[SourceLineage]
    spec_hash: str
    input_hash: str
    parent_version: str | None = None


class PipelineReport(_CamelModel):
    """What the Dataset pipeline did to make this version; absent in hand-written datasets."""

    lineage: Lineage
    steps: list[StepCounts]
    statistics: dict[str, Any] = Field(default_factory=dict)
    reference_statistics: dict[str, Any] = Field(default_factory=dict)
    tokenizer: str | None = None  # path of tokenizer.json relative to the version root
    quarantine: str | None = None  # path of the quarantined records (JSON lines) relative to the root
    quarantined: int = Field(default=0, ge=0)


class DatasetManifest(_CamelModel):
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    created_at: str
    modality: Modality
    columns: list[ColumnSpec]
    image_shape: list[int] | None = None
    # Audio datasets: each record's shape ([samples] for waveforms, [nMels, frames] for
    # spectrograms) and the sample rate it was brought to.
    audio_shape: list[int] | None = None
    sample_rate: int | None = None
    num_classes: int = Field(default=0, ge=0)
    splits: dict[str, SplitInfo]
    pipeline: PipelineReport | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> "DatasetManifest":
        names = {column.name for column in self.columns}
        required = self.modality
        if required not in names:
            raise ValueError(f"a {self.modality} dataset needs a '{required}' column, has {sorted(names)}")
        if self.modality == "image":
            if not self.image_shape or len(self.image_shape) != 3 or min(self.image_shape) < 1:
                raise ValueError(f"imageShape must be [C, H, W] with positive sizes, got {self.image_shape}")
        if self.modality == "audio":
            if not self.audio_shape or len(self.audio_shape) not in (1, 2) or min(self.audio_shape) < 1:
                raise ValueError(f"audioShape must be [samples] or [nMels, frames] with positive sizes, got {self.audio_shape}")
            if not self.sample_rate or self.sample_rate < 1:
                raise ValueError("an audio dataset needs its sampleRate")
        if self.num_classes > 0 and "label" not in names:
            raise ValueError("numClasses > 0 needs a 'label' column")
        if not self.splits:
            raise ValueError("splits must name at least one split")
        return self

    @property
    def feature_size(self) -> int:
        """Number of floats in one flattened image (image datasets)."""
        assert self.image_shape is not None
        return math.prod(self.image_shape)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_table(rows: pa.Table | Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]]) -> pa.Table:
    if isinstance(rows, pa.Table):
        table = rows
    elif isinstance(rows, Mapping):
        table = pa.table(dict(rows))
    else:
        table = pa.Table.from_pylist(list(rows))
    # Cast well-known columns to their canonical types so readers can rely on them.
    fields = []
    for field in table.schema:
        wanted = _COLUMN_TYPES.get(field.name, field.type)
        fields.append(pa.field(field.name, wanted))
    return table.cast(pa.schema(fields))


class _SplitStatistics:
    """Per-split statistics accumulated shard by shard, so a writer never holds a whole split."""

    def __init__(self, modality: Modality):
        self.modality = modality
        self.rows = 0
        self.total_bytes = 0
        self.max_bytes = 0
        self.pixel_count = 0
        self.pixel_sum = 0.0
        self.pixel_sum_squares = 0.0
        self.label_counts: dict[int, int] | None = None

    def add(self, table: pa.Table) -> None:
        self.rows += table.num_rows
        if self.modality == "text":
            lengths = pc.binary_length(table.column("text").cast(pa.binary()))
            self.total_bytes += int(pc.sum(lengths).as_py() or 0)
            self.max_bytes = max(self.max_bytes, int(pc.max(lengths).as_py() or 0))
        else:
            import numpy as np

            pixels = np.asarray(table.column(self.modality).combine_chunks().flatten(), dtype=np.float64)
            self.pixel_count += pixels.size
            self.pixel_sum += float(pixels.sum())
            self.pixel_sum_squares += float((pixels * pixels).sum())
        if "label" in table.column_names:
            self.label_counts = self.label_counts or {}
            for label in table.column("label").to_pylist():
                self.label_counts[label] = self.label_counts.get(label, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"rows": self.rows}
        if self.modality == "text":
            stats["totalBytes"] = self.total_bytes
            stats["meanBytes"] = self.total_bytes / self.rows if self.rows else 0.0
            stats["maxBytes"] = self.max_bytes
        else:
            mean = self.pixel_sum / self.pixel_count if self.pixel_count else 0.0
            variance = self.pixel_sum_squares / self.pixel_count - mean * mean if self.pixel_count else 0.0
            prefix = "pixel" if self.modality == "image" else "value"
            stats[f"{prefix}Mean"] = mean
            stats[f"{prefix}Std"] = math.sqrt(max(variance, 0.0))
        if self.label_counts is not None:
            stats["labelCounts"] = {str(label): count for label, count in sorted(self.label_counts.items())}
        return stats


class DatasetWriter:
    """Write one dataset version shard by shard: ``add`` tables as they come, then ``commit``.

    Everything goes into a temporary sibling directory (``staging``, where callers may also put
    extra files such as a tokenizer) that is renamed into place only by ``commit``, so a reader
    never sees a half-written version. ``abort`` (or leaving the ``with`` block by an exception)
    removes it.
    """

    def __init__(self, root: str | os.PathLike[str], *, modality: Modality, rows_per_shard: int = 10_000,
                 image_shape: Sequence[int] | None = None, audio_shape: Sequence[int] | None = None,
                 sample_rate: int | None = None):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.root = Path(root)
        if (self.root / MANIFEST_FILENAME).exists():
            raise DatasetLayoutError(f"{self.root}: a dataset version already exists here; versions are immutable")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        self.modality: Modality = modality
        self.rows_per_shard = rows_per_shard
        self.image_shape = list(image_shape) if image_shape is not None else None
        self.audio_shape = list(audio_shape) if audio_shape is not None else None
        self.sample_rate = sample_rate
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._shards: dict[str, list[ShardInfo]] = {}
        self._statistics: dict[str, _SplitStatistics] = {}

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()

    @property
    def splits(self) -> list[str]:
        """Splits that have received rows so far."""
        return list(self._schemas)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def add(self, split: str, rows: pa.Table | Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]]) -> None:
        table = _as_table(rows)
        shape = self.image_shape if self.modality == "image" else self.audio_shape if self.modality == "audio" else None
        if shape is not None and table.num_rows:
            lengths = set(pc.list_value_length(table.column(self.modality)).to_pylist())
            if lengths != {math.prod(shape)}:
                raise DatasetLayoutError(
                    f"split {split}: {self.modality} rows must have {math.prod(shape)} values, got lengths {sorted(lengths)}"
                )
        if split not in self._schemas:
            self._schemas[split] = table.schema
            self._pending[split], self._pending_rows[split], self._shards[split] = [], 0, []
            self._statistics[split] = _SplitStatistics(self.modality)
            (self.staging / split).mkdir(parents=True)
        elif table.schema != self._schemas[split]:
            raise DatasetLayoutError(f"split {split}: columns {table.schema.names} differ from earlier rows")
        self._pending[split].append(table)
        self._pending_rows[split] += table.num_rows
        while self._pending_rows[split] >= self.rows_per_shard:
            self._flush(split, final=False)

    def _flush(self, split: str, *, final: bool) -> None:
        pending = pa.concat_tables(self._pending[split]) if self._pending[split] else self._schemas[split].empty_table()
        count = min(self.rows_per_shard, pending.num_rows)
        if count == 0 and (self._shards[split] or not final):
            return
        shard_table = pending.slice(0, count)
        rest = pending.slice(count)
        self._pending[split] = [rest] if rest.num_rows else []
        self._pending_rows[split] = rest.num_rows
        relative = f"{split}/part-{len(self._shards[split]):05d}.parquet"
        shard_path = self.staging / relative
        pq.write_table(shard_table, shard_path)
        self._statistics[split].add(shard_table)
        self._shards[split].append(
            ShardInfo(path=relative, rows=count, bytes=shard_path.stat().st_size, sha256=_sha256(shard_path))
        )

    def commit(self, *, name: str, version: str, num_classes: int = 0,
               pipeline: PipelineReport | None = None) -> DatasetManifest:
        """Write the last shards and the manifest, then move the version into place."""
        try:
            columns: list[ColumnSpec] | None = None
            split_infos: dict[str, SplitInfo] = {}
            for split in self._schemas:
                while self._pending_rows[split] or not self._shards[split]:
                    self._flush(split, final=True)
                split_columns = [ColumnSpec(name=f.name, type=str(f.type)) for f in self._schemas[split]]
                if columns is None:
                    columns = split_columns
                elif split_columns != columns:
                    raise DatasetLayoutError(f"split {split}: columns differ from the first split")
                stats = self._statistics[split]
                split_infos[split] = SplitInfo(rows=stats.rows, shards=self._shards[split], statistics=stats.to_dict())
            manifest = DatasetManifest(
                name=name,
                version=version,
                created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                modality=self.modality,
                columns=columns or [],
                image_shape=self.image_shape,
                audio_shape=self.audio_shape,
                sample_rate=self.sample_rate,
                num_classes=num_classes,
                splits=split_infos,
                pipeline=pipeline,
            )
            (self.staging / MANIFEST_FILENAME).write_text(manifest.to_json())
            if self.root.exists():
                self.root.rmdir()  # only an empty placeholder may be replaced
            self.staging.rename(self.root)
            return manifest
        except BaseException:
            self.abort()
            raise


def write_dataset(
    root: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    modality: Modality,
    splits: Mapping[str, pa.Table | Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]]],
    rows_per_shard: int = 10_000,
    image_shape: Sequence[int] | None = None,
    num_classes: int = 0,
) -> DatasetManifest:
    """Write one dataset version under ``root`` from in-memory splits and return its manifest."""
    with DatasetWriter(root, modality=modality, rows_per_shard=rows_per_shard, image_shape=image_shape) as writer:
        for split_name, rows in splits.items():
            writer.add(split_name, rows)
        return writer.commit(name=name, version=version, num_classes=num_classes)


def is_dataset_directory(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST_FILENAME).is_file()


def read_manifest(root: str | os.PathLike[str]) -> DatasetManifest:
    """Read and validate ``<root>/manifest.json``; raise :class:`DatasetLayoutError` naming the problem."""
    path = Path(root) / MANIFEST_FILENAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetLayoutError(f"{path}: no manifest; not a dataset directory or not completely written") from None
    except json.JSONDecodeError as error:
        raise DatasetLayoutError(f"{path}: not valid JSON ({error})") from None
    try:
        manifest = DatasetManifest.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or '<root>'}: {item['msg']}" for item in error.errors()
        )
        raise DatasetLayoutError(f"{path}: {problems}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise DatasetLayoutError(f"{path}: formatVersion {manifest.format_version} is not supported (expected {FORMAT_VERSION})")
    return manifest


def read_split(
    root: str | os.PathLike[str], split: str, *, manifest: DatasetManifest | None = None, verify_checksums: bool = False
) -> pa.Table:
    """Read all shards of one split into a single table, checking row counts (and optionally sha256)."""
    root = Path(root)
    manifest = manifest or read_manifest(root)
    if split not in manifest.splits:
        raise DatasetLayoutError(f"{root}: no split '{split}' (has {sorted(manifest.splits)})")
    tables = []
    for shard in manifest.splits[split].shards:
        shard_path = root / shard.path
        if not shard_path.is_file():
            raise DatasetLayoutError(f"{shard_path}: shard listed in the manifest is missing")
        if verify_checksums and _sha256(shard_path) != shard.sha256:
            raise DatasetLayoutError(f"{shard_path}: sha256 does not match the manifest")
        table = pq.read_table(shard_path)
        if table.num_rows != shard.rows:
            raise DatasetLayoutError(f"{shard_path}: has {table.num_rows} rows, manifest says {shard.rows}")
        tables.append(table)
    return pa.concat_tables(tables) if tables else pa.table({})
