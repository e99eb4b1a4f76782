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
