"""Image steps: decoding, preprocessing to the version's shape, the near-duplicate hash and
seeded augmentation (Pillow).

Preprocessed images travel between the pipeline's passes as uint8 ``H x W x C`` bytes (what the
exact-dedup key hashes: two files that decode to the same pixels are one image); they become
the layout's float32 ``C*H*W`` pixels in [-1, 1] only when written.

Near duplicates are found on a 64-bit difference hash (dHash: is each pixel of a 9x8 grayscale
thumbnail brighter than its right neighbour): two images are near duplicates when at least
``threshold`` of their 64 bits agree. Re-encoding, resizing, small crops and colour changes keep
most bits; different images agree on about half. The index finds every pair within the allowed
distance d by the pigeonhole principle: split into d + 1 bands, two hashes within d bits agree
exactly on at least one band. The config refuses thresholds under 0.75
(``MIN_IMAGE_NEAR_DUPLICATE_THRESHOLD``), where unrelated images would match.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageOps, UnidentifiedImageError

HASH_BITS = 64
# Decompression bombs: a corrupt or hostile file must not take the pod's memory.
MAX_PIXELS = 100_000_000


class ImageError(ValueError):
    """A record's image cannot be decoded; the record is quarantined."""


@dataclass(frozen=True)
class ImageShape:
    width: int
    height: int
    channels: int  # 3 for RGB, 1 for L

    @property
    def chw(self) -> list[int]:
        return [self.channels, self.height, self.width]


def decode(data: bytes) -> Image.Image:
    """The image in a file's bytes (any format Pillow reads), fully loaded."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageError(f"image: {opened.width}x{opened.height} is larger than {MAX_PIXELS} pixels")
            opened.load()
            return opened.copy()
    except UnidentifiedImageError:
        # Its message names an object address: the quarantine (part of the version) must not.
        raise ImageError("image: cannot decode (not in a format Pillow reads)") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"image: cannot decode ({error})") from None


def preprocess(image: Image.Image, shape: ImageShape, resize: str) -> np.ndarray:
    """The image in the version's colour space and size, as uint8 H x W x C.

    ``resize``: ``stretch`` scales to the size, ``centerCrop`` scales the shorter side to fit
    and cuts the middle, ``pad`` scales the longer side to fit and letterboxes with black.
    """
    image = ImageOps.exif_transpose(image)  # phones store rotation as a tag
    if image.mode in ("RGBA", "LA", "P", "PA"):  # transparency over white, not over undefined colour
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("RGB" if shape.channels == 3 else "L")
    size = (shape.width, shape.height)
    if resize == "stretch":
        image = image.resize(size, Image.Resampling.BILINEAR)
    elif resize == "centerCrop":
        image = ImageOps.fit(image, size, Image.Resampling.BILINEAR)
    elif resize == "pad":
        image = ImageOps.pad(image, size, Image.Resampling.BILINEAR, color=0)
    else:
        raise ValueError(f"unknown resize {resize!r}")
    return np.asarray(image, dtype=np.uint8).reshape(shape.height, shape.width, shape.channels)


def to_layout(pixels: np.ndarray) -> np.ndarray:
    """uint8 H x W x C to the layout's flattened float32 C*H*W in [-1, 1]."""
    return (pixels.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0).reshape(-1)


def difference_hash(pixels: np.ndarray) -> int:
    """64-bit dHash of a preprocessed image."""
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    gray = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


class HashIndex:
    """Kept images' difference hashes; `keep` says whether an image is new (and then keeps it)."""

    def __init__(self, threshold: float):
        self.max_distance = math.floor(HASH_BITS * (1.0 - threshold) + 1e-9)
        # d + 1 bands: exact by the pigeonhole principle. The config's least threshold (0.75)
        # keeps bands at 3 bits or more, so a bucket holds at most about an eighth of the images.
        bands = self.max_distance + 1
        # Band edges over the 64 bits, as even as they come.
        edges = [round(i * HASH_BITS / bands) for i in range(bands + 1)]
        self._bands = [(start, (1 << (end - start)) - 1) for start, end in zip(edges, edges[1:])]
        self._buckets: list[dict[int, list[int]]] = [{} for _ in self._bands]

    def keep(self, value: int) -> bool:
        keys = [(value >> start) & mask for start, mask in self._bands]
        for bucket, key in zip(self._buckets, keys):
            for other in bucket.get(key, ()):
                if (value ^ other).bit_count() <= self.max_distance:
                    return False
        for bucket, key in zip(self._buckets, keys):
            bucket.setdefault(key, []).append(value)
        return True


def augment(pixels: np.ndarray, augmentation, rng: random.Random) -> np.ndarray:
    """A synthetic variant of a preprocessed image: crop, rotation, mirror and colour jitter as
    declared (``strata_workloads.data.config.ImageAugmentation``), drawn from ``rng``."""
    height, width, channels = pixels.shape
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if augmentation.random_crop > 0:
        cut_x = int(width * augmentation.random_crop * rng.random())
        cut_y = int(height * augmentation.random_crop * rng.random())
        left, top = rng.randint(0, cut_x), rng.randint(0, cut_y)
        image = image.crop((left, top, width - (cut_x - left), height - (cut_y - top))).resize(
            (width, height), Image.Resampling.BILINEAR)
    if augmentation.rotation_degrees > 0:
        angle = rng.uniform(-augmentation.rotation_degrees, augmentation.rotation_degrees)
        image = image.rotate(angle, Image.Resampling.BILINEAR)
    if augmentation.horizontal_flip:
        image = ImageOps.mirror(image)
    if augmentation.color_jitter > 0:
        strength = augmentation.color_jitter
        enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast] + ([ImageEnhance.Color] if channels == 3 else [])
        for enhancer in enhancers:
            image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    return np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
