"""Dataset: ingest, clean, preprocess and augment data into immutable, content-addressed versions."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from strata.api.base import (
    CronSchedule,
    Fraction,
    KindInfo,
    PrinterColumn,
    PVCLocation,
    S3Location,
    SecretRef,
    StatusBase,
    StorageLocation,
    StrataModel,
    cel,
    exactly_one_of,
)

Modality = Literal["text", "image", "audio"]
SourceFormat = Literal["jsonl", "json", "csv", "parquet", "text", "imagefolder", "audiofolder"]


class HTTPPagination(StrataModel):
    cursor_field: str = Field(max_length=128, description="Response field holding the next page's cursor.")
    cursor_param: str = Field(default="cursor", max_length=128, description="Query parameter the cursor is sent in.")
    max_pages: int = Field(default=1000, ge=1, le=1_000_000)


class HTTPSource(StrataModel):
    url: str = Field(max_length=2048, pattern=r"^https?://", description="http(s) URL to fetch.")
    headers_secret_ref: SecretRef | None = Field(
        default=None, description="Secret whose keys are sent as request headers (e.g. Authorization)."
    )
    pagination: HTTPPagination | None = None


class DataSource(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel((exactly_one_of("s3", "pvc", "http"), "set exactly one of s3, pvc or http"))
    )

    s3: S3Location | None = None
    pvc: PVCLocation | None = None
    http: HTTPSource | None = None
    format: SourceFormat = Field(description="How records are encoded at the source.")


class RecordSchema(StrataModel):
    """Which source fields hold what: the pipeline reads these, and drops the rest."""

    text_field: str | None = Field(default=None, max_length=128)
    image_field: str | None = Field(default=None, max_length=128)
    audio_field: str | None = Field(default=None, max_length=128)
    label_field: str | None = Field(default=None, max_length=128)


class NearDuplicate(StrataModel):
    threshold: Fraction = Field(default=0.85, description="Jaccard similarity above which records are duplicates.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed).")


class Dedup(StrataModel):
    exact: bool = Field(default=True, description="Drop records whose normalized content hashes are equal.")
    near_duplicate: NearDuplicate | None = Field(default=None, description="MinHash-LSH near-duplicate removal.")


class MissingValueRule(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.action != 'impute' || has(self.value)", "action impute needs a value", ".value"),
        )
    )

    field: str = Field(max_length=128)
    action: Literal["drop", "impute"] = "drop"
    value: str | None = Field(default=None, max_length=1024, description="Replacement when action is impute.")


class NoiseFilters(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.minLength) || !has(self.maxLength) || self.minLength <= self.maxLength",
                "minLength must not exceed maxLength",
                ".minLength",
            ),
        )
    )

    min_length: int | None = Field(default=None, ge=0, description="Drop text records shorter than this (characters).")
    max_length: int | None = Field(default=None, ge=1, description="Drop text records longer than this (characters).")
    max_non_alpha_ratio: Fraction | None = Field(default=None, description="Drop text that is mostly symbols.")
    min_image_side: int | None = Field(default=None, ge=1, description="Drop images smaller than this (pixels).")
    min_audio_seconds: float | None = Field(default=None, ge=0)


class Cleaning(StrataModel):
    dedup: Dedup = Field(default_factory=Dedup)
    missing_values: list[MissingValueRule] = Field(default_factory=list, max_length=64)
    filters: NoiseFilters = Field(default_factory=NoiseFilters)


class Tokenizer(StrataModel):
    vocab_size: int = Field(default=32000, ge=256, le=1_048_576)
    kind: Literal["bpe", "byte"] = Field(default="bpe", description="Train a BPE vocabulary, or use raw bytes.")


class TextPreprocessing(StrataModel):
    normalize: Literal["none", "NFC", "NFKC"] = "NFKC"
    lowercase: bool = False
    strip_stopwords: bool = False
    tokenizer: Tokenizer = Field(default_factory=Tokenizer)


class ImagePreprocessing(StrataModel):
    width: int = Field(default=64, ge=8, le=4096)
    height: int = Field(default=64, ge=8, le=4096)
    resize: Literal["stretch", "centerCrop", "pad"] = "centerCrop"
    color_space: Literal["RGB", "L"] = "RGB"
    normalize: bool = Field(default=True, description="Scale pixels to [-1, 1].")


class AudioPreprocessing(StrataModel):
    sample_rate: int = Field(default=16000, ge=1000, le=192000)
    representation: Literal["waveform", "melSpectrogram"] = "melSpectrogram"
    n_mels: int = Field(default=80, ge=8, le=512)
    max_seconds: float = Field(default=30.0, gt=0)


class Preprocessing(StrataModel):
    text: TextPreprocessing | None = None
    image: ImagePreprocessing | None = None
    audio: AudioPreprocessing | None = None


class TextAugmentation(StrataModel):
    synonym_replacement: Fraction = Field(default=0.0, description="Share of words replaced by a synonym.")
    masking: Fraction = Field(default=0.0, description="Share of tokens masked.")


class ImageAugmentation(StrataModel):
    horizontal_flip: bool = False
    rotation_degrees: float = Field(default=0.0, ge=0, le=180)
    color_jitter: Fraction = 0.0
    random_crop: Fraction = Field(default=0.0, description="Largest share of each side cut away.")


class AudioAugmentation(StrataModel):
    time_stretch: Fraction = Field(default=0.0, description="Largest relative speed change.")
    pitch_shift_semitones: float = Field(default=0.0, ge=0, le=12)
    background_noise_snr_db: float | None = Field(default=None, ge=0, le=60)


class Augmentation(StrataModel):
    text: TextAugmentation | None = None
    image: ImageAugmentation | None = None
    audio: AudioAugmentation | None = None
    max_synthetic_fraction: Fraction = Field(
        default=0.2, description="Cap on augmented records as a share of the output, so real data dominates."
    )
    seed: int = Field(default=0, ge=0, description="Makes augmentation, and so the version hash, reproducible.")


class Refresh(StrataModel):
    schedule: CronSchedule


class QualityGates(StrataModel):
    """A version that breaks a gate is recorded but not promoted to current."""

    max_duplicate_ratio: Fraction | None = None
    max_missing_ratio: Fraction | None = None
    max_drift: float | None = Field(default=None, ge=0, description="Population stability index vs the previous version.")
    min_records: int | None = Field(default=None, ge=0)


class DatasetSpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "self.modality != 'text' || !has(self.preprocessing) || "
                "(!has(self.preprocessing.image) && !has(self.preprocessing.audio))",
                "a text dataset takes only text preprocessing",
                ".preprocessing",
            ),
            (
                "self.modality != 'text' || has(self.schema.textField)",
                "a text dataset needs schema.textField",
                ".schema",
            ),
            (
                "self.modality != 'image' || has(self.schema.imageField) || "
                "self.sources.all(s, s.format == 'imagefolder')",
                "an image dataset needs schema.imageField unless every source is an imagefolder",
                ".schema",
            ),
        )
    )

    modality: Modality
    sources: list[DataSource] = Field(min_length=1, max_length=16)
    record_schema: RecordSchema = Field(
        alias="schema", default_factory=RecordSchema, description="Which source fields hold content and labels."
    )
    cleaning: Cleaning = Field(default_factory=Cleaning)
    preprocessing: Preprocessing | None = None
    augmentation: Augmentation | None = None
    storage: StorageLocation = Field(description="Where versions are written; each version is a sub-directory.")
    refresh: Refresh | None = Field(default=None, description="Re-ingest on a schedule; unchanged input keeps the version.")
    quality_gates: QualityGates | None = None


class RecordCounts(StrataModel):
    input: int = Field(default=0, ge=0, alias="in")
    output: int = Field(default=0, ge=0, alias="out")
    duplicates: int = Field(default=0, ge=0)
    near_duplicates: int = Field(default=0, ge=0)
    quarantined: int = Field(default=0, ge=0, description="Records dropped by missing-value rules and filters.")
    synthetic: int = Field(default=0, ge=0)


class DatasetVersion(StrataModel):
    version: str = Field(max_length=64)
    path: str = Field(max_length=1024)
    created: str | None = Field(default=None, max_length=64)
    records: int = Field(default=0, ge=0)


class DatasetStatus(StatusBase):
    version: str | None = Field(default=None, max_length=64, description="Current content-addressed version.")
    path: str | None = Field(default=None, max_length=1024, description="Where the current version lives.")
    records: RecordCounts | None = None
    history: list[DatasetVersion] = Field(default_factory=list, max_length=32)
    last_refresh_time: str | None = Field(default=None, max_length=64)


DATASET = KindInfo(
    kind="Dataset",
    plural="datasets",
    short_names=("sds", "dset"),
    description="A versioned, cleaned and preprocessed dataset built from object storage, a PVC or HTTP.",
    spec_model=DatasetSpec,
    status_model=DatasetStatus,
    columns=(
        PrinterColumn(name="Version", type="string", json_path=".status.version"),
        PrinterColumn(
            name="Records", type="integer", json_path=".status.records.out", description="Records in the version."
        ),
        PrinterColumn(name="Modality", type="string", json_path=".spec.modality", priority=1),
    ),
)
