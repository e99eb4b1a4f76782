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
"""

from __future__ import annotations

import math
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


def sketch_drift(reference: Mapping[str, TokenSketch], current: Mapping[str, TokenSketch], max_psi: float,
                 min_samples: int, window: str, alpha: float = DEFAULT_ALPHA, against: str = "the reference") -> MonitorResult:
    """Drift of every input sketched on both sides under one name: its length bins and its id
    buckets. The samples are the fewest rows any compared input has in the current window.

    Token ids within a row are not independent draws, so the ids' p-value is optimistic; the
    PSI gate (both must agree) is what keeps that from alarming on noise.
    """
    compared = sorted(name for name in reference if reference[name].rows and name in current)
    if not compared:
        if not any(sketch.rows for sketch in reference.values()):
            why = f"{against} has no token sketches"
        else:
            why = (f"no sampled request in {window} had an input named like a column of {against} "
                   f"({', '.join(sorted(reference))}); inputs seen: {', '.join(sorted(current)) or 'none'}")
        return MonitorResult("drift", None, INSUFFICIENT_DATA, 0, window, why)
    tests: list[tuple[str, float, float]] = []
    for name in compared:
        tests.append((f"{name}.length", *counts_drift(reference[name].length, current[name].length)))
        tests.append((f"{name}.ids", *counts_drift(reference[name].ids, current[name].ids)))
    samples = min(current[name].rows for name in compared)
    result = drift_verdict(tests, samples, max_psi, min_samples, window, alpha)
    message = result.message if result.verdict == INSUFFICIENT_DATA else f"against {against}: {result.message}"
    return MonitorResult(result.name, result.value, result.verdict, result.samples, result.window, message,
                         result.details)
