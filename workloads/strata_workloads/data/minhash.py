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
    """Keeps the first record of each near-duplicate group: a record whose signature collides in
    any LSH band with a kept record is a near duplicate; only kept records are indexed."""

    def __init__(self, threshold: float, num_perm: int, seed: int = 1):
        self.hasher = BatchMinHasher(num_perm, seed)
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.kept = 0
        # One MinHash whose hashvalues are swapped per record: the LSH keeps only band hashes, and
        # building a validated MinHash per record would cost more than the query itself.
        self._probe = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME)

    def filter(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Boolean mask of the records to keep, in order; kept records join the index."""
        signatures = self.hasher.signatures(hashes, counts)
        keep = np.ones(counts.size, dtype=bool)
        for row in range(counts.size):
            if counts[row] == 0:
                continue  # nothing to compare; exact dedup handles empty text
            self._probe.hashvalues = signatures[row]
            if self.lsh.query(self._probe):
                keep[row] = False
            else:
                self.lsh.insert(self.kept, self._probe, check_duplication=False)
                self.kept += 1
        return keep
