"""The operator's FeedbackPolicy monitor series (strata/metrics.py)."""

from __future__ import annotations

from prometheus_client import generate_latest

from strata.metrics import drop_object_series, set_monitor_series, set_review_series


def series(policy: str) -> dict[str, float]:
    rows = [line for line in generate_latest().decode().splitlines()
            if line.startswith("strata_feedback_monitor") and f'policy="{policy}"' in line]
    return {row.rsplit(" ", 1)[0]: float(row.rsplit(" ", 1)[1]) for row in rows}


def test_each_reading_is_a_series_and_a_monitor_without_enough_data_has_only_its_samples():
    set_monitor_series("ml", "p1", "lm", [("approval", 0.25, "Breached", 40), ("toxicity", None, "InsufficientData", 3)])
    labels = 'namespace="ml",policy="p1",target="lm"'
    assert series("p1") == {
        f'strata_feedback_monitor_value{{monitor="approval",{labels}}}': 0.25,
        f'strata_feedback_monitor_breached{{monitor="approval",{labels}}}': 1.0,
        f'strata_feedback_monitor_samples{{monitor="approval",{labels}}}': 40.0,
        f'strata_feedback_monitor_samples{{monitor="toxicity",{labels}}}': 3.0,
    }


def test_a_monitor_gone_from_the_spec_or_a_new_target_leaves_no_stale_series():
    set_monitor_series("ml", "p2", "lm", [("approval", 0.9, "OK", 40), ("bias", 0.1, "OK", 40)])
    set_monitor_series("ml", "p2", "lm-v2", [("approval", 0.5, "Breached", 41)])
    assert set(series("p2")) == {f'strata_feedback_monitor_{name}{{monitor="approval",namespace="ml",policy="p2",'
                                 f'target="lm-v2"}}' for name in ("value", "breached", "samples")}


def test_a_deleted_policy_leaves_no_series_and_others_keep_theirs():
    set_monitor_series("ml", "p3", "lm", [("approval", 0.9, "OK", 40)])
    set_monitor_series("other", "p3", "lm", [("approval", 0.9, "OK", 40)])
    drop_object_series("FeedbackPolicy", "ml", "p3")
    assert all('namespace="other"' in name for name in series("p3")) and len(series("p3")) == 3


def test_the_review_backlog_is_one_series_per_policy_gone_with_the_queue_or_the_policy():
    def backlog(policy: str) -> dict[str, float]:
        rows = [line for line in generate_latest().decode().splitlines()
                if line.startswith("strata_feedback_review_open{") and f'policy="{policy}"' in line]
        return {row.rsplit(" ", 1)[0]: float(row.rsplit(" ", 1)[1]) for row in rows}

    set_review_series("ml", "p4", "lm", 3)
    set_review_series("ml", "p4", "lm-v2", 2)  # a new target replaces the series
    assert backlog("p4") == {'strata_feedback_review_open{namespace="ml",policy="p4",target="lm-v2"}': 2.0}
    set_review_series("ml", "p4", "lm-v2", None)  # spec.review.queueFlagged turned off
    assert backlog("p4") == {}
    set_review_series("ml", "p5", "lm", 1)
    drop_object_series("FeedbackPolicy", "ml", "p5")
    assert backlog("p5") == {}
