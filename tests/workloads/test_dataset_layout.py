"""The versioned dataset directory layout: what the Dataset pipeline writes and the trainer reads."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from strata_workloads.data.layout import (
    MANIFEST_FILENAME,
    DatasetLayoutError,
    read_manifest,
    read_split,
    write_dataset,
)
from strata_workloads.data.synthetic import write_image_dataset, write_text_dataset


def test_text_dataset_round_trip_with_shards_and_statistics(tmp_path):
    root = tmp_path / "text-v1"
    manifest = write_text_dataset(root, train_rows=25, validation_rows=5, rows_per_shard=10)
    assert [s.path for s in manifest.splits["train"].shards] == [
        "train/part-00000.parquet", "train/part-00001.parquet", "train/part-00002.parquet"]
    assert [s.rows for s in manifest.splits["train"].shards] == [10, 10, 5]

    raw = json.loads((root / MANIFEST_FILENAME).read_text())
    assert raw["formatVersion"] == 1 and raw["modality"] == "text" and raw["numClasses"] == 2
    assert {"name": "text", "type": "string"} in raw["columns"]

    table = read_split(root, "train", verify_checksums=True)
    assert table.num_rows == 25
    stats = raw["splits"]["train"]["statistics"]
    lengths = [len(t.encode()) for t in table.column("text").to_pylist()]
    assert stats["totalBytes"] == sum(lengths) and stats["maxBytes"] == max(lengths)
    assert sum(stats["labelCounts"].values()) == 25
    assert read_manifest(root) == manifest


def test_image_dataset_records_shape_and_pixel_statistics(tmp_path):
    manifest = write_image_dataset(tmp_path / "bars", train_rows=12, validation_rows=4)
    assert manifest.image_shape == [1, 8, 8] and manifest.feature_size == 64
    table = read_split(tmp_path / "bars", "validation")
    pixels = [v for row in table.column("image").to_pylist() for v in row]
    assert manifest.splits["validation"].statistics["pixelMean"] == pytest.approx(sum(pixels) / len(pixels), rel=1e-5)


def test_versions_are_immutable(tmp_path):
    write_text_dataset(tmp_path / "v1", train_rows=4, validation_rows=2)
    with pytest.raises(DatasetLayoutError, match="versions are immutable"):
        write_text_dataset(tmp_path / "v1", train_rows=4, validation_rows=2)


def test_a_failed_write_leaves_no_partial_version(tmp_path):
    with pytest.raises(DatasetLayoutError, match="image rows must have 64 values"):
        write_dataset(tmp_path / "broken", name="x", version="v1", modality="image", image_shape=(1, 8, 8),
                      splits={"train": {"image": [[0.0] * 63]}})
    assert list(tmp_path.iterdir()) == []


def test_missing_shard_is_reported_by_path(tmp_path):
    root = tmp_path / "v1"
    write_text_dataset(root, train_rows=4, validation_rows=2)
    (root / "train" / "part-00000.parquet").unlink()
    with pytest.raises(DatasetLayoutError, match="part-00000.parquet: shard listed in the manifest is missing"):
        read_split(root, "train")


def test_modified_shard_fails_checksum_verification(tmp_path):
    root = tmp_path / "v1"
    write_text_dataset(root, train_rows=4, validation_rows=2)
    shard = root / "validation" / "part-00000.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, 1), shard)
    with pytest.raises(DatasetLayoutError, match="sha256 does not match"):
        read_split(root, "validation", verify_checksums=True)
    with pytest.raises(DatasetLayoutError, match="has 1 rows, manifest says 2"):
        read_split(root, "validation")


def test_manifest_problems_name_the_field(tmp_path):
    root = tmp_path / "v1"
    write_image_dataset(root, train_rows=4, validation_rows=2)
    raw = json.loads((root / MANIFEST_FILENAME).read_text())
    raw["imageShape"] = [8, 8]
    (root / MANIFEST_FILENAME).write_text(json.dumps(raw))
    with pytest.raises(DatasetLayoutError, match=r"imageShape must be \[C, H, W\]"):
        read_manifest(root)
    with pytest.raises(DatasetLayoutError, match="no manifest"):
        read_manifest(tmp_path)
