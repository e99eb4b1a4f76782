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
      "modality": "text" | "image",
      "columns": [{"name": "text", "type": "string"}, {"name": "label", "type": "int64"}],
      "imageShape": [1, 8, 8],            # image datasets only: C, H, W
      "numClasses": 2,                    # 0 when there is no "label" column
      "splits": {
        "train": {"rows": 96, "shards": [{"path": "train/part-00000.parquet",
                                            "rows": 64, "bytes": 2048, "sha256": "..."}],
                  "statistics": {...}},
        "validation": {...}
      }
    }

Columns by modality: ``text`` datasets have a ``text`` string column, ``image`` datasets an
``image`` column holding the flattened C*H*W float32 pixels scaled to [-1, 1]. Either may have
an int64 ``label`` column in ``[0, numClasses)`` used for conditioning.

Per-split statistics: ``text`` -> rows, totalBytes, meanBytes, maxBytes; ``image`` -> rows,
pixelMean, pixelStd; with labels also labelCounts. They let consumers size things (context
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

Modality = Literal["text", "image"]

# The Arrow types each well-known column must have; written into the manifest's "columns".
_COLUMN_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "image": pa.list_(pa.float32()),
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


class DatasetManifest(_CamelModel):
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    created_at: str
    modality: Modality
    columns: list[ColumnSpec]
    image_shape: list[int] | None = None
    num_classes: int = Field(default=0, ge=0)
    splits: dict[str, SplitInfo]

    @model_validator(mode="after")
    def _check_consistency(self) -> "DatasetManifest":
        names = {column.name for column in self.columns}
        required = "text" if self.modality == "text" else "image"
        if required not in names:
            raise ValueError(f"a {self.modality} dataset needs a '{required}' column, has {sorted(names)}")
        if self.modality == "image":
            if not self.image_shape or len(self.image_shape) != 3 or min(self.image_shape) < 1:
                raise ValueError(f"imageShape must be [C, H, W] with positive sizes, got {self.image_shape}")
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


def _split_statistics(table: pa.Table, modality: Modality) -> dict[str, Any]:
    stats: dict[str, Any] = {"rows": table.num_rows}
    if modality == "text":
        lengths = [len(text.encode("utf-8")) for text in table.column("text").to_pylist()]
        stats["totalBytes"] = sum(lengths)
        stats["meanBytes"] = (sum(lengths) / len(lengths)) if lengths else 0.0
        stats["maxBytes"] = max(lengths, default=0)
    else:
        import numpy as np

        pixels = np.asarray(table.column("image").combine_chunks().flatten(), dtype=np.float64)
        stats["pixelMean"] = float(pixels.mean()) if pixels.size else 0.0
        stats["pixelStd"] = float(pixels.std()) if pixels.size else 0.0
    if "label" in table.column_names:
        counts: dict[str, int] = {}
        for label in table.column("label").to_pylist():
            counts[str(label)] = counts.get(str(label), 0) + 1
        stats["labelCounts"] = dict(sorted(counts.items(), key=lambda item: int(item[0])))
    return stats


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
    """Write one dataset version under ``root`` and return its manifest.

    Shards are written into a temporary sibling directory which is renamed into place only
    when complete, so a reader never sees a half-written version.
    """
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
    root = Path(root)
    if (root / MANIFEST_FILENAME).exists():
        raise DatasetLayoutError(f"{root}: a dataset version already exists here; versions are immutable")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        split_infos: dict[str, SplitInfo] = {}
        columns: list[ColumnSpec] | None = None
        for split_name, rows in splits.items():
            table = _as_table(rows)
            if modality == "image" and image_shape is not None and table.num_rows:
                lengths = set(pc.list_value_length(table.column("image")).to_pylist())
                if lengths != {math.prod(image_shape)}:
                    raise DatasetLayoutError(
                        f"split {split_name}: image rows must have {math.prod(image_shape)} values, got lengths {sorted(lengths)}"
                    )
            split_columns = [ColumnSpec(name=f.name, type=str(f.type)) for f in table.schema]
            if columns is None:
                columns = split_columns
            elif split_columns != columns:
                raise DatasetLayoutError(f"split {split_name}: columns differ from the first split")
            (staging / split_name).mkdir(parents=True)
            shards = []
            for index, start in enumerate(range(0, max(table.num_rows, 1), rows_per_shard)):
                relative = f"{split_name}/part-{index:05d}.parquet"
                shard_path = staging / relative
                pq.write_table(table.slice(start, rows_per_shard), shard_path)
                shards.append(
                    ShardInfo(
                        path=relative,
                        rows=min(rows_per_shard, table.num_rows - start),
                        bytes=shard_path.stat().st_size,
                        sha256=_sha256(shard_path),
                    )
                )
            split_infos[split_name] = SplitInfo(
                rows=table.num_rows, shards=shards, statistics=_split_statistics(table, modality)
            )
        manifest = DatasetManifest(
            name=name,
            version=version,
            created_at=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            modality=modality,
            columns=columns or [],
            image_shape=list(image_shape) if image_shape is not None else None,
            num_classes=num_classes,
            splits=split_infos,
        )
        (staging / MANIFEST_FILENAME).write_text(manifest.to_json())
        if root.exists():
            root.rmdir()  # only an empty placeholder may be replaced
        staging.rename(root)
        return manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
