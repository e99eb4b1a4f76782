"""Drift of inputs against a reference sample: PSI and a two-sample test, numeric and text.

A feature drifts when both say so: its population stability index exceeds ``max_psi`` (the
shift is large enough to matter) and the two-sample Kolmogorov-Smirnov test rejects "same
distribution" at ``alpha`` (it is not sampling noise). PSI alone alarms on small windows
(its expected value under no drift grows like bins/n), the test alone on huge ones (it finds
shifts too small to matter); together they keep the false-alarm rate near the test's alpha
and below it. With several features, alpha is split over them (Bonferroni), so a policy's
false-alarm rate stays at alpha however many inputs the model has.

Text is two features: its length in tokens (numeric, as above) and its token distribution
(PSI over the reference's most frequent tokens plus one bucket for the rest, with a
chi-squared test of homogeneity on the same counts).

Token sketches of token-id inputs (what the Dataset pipeline and the serving sidecar both
make) are compared the same way, in pure Python, by monitor/sketch.py.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from strata_workloads.monitor.result import MonitorResult, judge
from strata_workloads.monitor import sketch
from strata_workloads.monitor.sketch import DEFAULT_ALPHA, counts_drift, drift_verdict

DEFAULT_BINS = 10
TOP_TOKENS = 50
_TOKEN = re.compile(r"\w+", re.UNICODE)


def bin_edges(reference: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner edges at the reference's quantiles (equal-mass bins; ties merge bins)."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def psi(reference: Sequence[float], current: Sequence[float], bins: int = DEFAULT_BINS) -> float:
    """Population stability index of `current` against `reference` over the reference's deciles."""
    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    edges = bin_edges(reference, bins)
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=edges.size + 1)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=edges.size + 1)
    return sketch.psi(ref_counts, cur_counts)


def ks_test(reference: Sequence[float], current: Sequence[float]) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and p-value."""
    result = stats.ks_2samp(np.asarray(reference, dtype=float), np.asarray(current, dtype=float))
    return float(result.statistic), float(result.pvalue)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def token_drift(reference: Sequence[str], current: Sequence[str], top: int = TOP_TOKENS) -> tuple[float, float]:
    """PSI and chi-squared p-value of the token distribution (reference's top tokens + the rest)."""
    ref_counts = Counter(token for text in reference for token in tokens(text))
    cur_counts = Counter(token for text in current for token in tokens(text))
    vocabulary = [token for token, _ in ref_counts.most_common(top)]

    def histogram(counts: Counter) -> np.ndarray:
        kept = [counts.get(token, 0) for token in vocabulary]
        return np.asarray(kept + [sum(counts.values()) - sum(kept)], dtype=float)

    # Tokens within a text are not independent draws, so the p-value is optimistic; the PSI
    # gate (both must agree) is what keeps long texts from alarming on noise.
    return counts_drift(histogram(ref_counts), histogram(cur_counts))


def feature_drift(reference: Mapping[str, Sequence], current: Mapping[str, Sequence], max_psi: float,
                  min_samples: int, window: str, alpha: float = DEFAULT_ALPHA, bins: int = DEFAULT_BINS) -> MonitorResult:
    """Drift of every feature the reference has; the value is the largest PSI.

    A feature is numeric (a sequence of numbers) or text (a sequence of strings: its length
    and its tokens are compared). The samples are the fewest values any feature has in the
    current window.
    """
    tests: list[tuple[str, float, float]] = []  # (what, psi, p)
    for name, ref_values in reference.items():
        cur_values = list(current.get(name, ()))
        ref_values = list(ref_values)
        if not ref_values or not cur_values:
            continue
        if isinstance(ref_values[0], str):
            ref_lengths = [len(tokens(text)) for text in ref_values]
            cur_lengths = [len(tokens(text)) for text in cur_values]
            tests.append((f"{name}.length", psi(ref_lengths, cur_lengths, bins), ks_test(ref_lengths, cur_lengths)[1]))
            tests.append((f"{name}.tokens", *token_drift(ref_values, cur_values)))
        else:
            tests.append((name, psi(ref_values, cur_values, bins), ks_test(ref_values, cur_values)[1]))
    samples = min((len(list(current.get(name, ()))) for name in reference), default=0)
    if not tests:
        return judge("drift", None, 0, min_samples, window, False, "")
    return drift_verdict(tests, samples, max_psi, min_samples, window, alpha)


