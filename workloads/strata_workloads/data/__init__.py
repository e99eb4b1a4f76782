"""Dataset directory layout shared by the Dataset pipeline (writer) and the trainer (reader)."""

from strata_workloads.data.layout import (
    MANIFEST_FILENAME,
    ColumnSpec,
    DatasetLayoutError,
    DatasetManifest,
    DatasetWriter,
    PipelineReport,
    ShardInfo,
    read_manifest,
    read_split,
    write_dataset,
)

__all__ = [
    "MANIFEST_FILENAME",
    "ColumnSpec",
    "DatasetLayoutError",
    "DatasetManifest",
    "DatasetWriter",
    "PipelineReport",
    "ShardInfo",
    "read_manifest",
    "read_split",
    "write_dataset",
]
