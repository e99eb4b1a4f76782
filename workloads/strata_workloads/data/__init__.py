"""The Dataset workload: the version layout shared with the trainer, and the pipeline that writes it.

* :mod:`.layout` the versioned directory layout (writer and reader; the trainer's contract);
* :mod:`.config` the pipeline's configuration, one pydantic model mirroring the Dataset API;
* :mod:`.sources` streamed readers (local files, HTTP(S), paginated JSON APIs) with quarantine;
* :mod:`.text` normalization, filters, tokenizers, augmentation; :mod:`.minhash` near dedup;
* :mod:`.pipeline` the two-pass text pipeline; ``python -m strata_workloads.data`` its CLI.

Statistics in the pipeline report (histograms, class counts) describe the real records, not
the synthetic ones, so they can serve as the drift reference.
"""

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
