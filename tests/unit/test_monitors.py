"""The monitors (strata_workloads.monitor) on known inputs: verdicts, thresholds, and the
drift test's false-alarm and detection rates measured over many windows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strata_workloads.monitor import drift, feedback, sketch, toxicity
from strata_workloads.monitor.result import BREACHED, INSUFFICIENT_DATA, OK


def _ratings(ups: int, downs: int, at: float = 100.0, **attributes: str) -> list[dict]:
    return ([{"rating": "up", "time": at, "attributes": attributes}] * ups
            + [{"rating": "down", "time": at, "attributes": attributes}] * downs)


@pytest.mark.parametrize("case, ups, downs, min_rate, min_samples, verdict, value", [
    ("mostly positive feedback is OK", 90, 10, 0.8, 50, OK, 0.9),
    ("approval below the minimum is breached", 30, 70, 0.8, 50, BREACHED, 0.3),
    ("approval exactly at the minimum is OK", 80, 20, 0.8, 50, OK, 0.8),
    ("too few ratings give no verdict", 1, 9, 0.8, 50, INSUFFICIENT_DATA, 0.1),
    ("no ratings at all give no value", 0, 0, 0.8, 1, INSUFFICIENT_DATA, None),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_approval(case, ups, downs, min_rate, min_samples, verdict, value):
    result = feedback.approval(_ratings(ups, downs), min_rate, min_samples, "1h")
    assert (result.verdict, result.samples, result.window) == (verdict, ups + downs, "1h")
    assert result.value == pytest.approx(value) if value is not None else result.value is None


def test_the_window_keeps_only_ratings_within_it():
    records = _ratings(5, 0, at=10.0) + _ratings(0, 5, at=95.0) + _ratings(0, 5, at=101.0)
    kept = feedback.in_window(records, now=100.0, window_seconds=10.0)
    assert [r["rating"] for r in kept] == ["down"] * 5  # 10.0 is too old, 101.0 is in the future


@pytest.mark.parametrize("case, groups, max_disparity, verdict, value", [
    ("equal approval across locales is OK", {"en": (40, 10), "de": (40, 10)}, 0.1, OK, 0.0),
    ("a locale served much worse is breached", {"en": (45, 5), "de": (20, 30)}, 0.2, BREACHED, 0.5),
    ("a small gap within the limit is OK", {"en": (45, 5), "de": (42, 8)}, 0.1, OK, 0.06),
    ("a group below min samples is left out", {"en": (45, 5), "de": (0, 3)}, 0.1, INSUFFICIENT_DATA, None),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_bias(case, groups, max_disparity, verdict, value):
    records = [r for locale, (ups, downs) in groups.items() for r in _ratings(ups, downs, locale=locale)]
    result = feedback.bias(records, ["locale"], max_disparity, min_samples=10, window="1h")
    assert result.verdict == verdict
    assert result.value == pytest.approx(value) if value is not None else result.value is None
    if verdict == BREACHED:
        assert (result.details["lowest"], result.details["highest"]) == ("de", "en")


def test_toxicity_scores_an_insult_high_and_a_pleasantry_low():
    nice, rude = toxicity.score(["have a nice day", "you are a stupid idiot, shut up"])
    assert nice < 0.2 and rude > 0.9


@pytest.mark.parametrize("case, texts, max_rate, verdict", [
    ("polite outputs are OK", ["thank you, that helped", "here is the summary you asked for"] * 10, 0.05, OK),
    ("a quarter of insults is breached",
     ["thank you, that helped"] * 15 + ["you stupid idiot, I hate you"] * 5, 0.1, BREACHED),
    ("two outputs are too few", ["you stupid idiot"] * 2, 0.1, INSUFFICIENT_DATA),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_toxicity_rate(case, texts, max_rate, verdict):
    result = toxicity.toxicity(toxicity.score(texts), max_rate, min_samples=10, window="1h")
    assert result.verdict == verdict and result.samples == len(texts)


# ---- drift ----

REFERENCE_SIZE, WINDOW_SIZE, WINDOWS = 5000, 500, 200


def _false_alarm_and_detection(shift: float, seed: int = 7) -> tuple[float, float]:
    """Share of windows alarmed, drawn from the reference and from one shifted by `shift` std."""
    rng = np.random.default_rng(seed)
    reference = {"x": rng.normal(0, 1, REFERENCE_SIZE), "y": rng.exponential(1, REFERENCE_SIZE)}
    false_alarms = detections = 0
    for _ in range(WINDOWS):
        same = {"x": rng.normal(0, 1, WINDOW_SIZE), "y": rng.exponential(1, WINDOW_SIZE)}
        moved = {"x": rng.normal(shift, 1, WINDOW_SIZE), "y": rng.exponential(1, WINDOW_SIZE)}
        false_alarms += drift.feature_drift(reference, same, max_psi=0.1, min_samples=100, window="w").breached
        detections += drift.feature_drift(reference, moved, max_psi=0.1, min_samples=100, window="w").breached
    return false_alarms / WINDOWS, detections / WINDOWS


def test_numeric_drift_rarely_alarms_on_the_reference_and_catches_a_shift():
    false_alarm, detection = _false_alarm_and_detection(shift=0.5)
    # alpha is 0.01 over both features; allow sampling noise over 200 windows, no more.
    assert false_alarm <= 0.02, false_alarm
    assert detection >= 0.95, detection


def test_psi_grows_with_the_shift():
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 10000)
    values = [drift.psi(reference, rng.normal(shift, 1, 2000)) for shift in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values) and values[0] < 0.02 and values[-1] > 0.5


WORDS = "the model answers questions about orders refunds shipping accounts and invoices".split()
OTHER = "bitcoin wallet seed phrase recovery urgent transfer crypto exchange".split()


def _texts(rng, vocabulary, count, mean_length):
    return [" ".join(rng.choice(vocabulary, size=max(1, rng.poisson(mean_length)))) for _ in range(count)]


def test_text_drift_alarms_on_new_topics_and_longer_prompts_but_not_on_the_same_traffic():
    rng = np.random.default_rng(3)
    reference = {"prompt": _texts(rng, WORDS, 2000, 12)}
    same = [drift.feature_drift(reference, {"prompt": _texts(rng, WORDS, 300, 12)}, 0.1, 100, "w").breached
            for _ in range(50)]
    topic = drift.feature_drift(reference, {"prompt": _texts(rng, WORDS[:6] + OTHER, 300, 12)}, 0.1, 100, "w")
    longer = drift.feature_drift(reference, {"prompt": _texts(rng, WORDS, 300, 24)}, 0.1, 100, "w")
    assert sum(same) <= 1, sum(same)
    assert topic.breached and "prompt.tokens" in topic.message
    assert longer.breached and "prompt.length" in longer.message


def test_drift_needs_min_samples():
    rng = np.random.default_rng(0)
    result = drift.feature_drift({"x": rng.normal(0, 1, 1000)}, {"x": rng.normal(3, 1, 20)}, 0.1, 100, "w")
    assert result.verdict == INSUFFICIENT_DATA and result.samples == 20


# ---- token sketches: pure-Python PSI and chi-squared, as the operator runs them ----

def test_the_pure_chi_squared_tail_and_psi_equal_scipy_and_the_formula():
    from scipy import stats

    for dof in (1, 2, 3, 11, 63, 200):
        for statistic in (0.01, 0.5, 1.0, 5.0, 20.0, 63.0, 100.0, 300.0, 1000.0):
            assert sketch.chi2_sf(statistic, dof) == pytest.approx(stats.chi2.sf(statistic, dof), rel=1e-9, abs=1e-300)
    rng = np.random.default_rng(2)
    for _ in range(20):
        reference, current = rng.integers(0, 50, 64), rng.integers(0, 50, 64)
        value, p = sketch.counts_drift(reference, current)
        ref_share = np.clip(reference / reference.sum(), sketch.PSI_EPSILON, None)
        cur_share = np.clip(current / current.sum(), sketch.PSI_EPSILON, None)
        assert value == pytest.approx(float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share))))
        table = np.vstack([reference, current])
        assert p == pytest.approx(stats.chi2_contingency(table[:, table.sum(axis=0) > 0])[1], rel=1e-9)


VOCABULARY = 400


def _sketch_of(rng, count: int, mean_length: float, topic: int = 0) -> "sketch.TokenSketch":
    """Zipf-like ids, as BPE token frequencies are; another topic makes other ids the frequent ones."""
    weights = 1 / np.arange(1, VOCABULARY + 1)
    ids = np.random.default_rng(topic).permutation(VOCABULARY)
    made = sketch.TokenSketch()
    made.add_sequences(ids[rng.choice(VOCABULARY, size=max(1, rng.poisson(mean_length)), p=weights / weights.sum())]
                       for _ in range(count))
    return made


@pytest.mark.parametrize("case, mean_length, topic, breached_share", [
    ("the reference's own distribution rarely alarms", 20, 0, (0.0, 0.02)),
    ("prompts twice as long alarm", 40, 0, (0.95, 1.0)),
    ("another topic's frequent tokens alarm", 20, 1, (0.95, 1.0)),
])
def test_sketch_drift_over_many_windows(case, mean_length, topic, breached_share):
    rng = np.random.default_rng(4)
    reference = {"tokens": _sketch_of(rng, 3000, 20)}
    results = [sketch.sketch_drift(reference, {"tokens": _sketch_of(rng, 100, mean_length, topic)}, 0.2, 100, "1h")
               for _ in range(100)]
    assert all(result.verdict in (OK, BREACHED) and result.samples == 100 for result in results)
    low, high = breached_share
    assert low <= sum(result.breached for result in results) / len(results) <= high


def test_sketch_drift_says_why_it_has_no_verdict():
    rng = np.random.default_rng(5)
    reference = {"tokens": _sketch_of(rng, 500, 20)}
    few = sketch.sketch_drift(reference, {"tokens": _sketch_of(rng, 10, 20)}, 0.2, 100, "1h")
    assert (few.verdict, few.samples) == (INSUFFICIENT_DATA, 10) and "100 needed" in few.message
    other = sketch.sketch_drift(reference, {"image": _sketch_of(rng, 500, 20)}, 0.2, 100, "1h",
                                against="Dataset chats version 3f2a")
    assert other.verdict == INSUFFICIENT_DATA and "(tokens); inputs seen: image" in other.message
    empty = sketch.sketch_drift({}, {"tokens": _sketch_of(rng, 500, 20)}, 0.2, 100, "1h")
    assert empty.verdict == INSUFFICIENT_DATA and "no token sketches" in empty.message


def test_a_sketch_refuses_counts_of_another_shape():
    with pytest.raises(ValueError, match="12 length bins and 64 id buckets"):
        sketch.TokenSketch.from_dict({"rows": 1, "length": [1], "ids": [0] * 64})


# ---- value sketches: float inputs ----

def _values(rng, count: int) -> np.ndarray:
    """Values of every kind a sketch keeps apart: both signs over many magnitudes, zeros, NaN
    and both infinities."""
    values = rng.normal(0, 1, count) * 10.0 ** rng.integers(-12, 14, count)
    values[rng.random(count) < 0.05] = 0.0
    values[rng.random(count) < 0.02] = np.nan
    values[rng.random(count) < 0.01] = np.inf
    values[rng.random(count) < 0.01] = -np.inf
    return values


def test_merging_value_sketches_equals_sketching_the_union():
    rng = np.random.default_rng(11)
    parts = [_values(rng, size) for size in (0, 1, 500, 3000)]
    merged = sketch.ValueSketch()
    for part in parts:
        one = sketch.ValueSketch()
        one.add(part)
        merged = merged.merge(one)
    union = sketch.ValueSketch()
    union.add(np.concatenate(parts), rows=len(parts))
    assert merged == union and union.count == sum(part.size for part in parts)


def test_a_value_sketch_round_trips_through_json():
    made = sketch.ValueSketch()
    made.add(_values(np.random.default_rng(12), 2000), rows=7)
    again = sketch.ValueSketch.from_dict(json.loads(json.dumps(made.to_dict())))
    assert again == made and (again.rows, again.count) == (7, 2000)
    with pytest.raises(ValueError, match="relative accuracy"):
        sketch.ValueSketch.from_dict({**made.to_dict(), "relativeAccuracy": 0.05})


def test_nan_and_infinities_are_counted_apart_from_the_buckets():
    made = sketch.ValueSketch()
    made.add([np.nan, np.inf, -np.inf, -np.inf, 0.0, 1e-12, 2.5])
    assert (made.nan, made.positive_infinity, made.negative_infinity, made.count) == (1, 1, 2, 7)
    assert sum(made.counts.values()) == 3 and made.counts[0] == 2  # 0 and 1e-12 are both zero


def test_buckets_follow_the_values_order_within_the_relative_accuracy():
    rng = np.random.default_rng(13)
    values = np.sort(rng.normal(0, 1, 5000) * 10.0 ** rng.integers(-8, 11, 5000))
    keys = sketch.buckets(values)
    assert (np.diff(keys) >= 0).all()
    # Within a bucket, magnitudes differ by at most gamma = (1 + a) / (1 - a).
    gamma = (1 + sketch.RELATIVE_ACCURACY) / (1 - sketch.RELATIVE_ACCURACY)
    for key in np.unique(keys[keys != 0]):
        magnitudes = np.abs(values[keys == key])
        assert magnitudes.max() / magnitudes.min() <= gamma * (1 + 1e-12)


@pytest.mark.parametrize("datatype, dtype", [("FP32", "<f4"), ("FP64", "<f8"), ("FP16", "<f2")])
def test_a_tensors_raw_bytes_sketch_as_its_values_do(datatype, dtype):
    with np.errstate(over="ignore"):  # FP16 holds the largest magnitudes as infinities
        values = _values(np.random.default_rng(14), 3000).astype(dtype)
    from_bytes = sketch.ValueSketch()
    from_bytes.add_raw(values.tobytes(), datatype, [3, 1000], limit=10_000)
    from_values = sketch.ValueSketch()
    from_values.add(values.astype(float).tolist(), rows=3)
    assert from_bytes == from_values


def test_bf16_is_the_high_half_of_an_fp32():
    values = np.random.default_rng(15).normal(0, 3, 1000).astype(np.float32)
    high = (values.view(np.uint32) >> 16).astype("<u2")
    from_bytes = sketch.ValueSketch()
    from_bytes.add_raw(high.tobytes(), "BF16", [1000], limit=1000)
    truncated = sketch.ValueSketch()
    truncated.add((high.astype(np.uint32) << 16).view(np.float32))
    assert from_bytes == truncated


def test_a_large_tensor_is_sampled_evenly_up_to_the_limit():
    # A batch of 64 rows of 512: 4096 of 32768 values, every 8th, one in each row.
    batch = np.arange(64 * 512, dtype=np.float32).reshape(64, 512)
    made = sketch.ValueSketch()
    made.add_raw(batch.tobytes(), "FP32", [64, 512], limit=4096)
    expected = sketch.ValueSketch()
    expected.add(batch.reshape(-1)[::8], rows=64)
    assert made == expected and made.count == 4096
    few = sketch.ValueSketch()
    few.add_raw(batch.tobytes(), "FP32", [64, 512], limit=16)  # every 2048th: rows 0, 4, 8, ...
    assert (few.count, few.rows) == (16, 16)


ALARM_WINDOWS = 100


def _alarm_bound(alpha: float, windows: int = ALARM_WINDOWS) -> int:
    """The most alarms `windows` independent windows give at a false-alarm rate of alpha but
    once in a thousand runs."""
    from scipy import stats

    return int(stats.binom.ppf(0.999, windows, alpha))


def _value_windows(rng, draw, rows: int = 200, per_row: int = 10) -> list[sketch.ValueSketch]:
    windows = []
    for _ in range(ALARM_WINDOWS):
        window = sketch.ValueSketch()
        window.add(draw(rng, (rows, per_row)).reshape(-1), rows=rows)
        windows.append(window)
    return windows


def _alarms(reference: sketch.ValueSketch, windows: list[sketch.ValueSketch], max_psi: float) -> int:
    results = [sketch.compared_drift([sketch.value_comparison({"latent": reference}, {"latent": window}, "1h",
                                                              "the 1h before")], max_psi, 100, "1h")
               for window in windows]
    assert all(result.verdict in (OK, BREACHED) and result.samples == 200 for result in results)
    return sum(result.breached for result in results)


def test_value_drift_false_alarms_stay_within_alpha():
    rng = np.random.default_rng(16)
    reference = sketch.ValueSketch()
    reference.add(rng.normal(0, 1, 20_000))
    same = _value_windows(rng, lambda r, shape: r.normal(0, 1, shape))
    bound = _alarm_bound(sketch.DEFAULT_ALPHA)
    # The chi-squared test alone (no PSI gate) on independent values: calibrated at alpha.
    assert _alarms(reference, same, max_psi=0.0) <= bound
    # Values of a row that share a row's offset are not independent: the p-value is optimistic
    # there, and the PSI gate is what holds the false alarms down.
    correlated = _value_windows(rng, lambda r, shape: r.normal(0, 0.5, (shape[0], 1)) + r.normal(0, 0.87, shape))
    assert _alarms(reference, correlated, max_psi=0.2) <= bound


@pytest.mark.parametrize("case, draw", [
    ("a shifted mean", lambda r, shape: r.normal(1, 1, shape)),
    ("a doubled spread", lambda r, shape: r.normal(0, 2, shape)),
])
def test_value_drift_alarms_on_a_changed_distribution(case, draw):
    rng = np.random.default_rng(17)
    reference = sketch.ValueSketch()
    reference.add(rng.normal(0, 1, 20_000))
    assert _alarms(reference, _value_windows(rng, draw), max_psi=0.2) >= 0.95 * ALARM_WINDOWS


def test_values_turning_nan_or_infinite_drift():
    rng = np.random.default_rng(18)
    reference = sketch.ValueSketch()
    reference.add(rng.normal(0, 1, 5000))
    for broken in (np.nan, np.inf):
        current = rng.normal(0, 1, 2000)
        current[:400] = broken
        window = sketch.ValueSketch()
        window.add(current)
        value, p = sketch.value_drift(reference, window)
        assert value > 0.2 and p < 1e-6, (broken, value, p)


def test_a_value_the_reference_holds_in_bulk_is_one_bin():
    # A third zeros: the zero bucket is never split, so its share is compared as a whole.
    def mixture(rng, zeros: float, count: int) -> sketch.ValueSketch:
        made = sketch.ValueSketch()
        made.add(np.where(rng.random(count) < zeros, 0.0, rng.exponential(1, count)))
        return made

    rng = np.random.default_rng(19)
    reference = mixture(rng, 1 / 3, 20_000)
    assert not sketch.value_drift(reference, mixture(rng, 1 / 3, 2000))[1] < sketch.DEFAULT_ALPHA / 10
    value, p = sketch.value_drift(reference, mixture(rng, 2 / 3, 2000))
    assert value > 0.2 and p < 1e-6
