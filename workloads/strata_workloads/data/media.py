"""Image and audio records through the pipeline's two passes (pipeline.py runs the passes).

Both are media of a fixed shape per version, and take the same path: pass 1 decodes a record
(or quarantines it), filters it and brings it to the version's shape, keyed for exact dedup;
pass 2 reads it back from the spill, drops near duplicates by a 64-bit hash, observes it for
the reference statistics, augments it and writes it in the layout. :class:`ImageRecords` and
:class:`AudioRecords` say how each step is done for their kind; the steps themselves are in
image.py and audio.py.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
from typing import Any

import numpy as np
import pyarrow as pa

from strata_workloads.data import audio as clips
from strata_workloads.data import image as images
from strata_workloads.data.audio import AudioError
from strata_workloads.data.config import PipelineConfig
from strata_workloads.data.image import ImageError
from strata_workloads.data.sources import FOLDER_FIELDS

# A batch and a shard of media hold at most about this many bytes of floats: rowsPerShard and
# batchSize count records, which for media can be large (64x64 RGB floats are 48 KiB).
BATCH_BYTES = 64 << 20
SHARD_BYTES = 256 << 20
# Images' mean pixel value (in [-1, 1]) in this many equal bins: a version's brightness distribution.
BRIGHTNESS_BINS = 10
# Clips' RMS level (dBFS) in bins with these lower edges (and one below, for near silence): a
# version's loudness distribution.
LOUDNESS_EDGES = [-60.0, -50.0, -40.0, -30.0, -20.0, -10.0]


def image_shape(config: PipelineConfig) -> images.ImageShape:
    settings = config.preprocessing.image
    return images.ImageShape(settings.width, settings.height, 3 if settings.color_space == "RGB" else 1)


def audio_shape(config: PipelineConfig) -> clips.AudioShape:
    settings = config.preprocessing.audio
    return clips.AudioShape(settings.sample_rate, settings.max_seconds, settings.representation, settings.n_mels)


def record_floats(config: PipelineConfig) -> int:
    """Floats one record holds in the version, or in the spill, whichever is more."""
    if config.modality == "image":
        return math.prod(image_shape(config).chw)
    shape = audio_shape(config)
    return max(shape.samples, math.prod(shape.layout))


def _encoded_bytes(record: dict[str, Any], field: str, what: str, error: type[ValueError], kind: str) -> bytes:
    """A field's encoded file: bytes as they are, text as base64."""
    data = record[field]
    if isinstance(data, str):
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            raise error(f"{kind}: {field} is text but not base64") from None
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{field}: expected {what}'s bytes, got {type(data).__name__}")
    return bytes(data)


class ImageRecords:
    """Pass 1: decoded, size filter, brought to the version's colour space and size (the exact-
    dedup key is the resulting pixels'). Pass 2: difference hash, per-channel and brightness
    statistics, crop/rotate/mirror/jitter variants, [-1, 1] floats."""

    column = "image"
    spill_columns = [("image", pa.binary())]

    def __init__(self, config: PipelineConfig):
        self.field = config.record_schema.image_field or FOLDER_FIELDS["imagefolder"]
        self.shape = image_shape(config)
        self.resize = config.preprocessing.image.resize
        self.min_side = config.cleaning.filters.min_image_side
        self.augmentation = config.augmentation.image if config.augmentation is not None else None
        self.writer_shape = {"image_shape": self.shape.chw}
        self._channel_sum = np.zeros(self.shape.channels)
        self._channel_squares = np.zeros(self.shape.channels)
        self._brightness = np.zeros(BRIGHTNESS_BINS, dtype=np.int64)
        self._observed = 0

    # ---- pass 1 ----

    def value(self, record: dict[str, Any]) -> Any:
        return images.decode(_encoded_bytes(record, self.field, "an image", ImageError, "image"))

    def map(self, image: Any) -> tuple[dict[str, Any], bytes] | str:
        """The spill's values and the content key, or why the record is filtered out."""
        if self.min_side is not None and min(image.size) < self.min_side:
            return "minImageSide"
        try:
            pixels = images.preprocess(image, self.shape, self.resize).tobytes()
        except (OSError, ValueError, SyntaxError) as error:  # a mode Pillow cannot convert, a broken EXIF block
            raise ImageError(f"image: cannot preprocess ({type(error).__name__}: {error})") from None
        return {"image": pixels}, hashlib.blake2b(pixels, digest_size=16).digest()

    # ---- pass 2 ----

    def from_spill(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.uint8).reshape(self.shape.height, self.shape.width, self.shape.channels)

    def hash(self, pixels: np.ndarray) -> int:
        return images.difference_hash(pixels)

    def to_layout(self, pixels: np.ndarray) -> np.ndarray:
        return images.to_layout(pixels)

    def augment(self, pixels: np.ndarray, rng: random.Random) -> np.ndarray:
        return images.augment(pixels, self.augmentation, rng)

    def observe(self, pixels: np.ndarray) -> None:
        """A real record kept: into the reference statistics."""
        scaled = pixels.reshape(-1, self.shape.channels) / 127.5 - 1.0
        self._channel_sum += scaled.sum(axis=0)
        self._channel_squares += (scaled * scaled).sum(axis=0)
        self._brightness[min(int((scaled.mean() + 1.0) / 2.0 * BRIGHTNESS_BINS), BRIGHTNESS_BINS - 1)] += 1
        self._observed += 1

    def statistics(self) -> dict[str, Any]:
        return {"imageShape": self.shape.chw}

    def reference(self) -> dict[str, Any]:
        per_channel = max(self._observed * self.shape.height * self.shape.width, 1)
        mean = self._channel_sum / per_channel
        std = np.sqrt(np.maximum(self._channel_squares / per_channel - mean * mean, 0.0))
        return {"channelMean": [float(v) for v in mean], "channelStd": [float(v) for v in std],
                "brightnessDistribution": {f"{-1 + 2 * i / BRIGHTNESS_BINS:.1f}": int(n) / max(self._observed, 1)
                                           for i, n in enumerate(self._brightness) if n}}


class AudioRecords:
    """Pass 1: decoded, length filter, mono at the version's sample rate, cut or padded to
    maxSeconds (the exact-dedup key is the clip's 16-bit samples). Pass 2: perceptual hash of
    the spectrogram, loudness statistics, stretch/shift/noise variants, waveform or log-mel."""

    column = "audio"
    spill_columns = [("audio", pa.binary())]

    def __init__(self, config: PipelineConfig):
        self.field = config.record_schema.audio_field or FOLDER_FIELDS["audiofolder"]
        self.shape = audio_shape(config)
        self.min_seconds = config.cleaning.filters.min_audio_seconds
        self.augmentation = config.augmentation.audio if config.augmentation is not None else None
        self.writer_shape = {"audio_shape": self.shape.layout, "sample_rate": self.shape.sample_rate}
        self._loudness = np.zeros(len(LOUDNESS_EDGES) + 1, dtype=np.int64)
        self._observed = 0

    # ---- pass 1 ----

    def value(self, record: dict[str, Any]) -> Any:
        return clips.decode(_encoded_bytes(record, self.field, "a WAV file", AudioError, "audio"))

    def map(self, decoded: tuple[np.ndarray, int]) -> tuple[dict[str, Any], bytes] | str:
        samples, rate = decoded
        if self.min_seconds is not None and len(samples) / rate < self.min_seconds:
            return "minAudioSeconds"
        clip = clips.preprocess(samples, rate, self.shape)
        key = hashlib.blake2b(np.round(clip * 32767).astype(np.int16).tobytes(), digest_size=16).digest()
        return {"audio": clip.tobytes()}, key

    # ---- pass 2 ----

    def from_spill(self, raw: bytes) -> np.ndarray:
        return np.frombuffer(raw, dtype=np.float32)

    def hash(self, clip: np.ndarray) -> int:
        return clips.perceptual_hash(clip, self.shape)

    def to_layout(self, clip: np.ndarray) -> np.ndarray:
        return clips.to_layout(clip, self.shape)

    def augment(self, clip: np.ndarray, rng: random.Random) -> np.ndarray:
        return clips.augment(clip, self.augmentation, self.shape, rng)

    def observe(self, clip: np.ndarray) -> None:
        rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
        self._loudness[int(np.searchsorted(LOUDNESS_EDGES, 20 * math.log10(max(rms, 1e-10)), side="right"))] += 1
        self._observed += 1

    def statistics(self) -> dict[str, Any]:
        return {"audioShape": self.shape.layout, "sampleRate": self.shape.sample_rate}

    def reference(self) -> dict[str, Any]:
        bins = ["silent", *(f"{edge:g}" for edge in LOUDNESS_EDGES)]  # each bin by its lower edge (dBFS)
        return {"loudnessDistribution": {name: int(n) / max(self._observed, 1)
                                         for name, n in zip(bins, self._loudness) if n}}


MEDIA = {"image": ImageRecords, "audio": AudioRecords}
