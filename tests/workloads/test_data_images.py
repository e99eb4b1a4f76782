"""The Dataset pipeline on image folders and image fields made here with Pillow, and the trainer
training an image family on what it publishes."""

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
from PIL import Image, ImageDraw
from media_support import assert_planted_problems_counted, assert_two_shards_publish_what_one_does
from workload_harness import base_config, launch

from strata_workloads.data import image as images
from strata_workloads.data.config import ImageAugmentation, PipelineConfig
from strata_workloads.data.layout import read_manifest, read_split
from strata_workloads.data.pipeline import run_pipeline


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A distinct picture: a gradient background with a few shapes, all drawn from `seed`."""
    rng = random.Random(seed)
    width, height = size
    # A smooth background from a 4x4 grid of random colours: its brightness changes differ per picture.
    grid = np.array([[[rng.randrange(256) for _ in range(3)] for _ in range(4)] for _ in range(4)], dtype=np.uint8)
    image = Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.randrange(width), rng.randrange(height)
        box = (x, y, x + rng.randrange(6, max(7, width // 2)), y + rng.randrange(6, max(7, height // 2)))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes with planted problems; the counts expected from them are in EXPECTED."""
    root = tmp_path_factory.mktemp("pets")
    for label, name in enumerate(("cats", "dogs")):
        (root / name).mkdir()
        for number in range(12):
            (root / name / f"{number:02}.png").write_bytes(encoded(picture(100 * label + number)))
        first = picture(100 * label)
        (root / name / "copy.bmp").write_bytes(encoded(first, "BMP"))  # the same pixels: an exact duplicate
        # Re-encoded as a JPEG at a slightly larger size: the same picture, other pixels.
        (root / name / "near.jpg").write_bytes(encoded(picture(100 * label + 1).resize((52, 44)), "JPEG", quality=85))
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG but not really")  # quarantined
    (root / "dogs" / "tiny.png").write_bytes(encoded(picture(7, (10, 12))))  # under minImageSide
    (root / "unsorted.png").write_bytes(encoded(picture(999)))  # no class directory: its label is missing
    return root


EXPECTED = {"read": 31, "quarantined": 1, "missingDropped": {"class": 1}, "filtered": {"minImageSide": 1},
            "duplicates": 2, "nearDuplicates": 2, "real": 24}


def folder_config(folder: Path, **overrides) -> PipelineConfig:
    raw = {
        "name": "pets", "modality": "image",
        "sources": [{"path": str(folder), "format": "imagefolder"}],
        "preprocessing": {"image": {"width": 16, "height": 12, "resize": "centerCrop"}},
        "cleaning": {"dedup": {"nearDuplicate": {"threshold": 0.85}}, "filters": {"minImageSide": 16}},
        "validationFraction": 0.25,
        "rowsPerShard": 10,
    }
    raw.update(overrides)
    return PipelineConfig.model_validate(raw)


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    return run_pipeline(folder_config(folder), tmp_path_factory.mktemp("versions"))


def test_planted_duplicates_undecodable_small_and_unlabelled_images_are_counted(built):
    assert_planted_problems_counted(built, EXPECTED, "image")
    statistics = built.manifest.pipeline.statistics
    assert statistics["classNames"] == ["cats", "dogs"] and statistics["classCounts"] == {"0": 12, "1": 12}
    quarantine = [json.loads(line) for line in (built.path / "quarantine.jsonl").read_text().splitlines()]
    assert [(line["location"].endswith("cats/broken.png"), line["reason"].startswith("image: cannot decode"))
            for line in quarantine] == [(True, True)]


def test_the_version_is_the_trainers_image_layout(built, folder):
    manifest = read_manifest(built.path)
    assert (manifest.modality, manifest.image_shape, manifest.num_classes) == ("image", [3, 12, 16], 2)
    rows = {split: read_split(built.path, split) for split in manifest.splits}
    assert sum(table.num_rows for table in rows.values()) == EXPECTED["real"]
    pixels = np.concatenate([np.asarray(table.column("image").combine_chunks().flatten()) for table in rows.values()])
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0 and pixels.size == EXPECTED["real"] * 3 * 12 * 16
    # A picture comes back as itself, brought to 16x12 by a centre crop.
    expected = images.to_layout(images.preprocess(picture(5), images.ImageShape(16, 12, 3), "centerCrop"))
    assert any(np.array_equal(np.asarray(row), expected) for table in rows.values()
               for row in table.column("image").to_pylist())
    reference = manifest.pipeline.reference_statistics
    assert len(reference["channelMean"]) == 3 and all(-1 <= mean <= 1 for mean in reference["channelMean"])
    assert reference["classDistribution"] == {"0": 0.5, "1": 0.5}
    assert sum(reference["brightnessDistribution"].values()) == pytest.approx(1.0)


def test_the_drift_gate_compares_brightness_with_the_parent_version(built, folder, tmp_path):
    darker = tmp_path / "darker"
    for path in sorted(folder.rglob("*.png")):
        target = darker / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            Image.open(path).point(lambda value: value // 4).save(target)
        except OSError:
            continue  # the planted broken file
    gates = {"qualityGates": {"maxDrift": 0.5}, "parentVersion": built.version}
    same = run_pipeline(folder_config(folder, **gates), tmp_path / "same")
    dark = run_pipeline(folder_config(darker, **gates), tmp_path / "dark")
    from strata_workloads.data.gates import drift

    assert drift(same.manifest.pipeline.reference_statistics, built.manifest.pipeline.reference_statistics)[0] < 0.01
    value, where = drift(dark.manifest.pipeline.reference_statistics, built.manifest.pipeline.reference_statistics)
    assert where == "brightnessDistribution" and value > 0.5


def test_a_rerun_gives_the_same_version_and_a_changed_size_a_new_one(built, folder, tmp_path):
    again = run_pipeline(folder_config(folder), built.path.parent)
    assert (again.version, again.created) == (built.version, False)
    resized = run_pipeline(folder_config(folder, preprocessing={"image": {"width": 8, "height": 8, "colorSpace": "L"}}),
                           tmp_path)
    assert resized.version != built.version and read_manifest(resized.path).image_shape == [1, 8, 8]


def test_augmentation_is_seeded_capped_and_draws_variants_of_real_images(folder, tmp_path):
    settings = {"image": {"horizontalFlip": True}, "maxSyntheticFraction": 0.25, "seed": 3}
    config = folder_config(folder, augmentation=settings)
    first, second = run_pipeline(config, tmp_path / "a"), run_pipeline(config, tmp_path / "b")
    train = read_split(first.path, "train")
    assert train.equals(read_split(second.path, "train"))
    synthetic = train.filter(train.column("synthetic")).column("image").to_pylist()
    real = train.filter(pa.compute.invert(train.column("synthetic"))).column("image").to_pylist()
    assert 0 < len(synthetic) <= len(real) * 0.25 / 0.75
    # With only horizontalFlip, each variant is a real image mirrored.
    mirrored = {np.asarray(row, np.float32).reshape(3, 12, 16)[:, :, ::-1].tobytes() for row in real}
    assert all(np.asarray(row, np.float32).tobytes() in mirrored for row in synthetic)

    other = run_pipeline(folder_config(folder, augmentation={**settings, "seed": 4,
                                                             "image": {"rotationDegrees": 20, "colorJitter": 0.3}}),
                         tmp_path / "c")
    assert other.version != first.version


def test_image_fields_in_parquet_bytes_and_jsonl_base64_decode_alike(tmp_path):
    photos = [picture(seed) for seed in range(6)]
    pq.write_table(pa.table({"photo": [encoded(p) for p in photos[:4]], "kind": [0, 1, 0, 1]}), tmp_path / "a.parquet")
    lines = [{"photo": base64.b64encode(encoded(p)).decode(), "kind": 1} for p in photos[3:]]  # photos[3] again
    lines.append({"photo": "not base64!", "kind": 0})
    (tmp_path / "b.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    config = PipelineConfig.model_validate({
        "modality": "image", "schema": {"imageField": "photo", "labelField": "kind"},
        "sources": [{"path": str(tmp_path / "a.parquet"), "format": "parquet"},
                    {"path": str(tmp_path / "b.jsonl"), "format": "jsonl"}],
        "preprocessing": {"image": {"width": 8, "height": 8}}, "validationFraction": 0.0})
    result = run_pipeline(config, tmp_path / "versions")
    statistics = result.manifest.pipeline.statistics
    assert statistics["duplicates"] == 1 and statistics["quarantined"] == 1 and statistics["recordsOut"] == 6
    assert statistics["classCounts"] == {"0": 2, "1": 4}


def test_two_shards_publish_the_version_one_does(folder, tmp_path):
    assert_two_shards_publish_what_one_does(
        folder_config(folder, augmentation={"image": {"rotationDegrees": 15}, "maxSyntheticFraction": 0.2}), tmp_path)


def test_the_trainer_trains_a_vae_on_a_pipeline_version(built, tmp_path):
    config = base_config("vae", built.path, tmp_path, zero_stage=1, hyperparameters={"maxSteps": 4},
                         validation={"everySteps": 2, "maxBatches": 1},
                         deepspeed={"zeroStage": 1, "microBatchSize": 4, "gradientAccumulation": 1})
    run = launch(config, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    steps = run.step_losses()
    assert sorted(steps) == [1, 2, 3, 4] and all(np.isfinite(list(steps.values())))


def test_large_images_are_held_and_written_in_fewer_rows_than_the_record_counts_say(folder):
    from strata_workloads.data.media import BATCH_BYTES as IMAGE_BATCH_BYTES, SHARD_BYTES as IMAGE_SHARD_BYTES
    from strata_workloads.data.pipeline import batch_rows, shard_rows

    large = folder_config(folder, preprocessing={"image": {"width": 512, "height": 512}}, rowsPerShard=100_000,
                          batchSize=8192)
    per_image = 4 * 3 * 512 * 512
    assert batch_rows(large) * per_image <= IMAGE_BATCH_BYTES and batch_rows(large) >= 1
    assert shard_rows(large) * per_image <= IMAGE_SHARD_BYTES and shard_rows(large) >= 1
    small = folder_config(folder, rowsPerShard=10, batchSize=5)
    assert (batch_rows(small), shard_rows(small)) == (5, 10)


# ---- the image steps on their own ----

@pytest.mark.parametrize("resize", ["stretch", "centerCrop", "pad"])
def test_every_resize_mode_gives_the_versions_shape_and_colour_space(resize):
    for channels in (3, 1):
        pixels = images.preprocess(picture(1, (60, 20)), images.ImageShape(16, 12, channels), resize)
        assert pixels.shape == (12, 16, channels) and pixels.dtype == np.uint8


def test_pad_letterboxes_with_black_and_center_crop_cuts_the_sides():
    wide = Image.new("RGB", (40, 10), (255, 255, 255))
    padded = images.preprocess(wide, images.ImageShape(16, 16, 3), "pad")
    assert padded[0].max() == 0 and padded[8].min() == 255  # bars above and below, the picture between
    cropped = images.preprocess(wide, images.ImageShape(16, 16, 3), "centerCrop")
    assert cropped.min() == 255


def test_transparency_is_composed_over_white():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert images.preprocess(clear, images.ImageShape(8, 8, 1), "stretch").min() == 255


def test_an_image_that_decodes_but_cannot_be_brought_to_the_shape_is_quarantined_not_fatal(tmp_path, monkeypatch):
    (tmp_path / "pets" / "cats").mkdir(parents=True)
    for number in range(3):
        (tmp_path / "pets" / "cats" / f"{number}.png").write_bytes(encoded(picture(number)))
    real = images.preprocess

    def fails_on_the_second(image, shape, resize, calls=[]):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("broken EXIF block")
        return real(image, shape, resize)

    monkeypatch.setattr(images, "preprocess", fails_on_the_second)
    result = run_pipeline(folder_config(tmp_path / "pets", cleaning={}), tmp_path / "versions")
    statistics = result.manifest.pipeline.statistics
    assert statistics["quarantined"] == 1 and statistics["recordsOut"] == 2
    line = json.loads((result.path / "quarantine.jsonl").read_text())
    assert line["reason"] == "image: cannot preprocess (OSError: broken EXIF block)"


def test_an_undecodable_file_raises_an_image_error_whose_message_is_the_same_every_time():
    messages = set()
    for _ in range(2):
        with pytest.raises(images.ImageError) as caught:
            images.decode(b"\x89PNG but not really")
        messages.add(str(caught.value))
    assert len(messages) == 1 and messages.pop().startswith("image: cannot decode")


def test_the_difference_hash_survives_re_encoding_and_tells_pictures_apart():
    shape = images.ImageShape(32, 32, 3)
    hashes = [images.difference_hash(images.preprocess(picture(seed), shape, "stretch")) for seed in range(30)]
    jpeg = images.decode(encoded(picture(0).resize((60, 50)), "JPEG", quality=70))
    assert (images.difference_hash(images.preprocess(jpeg, shape, "stretch")) ^ hashes[0]).bit_count() <= 6
    distances = [(a ^ b).bit_count() for i, a in enumerate(hashes) for b in hashes[i + 1:]]
    assert min(distances) > 12


@pytest.mark.parametrize("threshold", [0.95, 0.85, 0.75])
def test_the_hash_index_drops_exactly_what_a_pairwise_comparison_drops(threshold):
    rng = random.Random(int(threshold * 100))
    base = [rng.getrandbits(64) for _ in range(150)]
    # Copies with a few bits flipped, some within the distance and some beyond it.
    def flipped(value: int) -> int:
        for _ in range(rng.randrange(1, 24)):
            value ^= 1 << rng.randrange(64)
        return value

    values = base + [flipped(value) for value in base]
    index, kept, expected = images.HashIndex(threshold), [], []
    decisions = [index.keep(value) for value in values]
    for value in values:
        expected.append(all((value ^ other).bit_count() > index.max_distance for other in kept))
        if expected[-1]:
            kept.append(value)
    assert decisions == expected and 0 < decisions.count(False) < len(values)


def test_augment_applies_each_declared_transform():
    pixels = images.preprocess(picture(2), images.ImageShape(16, 16, 3), "stretch")
    mirror = images.augment(pixels, ImageAugmentation(horizontal_flip=True), random.Random(0))
    assert np.array_equal(mirror, pixels[:, ::-1])
    for setting in ({"rotation_degrees": 30.0}, {"color_jitter": 0.5}, {"random_crop": 0.4}):
        variant = images.augment(pixels, ImageAugmentation(**setting), random.Random(1))
        assert variant.shape == pixels.shape and not np.array_equal(variant, pixels), setting
    assert np.array_equal(images.augment(pixels, ImageAugmentation(), random.Random(0)), pixels)
