"""The Dataset pipeline's configuration: one pydantic model, :class:`PipelineConfig`.

Field names mirror ``operator/strata/api/dataset.py`` (DatasetSpec) where the two overlap, so the
operator can hand a Dataset's spec to the pod with only the storage resolved: a PVC becomes the
``path`` it is mounted at. Fields that exist only here say so in their description.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from strata_workloads import configfile

class ConfigError(configfile.ConfigError):
    """A bad pipeline configuration; the message names the setting and what is wrong."""


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class HTTPPagination(_Model):
    cursor_field: str = Field(max_length=128, description="Response field holding the next page's cursor.")
    cursor_param: str = Field(default="cursor", max_length=128, description="Query parameter the cursor is sent in.")
    max_pages: int = Field(default=1000, ge=1, le=1_000_000, description="Most pages fetched, a guard against endless cursors.")


class HTTPSource(_Model):
    url: str = Field(max_length=2048, pattern=r"^https?://", description="http(s) URL to fetch.")
    pagination: HTTPPagination | None = Field(default=None, description="Follow a cursor from page to page (format json).")
    records_field: str | None = Field(
        default=None, max_length=128,
        description="(pipeline only) Response field holding the list of records (format json); the response itself when unset.")
    headers_path: str | None = Field(
        default=None, max_length=1024,
        description="(pipeline only) Directory whose files are request headers: file name -> value (a mounted Secret).")


class S3Source(_Model):
    uri: str = Field(max_length=1024, pattern=r"^s3://[^/]+(/.*)?$", description="s3://bucket/prefix: every object under it, or one object.")
    endpoint: str | None = Field(default=None, max_length=512, pattern=r"^https?://",
                                 description="S3-compatible endpoint URL (SeaweedFS, MinIO, Ceph); AWS when unset.")
    region: str | None = Field(default=None, max_length=64, description="(pipeline only) Region; us-east-1 when unset.")
    credentials_path: str | None = Field(
        default=None, max_length=1024,
        description="(pipeline only) Directory holding files AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a mounted "
                    "Secret); the AWS_* environment variables when unset.")


class DataSource(_Model):
    path: str | None = Field(default=None, description="(pipeline only) A local file or directory; a PVC's mounted path.")
    http: HTTPSource | None = Field(default=None, description="Fetch records from an http(s) endpoint.")
    s3: S3Source | None = Field(default=None, description="Read objects under an S3 prefix.")
    format: Literal["jsonl", "json", "csv", "parquet", "text", "imagefolder", "audiofolder"] = Field(
        description="How records are encoded at the source; imagefolder and audiofolder: one image (WAV clip) per file, "
                    "its class the first directory under the source's root (none when the files sit at the root).")

    @model_validator(mode="after")
    def _one_location(self) -> "DataSource":
        if sum(location is not None for location in (self.path, self.http, self.s3)) != 1:
            raise ValueError("set exactly one of path, http or s3")
        return self

    def describe(self) -> str:
        if self.path is not None:
            return self.path
        return self.http.url if self.http is not None else self.s3.uri  # type: ignore[union-attr]


FieldType = Literal["string", "int", "float", "bool"]

# Images are near duplicates when this share of their 64-bit difference hashes' bits agree, at
# least: two unrelated images agree on about half, so a lower threshold would drop distinct ones
# (and the hash index's bands would be too narrow to find candidates cheaply).
MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD = 0.75


class RecordSchema(_Model):
    text_field: str = Field(default="text", max_length=128, description="Field holding the text.")
    image_field: str | None = Field(default=None, max_length=128,
                                    description="Field holding an image's encoded bytes (Parquet binary, or base64 text); "
                                                "image datasets, unless every source is an imagefolder.")
    audio_field: str | None = Field(default=None, max_length=128,
                                    description="Field holding a WAV file's bytes (Parquet binary, or base64 text); "
                                                "audio datasets, unless every source is an audiofolder.")
    label_field: str | None = Field(default=None, max_length=128, description="Field holding an integer class label.")
    fields: dict[str, FieldType] = Field(
        default_factory=dict,
        description="(pipeline only) Declared types of further fields; a record whose value does not convert is quarantined.")


class NearDuplicate(_Model):
    threshold: float = Field(default=0.85, ge=0.0, le=1.0, description="Jaccard similarity above which records are duplicates.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed).")
    shingle_size: int = Field(default=3, ge=1, le=16, description="(pipeline only) Tokens per shingle.")


class Dedup(_Model):
    exact: bool = Field(default=True, description="Drop records whose normalized content is equal.")
    near_duplicate: NearDuplicate | None = Field(default=None, description="MinHash-LSH near-duplicate removal.")


class MissingValueRule(_Model):
    field: str = Field(max_length=128, description="Record field the rule applies to.")
    action: Literal["drop", "impute"] = Field(default="drop", description="drop the record, or impute the value.")
    value: str | None = Field(default=None, max_length=1024, description="Replacement when action is impute.")

    @model_validator(mode="after")
    def _impute_needs_value(self) -> "MissingValueRule":
        if self.action == "impute" and self.value is None:
            raise ValueError("action impute needs a value")
        return self


class NoiseFilters(_Model):
    min_length: int | None = Field(default=None, ge=0, description="Drop text shorter than this (characters).")
    max_length: int | None = Field(default=None, ge=1, description="Drop text longer than this (characters).")
    max_non_alpha_ratio: float | None = Field(default=None, ge=0.0, le=1.0, description="Drop text that is mostly symbols.")
    min_image_side: int | None = Field(default=None, ge=1, description="Drop images whose shorter side is smaller (pixels).")
    min_audio_seconds: float | None = Field(default=None, ge=0, description="Drop clips shorter than this (seconds).")
    drop_patterns: list[str] = Field(default_factory=list, max_length=64,
                                     description="(pipeline only) Drop text matching any of these regular expressions.")

    @field_validator("drop_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"item {index} {pattern!r} is not a regular expression: {error}") from None
        return patterns

    @model_validator(mode="after")
    def _bounds(self) -> "NoiseFilters":
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError("minLength must not exceed maxLength")
        return self


class Cleaning(_Model):
    dedup: Dedup = Field(default_factory=Dedup)
    missing_values: list[MissingValueRule] = Field(default_factory=list, max_length=64)
    filters: NoiseFilters = Field(default_factory=NoiseFilters)


class Tokenizer(_Model):
    kind: Literal["bpe", "byte"] = Field(default="bpe", description="Train (or load) a BPE vocabulary, or use raw bytes.")
    vocab_size: int = Field(default=32000, ge=256, le=1_048_576, description="Vocabulary size of the trained BPE tokenizer.")
    path: str | None = Field(default=None, description="(pipeline only) Load this tokenizer.json instead of training one.")
    min_frequency: int = Field(default=2, ge=1, description="(pipeline only) Fewest occurrences of a merged pair.")


class TextPreprocessing(_Model):
    normalize: Literal["none", "NFC", "NFKC"] = Field(default="NFKC", description="Unicode normalization form.")
    lowercase: bool = Field(default=False, description="Lower-case all text.")
    strip_stopwords: bool = Field(default=False, description="Remove English stop words (scikit-learn's list), after normalization.")
    tokenizer: Tokenizer = Field(default_factory=Tokenizer)


class ImagePreprocessing(_Model):
    width: int = Field(default=64, ge=8, le=4096, description="Width images are brought to (pixels).")
    height: int = Field(default=64, ge=8, le=4096, description="Height images are brought to (pixels).")
    resize: Literal["stretch", "centerCrop", "pad"] = Field(default="centerCrop", description="How images reach width x height.")
    color_space: Literal["RGB", "L"] = Field(default="RGB", description="RGB (3 channels) or L (grayscale).")
    # Versions hold pixels in [-1, 1] (the layout's contract, what the trainer's image families
    # expect); the operator's API has normalize, and refuses false.
    normalize: Literal[True] = Field(default=True, description="Scale pixels to [-1, 1] (the only scaling implemented).")


class AudioPreprocessing(_Model):
    sample_rate: int = Field(default=16000, ge=1000, le=192000, description="Rate clips are resampled to (Hz).")
    representation: Literal["waveform", "melSpectrogram"] = Field(default="melSpectrogram",
                                                                  description="Keep the waveform, or a log-mel spectrogram.")
    n_mels: int = Field(default=80, ge=8, le=512, description="Mel bands of the spectrogram.")
    max_seconds: float = Field(default=30.0, gt=0, le=600, description="Clips are cut, or padded with silence, to this length.")


class Preprocessing(_Model):
    text: TextPreprocessing = Field(default_factory=TextPreprocessing)
    image: ImagePreprocessing = Field(default_factory=ImagePreprocessing)
    audio: AudioPreprocessing = Field(default_factory=AudioPreprocessing)


class TextAugmentation(_Model):
    synonym_replacement: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of words replaced by a synonym.")
    masking: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of words masked.")
    random_deletion: float = Field(default=0.0, ge=0.0, le=1.0, description="(pipeline only) Share of words deleted.")


class ImageAugmentation(_Model):
    horizontal_flip: bool = Field(default=False, description="Mirror the variants.")
    rotation_degrees: float = Field(default=0.0, ge=0, le=180, description="Largest random rotation either way (degrees).")
    color_jitter: float = Field(default=0.0, ge=0.0, le=1.0, description="Strength of random brightness, contrast and saturation changes.")
    random_crop: float = Field(default=0.0, ge=0.0, le=1.0, description="Largest share of each side cut away.")


class AudioAugmentation(_Model):
    time_stretch: float = Field(default=0.0, ge=0.0, le=1.0, description="Largest relative speed change (same pitch).")
    pitch_shift_semitones: float = Field(default=0.0, ge=0, le=12, description="Largest pitch shift either way (semitones).")
    background_noise_snr_db: float | None = Field(default=None, ge=0, le=60,
                                                  description="Mix in white noise at this signal-to-noise ratio (dB).")


class Augmentation(_Model):
    text: TextAugmentation = Field(default_factory=TextAugmentation)
    image: ImageAugmentation = Field(default_factory=ImageAugmentation)
    audio: AudioAugmentation = Field(default_factory=AudioAugmentation)
    max_synthetic_fraction: float = Field(default=0.2, ge=0.0, lt=1.0,
                                          description="Cap on augmented records as a share of the training split.")
    seed: int = Field(default=0, ge=0, description="Makes augmentation reproducible.")


class QualityGates(_Model):
    """Limits a version must meet to become current; a version that breaks one is kept, not promoted."""

    max_duplicate_ratio: float | None = Field(default=None, ge=0.0, le=1.0,
                                              description="Largest share of records read removed as exact or near duplicates.")
    max_missing_ratio: float | None = Field(default=None, ge=0.0, le=1.0,
                                            description="Largest share of records read dropped for missing values.")
    max_quarantined_ratio: float | None = Field(default=None, ge=0.0, le=1.0,
                                                description="Largest share of records read quarantined as malformed.")
    max_drift: float | None = Field(default=None, ge=0.0,
                                    description="Largest population stability index against the previous version.")
    min_records: int | None = Field(default=None, ge=0, description="Fewest records a version must hold.")


class PipelineConfig(_Model):
    name: str = Field(default="dataset", max_length=253, description="(pipeline only) Dataset name in the manifest.")
    modality: Literal["text", "image", "audio"] = Field(default="text", description="What the records are.")
    sources: list[DataSource] = Field(min_length=1, max_length=16)
    record_schema: RecordSchema = Field(alias="schema", default_factory=RecordSchema)
    cleaning: Cleaning = Field(default_factory=Cleaning)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    augmentation: Augmentation | None = None
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0,
                                       description="(pipeline only) Share of records in the validation split, chosen by content hash.")
    rows_per_shard: int = Field(default=100_000, ge=1, description="(pipeline only) Rows per Parquet shard.")
    # None of these changes the output, so none is part of the version's spec hash.
    batch_size: int = Field(default=8192, ge=1, le=1_000_000, description="(pipeline only) Records processed together; bounds memory.")
    parent_version: str | None = Field(default=None, description="(pipeline only) Current version, recorded in the lineage.")
    output: str | None = Field(default=None, max_length=1024,
                               description="(pipeline only) Directory the versions are written under (the storage's mount).")
    quality_gates: QualityGates | None = Field(default=None, description="Limits a new version must meet to become current.")

    @model_validator(mode="after")
    def _sources_fit_modality(self) -> "PipelineConfig":
        folder_format = {"image": "imagefolder", "audio": "audiofolder"}.get(self.modality)
        for index, source in enumerate(self.sources):
            if source.format in ("imagefolder", "audiofolder") and source.format != folder_format:
                raise ValueError(f"sources[{index}].format: {source.format} does not hold {self.modality} records")
        folders = [source.format == folder_format for source in self.sources]
        near = self.cleaning.dedup.near_duplicate
        if self.modality != "text" and near is not None and near.threshold < MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD:
            raise ValueError(f"cleaning.dedup.nearDuplicate.threshold: {self.modality} needs at least "
                             f"{MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD} (unrelated records share half their hash bits)")
        if any(folders) and self.record_schema.label_field is not None:
            raise ValueError(f"schema.labelField: an {folder_format}'s classes are its directories; unset labelField")
        field = {"image": self.record_schema.image_field, "audio": self.record_schema.audio_field}.get(self.modality, "")
        if not all(folders) and field is None:
            raise ValueError(f"schema.{self.modality}Field: an {self.modality} dataset needs it unless every source "
                             f"is an {folder_format}")
        return self

    def spec_hash(self) -> str:
        """Hash of everything that shapes the output (a loaded tokenizer by its content)."""
        exclude: dict[str, Any] = {"batch_size": True, "parent_version": True, "output": True, "quality_gates": True}
        # Only the modality's own settings shape the output. Image and audio settings arrived
        # after text versions existed: leaving them out of a text spec keeps those versions' ids.
        others = {"text", "image", "audio"} - {self.modality}
        exclude |= {"preprocessing": dict.fromkeys(others, True), "augmentation": dict.fromkeys(others, True)}
        if self.modality == "text":
            exclude |= {"record_schema": {"image_field", "audio_field"},
                        "cleaning": {"filters": {"min_image_side", "min_audio_seconds"}}}
            if not self.preprocessing.text.strip_stopwords:
                exclude["preprocessing"]["text"] = {"strip_stopwords"}
        spec: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude=exclude)
        tokenizer_path = self.preprocessing.text.tokenizer.path
        if tokenizer_path is not None:
            spec["tokenizerSha256"] = hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def load_config(path: str | Path) -> PipelineConfig:
    """Read a YAML or JSON file; raise :class:`ConfigError` naming the setting that is wrong."""
    raw, source = configfile.read(path, error_type=ConfigError)
    config = configfile.validate(PipelineConfig, raw, source, ConfigError)
    tokenizer_path = config.preprocessing.text.tokenizer.path
    if tokenizer_path is not None and not Path(tokenizer_path).is_file():
        raise ConfigError(f"{path}: preprocessing.text.tokenizer.path: {tokenizer_path} is not a file")
    return config
