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
    Quantity,
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
    max_pages: int = Field(default=1000, ge=1, le=1_000_000, description="Most pages fetched per ingestion, a guard against endless cursors.")


class HTTPSource(StrataModel):
    url: str = Field(max_length=2048, pattern=r"^https?://", description="http(s) URL to fetch.")
    headers_secret_ref: SecretRef | None = Field(
        default=None, description="Secret whose keys are sent as request headers (e.g. Authorization)."
    )
    pagination: HTTPPagination | None = Field(default=None, description="Follow a cursor from page to page; a single request when unset.")


class DataSource(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel((exactly_one_of("s3", "pvc", "http"), "set exactly one of s3, pvc or http"))
    )

    s3: S3Location | None = Field(default=None, description="Read objects under an S3 prefix.")
    pvc: PVCLocation | None = Field(default=None, description="Read files under a directory of a PersistentVolumeClaim.")
    http: HTTPSource | None = Field(default=None, description="Fetch records from an http(s) endpoint.")
    format: SourceFormat = Field(description="How records are encoded at the source.")


class RecordSchema(StrataModel):
    """Which source fields hold what: the pipeline reads these, and drops the rest."""

    text_field: str | None = Field(default=None, max_length=128, description="Field holding the text (required for text datasets).")
    image_field: str | None = Field(default=None, max_length=128, description="Field holding the image bytes or path (image datasets, unless imagefolder).")
    audio_field: str | None = Field(default=None, max_length=128, description="Field holding the audio bytes or path (audio datasets, unless audiofolder).")
    label_field: str | None = Field(default=None, max_length=128, description="Field holding a class label, used for label-conditioned training.")


class NearDuplicate(StrataModel):
    threshold: Fraction = Field(default=0.85, description="Similarity at or above which records are duplicates: for text the Jaccard "
                                                          "similarity of token shingles, for images the share of equal bits of a "
                                                          "64-bit difference hash.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations (accuracy vs speed); text only.")


class Dedup(StrataModel):
    exact: bool = Field(default=True, description="Drop records whose normalized content hashes are equal.")
    near_duplicate: NearDuplicate | None = Field(default=None, description="MinHash-LSH near-duplicate removal.")


class MissingValueRule(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.action != 'impute' || has(self.value)", "action impute needs a value", ".value"),
        )
    )

    field: str = Field(max_length=128, description="Record field the rule applies to.")
    action: Literal["drop", "impute"] = Field(default="drop", description="drop: remove records missing the field; impute: fill it with value.")
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
    min_audio_seconds: float | None = Field(default=None, ge=0, description="Drop audio clips shorter than this (seconds).")


class Cleaning(StrataModel):
    dedup: Dedup = Field(default_factory=Dedup, description="Exact and near-duplicate removal.")
    missing_values: list[MissingValueRule] = Field(default_factory=list, max_length=64, description="What to do with records missing a field, one rule per field.")
    filters: NoiseFilters = Field(default_factory=NoiseFilters, description="Drop noisy records: too short, too long, mostly symbols, too small.")


class Tokenizer(StrataModel):
    vocab_size: int = Field(default=32000, ge=256, le=1_048_576, description="Vocabulary size of the trained BPE tokenizer (tokens); ignored for kind byte.")
    kind: Literal["bpe", "byte"] = Field(default="bpe", description="Train a BPE vocabulary, or use raw bytes.")


class TextPreprocessing(StrataModel):
    normalize: Literal["none", "NFC", "NFKC"] = Field(default="NFKC", description="Unicode normalization form applied to text (none, NFC or NFKC).")
    lowercase: bool = Field(default=False, description="Lower-case all text.")
    strip_stopwords: bool = Field(default=False, description="Remove English stop words (scikit-learn's list) after normalization and lower-casing.")
    tokenizer: Tokenizer = Field(default_factory=Tokenizer, description="How text becomes tokens.")


class ImagePreprocessing(StrataModel):
    width: int = Field(default=64, ge=8, le=4096, description="Width images are brought to (pixels); also the width models are trained at.")
    height: int = Field(default=64, ge=8, le=4096, description="Height images are brought to (pixels); also the height models are trained at.")
    resize: Literal["stretch", "centerCrop", "pad"] = Field(default="centerCrop", description="How images reach width x height: stretch, centerCrop, or pad (letterbox).")
    color_space: Literal["RGB", "L"] = Field(default="RGB", description="RGB (3 channels) or L (grayscale, 1 channel).")
    normalize: bool = Field(default=True, description="Scale pixels to [-1, 1].")


class AudioPreprocessing(StrataModel):
    sample_rate: int = Field(default=16000, ge=1000, le=192000, description="Rate audio is resampled to (Hz).")
    representation: Literal["waveform", "melSpectrogram"] = Field(default="melSpectrogram", description="Keep the waveform, or compute a log-mel spectrogram (25 ms windows every 10 ms).")
    n_mels: int = Field(default=80, ge=8, le=512, description="Mel bands of the spectrogram.")
    max_seconds: float = Field(default=30.0, gt=0, le=600, description="Clips are cut, or padded with silence, to this length (seconds).")


class Preprocessing(StrataModel):
    text: TextPreprocessing | None = Field(default=None, description="Normalization and tokenization of text.")
    image: ImagePreprocessing | None = Field(default=None, description="Resizing and color handling of images.")
    audio: AudioPreprocessing | None = Field(default=None, description="Resampling and features of audio.")


class TextAugmentation(StrataModel):
    synonym_replacement: Fraction = Field(default=0.0, description="Share of words replaced by a synonym.")
    masking: Fraction = Field(default=0.0, description="Share of tokens masked.")


class ImageAugmentation(StrataModel):
    horizontal_flip: bool = Field(default=False, description="Add mirrored copies of images.")
    rotation_degrees: float = Field(default=0.0, ge=0, le=180, description="Largest random rotation either way (degrees).")
    color_jitter: Fraction = Field(default=0.0, description="Strength of random brightness, contrast and saturation changes (0 to 1).")
    random_crop: Fraction = Field(default=0.0, description="Largest share of each side cut away.")


class AudioAugmentation(StrataModel):
    time_stretch: Fraction = Field(default=0.0, description="Largest relative speed change.")
    pitch_shift_semitones: float = Field(default=0.0, ge=0, le=12, description="Largest random pitch shift either way (semitones).")
    background_noise_snr_db: float | None = Field(default=None, ge=0, le=60, description="Mix in background noise at this signal-to-noise ratio (dB); none when unset.")


class Augmentation(StrataModel):
    text: TextAugmentation | None = Field(default=None, description="Synthetic variants of text records.")
    image: ImageAugmentation | None = Field(default=None, description="Synthetic variants of images.")
    audio: AudioAugmentation | None = Field(default=None, description="Synthetic variants of audio clips.")
    max_synthetic_fraction: Fraction = Field(
        default=0.2, description="Cap on augmented records as a share of the output, so real data dominates."
    )
    seed: int = Field(default=0, ge=0, description="Makes augmentation, and so the version hash, reproducible.")


class Refresh(StrataModel):
    schedule: CronSchedule


class QualityGates(StrataModel):
    """A version that breaks a gate is recorded but not promoted to current."""

    max_duplicate_ratio: Fraction | None = Field(default=None, description="Largest share of input records removed as duplicates (0 to 1).")
    max_missing_ratio: Fraction | None = Field(default=None, description="Largest share of input records dropped for missing values (0 to 1).")
    max_quarantined_ratio: Fraction | None = Field(default=None, description="Largest share of input records quarantined as malformed (0 to 1).")
    max_drift: float | None = Field(default=None, ge=0, description="Population stability index vs the previous version.")
    min_records: int | None = Field(default=None, ge=0, description="Fewest records a version must hold.")


class PipelineResources(StrataModel):
    cpu: Quantity = Field(default="500m", description="CPU request of each pipeline pod, as a quantity (cores: 2, 500m).")
    memory: Quantity = Field(default="1Gi", description="Memory request and limit of each pipeline pod, as a quantity (bytes: 1Gi, 512Mi); the pipeline streams, so this need not grow with the input.")


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
            (
                "self.modality != 'audio' || has(self.schema.audioField) || "
                "self.sources.all(s, s.format == 'audiofolder')",
                "an audio dataset needs schema.audioField unless every source is an audiofolder",
                ".schema",
            ),
        )
    )

    modality: Modality = Field(description="What the records are: text, image or audio.")
    sources: list[DataSource] = Field(min_length=1, max_length=16, description="Where records come from; all sources are merged into one version.")
    record_schema: RecordSchema = Field(
        alias="schema", default_factory=RecordSchema, description="Which source fields hold content and labels."
    )
    cleaning: Cleaning = Field(default_factory=Cleaning, description="Deduplication, missing-value rules and noise filters.")
    preprocessing: Preprocessing | None = Field(default=None, description="Per-modality normalization; only the section matching modality applies.")
    augmentation: Augmentation | None = Field(default=None, description="Synthetic records added to the version; none when unset.")
    storage: StorageLocation = Field(description="Where versions are written; each version is a sub-directory.")
    refresh: Refresh | None = Field(default=None, description="Re-ingest on a schedule; unchanged input keeps the version.")
    quality_gates: QualityGates | None = Field(default=None, description="Limits a new version must meet to become current.")
    parallelism: int = Field(default=1, ge=1, le=32, description="Pods that share out a run's input (files and objects; an HTTP source is one share), as an Indexed Job; the first merges their work, drops duplicates across shares and commits. The version is the same for any value. All must run at once, on a storage PVC they can all mount (ReadWriteMany beyond one node). Takes effect from the next run.")
    resources: PipelineResources = Field(default_factory=PipelineResources, description="CPU and memory of each pipeline pod.")


class RecordCounts(StrataModel):
    input: int = Field(default=0, ge=0, alias="in", description="Records read from the sources (malformed ones included).")
    output: int = Field(default=0, ge=0, alias="out", description="Records in the version (synthetic ones included).")
    duplicates: int = Field(default=0, ge=0, description="Records dropped as exact duplicates.")
    near_duplicates: int = Field(default=0, ge=0, description="Records dropped as near duplicates.")
    missing: int = Field(default=0, ge=0, description="Records dropped by missing-value rules.")
    quarantined: int = Field(default=0, ge=0, description="Malformed records set aside (quarantine.jsonl in the version).")
    synthetic: int = Field(default=0, ge=0, description="Records added by augmentation.")


class GateVerdict(StrataModel):
    name: str = Field(max_length=64, description="The spec.qualityGates field checked.")
    passed: bool = Field(description="Whether the version met the limit.")
    value: float = Field(description="What the version measured.")
    limit: float = Field(description="The limit from spec.qualityGates.")
    message: str = Field(default="", max_length=1024, description="The verdict in words.")


class ReferenceSketch(StrataModel):
    """A column's token sketch (strata_workloads.monitor.sketch): what drift monitors compare served inputs with."""

    column: str = Field(max_length=64, description="The Dataset column summarised; a model input of this name is compared with it.")
    rows: int = Field(default=0, ge=0, description="Records sketched.")
    length: list[int] = Field(default_factory=list, max_length=12, description="Records per token-count bin (lower edges 0, 4, 8, 16, ... 4096).")
    ids: list[int] = Field(default_factory=list, max_length=64, description="Tokens per bucket of token id modulo 64.")


class DatasetVersion(StrataModel):
    version: str = Field(max_length=64, description="Content-addressed version id.")
    path: str = Field(max_length=1024, description="Where the version lives: its directory on the storage PVC.")
    created: str | None = Field(default=None, max_length=64, description="When the run that wrote (or found) it ended (RFC 3339).")
    records: int = Field(default=0, ge=0, description="Records in the version.")
    counts: RecordCounts | None = Field(default=None, description="Records in and out of each cleaning step.")
    promoted: bool = Field(default=False, description="Whether it passed every quality gate and became current.")
    rejected_because: str | None = Field(default=None, max_length=1024, description="The quality gates it failed, when not promoted.")
    reference: list[ReferenceSketch] = Field(default_factory=list, max_length=8, description="Token sketches of its records: the drift reference of models trained on it.")


class DatasetStatus(StatusBase):
    version: str | None = Field(default=None, max_length=64, description="Current content-addressed version.")
    path: str | None = Field(default=None, max_length=1024, description="Where the current version lives: its directory on spec.storage.pvc.")
    records: RecordCounts | None = Field(default=None, description="Record counts of the current version.")
    history: list[DatasetVersion] = Field(default_factory=list, max_length=32, description="Recent versions, newest last (at most 10).")
    gates: list[GateVerdict] = Field(default_factory=list, max_length=16, description="Quality-gate verdicts of the latest run's version.")
    job: str | None = Field(default=None, max_length=63, description="The Job of the latest pipeline run.")
    last_refresh_time: str | None = Field(default=None, max_length=64, description="When the latest run started reading the sources (RFC 3339).")
    refresh_requested_at: str | None = Field(default=None, max_length=64, description="The refresh request (annotation strata.dev/refresh-requested-at) the latest run answers.")


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
        PrinterColumn(name="Job", type="string", json_path=".status.job", priority=1),
        PrinterColumn(name="Modality", type="string", json_path=".spec.modality", priority=1),
    ),
)
