"""The Dataset pipeline (text, images, audio): sources -> cleaning -> preprocessing -> near dedup -> augmentation -> version.

Two streaming passes, each holding one batch of records at a time:

1. map: read the input's parts (files, objects, HTTP sources; sources.source_parts), hashing
   each part's bytes, and apply the per-record schema, missing-value rules, normalization,
   noise filters and exact dedup; survivors go to a spill Parquet file, tagged with their part;
2. merge: read the spill, tokenize (the BPE tokenizer trains from the spill first), MinHash +
   LSH near-duplicate removal, assign the split by content hash, add capped synthetic records,
   and write shards through :class:`DatasetWriter`.

Images and audio take the same two passes (media.py says how for each): pass 1 decodes (an
undecodable file is quarantined), filters, and brings each record to the version's fixed shape;
pass 2 removes near duplicates by a 64-bit hash and augments.

A parallel run (``shards`` > 1, one pod per shard in an Indexed Job) shares the parts out by
index (part i to shard i mod shards). Every shard maps its parts into ``<out>/.runs/<run>/
shard-<i>``; shard 0 then waits for the others, merges their spills in part order, dropping the
exact duplicates across shards, and runs pass 2 over everything (so near duplicates are found
across shards) before committing the version. Records meet every step in the same order as in
a run of one shard, so the version id and content are the same for any number of shards.

What grows with the input is only the dedup state: a set of 16-byte content keys and the LSH
index of kept records.

The version id is a hash of the input bytes and the spec; when ``<out>/<id>`` already exists the
work is discarded and the existing version returned (``created`` is False).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.layout import (
    MANIFEST_FILENAME,
    DatasetManifest,
    DatasetWriter,
    Lineage,
    PipelineReport,
    SourceLineage,
    StepCounts,
    read_manifest,
)
from strata_workloads.data import image as images
from strata_workloads.data import media
from strata_workloads.data.audio import AudioError
from strata_workloads.data.image import ImageError
from strata_workloads.data.minhash import NearDuplicateIndex, shingle_hashes
from strata_workloads.data.sources import (
    FOLDER_FIELDS,
    Quarantine,
    SourceDigest,
    SourceError,
    combined_digest,
    file_digest,
    folder_class,
    source_parts,
)
from strata_workloads.monitor.sketch import TEXT_COLUMN, TOKENS_COLUMN, TokenSketch
from strata_workloads.data.text import (
    LENGTH_EDGES,
    TOKEN_EDGES,
    Filters,
    Histogram,
    TextTokenizer,
    augment,
    content_key,
    normalize,
    record_rng,
)

QUARANTINE_FILENAME = "quarantine.jsonl"
TOKENIZER_FILENAME = "tokenizer.json"
_SPILL = "spill.parquet"
# A shard's results in its directory; SHARD_DONE is written last (by rename): the others are complete.
SHARD_DONE = "shard.json"
RUNS_DIR = ".runs"
# Where a folder record's class index sits (from its directory, not from the file).
FOLDER_CLASS_FIELD = "class"
# How often shard 0 looks for the other shards' results.
SHARD_POLL_SECONDS = 2.0


@dataclass
class PipelineResult:
    version: str
    path: Path
    manifest: DatasetManifest
    created: bool


@dataclass
class _Counts:
    read: int = 0
    schema_invalid: int = 0
    missing_dropped: dict[str, int] = field(default_factory=dict)
    missing_imputed: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    synthetic: int = 0

    def add(self, other: dict[str, Any]) -> None:
        """Add a shard's counts (its asdict()); keys sorted, so any sharding gives the same order."""
        for name, value in other.items():
            if isinstance(value, dict):
                merged = getattr(self, name)
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
                setattr(self, name, dict(sorted(merged.items())))
            else:
                setattr(self, name, getattr(self, name) + value)


@dataclass
class _PartRecord:
    """One part as a shard read it: where it sits in the input, and what it delivered."""

    index: int  # over all sources' parts, in order
    source: int
    name: str
    sha256: str
    bytes: int
    records: int


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and value != value)


_CONVERTERS = {
    "string": lambda v: v if isinstance(v, str) else str(v),
    "int": lambda v: int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else int("x"),
    "float": float,
    "bool": lambda v: v if isinstance(v, bool) else {"true": True, "false": False, "1": True, "0": False}[str(v).lower()],
}


class _TextRecords:
    """Text records in pass 1: the text, normalized; noise filters; the exact-dedup key."""

    spill_columns = [("text", pa.string())]

    def __init__(self, config: PipelineConfig):
        self.field = config.record_schema.text_field
        self.preprocessing = config.preprocessing.text
        self.filters = Filters(config.cleaning.filters)

    def value(self, record: dict[str, Any]) -> str:
        text = record[self.field]
        if not isinstance(text, str):
            raise TypeError(f"{self.field}: expected a string, got {type(text).__name__}")
        return text

    def map(self, text: str) -> tuple[dict[str, Any], bytes] | str:
        """The spill's values and the content key, or why the record is filtered out."""
        text = normalize(text, self.preprocessing)
        reason = self.filters.reason(text)
        if reason is not None:
            return reason
        return {"text": text}, content_key(text)


def batch_rows(config: PipelineConfig) -> int:
    """Records held together: batchSize, fewer for large images and long clips."""
    if config.modality == "text":
        return config.batch_size
    return max(1, min(config.batch_size, media.BATCH_BYTES // (4 * media.record_floats(config))))


def shard_rows(config: PipelineConfig) -> int:
    """Rows per Parquet shard: rowsPerShard, fewer for large records (the writer holds a shard)."""
    if config.modality == "text":
        return config.rows_per_shard
    return max(1, min(config.rows_per_shard, media.SHARD_BYTES // (4 * media.record_floats(config))))


def folder_classes(config: PipelineConfig) -> list[str]:
    """Class names of the image and audio folders' class directories, sorted: a label is its index."""
    return sorted({name for source in config.sources if source.format in FOLDER_FIELDS
                   for part in source_parts(source) if (name := folder_class(part.name)) is not None})


def _quarantine_excerpt(record: dict[str, Any]) -> dict[str, Any]:
    """A record as the quarantine shows it: bytes by their size, not their content."""
    return {name: f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray)) else value for name, value in record.items()}


def _map_parts(config: PipelineConfig, shard: int, shards: int, work: Path) -> dict[str, Any]:
    """Pass 1 over this shard's parts: survivors to ``work/spill.parquet`` (with their part),
    malformed records to ``work/quarantine.jsonl``; returns the shard's summary (counts, parts)."""
    schema = config.record_schema
    records = _TextRecords(config) if config.modality == "text" else media.MEDIA[config.modality](config)
    rules = {rule.field: rule for rule in config.cleaning.missing_values}
    seen: set[bytes] = set()
    counts = _Counts()
    classes = {name: index for index, name in enumerate(folder_classes(config))} if config.modality != "text" else {}
    label = FOLDER_CLASS_FIELD if classes else schema.label_field
    # Ordered (not a set), so the field a record is counted missing under is the same every run.
    checked_fields = list(dict.fromkeys([records.field, *([label] if label else []), *rules]))
    spill_schema = pa.schema(records.spill_columns + [("key", pa.binary(16)), ("part", pa.int32())]
                             + ([("label", pa.int64())] if label else []))
    columns: dict[str, list] = {name: [] for name in spill_schema.names}
    batch = batch_rows(config)
    parts: list[_PartRecord] = []
    total_parts = 0
    work.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(work / _SPILL, spill_schema) as writer, (work / QUARANTINE_FILENAME).open("w") as quarantine_file:
        quarantine = Quarantine(quarantine_file)

        def flush():
            if columns["key"]:
                writer.write_table(pa.table(columns, schema=spill_schema))
                for values in columns.values():
                    values.clear()

        for source_index, source in enumerate(config.sources):
            for part in source_parts(source):
                index, total_parts = total_parts, total_parts + 1
                if index % shards != shard:
                    continue
                digest = SourceDigest(source.describe())
                quarantine.part = index
                part_class = folder_class(part.name) if source.format in FOLDER_FIELDS else None
                for record, location in part.read(schema.text_field, quarantine, digest, config.batch_size):
                    counts.read += 1
                    if part_class is not None:
                        record[FOLDER_CLASS_FIELD] = classes[part_class]
                    dropped = False
                    for name in checked_fields:
                        if not _is_missing(record.get(name)):
                            continue
                        rule = rules.get(name)
                        if rule is not None and rule.action == "impute":
                            record[name] = rule.value
                            counts.missing_imputed[name] = counts.missing_imputed.get(name, 0) + 1
                        elif rule is not None or name in (records.field, label):
                            counts.missing_dropped[name] = counts.missing_dropped.get(name, 0) + 1
                            dropped = True
                            break
                    if dropped:
                        continue
                    try:
                        for name, kind in schema.fields.items():
                            if not _is_missing(record.get(name)):
                                record[name] = _CONVERTERS[kind](record[name])
                        value = records.value(record)
                        label_value = _CONVERTERS["int"](record[label]) if label else None
                        if label_value is not None and label_value < 0:
                            raise ValueError(f"{label}: a label must be >= 0, got {label_value}")
                        mapped = records.map(value)
                    except (TypeError, ValueError, KeyError) as error:
                        reason = str(error) if isinstance(error, (ImageError, AudioError)) else f"schema: {error}"
                        quarantine.add(source.describe(), location, reason, _quarantine_excerpt(record))
                        counts.schema_invalid += 1
                        continue
                    if isinstance(mapped, str):
                        counts.filtered[mapped] = counts.filtered.get(mapped, 0) + 1
                        continue
                    values, key = mapped
                    # Within the shard; shard 0 drops the duplicates across shards when it merges.
                    if config.cleaning.dedup.exact:
                        if key in seen:
                            counts.exact_duplicates += 1
                            continue
                        seen.add(key)
                    for name, item in values.items():
                        columns[name].append(item)
                    columns["key"].append(key)
                    columns["part"].append(index)
                    if label:
                        columns["label"].append(label_value)
                    if len(columns["key"]) >= batch:
                        flush()
                parts.append(_PartRecord(index=index, source=source_index, name=part.name, sha256=digest.hexdigest(),
                                         bytes=digest.bytes, records=digest.records))
        flush()
    return {"shard": shard, "shards": shards, "totalParts": total_parts, "counts": asdict(counts),
            "parts": [asdict(part) for part in parts], "quarantined": quarantine.count,
            "quarantineReasons": quarantine.reasons}


def _spill_batches(spill: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(spill).iter_batches(batch_size=batch_size)


def _version_id(spec_hash: str, input_hash: str) -> str:
    return hashlib.sha256(f"{spec_hash}\n{input_hash}".encode()).hexdigest()[:20]


def _input_hash(source_digests: list[str]) -> str:
    return hashlib.sha256("".join(source_digests).encode()).hexdigest()


def _local_input_hash(config: PipelineConfig) -> str | None:
    """The input hash computed by reading the bytes only, when every source is local (else None)."""
    if any(source.path is None for source in config.sources):
        return None
    return _input_hash([combined_digest((part.name, file_digest(part.local_path)) for part in source_parts(source))
                        for source in config.sources])


def _existing(config: PipelineConfig, out: Path, spec_hash: str) -> PipelineResult | None:
    """Unchanged local input and spec: the version exists, so all the work can be skipped."""
    local_hash = _local_input_hash(config)
    root = out / _version_id(spec_hash, local_hash) if local_hash is not None else None
    if root is not None and (root / MANIFEST_FILENAME).exists():
        return PipelineResult(root.name, root, read_manifest(root), created=False)
    return None


def shard_directory(out: str | Path, run_id: str, shard: int) -> Path:
    return Path(out) / RUNS_DIR / run_id / f"shard-{shard}"


def map_shard(config: PipelineConfig, out: str | Path, shard: int, shards: int, run_id: str) -> Path | None:
    """One shard of a parallel run (any but shard 0): map its parts into its directory, which
    appears whole (renamed into place) once done. None when the version exists already."""
    if _existing(config, Path(out), config.spec_hash()) is not None:
        return None
    final = shard_directory(out, run_id, shard)
    _map_into(config, shard, shards, final)
    return final


def _map_into(config: PipelineConfig, shard: int, shards: int, final: Path) -> dict[str, Any]:
    """Map the shard's parts into `final`, which appears whole (renamed into place, its summary
    in SHARD_DONE) once done; returns the summary."""
    # A retried pod starts over: whatever an earlier attempt left is replaced.
    partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    summary = _map_parts(config, shard, shards, partial)
    (partial / SHARD_DONE).write_text(json.dumps(summary))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(partial, final)
    return summary


def _await_shards(run_dir: Path, shards: int, timeout: float) -> list[Path]:
    deadline = time.monotonic() + timeout
    directories = [run_dir / f"shard-{index}" for index in range(shards)]
    while missing := [d for d in directories if not (d / SHARD_DONE).exists()]:
        if time.monotonic() > deadline:
            raise SourceError(f"parallelism: shards {', '.join(d.name.split('-')[1] for d in missing)} of {shards} "
                              f"did not finish within {timeout:.0f}s; every shard's pod must be able to run "
                              f"at once: lower spec.parallelism or give the pipeline's pods room")
        time.sleep(SHARD_POLL_SECONDS)
    return directories


def _merged_quarantine(shard_dirs: list[Path], target: Path) -> None:
    """The shards' quarantine lines in input order (by part), without the part."""
    handles = [(d / QUARANTINE_FILENAME).open() for d in shard_dirs]
    try:
        lines = heapq.merge(*(map(json.loads, handle) for handle in handles), key=lambda line: line["part"])
        with target.open("w") as output:
            for line in lines:
                del line["part"]
                output.write(json.dumps(line) + "\n")
    finally:
        for handle in handles:
            handle.close()


def _part_runs(spill: Path, batch_size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """A shard's spill as (part, records of that part), in its order."""
    for batch in _spill_batches(spill, batch_size):
        parts = batch.column("part").to_numpy()
        starts = np.flatnonzero(np.r_[True, parts[1:] != parts[:-1]])
        for begin, end in zip(starts, np.r_[starts[1:], len(parts)]):
            yield int(parts[begin]), batch.slice(begin, end - begin)


def _merged_spill(shard_dirs: list[Path], target: Path, exact: bool, batch_size: int) -> int:
    """The shards' spills in input order (by part) into one, dropping exact duplicates across
    shards (each shard dropped its own); returns how many were dropped."""
    seen: set[bytes] = set()
    dropped = 0
    runs = heapq.merge(*(_part_runs(d / _SPILL, batch_size) for d in shard_dirs), key=lambda run: run[0])
    schema = pq.read_schema(shard_dirs[0] / _SPILL)
    with pq.ParquetWriter(target, schema) as writer:
        for _part, run in runs:
            if exact:
                keys = run.column("key").to_pylist()
                keep = np.ones(len(keys), dtype=bool)
                for row, key in enumerate(keys):
                    if key in seen:
                        keep[row] = False
                        dropped += 1
                    else:
                        seen.add(key)
                run = run.filter(pa.array(keep))
            if run.num_rows:
                writer.write_batch(run)
    return dropped


def _remove_run(run_dir: Path | None) -> None:
    """The shards' work, once merged; `.runs` too when no other run is using it."""
    if run_dir is None:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()
    except OSError:
        pass


def _remove_stale_runs(out: Path, older_than: float) -> None:
    """Parallel runs' work left by runs that failed: untouched for longer than shard 0 waits,
    no shard of them can still be running."""
    runs = out / RUNS_DIR
    if not runs.is_dir():
        return
    cutoff = time.time() - older_than
    for run in runs.iterdir():
        newest = max([run.stat().st_mtime, *(path.stat().st_mtime for path in run.rglob("*"))])
        if newest < cutoff:
            shutil.rmtree(run, ignore_errors=True)


@dataclass
class _SecondPass:
    """What pass 2 of a modality hands to the commit."""

    records: int  # real records kept (after near dedup)
    label_counts: dict[int, int]
    statistics: dict[str, Any]  # the modality's own statistics
    reference: dict[str, Any]  # the modality's own reference statistics (drift monitoring)
    tokenizer: str | None = None
    num_classes: int = 0  # 0: from the labels seen


def _synthetic_cap(augmentation, real_train: int) -> int:
    """Most synthetic records allowed after `real_train` real training records."""
    return int(real_train * augmentation.max_synthetic_fraction / (1 - augmentation.max_synthetic_fraction))


def _text_pass(config: PipelineConfig, spill: Path, staging: Path, writer: DatasetWriter, counts: _Counts) -> _SecondPass:
    """Tokenizer (trained on the spill), near dedup, split, augmentation; rows to the writer."""
    tokenizer = TextTokenizer.build(
        config.preprocessing.text.tokenizer,
        (text for batch in _spill_batches(spill, config.batch_size) for text in batch.column("text").to_pylist()),
    )
    tokenizer.save(staging / TOKENIZER_FILENAME)
    near = config.cleaning.dedup.near_duplicate
    index = NearDuplicateIndex(near.threshold, near.num_perm) if near else None
    augmentation = config.augmentation
    length_histogram = Histogram(LENGTH_EDGES)
    token_sketch = TokenSketch()  # of real records only: the drift reference of served inputs
    text_sketch = TokenSketch()  # the same records' text, for models that take text
    label_counts: dict[int, int] = {}
    real_train = 0
    split_threshold = int(config.validation_fraction * (1 << 32))
    has_label = config.record_schema.label_field is not None
    after_near = 0
    for batch in _spill_batches(spill, config.batch_size):
        texts = batch.column("text").to_pylist()
        keys = batch.column("key").to_pylist()
        labels = batch.column("label").to_pylist() if has_label else None
        token_ids = tokenizer.encode_batch(texts)
        if index is not None:
            keep = index.filter(*shingle_hashes(token_ids, near.shingle_size))
            counts.near_duplicates += int((~keep).sum())
        else:
            keep = np.ones(len(texts), dtype=bool)
        rows: dict[str, dict[str, list]] = {}
        synthetic_texts: list[tuple[str, Any]] = []
        kept_rows = np.flatnonzero(keep)
        length_histogram.add([len(texts[i]) for i in kept_rows])
        token_sketch.add_sequences(token_ids[i] for i in kept_rows)
        text_sketch.add_texts(texts[i] for i in kept_rows)
        for i in kept_rows:
            after_near += 1
            split = "validation" if int.from_bytes(keys[i][:4], "little") < split_threshold else "train"
            target = rows.setdefault(split, {"text": [], "tokens": [], "synthetic": []} | ({"label": []} if has_label else {}))
            target["text"].append(texts[i])
            target["tokens"].append(token_ids[i])
            target["synthetic"].append(False)
            if has_label:
                target["label"].append(labels[i])
                label_counts[labels[i]] = label_counts.get(labels[i], 0) + 1
            if split == "train":
                real_train += 1
                if augmentation is not None and augmentation.max_synthetic_fraction > 0:
                    if counts.synthetic + len(synthetic_texts) < _synthetic_cap(augmentation, real_train):
                        variant = augment(texts[i], augmentation.text, record_rng(augmentation.seed, keys[i]))
                        if variant != texts[i]:
                            synthetic_texts.append((variant, labels[i] if has_label else None))
        if synthetic_texts:
            target = rows.setdefault("train", {"text": [], "tokens": [], "synthetic": []} | ({"label": []} if has_label else {}))
            for (variant, label), ids in zip(synthetic_texts, tokenizer.encode_batch([t for t, _ in synthetic_texts])):
                target["text"].append(variant)
                target["tokens"].append(ids)
                target["synthetic"].append(True)
                if has_label:
                    target["label"].append(label)
            counts.synthetic += len(synthetic_texts)
        for split, columns in rows.items():
            writer.add(split, pa.table({**columns, "tokens": pa.array(columns["tokens"], pa.list_(pa.int32()))}))
    for split in ("train", "validation"):
        if split not in writer.splits and (split == "train" or config.validation_fraction > 0):
            writer.add(split, pa.table({"text": pa.array([], pa.string()), "tokens": pa.array([], pa.list_(pa.int32())),
                                        "synthetic": pa.array([], pa.bool_())}
                                       | ({"label": pa.array([], pa.int64())} if has_label else {})))

    # The sketch's length bins are the token histogram (TOKEN_EDGES is sketch.LENGTH_EDGES).
    token_histogram = Histogram(TOKEN_EDGES, token_sketch.length)
    return _SecondPass(
        records=after_near, label_counts=label_counts,
        statistics={"lengthHistogram": length_histogram.to_dict(), "tokenHistogram": token_histogram.to_dict(),
                    "vocabSize": tokenizer.vocab_size},
        reference={"lengthDistribution": length_histogram.fractions(), "tokenDistribution": token_histogram.fractions(),
                   "sketches": {TOKENS_COLUMN: token_sketch.to_dict(), TEXT_COLUMN: text_sketch.to_dict()}},
        tokenizer=TOKENIZER_FILENAME if tokenizer.backend is not None else None)


def _media_pass(config: PipelineConfig, spill: Path, staging: Path, writer: DatasetWriter, counts: _Counts) -> _SecondPass:
    """Images or audio (media.py): near dedup by hash, split, augmentation; rows to the writer."""
    records = media.MEDIA[config.modality](config)
    near = config.cleaning.dedup.near_duplicate
    index = images.HashIndex(near.threshold) if near else None
    augmentation = config.augmentation
    augments = augmentation is not None and augmentation.max_synthetic_fraction > 0
    has_label = "label" in pq.read_schema(spill).names
    label_counts: dict[int, int] = {}
    kept = real_train = 0
    split_threshold = int(config.validation_fraction * (1 << 32))
    empty = {records.column: [], "synthetic": []} | ({"label": []} if has_label else {})
    for batch in _spill_batches(spill, batch_rows(config)):
        items = batch.column(records.column).to_pylist()
        keys = batch.column("key").to_pylist()
        labels = batch.column("label").to_pylist() if has_label else None
        rows: dict[str, dict[str, list]] = {}

        def add(split: str, item: np.ndarray, synthetic: bool, label: int | None) -> None:
            target = rows.setdefault(split, {name: [] for name in empty})
            target[records.column].append(records.to_layout(item))
            target["synthetic"].append(synthetic)
            if has_label:
                target["label"].append(label)

        for i, raw in enumerate(items):
            item = records.from_spill(raw)
            if index is not None and not index.keep(records.hash(item)):
                counts.near_duplicates += 1
                continue
            kept += 1
            records.observe(item)
            label = labels[i] if labels is not None else None
            if label is not None:
                label_counts[label] = label_counts.get(label, 0) + 1
            split = "validation" if int.from_bytes(keys[i][:4], "little") < split_threshold else "train"
            add(split, item, False, label)
            if split == "train":
                real_train += 1
                if augments and counts.synthetic < _synthetic_cap(augmentation, real_train):
                    variant = records.augment(item, record_rng(augmentation.seed, keys[i]))
                    if not np.array_equal(variant, item):
                        add("train", variant, True, label)
                        counts.synthetic += 1
        for split, columns in rows.items():
            writer.add(split, pa.table({**columns, records.column: pa.array(columns[records.column], pa.list_(pa.float32()))}))
    for split in ("train", "validation"):
        if split not in writer.splits and (split == "train" or config.validation_fraction > 0):
            writer.add(split, pa.table({records.column: pa.array([], pa.list_(pa.float32())),
                                        "synthetic": pa.array([], pa.bool_())}
                                       | ({"label": pa.array([], pa.int64())} if has_label else {})))
    classes = folder_classes(config)
    statistics = records.statistics() | ({"classNames": classes} if classes else {})
    return _SecondPass(records=kept, label_counts=label_counts, statistics=statistics, reference=records.reference(),
                       num_classes=len(classes))


def run_pipeline(config: PipelineConfig, out: str | Path, *, shards: int = 1, run_id: str | None = None,
                 shard_timeout: float = 24 * 3600) -> PipelineResult:
    """Build the version (as shard 0 when ``shards`` > 1: the others run :func:`map_shard`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec_hash = config.spec_hash()
    existing = _existing(config, out, spec_hash)
    if existing is not None:
        return existing
    _remove_stale_runs(out, shard_timeout)
    if shards > 1 and not run_id:
        raise ValueError("a run of several shards needs the run's id (the directory they share)")
    run_dir = out / RUNS_DIR / run_id if shards > 1 else None
    counts = _Counts()
    # The version id is known only after reading; the writer stages under a placeholder name.
    writer = DatasetWriter(out / ".pending", modality=config.modality, rows_per_shard=shard_rows(config),
                           **(media.MEDIA[config.modality](config).writer_shape if config.modality != "text" else {}))
    with writer:
        staging = writer.staging
        work = staging / "_work"
        if run_dir is None:
            summaries = [_map_parts(config, 0, 1, work)]
            shard_dirs = [work]
        else:
            _map_into(config, 0, shards, run_dir / "shard-0")
            shard_dirs = _await_shards(run_dir, shards, shard_timeout)
            summaries = [json.loads((d / SHARD_DONE).read_text()) for d in shard_dirs]
            work.mkdir()
        parts = sorted((_PartRecord(**part) for summary in summaries for part in summary["parts"]), key=lambda p: p.index)
        if {summary["totalParts"] for summary in summaries} != {len(parts)} or [p.index for p in parts] != list(range(len(parts))):
            raise SourceError("sources: the input changed while the shards read it (they listed different parts); "
                              "run again once it is stable")
        for summary in summaries:
            counts.add(summary["counts"])
        spill = work / _SPILL
        if run_dir is not None:
            counts.exact_duplicates += _merged_spill(shard_dirs, spill, config.cleaning.dedup.exact, batch_rows(config))
        _merged_quarantine(shard_dirs, staging / QUARANTINE_FILENAME)
        quarantined = sum(summary["quarantined"] for summary in summaries)
        quarantine_reasons: dict[str, int] = {}
        for summary in summaries:
            for reason, count in summary["quarantineReasons"].items():
                quarantine_reasons[reason] = quarantine_reasons.get(reason, 0) + count
        quarantine_reasons = dict(sorted(quarantine_reasons.items()))
        sources = []
        for source_index, source in enumerate(config.sources):
            own = [part for part in parts if part.source == source_index]
            sources.append(SourceLineage(source=source.describe(), sha256=combined_digest((p.name, p.sha256) for p in own),
                                         bytes=sum(p.bytes for p in own), records=sum(p.records for p in own)))
        input_hash = _input_hash([source.sha256 for source in sources])
        version = _version_id(spec_hash, input_hash)
        root = out / version
        if (root / MANIFEST_FILENAME).exists():
            writer.abort()
            _remove_run(run_dir)
            return PipelineResult(version, root, read_manifest(root), created=False)

        second = (_text_pass if config.modality == "text" else _media_pass)(config, spill, staging, writer, counts)
        shutil.rmtree(work)
        _remove_run(run_dir)

        missing_dropped = sum(counts.missing_dropped.values())
        filtered = sum(counts.filtered.values())
        after_schema = counts.read - counts.schema_invalid - missing_dropped
        malformed = quarantined - counts.schema_invalid
        after_filters = after_schema - filtered
        after_exact = after_filters - counts.exact_duplicates
        after_near = second.records
        steps = [
            StepCounts(step="read", records_in=counts.read + malformed, records_out=counts.read),
            StepCounts(step="missingValues", records_in=counts.read, records_out=counts.read - missing_dropped),
            StepCounts(step="schema", records_in=counts.read - missing_dropped, records_out=after_schema),
            StepCounts(step="filters", records_in=after_schema, records_out=after_filters),
            StepCounts(step="exactDedup", records_in=after_filters, records_out=after_exact),
            StepCounts(step="nearDedup", records_in=after_exact, records_out=after_near),
            StepCounts(step="augmentation", records_in=after_near, records_out=after_near + counts.synthetic),
        ]
        label_counts = second.label_counts
        total_labels = sum(label_counts.values())
        statistics = {
            "recordsIn": counts.read + malformed,
            "recordsOut": after_near + counts.synthetic,
            "quarantined": quarantined,
            "quarantineReasons": quarantine_reasons,
            "duplicates": counts.exact_duplicates,
            "nearDuplicates": counts.near_duplicates,
            "missing": {"dropped": counts.missing_dropped, "imputed": counts.missing_imputed},
            "filtered": counts.filtered,
            "synthetic": counts.synthetic,
            **second.statistics,
            "classCounts": {str(k): v for k, v in sorted(label_counts.items())},
        }
        reference = {
            "records": after_near,
            **second.reference,
            "classDistribution": {str(k): v / total_labels for k, v in sorted(label_counts.items())},
        }
        report = PipelineReport(
            lineage=Lineage(
                sources=sources,
                spec_hash=spec_hash, input_hash=input_hash, parent_version=config.parent_version,
            ),
            steps=steps, statistics=statistics, reference_statistics=reference,
            tokenizer=second.tokenizer,
            quarantine=QUARANTINE_FILENAME, quarantined=quarantined,
        )
        writer.root = root
        num_classes = second.num_classes or ((max(label_counts) + 1) if label_counts else 0)
        try:
            manifest = writer.commit(name=config.name, version=version, num_classes=num_classes, pipeline=report)
        except OSError:
            # Another run of the same input and spec committed it first: the same content.
            if (root / MANIFEST_FILENAME).exists():
                return PipelineResult(version, root, read_manifest(root), created=False)
            raise
    return PipelineResult(version, root, manifest, created=True)
