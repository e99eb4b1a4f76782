"""Token sketches: the one summary of token-id inputs that both sides of drift monitoring make.

The Dataset pipeline sketches the tokens of the records it keeps (the version's reference,
carried in its termination message into the Dataset's status.history); the serving sidecar
sketches the integer input tensors of sampled requests, per minute (GET /stats?window=).
The FeedbackPolicy compares the two with :func:`sketch_drift`. Both sides build sketches with
this class, so they bin alike by construction. Reading and comparing sketches is pure Python
(the operator has no numpy); adding to one imports numpy.

A sketch of rows of token ids holds:
  rows     how many sequences it saw (a record, or one row of a batched request)
  length   sequences per length bin (lower edges LENGTH_EDGES, the last one open-ended)
  ids      token ids per bucket, bucket = id mod ID_BUCKETS: the token distribution in a
           fixed, small shape that needs no vocabulary (the sidecar has no tokenizer)

A text sketch treats each text as the sequence of its UTF-8 bytes (lengths in bytes, byte
values as the ids, ASCII letters folded to lower case, as a Dataset may lowercase): text
inputs (BYTES tensors) are compared with the version's text column without a tokenizer.

A reference names its sketches by the Dataset column they summarise ("tokens", "text"); a model
input tensor of the same name is compared with it.

A value sketch (:class:`ValueSketch`) summarises float inputs (FP16, FP32, FP64, BF16: a VAE
decoder's latent, a generator's noise, an image) with no range known in advance: signed
logarithmic buckets of fixed relative accuracy, as DDSketch makes them. The sidecar sketches
each float input per minute; the FeedbackPolicy compares a window's with the window before's
(:func:`value_drift`). As with token sketches, reading, merging and comparing them is pure
Python; adding imports numpy (the sidecar has it).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from strata_workloads.monitor.result import INSUFFICIENT_DATA, MonitorResult, judge

# Token counts per sequence (data.text.TOKEN_EDGES is this list: the version's statistics use it).
LENGTH_EDGES = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ID_BUCKETS = 64
TOKENS_COLUMN = "tokens"
TEXT_COLUMN = "text"
DEFAULT_ALPHA = 0.01
# Floor of a bin's share in PSI, so an empty bin adds a large but finite term.
PSI_EPSILON = 1e-4


class TokenSketch:
    """Counts as plain lists, so the operator reads and compares sketches without numpy; the
    adding side (pipeline, sidecar) has numpy and imports it when it adds."""

    def __init__(self, rows: int = 0, length: Iterable[int] | None = None, ids: Iterable[int] | None = None):
        self.rows = int(rows)
        self.length = [0] * len(LENGTH_EDGES) if length is None else [int(v) for v in length]
        self.ids = [0] * ID_BUCKETS if ids is None else [int(v) for v in ids]
        if len(self.length) != len(LENGTH_EDGES) or len(self.ids) != ID_BUCKETS:
            raise ValueError(f"a token sketch has {len(LENGTH_EDGES)} length bins and {ID_BUCKETS} id buckets, "
                             f"got {len(self.length)} and {len(self.ids)}")

    def add(self, sequence) -> None:
        """One sequence of token ids (any integer dtype; negative ids, e.g. padding, are skipped)."""
        self.add_sequences([sequence])

    def add_sequences(self, sequences: Iterable[Iterable[int]]) -> None:
        """Many sequences at once (the pipeline's batches)."""
        import numpy as np

        arrays = [np.asarray(sequence, dtype=np.int64).reshape(-1) for sequence in sequences]
        if not arrays:
            return
        arrays = [array[array >= 0] for array in arrays]
        lengths = np.fromiter((array.size for array in arrays), dtype=np.int64, count=len(arrays))
        bins = np.bincount(np.searchsorted(LENGTH_EDGES, lengths, side="right") - 1, minlength=len(LENGTH_EDGES))
        flat = np.concatenate(arrays)
        buckets = np.bincount(flat % ID_BUCKETS, minlength=ID_BUCKETS) if flat.size else np.zeros(ID_BUCKETS, np.int64)
        self.rows += len(arrays)
        self.length = [a + int(b) for a, b in zip(self.length, bins)]
        self.ids = [a + int(b) for a, b in zip(self.ids, buckets)]

    def add_texts(self, texts: Iterable[bytes | str]) -> None:
        """Texts as sequences of their UTF-8 bytes, ASCII letters in lower case."""
        import numpy as np

        def folded(text: bytes | str):
            raw = np.frombuffer(text.encode() if isinstance(text, str) else bytes(text), dtype=np.uint8)
            return np.where((raw >= 65) & (raw <= 90), raw + 32, raw)

        self.add_sequences(folded(text) for text in texts)

    def add_rows(self, values, shape: list[int]) -> None:
        """A tensor as the sidecar sees it: the first dimension is the batch when there are two
        or more (each row a sequence), otherwise the tensor is one sequence."""
        import numpy as np

        values = np.asarray(values).reshape(-1)
        if len(shape) >= 2 and shape[0] > 0:
            self.add_sequences(values.reshape(shape[0], -1))
        else:
            self.add_sequences([values])

    def merge(self, other: "TokenSketch") -> "TokenSketch":
        return TokenSketch(self.rows + other.rows, [a + b for a, b in zip(self.length, other.length)],
                           [a + b for a, b in zip(self.ids, other.ids)])

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "length": list(self.length), "ids": list(self.ids)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "TokenSketch":
        return cls(int(raw.get("rows", 0)), raw.get("length"), raw.get("ids"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenSketch) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TokenSketch(rows={self.rows})"


# ---- value sketches: float inputs ----

# Bucket i holds the magnitudes in (gamma^(i-1), gamma^i], gamma = (1 + a) / (1 - a): every
# value lies within a (DDSketch's relative accuracy) of its bucket's middle. Far finer than the
# COMPARED_BINS bins drift is judged on, so those fall where the reference's quantiles are, not
# where buckets happen to end; coarse enough that a minute of a feature fills a few hundred.
RELATIVE_ACCURACY = 0.02
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Magnitudes below ZERO_MAGNITUDE count as zero; those above MAX_MAGNITUDE share the outermost
# bucket. The clamp bounds a sketch to 2 * (_MAX_INDEX - _MIN_INDEX + 1) + 1 buckets (about
# 2,400) whatever a client sends; values a model takes seldom fill more than a few hundred.
ZERO_MAGNITUDE = 1e-9
MAX_MAGNITUDE = 1e12
_MIN_INDEX = math.ceil(math.log(ZERO_MAGNITUDE) / _LOG_GAMMA)
_MAX_INDEX = math.ceil(math.log(MAX_MAGNITUDE) / _LOG_GAMMA)
# Triton datatype -> (numpy code of its little-endian elements, bytes per element). BF16 is
# the high half of an FP32 and is widened to one.
FLOAT_TYPES = {"FP16": ("f2", 2), "FP32": ("f4", 4), "FP64": ("f8", 8), "BF16": ("u2", 2)}
# What value drift is judged on: the reference's values in this many equal-mass bins.
COMPARED_BINS = 10


def buckets(values) -> "Any":
    """The bucket of each finite value (a numpy array), ordered as the values are: 0 for
    |value| < ZERO_MAGNITUDE, else sign * (1 + index - the smallest index), where the index is
    ceil(log_gamma |value|) clamped to the magnitudes sketched (bucket index i holds the
    magnitudes in (gamma^(i-1), gamma^i]). One function buckets every value added, whatever
    the way in, so two sketches of the same values are equal."""
    import numpy as np

    magnitude = np.abs(values)
    small = magnitude < ZERO_MAGNITUDE
    with np.errstate(divide="ignore"):
        index = np.ceil(np.log(np.where(small, 1.0, magnitude)) / _LOG_GAMMA)
    level = np.clip(index, _MIN_INDEX, _MAX_INDEX).astype(np.int64) - _MIN_INDEX + 1
    return np.where(small, 0, np.where(values > 0, level, -level))


class ValueSketch:
    """Counts of float values per logarithmic bucket (a dict, sparse), with NaN and the
    infinities counted apart; `rows` are the rows the values came from (what a drift
    monitor's minSamples counts), `count` every value added. Merging adds counts, so a sum
    of sketches equals the sketch of all their values: the sidecar's minutes add up to a
    window, and the sidecars of a deployment to one sketch."""

    def __init__(self, rows: int = 0, counts: Mapping[int, int] | None = None, nan: int = 0,
                 negative_infinity: int = 0, positive_infinity: int = 0):
        self.rows = int(rows)
        self.counts: dict[int, int] = {int(key): int(n) for key, n in (counts or {}).items() if int(n)}
        self.nan = int(nan)
        self.negative_infinity = int(negative_infinity)
        self.positive_infinity = int(positive_infinity)

    @property
    def count(self) -> int:
        return sum(self.counts.values()) + self.nan + self.negative_infinity + self.positive_infinity

    def add(self, values: Iterable[float], rows: int = 1) -> None:
        """Values (any iterable of numbers, or an array) that came from `rows` rows (by default
        one)."""
        import numpy as np

        self._add_array(np.fromiter(values, dtype=np.float64) if not hasattr(values, "dtype")
                        else np.asarray(values, dtype=np.float64).reshape(-1), rows)

    def add_raw(self, raw: bytes, datatype: str, shape: Sequence[int], limit: int) -> None:
        """A tensor as Triton carries it: `raw` its little-endian elements of `datatype` (a
        FLOAT_TYPES key). At most `limit` elements are taken, evenly spaced over the whole
        tensor (every row's and every channel's, where the first `limit` would be an image's
        top rows); the same shape is always sampled at the same positions, so two windows of
        like requests are sampled alike. The first dimension is the batch when there are two
        or more (as TokenSketch.add_rows has it): the rows counted are those a sampled
        element lies in."""
        import numpy as np

        code, size = FLOAT_TYPES[datatype]
        view = memoryview(raw).cast("B")
        elements = len(view) // size
        if elements == 0 or limit <= 0:
            return
        step = -(-elements // limit)  # ceil: at most `limit` taken
        # Only the chosen elements are read: a strided view of the bytes, nothing copied before.
        chosen = np.frombuffer(view[:elements * size], dtype=f"<{code}")[::step]
        if datatype == "BF16":  # the high 16 bits of an FP32
            values = (chosen.astype(np.uint32) << 16).view(np.float32)
        else:
            values = chosen
        batch = int(shape[0]) if len(shape) >= 2 and int(shape[0]) > 0 else 1
        rows = 1
        if batch > 1:
            per_row = max(1, elements // batch)
            rows = min(batch, len(np.unique(np.arange(0, elements, step) // per_row)))
        self._add_array(values.astype(np.float64), rows)

    def _add_array(self, values, rows: int) -> None:
        import numpy as np

        nan = np.isnan(values)
        infinite = np.isinf(values)
        self.nan += int(nan.sum())
        self.positive_infinity += int((infinite & (values > 0)).sum())
        self.negative_infinity += int((infinite & (values < 0)).sum())
        keys, counts = np.unique(buckets(values[~(nan | infinite)]), return_counts=True)
        for key, n in zip(keys.tolist(), counts.tolist()):
            self.counts[key] = self.counts.get(key, 0) + n
        self.rows += int(rows)

    def merge(self, other: "ValueSketch") -> "ValueSketch":
        counts = dict(self.counts)
        for key, n in other.counts.items():
            counts[key] = counts.get(key, 0) + n
        return ValueSketch(self.rows + other.rows, counts, self.nan + other.nan,
                           self.negative_infinity + other.negative_infinity,
                           self.positive_infinity + other.positive_infinity)

    def to_dict(self) -> dict[str, Any]:
        """JSON: bucket keys as strings, in value order; the accuracy, so that a sketch made
        with other buckets is refused rather than compared."""
        return {"rows": self.rows, "count": self.count, "relativeAccuracy": RELATIVE_ACCURACY,
                "buckets": {str(key): self.counts[key] for key in sorted(self.counts)}, "nan": self.nan,
                "negativeInfinity": self.negative_infinity, "positiveInfinity": self.positive_infinity}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ValueSketch":
        accuracy = raw.get("relativeAccuracy", RELATIVE_ACCURACY)
        if accuracy != RELATIVE_ACCURACY:
            raise ValueError(f"a value sketch has buckets of relative accuracy {RELATIVE_ACCURACY}, got {accuracy}")
        return cls(int(raw.get("rows", 0)), {int(key): n for key, n in (raw.get("buckets") or {}).items()},
                   int(raw.get("nan", 0)), int(raw.get("negativeInfinity", 0)), int(raw.get("positiveInfinity", 0)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValueSketch) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ValueSketch(rows={self.rows}, count={self.count})"


# ---- comparing histograms (pure Python: the operator runs these) ----

def psi(reference: Sequence[float], current: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (counts or shares)."""
    ref_total, cur_total = float(sum(reference)), float(sum(current))
    value = 0.0
    for ref, cur in zip(reference, current):
        ref_share, cur_share = max(ref / ref_total, PSI_EPSILON), max(cur / cur_total, PSI_EPSILON)
        value += (cur_share - ref_share) * math.log(cur_share / ref_share)
    return value


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-squared with `dof` degrees of freedom: the regularized upper
    incomplete gamma function Q(dof/2, statistic/2) (series below a+1, continued fraction above)."""
    a, x = dof / 2.0, statistic / 2.0
    if x <= 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_prefactor)))
    tiny = 1e-300
    b = x + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return min(1.0, max(0.0, math.exp(log_prefactor) * h))


def counts_drift(reference: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """PSI and the chi-squared test of homogeneity's p-value of two histograms over the same bins."""
    if sum(reference) <= 0 or sum(current) <= 0:
        return 0.0, 1.0
    value = psi(reference, current)
    columns = [(float(r), float(c)) for r, c in zip(reference, current) if r + c > 0]
    if len(columns) < 2:
        return value, 1.0
    ref_total, cur_total = sum(r for r, _ in columns), sum(c for _, c in columns)
    total = ref_total + cur_total
    statistic = 0.0
    for r, c in columns:
        for observed, row_total in ((r, ref_total), (c, cur_total)):
            expected = row_total * (r + c) / total
            statistic += (observed - expected) ** 2 / expected
    return value, chi2_sf(statistic, len(columns) - 1)


def drift_verdict(tests: list[tuple[str, float, float]], samples: int, max_psi: float, min_samples: int,
                  window: str, alpha: float = DEFAULT_ALPHA) -> MonitorResult:
    """Drifted where a test's PSI exceeds the limit and its p-value is below alpha split over
    the tests (Bonferroni); the value is the largest PSI."""
    threshold = alpha / len(tests)
    drifted = [(what, value, p) for what, value, p in tests if value > max_psi and p < threshold]
    worst = max(tests, key=lambda test: test[1])
    details = {what: {"psi": round(value, 6), "pValue": p} for what, value, p in tests}
    if drifted:
        names = ", ".join(f"{what} (PSI {value:.3f}, p {p:.2g})" for what, value, p in drifted)
        message = f"drifted in {window}: {names}; limits PSI {max_psi:g} and p {threshold:.2g}"
    else:
        message = f"no drift in {window}: largest PSI {worst[1]:.3f} ({worst[0]}), limit {max_psi:g}"
    return judge("drift", worst[1], samples, min_samples, window, bool(drifted), message, details)


@dataclass(frozen=True)
class Comparison:
    """One kind of input compared with one baseline: its tests, or why there are none."""

    against: str  # "Dataset chats version 3f2a", "the 1h before"
    tests: list[tuple[str, float, float]]  # (what, PSI, p-value)
    samples: int  # the fewest rows any compared input has in the current window
    inputs: tuple[str, ...] = ()  # the inputs compared
    unmet: str = ""  # why nothing was compared, when nothing was
    seen: bool = False  # whether the current window had inputs of this kind at all


def token_comparison(reference: Mapping[str, TokenSketch], current: Mapping[str, TokenSketch], window: str,
                     against: str = "the reference") -> Comparison:
    """Every input sketched on both sides under one name: its length bins and its id buckets.

    Token ids within a row are not independent draws, so the ids' p-value is optimistic; the
    PSI gate (both must agree) is what keeps that from alarming on noise.
    """
    seen = any(sketch.rows for sketch in current.values())
    compared = sorted(name for name in reference if reference[name].rows and name in current)
    if not compared:
        if not any(sketch.rows for sketch in reference.values()):
            why = f"{against} has no token sketches"
        else:
            why = (f"no sampled request in {window} had an input named like a column of {against} "
                   f"({', '.join(sorted(reference))}); inputs seen: {', '.join(sorted(current)) or 'none'}")
        return Comparison(against, [], 0, unmet=why, seen=seen)
    tests: list[tuple[str, float, float]] = []
    for name in compared:
        tests.append((f"{name}.length", *counts_drift(reference[name].length, current[name].length)))
        tests.append((f"{name}.ids", *counts_drift(reference[name].ids, current[name].ids)))
    return Comparison(against, tests, min(current[name].rows for name in compared), tuple(compared), seen=seen)


def value_drift(reference: ValueSketch, current: ValueSketch, bins: int = COMPARED_BINS) -> tuple[float, float]:
    """PSI and the chi-squared test of homogeneity's p-value of two value sketches, over at most
    `bins` bins of equal reference mass (edges at the reference's quantiles, as
    drift.feature_drift bins numeric features), plus a bin each for NaN and either infinity
    when either sketch has any (a feature that starts to overflow has drifted).

    Equal-mass bins keep PSI stable: its expectation under no drift is about
    (bins - 1) * (1/n_reference + 1/n_current), however the values spread, and no bin has
    so few expected values that the chi-squared approximation fails. A bucket is never split,
    so a value the reference holds in bulk (zero, say) makes one bin and fewer bins result.
    Values of one row are seldom independent (an image's pixels, a latent's dimensions), so
    the p-value is optimistic when rows carry many values; the PSI gate, which does not
    shrink with the sample size, keeps that from alarming on noise.
    """
    finite = sorted(reference.counts.items())
    total = sum(n for _, n in finite)
    edges: list[int] = []  # the largest bucket key of each bin but the last, which is open above
    cumulative, target = 0, total / bins
    for key, n in finite[:-1]:
        cumulative += n
        if cumulative >= target:
            edges.append(key)
            target = (math.floor(cumulative * bins / total) + 1) * total / bins
    ref_bins, cur_bins = [0] * (len(edges) + 1), [0] * (len(edges) + 1)
    for key, n in finite:
        ref_bins[bisect_left(edges, key)] += n
    for key, n in current.counts.items():
        cur_bins[bisect_left(edges, key)] += n
    for ref_count, cur_count in ((reference.nan, current.nan),
                                 (reference.negative_infinity, current.negative_infinity),
                                 (reference.positive_infinity, current.positive_infinity)):
        if ref_count or cur_count:
            ref_bins.append(ref_count)
            cur_bins.append(cur_count)
    return counts_drift(ref_bins, cur_bins)


def value_comparison(reference: Mapping[str, ValueSketch], current: Mapping[str, ValueSketch], window: str,
                     against: str) -> Comparison:
    """Every float input sketched in both windows: its values (value_drift)."""
    seen = sorted(name for name, sketch in current.items() if sketch.rows)
    compared = [name for name in seen if name in reference and reference[name].count]
    if not compared:
        why = (f"{against} had no sampled request with the float inputs {', '.join(seen)}" if seen
               else f"no sampled request in {window} had a float input")
        return Comparison(against, [], 0, unmet=why, seen=bool(seen))
    tests = [(name, *value_drift(reference[name], current[name])) for name in compared]
    return Comparison(against, tests, min(current[name].rows for name in compared), tuple(compared), seen=True)


def compared_drift(comparisons: Sequence[Comparison], max_psi: float, min_samples: int, window: str,
                   alpha: float = DEFAULT_ALPHA) -> MonitorResult:
    """One verdict over every comparison's tests (drift_verdict: alpha split over them all). The
    samples are the fewest of any comparison; a kind of input seen but not compared says why."""
    made = [comparison for comparison in comparisons if comparison.tests]
    if not made:
        unmet = [c.unmet for c in comparisons if c.seen] or [c.unmet for c in comparisons]
        return MonitorResult("drift", None, INSUFFICIENT_DATA, 0, window, "; ".join(unmet))
    tests = [test for comparison in made for test in comparison.tests]
    result = drift_verdict(tests, min(comparison.samples for comparison in made), max_psi, min_samples, window, alpha)
    if result.verdict == INSUFFICIENT_DATA:
        return result
    baselines = list(dict.fromkeys(comparison.against for comparison in made))
    if len(baselines) == 1:
        against = baselines[0]
    else:
        against = " and ".join(f"{c.against} ({', '.join(c.inputs)})" for c in made)
    notes = "".join(f"; not compared: {c.unmet}" for c in comparisons if c.seen and not c.tests)
    return MonitorResult(result.name, result.value, result.verdict, result.samples, result.window,
                         f"against {against}: {result.message}{notes}", result.details)


def sketch_drift(reference: Mapping[str, TokenSketch], current: Mapping[str, TokenSketch], max_psi: float,
                 min_samples: int, window: str, alpha: float = DEFAULT_ALPHA, against: str = "the reference") -> MonitorResult:
    """Drift of every token-id or text input sketched on both sides under one name
    (token_comparison); the samples are the fewest rows any compared input has."""
    return compared_drift([token_comparison(reference, current, window, against)], max_psi, min_samples, window,
                          alpha)
