"""Pure helpers for metav1.Condition lists, as kept in every Strata status."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from strata.constants import ConditionStatus, ConditionType


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with `type_` set; lastTransitionTime moves only when the status flips."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = previous.get("lastTransitionTime") if previous and previous.get("status") == status else None
    updated = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or now,
    }
    if generation is not None:
        updated["observedGeneration"] = generation
    others = [c for c in conditions if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: c["type"])


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_ready(conditions: list[dict[str, Any]]) -> bool:
    ready = get_condition(conditions, ConditionType.READY)
    return bool(ready and ready.get("status") == ConditionStatus.TRUE)


def status_is_current(obj: dict[str, Any]) -> bool:
    """The operator has reported on the object's latest spec (observedGeneration caught up)."""
    status = obj.get("status") or {}
    return status.get("observedGeneration") == obj["metadata"].get("generation")
