"""The one reconcile loop every kind runs: parse -> render -> apply -> status.

Level-based: each pass computes the whole desired state from the spec and the observed
children, so a missed event, a restart or a manual edit is corrected on the next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from strata import k8s
from strata.api import KINDS_BY_NAME, KindInfo
from strata.api.base import ObjectReference, StrataModel
from strata.api.errors import describe_validation_error
from strata.conditions import is_ready, now_rfc3339, set_condition
from strata.constants import NOT_FOUND_REASONS, ConditionStatus, ConditionType, Phase, Reason
from strata.metrics import RECONCILE_DURATION, RECONCILE_ERRORS, RECONCILES, RESOURCES_READY
from strata.render.common import owner_labels

Renderer = Callable[[KindInfo, dict[str, Any], StrataModel], list[dict[str, Any]]]
Observer = Callable[[KindInfo, dict[str, Any], StrataModel], "Outcome"]
# Child kinds the operator may create, so stale children of any of them can be pruned.
ChildKinds = tuple[tuple[str, str], ...]


@dataclass
class Outcome:
    """What one pass concluded, before it becomes status."""

    phase: str
    ready: tuple[str, str, str]
    progressing: tuple[str, str, str]
    degraded: tuple[str, str, str]
    extra_status: dict[str, Any] = field(default_factory=dict)


def parse_spec(info: KindInfo, body: dict[str, Any]) -> StrataModel:
    return info.spec_model.model_validate(body.get("spec") or {})


def is_controlled_by(child: dict[str, Any], owner_uid: str) -> bool:
    """True when `owner_uid` is the child's controller, so it is ours to update or delete."""
    return any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in child["metadata"].get("ownerReferences") or []
    )


def apply_children(
    info: KindInfo, body: dict[str, Any], desired: list[dict[str, Any]], child_kinds: ChildKinds, logger: logging.Logger
) -> None:
    """Apply the desired children, prune owned children no longer desired, and post events."""
    meta = body["metadata"]
    selector = owner_labels(info, meta["name"])
    existing: dict[tuple[str, str], dict[str, Any]] = {}
    for api_version, kind in child_kinds:
        for child in k8s.list_children(api_version, kind, meta["namespace"], selector):
            # Labels can be copied; only the controller reference says a child is ours.
            if is_controlled_by(child, meta["uid"]):
                existing[(kind, child["metadata"]["name"])] = child

    for manifest in desired:
        key = (manifest["kind"], manifest["metadata"]["name"])
        before = existing.pop(key, None)
        live = k8s.apply(manifest)
        if before is None:
            _announce(body, "Created", f"Created {key[0]} {key[1]}", logger)
        elif live["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]:
            _announce(body, "Updated", f"Updated {key[0]} {key[1]}", logger)

    for (kind, name), child in existing.items():
        k8s.delete(child["apiVersion"], kind, meta["namespace"], name)
        _announce(body, "Deleted", f"Deleted {kind} {name}, no longer part of the spec", logger)


def _announce(body: dict[str, Any], reason: str, message: str, logger: logging.Logger) -> None:
    logger.info(message)
    kopf.info(body, reason=reason, message=message)


def build_status(body: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The full status this pass observed, conditions keeping their transition times."""
    current = body.get("status") or {}
    generation = body["metadata"].get("generation")
    now = now_rfc3339()
    conditions = list(current.get("conditions") or [])
    for type_, (status, reason, message) in (
        (ConditionType.READY, outcome.ready),
        (ConditionType.PROGRESSING, outcome.progressing),
        (ConditionType.DEGRADED, outcome.degraded),
    ):
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)
    return {
        **current,
        **outcome.extra_status,
        "observedGeneration": generation,
        "phase": outcome.phase,
        "conditions": conditions,
    }


class StaleObject(kopf.TemporaryError):
    """The object changed while this pass ran; a fresh pass follows shortly."""


def write_status(info: KindInfo, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch status only if it changed, so an idle resource causes no writes. True if written.

    The patch is conditional on the resourceVersion this pass read, so a pass that worked
    from an older spec can never overwrite what a newer pass concluded.
    """
    if status == (body.get("status") or {}):
        return False
    meta = body["metadata"]
    try:
        k8s.patch_status(info, meta["namespace"], meta["name"], status, meta["resourceVersion"])
    except ApiException as error:
        if error.status == 409:
            raise StaleObject("The object changed during reconciliation; retrying with the new version.", delay=1) from error
        raise
    return True


def invalid_outcome(message: str) -> Outcome:
    return Outcome(
        phase=Phase.INVALID,
        ready=(ConditionStatus.FALSE, Reason.INVALID_SPEC, message),
        progressing=(ConditionStatus.FALSE, Reason.INVALID_SPEC, "Waiting for a valid spec."),
        degraded=(ConditionStatus.TRUE, Reason.INVALID_SPEC, message),
    )


def apply_failed_outcome(message: str) -> Outcome:
    return Outcome(
        phase=Phase.RETRYING,
        ready=(ConditionStatus.FALSE, Reason.APPLY_FAILED, message),
        progressing=(ConditionStatus.FALSE, Reason.APPLY_FAILED, message),
        degraded=(ConditionStatus.TRUE, Reason.APPLY_FAILED, message),
    )


def missing_references(spec: StrataModel, namespace: str) -> list[ObjectReference]:
    """The objects the spec names that do not exist."""
    return [ref for ref in spec.references() if not k8s.exists(KINDS_BY_NAME[ref.kind], namespace, ref.name)]


def missing_reference_outcome(missing: list[ObjectReference], namespace: str) -> Outcome:
    """Waiting for named objects; the reason is the first missing object's kind + NotFound."""
    message = "; ".join(
        f'{ref.kind} "{ref.name}" (named by {ref.field}) does not exist in namespace "{namespace}"' for ref in missing
    ) + f"; waiting for {'it' if len(missing) == 1 else 'them'} to be created."
    reason = NOT_FOUND_REASONS[missing[0].kind]
    return Outcome(
        phase=Phase.WAITING,
        ready=(ConditionStatus.FALSE, reason, message),
        progressing=(ConditionStatus.FALSE, reason, message),
        degraded=(ConditionStatus.TRUE, reason, message),
    )


def describe_api_failure(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"Applying children failed: {error.status} {error.reason}"
    return f"Applying children failed: {type(error).__name__}: {error}"


# kopf runs an object's change handlers and its timer concurrently; one pass at a time
# per object keeps them from interleaving their applies and status writes.
_object_locks: dict[str, threading.Lock] = {}
_object_locks_guard = threading.Lock()


def object_lock(uid: str) -> threading.Lock:
    with _object_locks_guard:
        return _object_locks.setdefault(uid, threading.Lock())


def forget_object(uid: str) -> None:
    with _object_locks_guard:
        _object_locks.pop(uid, None)


def reconcile(
    info: KindInfo,
    body: kopf.Body | dict[str, Any],
    logger: logging.Logger,
    render: Renderer,
    child_kinds: ChildKinds,
    observe: Observer,
) -> None:
    """One pass for one object. Bad specs become status, never exceptions; API errors retry."""
    with object_lock(body["metadata"]["uid"]):
        # Copied under the lock: a timer's body is a live view kopf keeps up to date.
        _reconcile_once(info, dict(body), logger, render, child_kinds, observe)


def _reconcile_once(
    info: KindInfo,
    body: dict[str, Any],
    logger: logging.Logger,
    render: Renderer,
    child_kinds: ChildKinds,
    observe: Observer,
) -> None:
    started = time.monotonic()
    meta = body["metadata"]
    ready_gauge = RESOURCES_READY.labels(info.kind, meta["namespace"], meta["name"])
    try:
        try:
            spec = parse_spec(info, body)
        except ValidationError as error:
            message = describe_validation_error(error)
            RECONCILES.labels(info.kind, "invalid").inc()
            ready_gauge.set(0)
            # Warn once per distinct problem, not on every periodic resync.
            if write_status(info, body, build_status(body, invalid_outcome(message))):
                logger.warning(f"Invalid spec: {message}")
                kopf.warn(body, reason=Reason.INVALID_SPEC, message=message)
            return

        try:
            apply_children(info, body, render(info, body, spec), child_kinds, logger)
        except Exception as error:  # any failure becomes status and a retry, never a silent loop
            message = describe_api_failure(error)
            RECONCILE_ERRORS.labels(info.kind, Reason.APPLY_FAILED).inc()
            RECONCILES.labels(info.kind, "error").inc()
            ready_gauge.set(0)
            try:
                write_status(info, body, build_status(body, apply_failed_outcome(message)))
            except Exception as status_error:  # the API may be what is failing
                logger.warning(f"Could not record the failure in status: {status_error}")
            raise kopf.TemporaryError(message, delay=15) from error

        # Checked on every pass (the periodic resync included), and again whenever an object
        # of a referenced kind appears or goes (see registration.recheck_dependents).
        missing = missing_references(spec, meta["namespace"])
        outcome = missing_reference_outcome(missing, meta["namespace"]) if missing else observe(info, body, spec)
        status = build_status(body, outcome)
        write_status(info, body, status)
        ready_gauge.set(int(is_ready(status["conditions"])))
        RECONCILES.labels(info.kind, "success").inc()
    finally:
        RECONCILE_DURATION.labels(info.kind).observe(time.monotonic() - started)
