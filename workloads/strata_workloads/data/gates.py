"""Quality gates: whether a version may become the Dataset's current one, and why not.

Pure functions of a version's pipeline statistics, its reference statistics, the previous
(current) version's reference statistics and the configured limits. Ratios are shares of the
records read (malformed ones included); drift is the population stability index (PSI) between
the two versions' reference distributions, the largest over the distributions both have
(record lengths, and classes when there are labels). Token counts are left out: each version
may train its own tokenizer, so they are not comparable across versions.
"""

from __future__ import annotations

import math
from typing import Any

from strata_workloads.data.config import QualityGates
from strata_workloads.data.result import GateVerdict

# Bins empty in one version count as this share, so PSI stays finite (a common choice).
PSI_FLOOR = 1e-4
# Text versions have lengths, image versions brightness, audio versions loudness; any may have classes.
DRIFT_DISTRIBUTIONS = ("lengthDistribution", "brightnessDistribution", "loudnessDistribution", "classDistribution")


def population_stability_index(expected: dict[str, float], actual: dict[str, float]) -> float:
    """PSI = sum over bins of (actual - expected) * ln(actual / expected)."""
    total = 0.0
    for key in sorted(set(expected) | set(actual)):
        e = max(float(expected.get(key, 0.0)), PSI_FLOOR)
        a = max(float(actual.get(key, 0.0)), PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def drift(reference: dict[str, Any], parent_reference: dict[str, Any]) -> tuple[float, str]:
    """(largest PSI, the distribution it was found in) between a version and its parent."""
    worst, where = 0.0, "none in common"
    for name in DRIFT_DISTRIBUTIONS:
        mine, theirs = reference.get(name) or {}, parent_reference.get(name) or {}
        if mine and theirs:
            value = population_stability_index(theirs, mine)
            if value >= worst:
                worst, where = value, name
    return worst, where


def record_counts(statistics: dict[str, Any]) -> dict[str, int]:
    """The counts the operator shows (status.records), from a manifest's pipeline statistics."""
    missing = (statistics.get("missing") or {}).get("dropped") or {}
    return {
        "in": int(statistics.get("recordsIn", 0)),
        "out": int(statistics.get("recordsOut", 0)),
        "duplicates": int(statistics.get("duplicates", 0)),
        "nearDuplicates": int(statistics.get("nearDuplicates", 0)),
        "missing": int(sum(missing.values())),
        "quarantined": int(statistics.get("quarantined", 0)),
        "synthetic": int(statistics.get("synthetic", 0)),
    }


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def evaluate(gates: QualityGates | None, statistics: dict[str, Any], reference: dict[str, Any],
             parent_reference: dict[str, Any] | None, parent_version: str | None = None) -> list[GateVerdict]:
    """One verdict per configured gate, in the order of the spec's fields."""
    if gates is None:
        return []
    counts = record_counts(statistics)
    read = counts["in"]
    verdicts = []

    def ratio_gate(name: str, limit: float | None, part: int, what: str) -> None:
        if limit is None:
            return
        value = _ratio(part, read)
        passed = value <= limit
        verdicts.append(GateVerdict(name, passed, round(value, 6), limit,
                                    f"{part} of {read} records read {what} ({value:.1%}); "
                                    f"{'within' if passed else 'over'} the limit of {limit:.1%}"))

    ratio_gate("maxDuplicateRatio", gates.max_duplicate_ratio, counts["duplicates"] + counts["nearDuplicates"],
               "were exact or near duplicates")
    ratio_gate("maxMissingRatio", gates.max_missing_ratio, counts["missing"], "were dropped for missing values")
    ratio_gate("maxQuarantinedRatio", gates.max_quarantined_ratio, counts["quarantined"], "were quarantined as malformed")
    if gates.max_drift is not None:
        if parent_reference is None:
            verdicts.append(GateVerdict("maxDrift", True, 0.0, gates.max_drift,
                                        f"no previous version{f' ({parent_version} not found)' if parent_version else ''} "
                                        f"to compare against"))
        else:
            value, where = drift(reference, parent_reference)
            passed = value <= gates.max_drift
            verdicts.append(GateVerdict("maxDrift", passed, round(value, 6), gates.max_drift,
                                        f"PSI {value:.4f} against version {parent_version} ({where}); "
                                        f"{'within' if passed else 'over'} the limit of {gates.max_drift}"))
    if gates.min_records is not None:
        passed = counts["out"] >= gates.min_records
        verdicts.append(GateVerdict("minRecords", passed, float(counts["out"]), float(gates.min_records),
                                    f"{counts['out']} records in the version; "
                                    f"{'at least' if passed else 'fewer than'} the {gates.min_records} required"))
    return verdicts
