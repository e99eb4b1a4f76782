"""The one reconcile loop every kind runs: resolve -> render -> apply -> observe -> status.

- resolve reads what the spec refers to into typed inputs (API reads, through strata.k8s);
- render(spec, inputs) is pure: the desired children, each carrying its ChildPolicy;
- apply makes them so (per policy), prunes what is no longer desired, returns the live children;
- observe(spec, inputs, children) is pure: the Outcome of the pass;
- the status is built fresh from that Outcome, checked against the kind's status model, and
  patched only if it changed.

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
from strata.conditions import get_condition, is_ready, now_rfc3339, set_condition
from strata.constants import ANNOTATION_CREATED_BECAUSE, NOT_FOUND_REASONS, ChildPolicy, ConditionStatus, ConditionType, Phase, Reason
from strata.controllers.requeue import SCHEDULE
from strata.metrics import RECONCILE_DURATION, RECONCILE_ERRORS, RECONCILES, RESOURCES_READY
from strata.render.common import child_policy, owner_labels


@dataclass(frozen=True)
class Inputs:
    """What the spec refers to, as resolved this pass. Kinds that read more extend it."""

    # Where the object lives, so messages can say where a named object was looked for.
    namespace: str
    # Named objects that do not exist (yet).
    missing: tuple[ObjectReference, ...] = ()


# resolve(kind, the object, its parsed spec)
Resolver = Callable[[KindInfo, dict[str, Any], StrataModel], Inputs]
Renderer = Callable[[KindInfo, dict[str, Any], StrataModel, Inputs], list[dict[str, Any]]]
Observer = Callable[[KindInfo, StrataModel, Inputs, list[dict[str, Any]]], "Outcome"]
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
    # Conditions a kind reports beyond the three every kind has: type -> (status, reason, message).
    extra_conditions: dict[str, tuple[str, str, str]] = field(default_factory=dict)


def parse_spec(info: KindInfo, body: dict[str, Any]) -> StrataModel:
    return info.spec_model.model_validate(body.get("spec") or {})


def is_controlled_by(child: dict[str, Any], owner_uid: str) -> bool:
    """True when `owner_uid` is the child's controller, so it is ours to update or delete."""
    return any(
        ref.get("controller") and ref.get("uid") == owner_uid
        for ref in child["metadata"].get("ownerReferences") or []
    )


class ChildConflict(Exception):
    """A child the operator must create exists already and is not its own."""


@dataclass(frozen=True)
class ChildAction:
    """One step of applying children: what to do to which object.

    verb: "apply" (forced server-side apply), "apply-unforced" (server-side apply that leaves
    fields other managers own to them), "create", "apply-metadata" (exists: only its labels,
    annotations and owner references are re-applied, its content stays as created), "keep"
    (exists as it should: the live object, nothing to write) or "delete".
    """

    verb: str
    manifest: dict[str, Any]


def metadata_only(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a child that can be re-applied whatever its policy: who it belongs to."""
    meta = manifest["metadata"]
    keys = ("name", "namespace", "labels", "annotations", "ownerReferences")
    return {"apiVersion": manifest["apiVersion"], "kind": manifest["kind"],
            "metadata": {key: meta[key] for key in keys if key in meta}}


def metadata_differs(live: dict[str, Any], manifest: dict[str, Any]) -> bool:
    """True when a label, annotation or owner reference the manifest sets differs on `live`."""
    have, want = live["metadata"], manifest["metadata"]
    for key in ("labels", "annotations"):
        if any((have.get(key) or {}).get(name) != value for name, value in (want.get(key) or {}).items()):
            return True
    return any(ref not in (have.get("ownerReferences") or []) for ref in want.get("ownerReferences") or [])


def plan_children(desired: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[ChildAction]:
    """Pure: what applying `desired` over the owner's `existing` children takes, per policy.

    Creations and updates come before deletions, so a replacement (a new content-named
    config) exists before the one it replaces is pruned.
    """
    remaining = {(child["kind"], child["metadata"]["name"]): child for child in existing}
    actions = []
    for manifest in desired:
        before = remaining.pop((manifest["kind"], manifest["metadata"]["name"]), None)
        policy = child_policy(manifest)
        if policy == ChildPolicy.CREATE_ONCE:
            if before is None:
                actions.append(ChildAction("create", manifest))
            elif metadata_differs(before, manifest):
                # Metadata stays declarative even where the content cannot change.
                actions.append(ChildAction("apply-metadata", metadata_only(manifest)))
            else:
                # As it should be: no write at all (a running job is polled often).
                actions.append(ChildAction("keep", before))
        elif policy == ChildPolicy.FOREIGN:
            actions.append(ChildAction("apply-unforced", manifest))
        else:
            actions.append(ChildAction("apply", manifest))
    # Someone else's children are never pruned, even when the spec no longer names them.
    actions.extend(ChildAction("delete", child) for child in remaining.values()
                   if child_policy(child) != ChildPolicy.FOREIGN)
    return actions


def apply_children(
    info: KindInfo, body: dict[str, Any], desired: list[dict[str, Any]], child_kinds: ChildKinds, logger: logging.Logger
) -> list[dict[str, Any]]:
    """Apply the desired children, prune owned children no longer desired, and post events.

    Returns the live children, in the order they were rendered.
    """
    meta = body["metadata"]
    selector = owner_labels(info, meta["name"])
    existing: dict[tuple[str, str], dict[str, Any]] = {}
    # Also those it labels but does not control (someone else's), so as not to re-announce them.
    labelled: dict[tuple[str, str], dict[str, Any]] = {}
    for api_version, kind in child_kinds:
        for child in k8s.list_children(api_version, kind, meta["namespace"], selector):
            labelled[(kind, child["metadata"]["name"])] = child
            # Labels can be copied; only the controller reference says a child is ours.
            if is_controlled_by(child, meta["uid"]):
                existing[(kind, child["metadata"]["name"])] = child

    live_children = []
    for action in plan_children(desired, list(existing.values())):
        kind, name = action.manifest["kind"], action.manifest["metadata"]["name"]
        if action.verb == "create":
            live = k8s.create(action.manifest)
            if live is None:
                raise ChildConflict(f"{kind} {name} exists and is not controlled by {info.kind} {meta['name']}; "
                                    f"delete or rename it so the operator can create its own.")
            because = (action.manifest["metadata"].get("annotations") or {}).get(ANNOTATION_CREATED_BECAUSE)
            if because:
                _announce(body, "Started", f"{because} ({kind} {name})", logger)
            else:
                _announce(body, "Created", f"Created {kind} {name}", logger)
            live_children.append(live)
        elif action.verb == "keep":
            live_children.append(action.manifest)
        elif action.verb in ("apply", "apply-unforced", "apply-metadata"):
            before = labelled.get((kind, name))
            try:
                live = k8s.apply(action.manifest, force=action.verb != "apply-unforced")
            except ApiException as error:
                if error.status != 409 or action.verb != "apply-unforced":
                    raise
                # Its user changed fields the operator set: theirs now, by this child's policy.
                logger.info(f"Left {kind} {name} as its user changed it: {error.reason}")
                continue
            if before is None:
                _announce(body, "Created", f"Created {kind} {name}", logger)
            elif action.verb == "apply-metadata":
                _announce(body, "Updated", f"Updated the metadata of {kind} {name}", logger)
            elif live["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]:
                _announce(body, "Updated", f"Updated {kind} {name}", logger)
            live_children.append(live)
        else:
            k8s.delete(action.manifest["apiVersion"], kind, meta["namespace"], name)
            _announce(body, "Deleted", f"Deleted {kind} {name}, no longer part of the spec", logger)
    return live_children


def _announce(body: dict[str, Any], reason: str, message: str, logger: logging.Logger) -> None:
    logger.info(message)
    k8s.post_event(body, "Normal", reason, message)


def build_status(info: KindInfo, body: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The status this pass observed, built fresh (a field no pass sets any more is gone),
    conditions keeping their transition times, checked against the kind's status model."""
    previous = (body.get("status") or {}).get("conditions") or []
    generation = body["metadata"].get("generation")
    now = now_rfc3339()
    conditions = [
        get_condition(set_condition(previous, type_, status, reason, message, generation, now), type_)
        for type_, (status, reason, message) in (
            (ConditionType.DEGRADED, outcome.degraded),
            (ConditionType.PROGRESSING, outcome.progressing),
            (ConditionType.READY, outcome.ready),
            *outcome.extra_conditions.items(),
        )
    ]
    status = {
        **outcome.extra_status,
        "observedGeneration": generation,
        "phase": outcome.phase,
        "conditions": conditions,
    }
    # A status the CRD would prune or refuse is the operator's bug: fail the pass loudly.
    info.status_model.model_validate(status)
    return status


class StaleObject(kopf.TemporaryError):
    """The object changed while this pass ran; a fresh pass follows shortly."""


def merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """Pure: the JSON merge patch (RFC 7386) that turns `current` into `desired`.

    A merge patch keeps every key it does not mention, so each key that is gone is sent as
    null, at any depth: that is how a stale status field disappears. Lists are replaced whole.
    """
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        before = current.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in current:
            patch[key] = value
    return patch


def write_status(info: KindInfo, body: dict[str, Any], status: dict[str, Any]) -> bool:
    """Patch status only if it changed, so an idle resource causes no writes. True if written.

    The patch is conditional on the resourceVersion this pass read, so a pass that worked
    from an older spec can never overwrite what a newer pass concluded.
    """
    current = body.get("status") or {}
    if status == current:
        return False
    meta = body["metadata"]
    try:
        k8s.patch_status(info, meta["namespace"], meta["name"], merge_patch(current, status), meta["resourceVersion"])
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


def resolve_references(info: KindInfo, body: dict[str, Any], spec: StrataModel) -> Inputs:
    """The resolve step every kind shares: which of the objects the spec names exist.

    Checked on every pass (the periodic resync included), and again whenever an object of a
    referenced kind appears or goes (see registration.recheck_dependents).
    """
    namespace = body["metadata"]["namespace"]
    missing = [ref for ref in spec.references() if not k8s.exists(KINDS_BY_NAME[ref.kind], namespace, ref.name)]
    return Inputs(namespace=namespace, missing=tuple(missing))


def missing_reference_outcome(missing: tuple[ObjectReference, ...], namespace: str) -> Outcome:
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


def describe_api_failure(error: Exception, step: str = "Applying children") -> str:
    if isinstance(error, ApiException):
        return f"{step} failed: {error.status} {error.reason}"
    return f"{step} failed: {type(error).__name__}: {error}"


# kopf's change handlers, child events and the periodic passes run concurrently; one pass at a time
# per object keeps them from interleaving their applies and status writes.
_object_locks: dict[str, threading.Lock] = {}
_object_locks_guard = threading.Lock()


def object_lock(uid: str) -> threading.Lock:
    with _object_locks_guard:
        return _object_locks.setdefault(uid, threading.Lock())


def forget_object(uid: str) -> None:
    with _object_locks_guard:
        _object_locks.pop(uid, None)


@dataclass(frozen=True)
class Controller:
    """One kind's steps; reconcile() runs them in order."""

    info: KindInfo
    resolve: Resolver
    render: Renderer
    observe: Observer
    child_kinds: ChildKinds
    # Seconds from one pass of an object to its next periodic one, given its live body.
    requeue_seconds: Callable[[dict[str, Any]], float]


def reconcile(controller: Controller, body: kopf.Body | dict[str, Any], logger: logging.Logger) -> None:
    """One pass for one object. Bad specs become status, never exceptions; API errors retry."""
    uid = body["metadata"]["uid"]
    try:
        if body["metadata"].get("deletionTimestamp"):
            # Going away: the garbage collector removes its children, and a pass now could only
            # fail (a namespace being deleted refuses every new object).
            return
        with object_lock(uid):
            _reconcile_once(controller, dict(body), logger)
    finally:
        # Whatever started this pass, the next periodic one is an interval away.
        SCHEDULE.passed(uid)


def _reconcile_once(controller: Controller, body: dict[str, Any], logger: logging.Logger) -> None:
    info = controller.info
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
            if write_status(info, body, build_status(info, body, invalid_outcome(message))):
                logger.warning(f"Invalid spec: {message}")
                k8s.post_event(body, "Warning", Reason.INVALID_SPEC, message)
            return

        step = "Reading the objects the spec names"
        try:
            inputs = controller.resolve(info, body, spec)
            step = "Applying children"
            children = apply_children(info, body, controller.render(info, body, spec, inputs), controller.child_kinds, logger)
        except Exception as error:  # any failure becomes status and a retry, never a silent loop
            message = describe_api_failure(error, step)
            RECONCILE_ERRORS.labels(info.kind, Reason.APPLY_FAILED).inc()
            RECONCILES.labels(info.kind, "error").inc()
            ready_gauge.set(0)
            try:
                write_status(info, body, build_status(info, body, apply_failed_outcome(message)))
            except Exception as status_error:  # the API may be what is failing
                logger.warning(f"Could not record the failure in status: {status_error}")
            raise kopf.TemporaryError(message, delay=15) from error

        status = build_status(info, body, controller.observe(info, spec, inputs, children))
        write_status(info, body, status)
        ready_gauge.set(int(is_ready(status["conditions"])))
        RECONCILES.labels(info.kind, "success").inc()
    finally:
        RECONCILE_DURATION.labels(info.kind).observe(time.monotonic() - started)
