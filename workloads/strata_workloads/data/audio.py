"""Audio steps: WAV decoding, resampling, the fixed-length clip, the log-mel spectrogram, the
near-duplicate hash and seeded augmentation (numpy and scipy).

A clip becomes mono at the version's sample rate (polyphase resampling), cut or zero-padded to
``maxSeconds``, so every record has the same shape: ``[samples]`` for ``waveform``,
``[nMels, frames]`` for ``melSpectrogram``. Between the pipeline's passes a clip travels as
float32 samples; the spectrogram is computed when written.

The log-mel spectrogram is the usual speech front end: 25 ms Hann windows every 10 ms,
power spectrum, HTK mel filters from 0 Hz to Nyquist, natural log with a floor. It is written
here (a few lines of numpy over scipy's STFT) rather than taken from librosa or torchaudio,
which would bring numba or torch into the data image for the same arithmetic.

Near duplicates are found on a 64-bit perceptual hash of the clip's log-mel spectrogram seen as
a picture, kept to its loudest ``HASH_RANGE_DB`` (quieter detail, where added noise lives, is
cut off): the signs of the low 8x8 DCT coefficients of a 32x32 thumbnail against their median.
Gain changes and noise 30 dB down keep every bit on test clips; the images' difference hash,
tried first, is dominated by the silent bands and lost a third of its bits to the same noise.

Augmentation: time stretch and pitch shift by a phase vocoder (pitch: stretch, then resample
back to the original length), and white noise at a signal-to-noise ratio.
"""

from __future__ import annotations

import io
import math
import random
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy import signal
from scipy.io import wavfile

HASH_RANGE_DB = 40.0
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
LOG_FLOOR = 1e-10


class AudioError(ValueError):
    """A record's audio cannot be decoded; the record is quarantined."""


@dataclass(frozen=True)
class AudioShape:
    sample_rate: int
    max_seconds: float
    representation: str  # "waveform" | "melSpectrogram"
    n_mels: int

    @property
    def samples(self) -> int:
        return int(round(self.sample_rate * self.max_seconds))

    @property
    def window(self) -> int:
        return int(round(self.sample_rate * WINDOW_SECONDS))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * HOP_SECONDS))

    @property
    def frames(self) -> int:
        return 1 + self.samples // self.hop

    @property
    def layout(self) -> list[int]:
        """The shape each record has in the version."""
        return [self.samples] if self.representation == "waveform" else [self.n_mels, self.frames]


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate) of a WAV file's bytes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks: still readable
            rate, samples = wavfile.read(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - scipy's reader raises assorted errors (even NameError) on malformed files
        raise AudioError(f"audio: cannot decode as WAV ({type(error).__name__}: {error})") from None
    if samples.size == 0:
        raise AudioError("audio: the file holds no samples")
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
    elif samples.dtype.kind == "u":  # 8-bit PCM is unsigned, centred on 128
        samples = (samples.astype(np.float32) - 128.0) / 128.0
    else:
        samples = samples.astype(np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if not np.isfinite(samples).all():
        raise AudioError("audio: the file holds samples that are not finite (NaN or infinity)")
    if rate < 1:
        raise AudioError(f"audio: the file declares a sample rate of {rate} Hz")
    return samples, int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling to `target` Hz (the ratio as a fraction of small integers)."""
    if rate == target:
        return samples.astype(np.float32)
    ratio = Fraction(target, rate).limit_denominator(1000)
    return signal.resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)


def fixed_length(samples: np.ndarray, shape: AudioShape) -> np.ndarray:
    """Cut to maxSeconds, or pad with silence to it."""
    clip = np.zeros(shape.samples, dtype=np.float32)
    clip[: min(len(samples), shape.samples)] = samples[: shape.samples]
    return clip


def preprocess(samples: np.ndarray, rate: int, shape: AudioShape) -> np.ndarray:
    return fixed_length(resample(samples, rate, shape.sample_rate), shape)


def mel_filters(shape: AudioShape) -> np.ndarray:
    """HTK mel filterbank, [n_mels, window // 2 + 1]: triangles equally spaced in mel."""
    mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    bins = np.linspace(0, shape.sample_rate / 2, shape.window // 2 + 1)
    edges = hz(np.linspace(mel(0.0), mel(shape.sample_rate / 2), shape.n_mels + 2))
    rising = (bins[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - bins[None, :]) / (edges[2:, None] - edges[1:-1, None])
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(clip: np.ndarray, shape: AudioShape) -> np.ndarray:
    """[n_mels, frames] log-mel spectrogram of a fixed-length clip."""
    _, _, spectrum = signal.stft(clip, fs=shape.sample_rate, window="hann", nperseg=shape.window,
                                 noverlap=shape.window - shape.hop, boundary="even", padded=True)
    power = np.abs(spectrum[:, : shape.frames]) ** 2
    frames = np.zeros((power.shape[0], shape.frames))
    frames[:, : power.shape[1]] = power
    return np.log(mel_filters(shape) @ frames + LOG_FLOOR).astype(np.float32)


def to_layout(clip: np.ndarray, shape: AudioShape) -> np.ndarray:
    """A clip as the version holds it, flattened."""
    return (clip if shape.representation == "waveform" else log_mel(clip, shape)).reshape(-1).astype(np.float32)


def perceptual_hash(clip: np.ndarray, shape: AudioShape) -> int:
    """64-bit perceptual hash of the clip's log-mel spectrogram (see the module's docstring)."""
    from PIL import Image
    from scipy.fft import dctn

    spectrogram = log_mel(clip, shape)
    spectrogram = np.maximum(spectrogram, spectrogram.max() - HASH_RANGE_DB * math.log(10) / 10)  # power, in nats
    low, high = float(spectrogram.min()), float(spectrogram.max())
    scaled = np.zeros_like(spectrogram) if high == low else (spectrogram - low) / (high - low)
    thumbnail = Image.fromarray((scaled * 255).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
    low_frequencies = dctn(np.asarray(thumbnail, dtype=np.float64), norm="ortho")[:8, :8].reshape(-1)
    bits = low_frequencies > np.median(low_frequencies[1:])  # the DC term is the brightness alone
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def time_stretch(clip: np.ndarray, rate: float, window: int, hop: int) -> np.ndarray:
    """The clip played `rate` times faster at the same pitch (phase vocoder)."""
    _, _, spectrum = signal.stft(clip, window="hann", nperseg=window, noverlap=window - hop)
    steps = np.arange(0, spectrum.shape[1] - 1, rate)
    expected = 2 * np.pi * hop * np.arange(spectrum.shape[0]) / window  # phase advance per hop
    phase = np.angle(spectrum[:, 0])
    stretched = np.empty((spectrum.shape[0], len(steps)), dtype=complex)
    for index, step in enumerate(steps):
        left, fraction = int(step), step - int(step)
        magnitude = (1 - fraction) * np.abs(spectrum[:, left]) + fraction * np.abs(spectrum[:, left + 1])
        stretched[:, index] = magnitude * np.exp(1j * phase)
        delta = np.angle(spectrum[:, left + 1]) - np.angle(spectrum[:, left]) - expected
        phase = phase + expected + (delta - 2 * np.pi * np.round(delta / (2 * np.pi)))
    _, out = signal.istft(stretched, window="hann", nperseg=window, noverlap=window - hop)
    return out.astype(np.float32)


def augment(clip: np.ndarray, augmentation, shape: AudioShape, rng: random.Random) -> np.ndarray:
    """A synthetic variant of a fixed-length clip: time stretch, pitch shift and noise as
    declared (``strata_workloads.data.config.AudioAugmentation``), drawn from ``rng``."""
    window, hop = 2 ** math.ceil(math.log2(shape.window)), max(1, shape.hop)
    variant = clip
    if augmentation.time_stretch > 0:
        rate = 1.0 + rng.uniform(-augmentation.time_stretch, augmentation.time_stretch)
        variant = fixed_length(time_stretch(variant, rate, window, hop), shape)
    if augmentation.pitch_shift_semitones > 0:
        factor = 2.0 ** (rng.uniform(-augmentation.pitch_shift_semitones, augmentation.pitch_shift_semitones) / 12)
        # Stretch by the factor, then resample back to the length: the same duration, the pitch moved.
        stretched = time_stretch(variant, 1.0 / factor, window, hop)
        variant = fixed_length(signal.resample(stretched, max(1, int(round(len(stretched) / factor)))).astype(np.float32),
                               shape)
    if augmentation.background_noise_snr_db is not None:
        power = float(np.mean(variant ** 2))
        if power > 0:
            noise = np.random.default_rng(rng.getrandbits(32)).standard_normal(len(variant))
            variant = variant + (noise * math.sqrt(power / 10 ** (augmentation.background_noise_snr_db / 10))).astype(np.float32)
    return np.clip(variant, -1.0, 1.0).astype(np.float32)
