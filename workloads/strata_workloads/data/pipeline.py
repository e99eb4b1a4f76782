"""The text Dataset pipeline: sources -> cleaning -> preprocessing -> near dedup -> augmentation -> version.

Two streaming passes, each holding one batch of records at a time:

1. read every source (hashing the bytes read), apply the per-record schema, missing-value
   rules, normalization, noise filters and exact dedup; survivors go to a spill Parquet file in
   the staging directory (the BPE tokenizer trains from that file after this pass);
2. read the spill, tokenize, MinHash + LSH near-duplicate removal, assign the split by content
   hash, add capped synthetic records, and write shards through :class:`DatasetWriter`.

What grows with the input is only the dedup state: a set of 16-byte content keys and the LSH
index of kept records.

The version id is a hash of the input bytes and the spec; when ``<out>/<id>`` already exists the
work is discarded and the existing version returned (``created`` is False).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
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
from strata_workloads.data.minhash import NearDuplicateIndex, shingle_hashes
from strata_workloads.data.sources import Quarantine, SourceDigest, local_files, read_source
from strata_workloads.monitor.sketch import TOKENS_COLUMN, TokenSketch
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


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and value != value)


_CONVERTERS = {
    "string": lambda v: v if isinstance(v, str) else str(v),
    "int": lambda v: int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else int("x"),
    "float": float,
    "bool": lambda v: v if isinstance(v, bool) else {"true": True, "false": False, "1": True, "0": False}[str(v).lower()],
}


def _first_pass(config: PipelineConfig, spill: Path, quarantine: Quarantine, digests: list[SourceDigest], counts: _Counts):
    schema = config.record_schema
    text_config = config.preprocessing.text
    filters = Filters(config.cleaning.filters)
    rules = {rule.field: rule for rule in config.cleaning.missing_values}
    seen: set[bytes] = set()
    label = schema.label_field
    # Ordered (not a set), so the field a record is counted missing under is the same every run.
    checked_fields = list(dict.fromkeys([schema.text_field, *([label] if label else []), *rules]))
    columns: dict[str, list] = {"text": [], "key": []} | ({"label": []} if label else {})
    spill_schema = pa.schema([("text", pa.string()), ("key", pa.binary(16))] + ([("label", pa.int64())] if label else []))
    with pq.ParquetWriter(spill, spill_schema) as writer:
        def flush():
            if columns["text"]:
                writer.write_table(pa.table(columns, schema=spill_schema))
                for values in columns.values():
                    values.clear()

        for source, digest in zip(config.sources, digests):
            for record, location in read_source(source, schema.text_field, quarantine, digest, config.batch_size):
                counts.read += 1
                dropped = False
                for name in checked_fields:
                    if not _is_missing(record.get(name)):
                        continue
                    rule = rules.get(name)
                    if rule is not None and rule.action == "impute":
                        record[name] = rule.value
                        counts.missing_imputed[name] = counts.missing_imputed.get(name, 0) + 1
                    elif rule is not None or name in (schema.text_field, label):
                        counts.missing_dropped[name] = counts.missing_dropped.get(name, 0) + 1
                        dropped = True
                        break
                if dropped:
                    continue
                try:
                    for name, kind in schema.fields.items():
                        if not _is_missing(record.get(name)):
                            record[name] = _CONVERTERS[kind](record[name])
                    text = record[schema.text_field]
                    if not isinstance(text, str):
                        raise TypeError(f"{schema.text_field}: expected a string, got {type(text).__name__}")
                    label_value = _CONVERTERS["int"](record[label]) if label else None
                    if label_value is not None and label_value < 0:
                        raise ValueError(f"{label}: a label must be >= 0, got {label_value}")
                except (TypeError, ValueError, KeyError) as error:
                    quarantine.add(source.describe(), location, f"schema: {error}", record)
                    counts.schema_invalid += 1
                    continue
                text = normalize(text, text_config)
                reason = filters.reason(text)
                if reason is not None:
                    counts.filtered[reason] = counts.filtered.get(reason, 0) + 1
                    continue
                key = content_key(text)
                if config.cleaning.dedup.exact:
                    if key in seen:
                        counts.exact_duplicates += 1
                        continue
                    seen.add(key)
                columns["text"].append(text)
                columns["key"].append(key)
                if label:
                    columns["label"].append(label_value)
                if len(columns["text"]) >= config.batch_size:
                    flush()
        flush()


def _spill_batches(spill: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(spill).iter_batches(batch_size=batch_size)


def _version_id(spec_hash: str, input_hash: str) -> str:
    return hashlib.sha256(f"{spec_hash}\n{input_hash}".encode()).hexdigest()[:20]


def _local_input_hash(config: PipelineConfig) -> str | None:
    """The input hash computed by reading the bytes only, when every source is local (else None)."""
    if any(source.path is None for source in config.sources):
        return None
    digests = []
    for source in config.sources:
        digest = SourceDigest(source.describe())
        for path in local_files(source.path):
            digest.start_part(path.name if Path(source.path).is_file() else str(path.relative_to(source.path)))
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        digests.append(digest.hexdigest())
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def run_pipeline(config: PipelineConfig, out: str | Path) -> PipelineResult:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec_hash = config.spec_hash()
    # Unchanged local input and spec: the version exists, so skip all the work.
    local_hash = _local_input_hash(config)
    if local_hash is not None and (out / _version_id(spec_hash, local_hash) / MANIFEST_FILENAME).exists():
        root = out / _version_id(spec_hash, local_hash)
        return PipelineResult(root.name, root, read_manifest(root), created=False)
    digests = [SourceDigest(source.describe()) for source in config.sources]
    counts = _Counts()
    # The version id is known only after reading; the writer stages under a placeholder name.
    writer = DatasetWriter(out / ".pending", modality="text", rows_per_shard=config.rows_per_shard)
    with writer:
        staging = writer.staging
        work = staging / "_work"
        work.mkdir()
        spill = work / _SPILL
        with (staging / QUARANTINE_FILENAME).open("w") as quarantine_file:
            quarantine = Quarantine(quarantine_file)
            _first_pass(config, spill, quarantine, digests, counts)
        input_hash = hashlib.sha256("".join(d.hexdigest() for d in digests).encode()).hexdigest()
        version = _version_id(spec_hash, input_hash)
        root = out / version
        if (root / MANIFEST_FILENAME).exists():
            writer.abort()
            return PipelineResult(version, root, read_manifest(root), created=False)

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
                        cap = int(real_train * augmentation.max_synthetic_fraction / (1 - augmentation.max_synthetic_fraction))
                        if counts.synthetic + len(synthetic_texts) < cap:
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
        (work / _SPILL).unlink()
        work.rmdir()

        # The sketch's length bins are the token histogram (TOKEN_EDGES is sketch.LENGTH_EDGES).
        token_histogram = Histogram(TOKEN_EDGES, token_sketch.length)
        missing_dropped = sum(counts.missing_dropped.values())
        filtered = sum(counts.filtered.values())
        after_schema = counts.read - counts.schema_invalid - missing_dropped
        malformed = quarantine.count - counts.schema_invalid
        after_filters = after_schema - filtered
        after_exact = after_filters - counts.exact_duplicates
        steps = [
            StepCounts(step="read", records_in=counts.read + malformed, records_out=counts.read),
            StepCounts(step="missingValues", records_in=counts.read, records_out=counts.read - missing_dropped),
            StepCounts(step="schema", records_in=counts.read - missing_dropped, records_out=after_schema),
            StepCounts(step="filters", records_in=after_schema, records_out=after_filters),
            StepCounts(step="exactDedup", records_in=after_filters, records_out=after_exact),
            StepCounts(step="nearDedup", records_in=after_exact, records_out=after_near),
            StepCounts(step="augmentation", records_in=after_near, records_out=after_near + counts.synthetic),
        ]
        total_labels = sum(label_counts.values())
        statistics = {
            "recordsIn": counts.read + malformed,
            "recordsOut": after_near + counts.synthetic,
            "quarantined": quarantine.count,
            "quarantineReasons": quarantine.reasons,
            "duplicates": counts.exact_duplicates,
            "nearDuplicates": counts.near_duplicates,
            "missing": {"dropped": counts.missing_dropped, "imputed": counts.missing_imputed},
            "filtered": counts.filtered,
            "synthetic": counts.synthetic,
            "lengthHistogram": length_histogram.to_dict(),
            "tokenHistogram": token_histogram.to_dict(),
            "classCounts": {str(k): v for k, v in sorted(label_counts.items())},
            "vocabSize": tokenizer.vocab_size,
        }
        reference = {
            "records": after_near,
            "lengthDistribution": length_histogram.fractions(),
            "tokenDistribution": token_histogram.fractions(),
            "classDistribution": {str(k): v / total_labels for k, v in sorted(label_counts.items())},
            "sketches": {TOKENS_COLUMN: token_sketch.to_dict()},
        }
        report = PipelineReport(
            lineage=Lineage(
                sources=[SourceLineage(source=d.source, sha256=d.hexdigest(), bytes=d.bytes, records=d.records) for d in digests],
                spec_hash=spec_hash, input_hash=input_hash, parent_version=config.parent_version,
            ),
            steps=steps, statistics=statistics, reference_statistics=reference,
            tokenizer=TOKENIZER_FILENAME if tokenizer.backend is not None else None,
            quarantine=QUARANTINE_FILENAME, quarantined=quarantine.count,
        )
        writer.root = root
        num_classes = (max(label_counts) + 1) if label_counts else 0
        try:
            manifest = writer.commit(name=config.name, version=version, num_classes=num_classes, pipeline=report)
        except OSError:
            # Another run of the same input and spec committed it first: the same content.
            if (root / MANIFEST_FILENAME).exists():
                return PipelineResult(version, root, read_manifest(root), created=False)
            raise
    return PipelineResult(version, root, manifest, created=True)
