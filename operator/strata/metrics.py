"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "strata_reconcile_total",
    "Reconciliations by kind and result (success, invalid, error).",
    ["kind", "result"],
)
RECONCILE_ERRORS = Counter(
    "strata_reconcile_errors_total",
    "Reconciliations that failed, by kind and reason.",
    ["kind", "reason"],
)
RECONCILE_DURATION = Histogram(
    "strata_reconcile_duration_seconds",
    "Time spent in one reconciliation, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESOURCES_READY = Gauge(
    "strata_resources_ready",
    "Custom resources by kind and namespace whose Ready condition is True (1) or not (0).",
    ["kind", "namespace", "name"],
)
# A FeedbackPolicy's monitors at its latest evaluation, so SREs can graph them and alert on
# them (the chart's StrataFeedbackMonitorBreached) without reading status.
MONITOR_LABELS = ["namespace", "policy", "target", "monitor"]
FEEDBACK_MONITOR_VALUE = Gauge(
    "strata_feedback_monitor_value",
    "A FeedbackPolicy monitor's value over its window (approval or toxicity rate, bias gap, drift PSI); "
    "absent while the window holds too little data to judge.",
    MONITOR_LABELS,
)
FEEDBACK_MONITOR_BREACHED = Gauge(
    "strata_feedback_monitor_breached",
    "1 while a FeedbackPolicy monitor is breached, 0 while it is OK; absent with too few samples.",
    MONITOR_LABELS,
)
FEEDBACK_MONITOR_SAMPLES = Gauge(
    "strata_feedback_monitor_samples",
    "Samples in a FeedbackPolicy monitor's window at its latest evaluation.",
    MONITOR_LABELS,
)
_MONITOR_GAUGES = (FEEDBACK_MONITOR_VALUE, FEEDBACK_MONITOR_BREACHED, FEEDBACK_MONITOR_SAMPLES)
FEEDBACK_REVIEW_OPEN = Gauge(
    "strata_feedback_review_open",
    "Outputs a FeedbackPolicy flagged for review that no one has resolved (status.review.open).",
    ["namespace", "policy", "target"],
)


def _policy_series(gauge: Gauge, namespace: str, policy: str) -> list[tuple[str, ...]]:
    """The label values of the gauge's series for one policy (prometheus_client keeps no
    public index of a metric's children)."""
    return [labels for labels in list(gauge._metrics) if labels[:2] == (namespace, policy)]


def set_monitor_series(namespace: str, policy: str, target: str,
                       readings: list[tuple[str, float | None, str, int]]) -> None:
    """The series of one policy's monitors, as (monitor, value, verdict, samples): set fresh,
    so a monitor taken out of the spec or a changed target leaves no stale series."""
    current = {(namespace, policy, target, monitor) for monitor, *_ in readings}
    for gauge in _MONITOR_GAUGES:
        for labels in _policy_series(gauge, namespace, policy):
            if labels not in current:
                gauge.remove(*labels)
    for monitor, value, verdict, samples in readings:
        labels = (namespace, policy, target, monitor)
        FEEDBACK_MONITOR_SAMPLES.labels(*labels).set(samples)
        if value is None or verdict not in ("OK", "Breached"):
            for gauge in (FEEDBACK_MONITOR_VALUE, FEEDBACK_MONITOR_BREACHED):
                if labels in gauge._metrics:
                    gauge.remove(*labels)
            continue
        FEEDBACK_MONITOR_VALUE.labels(*labels).set(value)
        FEEDBACK_MONITOR_BREACHED.labels(*labels).set(1 if verdict == "Breached" else 0)


def set_review_series(namespace: str, policy: str, target: str, open_items: int | None) -> None:
    """The policy's review backlog; no series while it keeps no queue."""
    for labels in _policy_series(FEEDBACK_REVIEW_OPEN, namespace, policy):
        if open_items is None or labels != (namespace, policy, target):
            FEEDBACK_REVIEW_OPEN.remove(*labels)
    if open_items is not None:
        FEEDBACK_REVIEW_OPEN.labels(namespace, policy, target).set(open_items)


def drop_object_series(kind: str, namespace: str, name: str) -> None:
    """Forget a deleted object's series."""
    try:
        RESOURCES_READY.remove(kind, namespace, name)
    except KeyError:  # never reconciled successfully, so no series to drop
        pass
    if kind == "FeedbackPolicy":
        set_monitor_series(namespace, name, "", [])
        set_review_series(namespace, name, "", None)
