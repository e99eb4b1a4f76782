"""Toxicity of outputs: scores from an offline classifier, and the toxic share of a window.

The default classifier is alt-profanity-check's (a TF-IDF vectorizer and a calibrated linear
SVM inside its wheel, about 1 MB; no network, no GPU, thousands of texts per second on one
core). A model on a volume replaces it: a directory holding ``vectorizer.joblib`` (anything
with ``transform(texts)``) and ``model.joblib`` (anything with ``predict_proba``, class 1 =
toxic), the layout alt-profanity-check itself uses.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from strata_workloads.monitor.result import MonitorResult, judge

# A text whose score exceeds this counts as toxic (the sidecar's score histogram has a bucket
# bound here, so Prometheus counts toxic outputs the same way: _count - _bucket{le="0.5"}).
TOXIC_SCORE = 0.5


@functools.lru_cache(maxsize=4)
def _classifier(model_dir: str | None):
    import joblib

    if model_dir is None:
        from importlib import resources
        root = resources.files("profanity_check") / "data"
    else:
        root = Path(model_dir)
    return joblib.load(root / "vectorizer.joblib"), joblib.load(root / "model.joblib")


def score(texts: Sequence[str], model_dir: str | None = None) -> list[float]:
    """Probability that each text is toxic (0..1), in one batch."""
    if not texts:
        return []
    vectorizer, model = _classifier(model_dir)
    return [float(p) for p in model.predict_proba(vectorizer.transform(list(texts)))[:, 1]]


def toxicity(scores: Sequence[float], max_rate: float, min_samples: int, window: str,
             threshold: float = TOXIC_SCORE) -> MonitorResult:
    """The share of scored outputs above `threshold`; breached above `max_rate`."""
    flagged = sum(value > threshold for value in scores)
    return toxicity_from_counts(flagged, len(scores), max_rate, min_samples, window)


def toxicity_from_counts(flagged: int, scored: int, max_rate: float, min_samples: int, window: str) -> MonitorResult:
    """The same verdict from counts (what the sidecar's /stats and its metrics report)."""
    rate = flagged / scored if scored else None
    message = (f"{flagged} of {scored} output(s) toxic in {window} ({rate:.3f}; "
               f"{'above' if rate is not None and rate > max_rate else 'within'} the maximum {max_rate:g})"
               if rate is not None else "")
    return judge("toxicity", rate, scored, min_samples, window, rate is not None and rate > max_rate, message)
