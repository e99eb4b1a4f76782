"""The Dataset workload: the version layout shared with the trainer, and the pipeline that writes it.

* :mod:`.layout` the versioned directory layout (writer and reader; the trainer's contract);
* :mod:`.config` the pipeline's configuration, one pydantic model mirroring the Dataset API;
* :mod:`.sources` streamed readers (local files, S3, HTTP(S), paginated JSON APIs, image and
  audio folders) with quarantine;
* :mod:`.text` normalization, filters, tokenizers, augmentation; :mod:`.minhash` near dedup;
* :mod:`.image` and :mod:`.audio` decoding, shaping, hashes and augmentation of media;
  :mod:`.media` how image and audio records go through the passes;
* :mod:`.pipeline` the two passes, sharding and the commit; ``python -m strata_workloads.data`` its CLI;
* :mod:`.gates` quality gates; :mod:`.result` what the pod tells the operator (standard library only).

Statistics in the pipeline report (histograms, class counts) describe the real records, not
the synthetic ones, so they can serve as the drift reference.
"""

from typing import Any

# Imported lazily (PEP 562): the operator imports :mod:`.result` and must not pull in pyarrow.
_LAYOUT_NAMES = (
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
)
__all__ = list(_LAYOUT_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAYOUT_NAMES:
        from strata_workloads.data import layout

        return getattr(layout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
