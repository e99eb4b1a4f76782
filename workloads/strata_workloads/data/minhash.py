"""Near-duplicate removal: MinHash signatures computed for a whole batch at once, LSH from datasketch.

datasketch's ``MinHash.update_batch`` hashes every shingle in Python and handles one record per
call; for millions of short records that per-record overhead dominates. Here the shingles of a
batch are hashed with numpy (n-grams of token ids combined arithmetically) and the permutation +
minimum runs once per batch. The permutations and the formula are datasketch's default
``affine32`` scheme (MurmurHash3 finalizer, then ``a*h + b mod 2^32``: no 61-bit modulo), so a
signature equals ``MinHash(num_perm, seed, scheme="affine32")`` fed the same shingle hashes (a
test checks it), and the signatures go into datasketch's ``MinHashLSH`` unchanged.
"""

from __future__ import annotations

import numpy as np
from datasketch import MinHash, MinHashLSH

SCHEME = "affine32"
_MAX_HASH = np.uint64((1 << 32) - 1)
_MAX_HASH32 = np.uint32((1 << 32) - 1)
_SHINGLE_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
# Cap on shingles x permutations per numpy step (~32 MiB of uint32), so memory stays bounded.
_MAX_CELLS = 8_000_000


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (what datasketch applies before its affine32 permutations)."""
    values = values ^ (values >> np.uint32(16))
    values = values * np.uint32(0x85EBCA6B)
    values = values ^ (values >> np.uint32(13))
    values = values * np.uint32(0xC2B2AE35)
    return values ^ (values >> np.uint32(16))


def shingle_hashes(token_ids: list[list[int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every ``size``-token window of each record, and each record's shingle count.

    A record shorter than ``size`` contributes one shingle of all its tokens; an empty record none.
    """
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    if not lengths.sum():
        return np.zeros(0, dtype=np.uint64), np.zeros(len(token_ids), dtype=np.int64)
    flat = np.fromiter((t for ids in token_ids for t in ids), dtype=np.uint64, count=int(lengths.sum()))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    ends = starts + lengths
    counts = np.where(lengths > 0, np.maximum(lengths - size + 1, 1), 0)
    record_of_shingle = np.repeat(np.arange(len(token_ids)), counts)
    offset_in_record = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    positions = starts[record_of_shingle] + offset_in_record
    limit = ends[record_of_shingle]
    padded = np.concatenate((flat, np.zeros(size, dtype=np.uint64)))
    combined = np.zeros(positions.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(size):
            tokens = np.where(positions + k < limit, padded[positions + k] + np.uint64(1), np.uint64(0))
            combined = combined * _SHINGLE_MULTIPLIER + tokens
        combined ^= combined >> np.uint64(29)
        combined *= _SHINGLE_MULTIPLIER
        combined ^= combined >> np.uint64(32)
    return combined & _MAX_HASH, counts


class BatchMinHasher:
    def __init__(self, num_perm: int, seed: int = 1):
        self.num_perm = num_perm
        self.seed = seed
        # datasketch's own permutation parameters for the scheme.
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self.a = np.asarray(a, dtype=np.uint32)
        self.b = np.asarray(b, dtype=np.uint32)

    def signatures(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``[records, num_perm]`` signatures; records without shingles get all-max (never similar)."""
        result = np.full((counts.size, self.num_perm), _MAX_HASH32, dtype=np.uint32)
        mixed = _fmix32(hashes.astype(np.uint32))
        bounds = np.concatenate(([0], np.cumsum(counts)))
        step = max(1, _MAX_CELLS // self.num_perm)
        record = 0
        while record < counts.size:
            # Records whose shingles fit in one step (at least one record).
            last = max(record + 1, int(np.searchsorted(bounds, bounds[record] + step, side="right")) - 1)
            last = min(last, counts.size)
            lo, hi = bounds[record], bounds[last]
            if hi > lo:
                # [num_perm, shingles]: reduceat along the contiguous axis is far faster.
                with np.errstate(over="ignore"):
                    permuted = self.a[:, None] * mixed[None, lo:hi] + self.b[:, None]
                chunk_counts = counts[record:last]
                nonempty = np.flatnonzero(chunk_counts)
                offsets = (bounds[record:last] - lo)[nonempty]
                result[record + nonempty] = np.minimum.reduceat(permuted, offsets, axis=1).T
            record = last
        return result


class NearDuplicateIndex:
    """Keeps the first record of each near-duplicate group, as datasketch's ``MinHashLSH`` would.

    A record is a near duplicate when, in any of the ``b`` bands (``b`` and ``r`` are the ones
    ``MinHashLSH`` picks for the threshold), its ``r`` signature values equal a kept record's:
    exactly ``MinHashLSH.query`` returning a candidate. Only that yes/no is needed (never which
    record), so the index is ``b`` sets of 64-bit band hashes, about 0.6 KB per kept record where
    ``MinHashLSH`` holds about 3.4 KB (band bytes, key lists and a set per bucket), and band
    hashes are computed for a whole batch with numpy. A test checks the decisions equal
    ``MinHashLSH``'s.
    """

    def __init__(self, threshold: float, num_perm: int, seed: int = 1):
        self.hasher = BatchMinHasher(num_perm, seed)
        reference = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = reference.b, reference.r
        self.tables: list[set[int]] = [set() for _ in range(self.bands)]
        self.kept = 0

    def band_hashes(self, signatures: np.ndarray) -> np.ndarray:
        """``[records, bands]`` 64-bit hashes of each band's ``r`` values."""
        banded = signatures[:, : self.bands * self.rows].reshape(len(signatures), self.bands, self.rows).astype(np.uint64)
        combined = np.zeros(banded.shape[:2], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(self.rows):
                combined = (combined ^ banded[:, :, k]) * _SHINGLE_MULTIPLIER
                combined ^= combined >> np.uint64(31)
        return combined

    def filter(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Boolean mask of the records to keep, in order; kept records join the index."""
        band_hashes = self.band_hashes(self.hasher.signatures(hashes, counts)).tolist()
        keep = np.ones(counts.size, dtype=bool)
        tables = self.tables
        for row, record_bands in enumerate(band_hashes):
            if counts[row] == 0:
                continue  # nothing to compare; exact dedup handles empty text
            if any(value in table for value, table in zip(record_bands, tables)):
                keep[row] = False
                continue
            for value, table in zip(record_bands, tables):
                table.add(value)
            self.kept += 1
        return keep
