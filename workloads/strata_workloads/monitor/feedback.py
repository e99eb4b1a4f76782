"""Approval and bias from the sidecar's feedback records (pure Python: the operator imports it).

A record is what ``GET /feedback`` on the sidecar's metrics port returns
(strata_workloads.serve.feedback): ``{"requestId", "rating": "up"|"down", "text", "time"
(Unix seconds), "attributes": {name: value}}``; ``attributes`` are request attributes the
client declared with its feedback (such as a locale), which define the bias monitor's groups.
"""

from __future__ import annotations

from typing import Any, Iterable

from strata_workloads.monitor.result import MonitorResult, judge


def in_window(records: Iterable[dict[str, Any]], now: float, window_seconds: float) -> list[dict[str, Any]]:
    """Records rated within (now - window, now]."""
    start = now - window_seconds
    return [record for record in records if start < float(record.get("time", 0)) <= now]


def _approval(records: list[dict[str, Any]]) -> float | None:
    rated = [record for record in records if record.get("rating") in ("up", "down")]
    if not rated:
        return None
    return sum(record["rating"] == "up" for record in rated) / len(rated)


def approval(records: list[dict[str, Any]], min_rate: float, min_samples: int, window: str) -> MonitorResult:
    """The share of "up" ratings; breached when it falls below `min_rate`."""
    up = sum(record.get("rating") == "up" for record in records)
    down = sum(record.get("rating") == "down" for record in records)
    return approval_from_counts(up, down, min_rate, min_samples, window)


def approval_from_counts(up: int, down: int, min_rate: float, min_samples: int, window: str) -> MonitorResult:
    """As :func:`approval`, from the counts of each rating (what Prometheus has)."""
    samples = up + down
    rate = up / samples if samples else None
    message = (f"approval {rate:.3f} over {samples} rating(s) in {window}, "
               f"{'below' if rate is not None and rate < min_rate else 'at or above'} the minimum {min_rate:g}"
               if rate is not None else "")
    return judge("approval", rate, samples, min_samples, window, rate is not None and rate < min_rate, message)


def approval_by_group(records: list[dict[str, Any]], field: str) -> dict[str, tuple[float, int]]:
    """Per value of the attribute `field`: (approval rate, ratings). Records without it are left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        value = (record.get("attributes") or {}).get(field)
        if value is not None and record.get("rating") in ("up", "down"):
            groups.setdefault(str(value), []).append(record)
    return {value: (_approval(group), len(group)) for value, group in sorted(groups.items())}


def bias(records: list[dict[str, Any]], fields: list[str], max_disparity: float, min_samples: int,
         window: str) -> MonitorResult:
    """The largest gap in approval between two groups of one attribute; breached above `max_disparity`.

    Only groups with at least `min_samples` ratings count (a group of three says nothing); a
    verdict needs two such groups of some attribute. The samples reported are the ratings in
    the groups that counted.
    """
    worst: tuple[float, str, str, str] | None = None
    counted = 0
    for field in fields:
        groups = {value: rate for value, (rate, n) in approval_by_group(records, field).items() if n >= min_samples}
        counted += sum(n for value, (rate, n) in approval_by_group(records, field).items() if value in groups)
        if len(groups) < 2:
            continue
        low = min(groups, key=groups.get)
        high = max(groups, key=groups.get)
        gap = groups[high] - groups[low]
        if worst is None or gap > worst[0]:
            worst = (gap, field, low, high)
    if worst is None:
        return MonitorResult("bias", None, "InsufficientData", counted, window,
                             f"no attribute of {', '.join(fields)} has two groups with {min_samples} rating(s) each "
                             f"in {window}")
    gap, field, low, high = worst
    message = (f"approval of {field}={high} exceeds {field}={low} by {gap:.3f} in {window} "
               f"({'above' if gap > max_disparity else 'within'} the maximum {max_disparity:g})")
    return judge("bias", gap, counted, 1, window, gap > max_disparity, message,
                 {"field": field, "lowest": low, "highest": high})
