"""The Dataset pipeline on audio folders and audio fields: WAV files made here with scipy."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from media_support import assert_planted_problems_counted, assert_two_shards_publish_what_one_does
from scipy.io import wavfile

from strata_workloads.data import audio as clips
from strata_workloads.data.config import AudioAugmentation, PipelineConfig
from strata_workloads.data.layout import read_manifest, read_split
from strata_workloads.data.pipeline import run_pipeline

RATE = 22050


def sound(seed: int, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """A distinct clip: three tones drawn from `seed` under a drawn envelope, float in [-1, 1]."""
    rng = random.Random(seed)
    t = np.arange(int(rate * seconds)) / rate
    tones = sum(np.sin(2 * np.pi * rng.uniform(150, 3000) * t + rng.uniform(0, 6)) for _ in range(3))
    envelope = np.interp(t, np.linspace(0, seconds, 6), [rng.uniform(0.1, 1) for _ in range(6)])
    return (0.25 * tones * envelope).astype(np.float32)


def wav(samples: np.ndarray, rate: int = RATE, pcm16: bool = True) -> bytes:
    buffer = io.BytesIO()
    wavfile.write(buffer, rate, (samples * 32767).astype(np.int16) if pcm16 else samples.astype(np.float32))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes with planted problems; the counts expected from them are in EXPECTED."""
    root = tmp_path_factory.mktemp("words")
    for label, name in enumerate(("no", "yes")):
        (root / name).mkdir()
        for number in range(10):
            (root / name / f"{number:02}.wav").write_bytes(wav(sound(100 * label + number)))
        first = sound(100 * label)
        as_read = (first * 32767).astype(np.int16).astype(np.float32) / 32768  # what decoding the 16-bit file gives
        (root / name / "copy.wav").write_bytes(wav(as_read, pcm16=False))  # the same samples as float: exact
        noise = np.random.default_rng(label).standard_normal(len(first)).astype(np.float32)
        near = sound(100 * label + 1) + 0.003 * noise  # about 35 dB down
        (root / name / "near.wav").write_bytes(wav(near))
    (root / "no" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")  # quarantined
    (root / "yes" / "short.wav").write_bytes(wav(sound(7, seconds=0.2)))  # under minAudioSeconds
    (root / "unsorted.wav").write_bytes(wav(sound(999)))  # no class directory: its label is missing
    return root


EXPECTED = {"read": 27, "quarantined": 1, "missingDropped": {"class": 1}, "filtered": {"minAudioSeconds": 1},
            "duplicates": 2, "nearDuplicates": 2, "real": 20}


def folder_config(folder: Path, **overrides) -> PipelineConfig:
    raw = {
        "name": "words", "modality": "audio",
        "sources": [{"path": str(folder), "format": "audiofolder"}],
        "preprocessing": {"audio": {"sampleRate": 8000, "nMels": 32, "maxSeconds": 1.0}},
        "cleaning": {"dedup": {"nearDuplicate": {"threshold": 0.85}}, "filters": {"minAudioSeconds": 0.5}},
        "validationFraction": 0.25,
        "rowsPerShard": 8,
    }
    raw.update(overrides)
    return PipelineConfig.model_validate(raw)


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    return run_pipeline(folder_config(folder), tmp_path_factory.mktemp("versions"))


def test_planted_duplicates_undecodable_short_and_unlabelled_clips_are_counted(built):
    assert_planted_problems_counted(built, EXPECTED, "audio")
    statistics = built.manifest.pipeline.statistics
    assert statistics["classNames"] == ["no", "yes"] and statistics["classCounts"] == {"0": 10, "1": 10}


def test_the_version_holds_log_mel_spectrograms_of_the_declared_shape(built):
    manifest = read_manifest(built.path)
    shape = clips.AudioShape(8000, 1.0, "melSpectrogram", 32)
    assert (manifest.modality, manifest.audio_shape, manifest.sample_rate, manifest.num_classes) == (
        "audio", [32, shape.frames], 8000, 2)
    rows = [row for split in manifest.splits for row in read_split(built.path, split).column("audio").to_pylist()]
    assert len(rows) == EXPECTED["real"] and all(len(row) == 32 * shape.frames for row in rows)
    expected = clips.to_layout(clips.preprocess(*clips.decode(wav(sound(5))), shape), shape)
    assert any(np.allclose(row, expected, atol=1e-4) for row in rows)
    assert sum(manifest.pipeline.reference_statistics["loudnessDistribution"].values()) == pytest.approx(1.0)


def test_waveforms_are_resampled_cut_and_padded_keeping_their_pitch(tmp_path):
    t = np.arange(int(44100 * 1.5)) / 44100
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "long.wav").write_bytes(wav(0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32), 44100))
    (tmp_path / "clips" / "short.wav").write_bytes(wav(0.5 * np.sin(2 * np.pi * 1000 * t[:22050]).astype(np.float32), 44100))
    config = PipelineConfig.model_validate({
        "modality": "audio", "sources": [{"path": str(tmp_path / "clips"), "format": "audiofolder"}],
        "preprocessing": {"audio": {"sampleRate": 8000, "representation": "waveform", "maxSeconds": 1.0}},
        "validationFraction": 0.0})
    result = run_pipeline(config, tmp_path / "versions")
    assert read_manifest(result.path).audio_shape == [8000]
    peaks = []
    for row in read_split(result.path, "train").column("audio").to_pylist():
        samples = np.asarray(row)
        voiced = samples[: np.flatnonzero(np.abs(samples) > 1e-3).max() + 1]
        peaks.append((round(len(voiced) / 8000, 1), np.argmax(np.abs(np.fft.rfft(voiced))) * 8000 / len(voiced)))
    assert sorted((seconds, round(peak)) for seconds, peak in peaks) == [(0.5, 1000), (1.0, 440)]


def test_audio_fields_in_parquet_bytes_and_jsonl_base64_decode_alike(tmp_path):
    sounds = [wav(sound(seed)) for seed in range(5)]
    pq.write_table(pa.table({"clip": sounds[:3], "word": [0, 1, 0]}), tmp_path / "a.parquet")
    lines = [{"clip": base64.b64encode(data).decode(), "word": 1} for data in sounds[2:]]  # sounds[2] again
    lines.append({"clip": "not base64!", "word": 0})
    (tmp_path / "b.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    config = PipelineConfig.model_validate({
        "modality": "audio", "schema": {"audioField": "clip", "labelField": "word"},
        "sources": [{"path": str(tmp_path / "a.parquet"), "format": "parquet"},
                    {"path": str(tmp_path / "b.jsonl"), "format": "jsonl"}],
        "preprocessing": {"audio": {"sampleRate": 8000, "nMels": 16, "maxSeconds": 0.5}}, "validationFraction": 0.0})
    statistics = run_pipeline(config, tmp_path / "versions").manifest.pipeline.statistics
    assert statistics["duplicates"] == 1 and statistics["quarantined"] == 1 and statistics["recordsOut"] == 5
    assert statistics["classCounts"] == {"0": 2, "1": 3}


def test_augmentation_is_seeded_capped_and_makes_variants(folder, tmp_path):
    settings = {"audio": {"timeStretch": 0.2, "pitchShiftSemitones": 2, "backgroundNoiseSnrDb": 20},
                "maxSyntheticFraction": 0.25, "seed": 5}
    config = folder_config(folder, augmentation=settings)
    first, second = run_pipeline(config, tmp_path / "a"), run_pipeline(config, tmp_path / "b")
    train = read_split(first.path, "train")
    assert train.equals(read_split(second.path, "train"))
    synthetic = train.filter(train.column("synthetic")).num_rows
    assert 0 < synthetic <= (train.num_rows - synthetic) * 0.25 / 0.75


def test_two_shards_publish_the_version_one_does(folder, tmp_path):
    assert_two_shards_publish_what_one_does(
        folder_config(folder, augmentation={"audio": {"backgroundNoiseSnrDb": 30}, "maxSyntheticFraction": 0.2}), tmp_path)


def test_the_trainer_refuses_an_audio_version_naming_the_families_it_needs(built):
    from strata_workloads.train.config import ConfigError, parse_config
    from strata_workloads.train.data import load_training_data

    for family, needs in (("transformer", "a text dataset"), ("vae", "an image dataset")):
        config = parse_config({"model": {"family": family}, "data": {"path": str(built.path)}})
        with pytest.raises(ConfigError, match=f"the {family} family needs {needs}, .* is audio"):
            load_training_data(config)


# ---- the audio steps on their own ----

def test_pcm_widths_and_float_wavs_decode_to_the_same_samples():
    samples = sound(3)
    decoded = {}
    for name, data in (("int16", (samples * 32767).astype(np.int16)), ("int32", (samples * 2147483647).astype(np.int32)),
                       ("float32", samples)):
        buffer = io.BytesIO()
        wavfile.write(buffer, RATE, data)
        decoded[name], rate = clips.decode(buffer.getvalue())
        assert rate == RATE
    assert np.allclose(decoded["int16"], decoded["float32"], atol=1e-4)
    assert np.allclose(decoded["int32"], decoded["float32"], atol=1e-6)
    stereo = io.BytesIO()
    wavfile.write(stereo, RATE, np.stack([samples, np.zeros_like(samples)], axis=1))
    assert np.allclose(clips.decode(stereo.getvalue())[0], samples / 2)
    with pytest.raises(clips.AudioError, match="audio: cannot decode as WAV"):
        clips.decode(b"ID3 an mp3, say")
    nan = io.BytesIO()
    wavfile.write(nan, RATE, np.array([0.1, np.nan, 0.2], dtype=np.float32))
    with pytest.raises(clips.AudioError, match="not finite"):
        clips.decode(nan.getvalue())


def test_the_mel_filters_cover_the_spectrum_in_order():
    shape = clips.AudioShape(16000, 1.0, "melSpectrogram", 40)
    filters = clips.mel_filters(shape)
    assert filters.shape == (40, shape.window // 2 + 1) and filters.max() <= 1.0
    centres = filters.argmax(axis=1)
    assert list(centres) == sorted(centres) and centres[-1] > centres[0]


def test_a_tone_lights_the_mel_band_of_its_frequency():
    shape = clips.AudioShape(16000, 1.0, "melSpectrogram", 40)
    t = np.arange(16000) / 16000
    bands = [int(clips.log_mel(np.sin(2 * np.pi * hz * t).astype(np.float32), shape).mean(axis=1).argmax())
             for hz in (300, 1000, 4000)]
    assert bands == sorted(bands) and len(set(bands)) == 3


def test_the_perceptual_hash_survives_noise_and_gain_and_tells_clips_apart():
    shape = clips.AudioShape(8000, 1.0, "melSpectrogram", 32)
    prepared = [clips.preprocess(sound(seed), RATE, shape) for seed in range(24)]
    hashes = [clips.perceptual_hash(clip, shape) for clip in prepared]
    noisy = prepared[0] + 0.003 * np.random.default_rng(0).standard_normal(len(prepared[0])).astype(np.float32)
    assert (clips.perceptual_hash(noisy, shape) ^ hashes[0]).bit_count() <= 4
    assert (clips.perceptual_hash(prepared[0] * 0.3, shape) ^ hashes[0]).bit_count() <= 2
    assert min((a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1:]) > 9


def test_time_stretch_changes_the_length_and_keeps_the_pitch_and_pitch_shift_the_reverse():
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    stretched = clips.time_stretch(tone, 1.25, 256, 80)
    peak = lambda x: np.argmax(np.abs(np.fft.rfft(x))) * 8000 / len(x)  # noqa: E731
    assert abs(len(stretched) - 8000 / 1.25) < 300 and abs(peak(stretched) - 500) < 15
    shape = clips.AudioShape(8000, 1.0, "waveform", 32)
    shifted = clips.augment(tone, AudioAugmentation(pitch_shift_semitones=12), shape, random.Random(0))
    assert len(shifted) == 8000 and abs(peak(shifted[:6000]) - 500) > 40
    noisy = clips.augment(tone, AudioAugmentation(background_noise_snr_db=10), shape, random.Random(0))
    assert 10 * np.log10(np.mean(tone ** 2) / np.mean((noisy - tone) ** 2)) == pytest.approx(10, abs=0.5)
    assert np.array_equal(clips.augment(tone, AudioAugmentation(), shape, random.Random(0)), tone)
