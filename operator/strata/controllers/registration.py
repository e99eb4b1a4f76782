"""Wires a kind's resolve, render and observe steps into kopf: its own events, a periodic
pass (controllers/requeue.py), its children's events, and a re-check of the objects that name
another when that object appears or goes."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import kopf
from pydantic import ValidationError

from strata import k8s
from strata.api import KindInfo
from strata.constants import API_VERSION, GROUP, LABEL_OWNER_KIND, LABEL_OWNER_NAME, VERSION
from strata.controllers.reconcile import (
    ChildKinds,
    Controller,
    Observer,
    Renderer,
    Resolver,
    StaleObject,
    forget_object,
    parse_spec,
    reconcile,
)
from strata.controllers.requeue import SCHEDULE, Entry, Requeuer
from strata.metrics import drop_object_series

# Level-based safety net: every object is reconciled at least this often, events or not.
RESYNC_SECONDS = float(os.environ.get("STRATA_RESYNC_SECONDS", "60"))

# Every registered kind, so an event of one kind can reconcile objects of another.
CONTROLLERS: dict[str, Controller] = {}
# Child kinds (apiVersion, kind) -> plural whose events are watched; see watch_children.
_WATCHED_CHILDREN: set[tuple[str, str]] = set()
_CHILD_PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Pod"): "pods",
    ("batch/v1", "Job"): "jobs",
    # A FeedbackPolicy's retrainings.
    (API_VERSION, "TrainingJob"): "trainingjobs",
    # ModelDeployment's children.
    ("apps/v1", "Deployment"): "deployments",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    # Optional: kopf watches them once the Prometheus Operator's CRDs exist.
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrules",
}


def register_kind(info: KindInfo, resolve: Resolver, render: Renderer, observe: Observer, child_kinds: ChildKinds,
                  requeue_seconds: Callable[[dict[str, Any]], float] | None = None) -> None:
    """`requeue_seconds(body)`: how long after a pass the object is reconciled again, events
    or not; RESYNC_SECONDS unless the kind says otherwise."""
    controller = CONTROLLERS[info.kind] = Controller(info, resolve, render, observe, child_kinds,
                                                     requeue_seconds or (lambda body: RESYNC_SECONDS))

    def reconcile_handler(body: kopf.Body, logger, **_: Any) -> None:
        reconcile(controller, body, logger)

    def event_handler(event: dict[str, Any], body: kopf.Body, name: str, namespace: str, uid: str, logger,
                      **_: Any) -> None:
        if event.get("type") == "DELETED":
            SCHEDULE.gone(uid)
            forget(info.kind, namespace, name, uid)
        else:  # listed at start (type None), added or changed: due again an interval after its last pass
            SCHEDULE.seen(info.kind, namespace, name, uid, controller.requeue_seconds(body))
        # Only creation and deletion change whether a reference resolves; the initial
        # listing is covered by the dependents' own resume handlers.
        if event.get("type") in ("ADDED", "DELETED"):
            recheck_dependents(info.kind, name, namespace, logger)

    resource = (GROUP, VERSION, info.plural)
    kopf.on.resume(*resource, id="reconcile")(reconcile_handler)
    kopf.on.create(*resource, id="reconcile")(reconcile_handler)
    kopf.on.update(*resource, id="reconcile")(reconcile_handler)
    # No kopf timers or deletion handlers: either would put a finalizer on every object (see
    # controllers/requeue.py). Periodic passes come from the schedule this handler keeps.
    kopf.on.event(*resource, id="recheck-dependents")(event_handler)
    for child_kind in child_kinds:
        watch_children(*child_kind)


def forget(kind: str, namespace: str, name: str, uid: str) -> None:
    """Drop what the operator kept in memory for a deleted object: its lock, its metric series."""
    forget_object(uid)
    drop_object_series(kind, namespace, name)


def live_object(info: KindInfo, namespace: str, name: str, uid: str | None) -> dict[str, Any] | None:
    """The object as the API server has it now; None when it is gone, or (with a uid) when one
    of that name replaced it."""
    found = [body for body in k8s.list_objects(info, namespace, name) if uid in (None, body["metadata"]["uid"])]
    return found[0] if found else None


def periodic_pass(entry: Entry) -> None:
    """Reconcile a scheduled object from a fresh read: a watch event may not have come (kopf
    stops watching a namespace that is being deleted), and a pass must not act on a stale body."""
    controller = CONTROLLERS[entry.kind]
    logger = _ObjectLogger(logging.getLogger("strata.requeue"), {"object": f"{entry.kind} {entry.namespace}/{entry.name}"})
    body = live_object(controller.info, entry.namespace, entry.name, entry.uid)
    if body is None:
        SCHEDULE.gone(entry.uid)
        forget(entry.kind, entry.namespace, entry.name, entry.uid)
        return
    SCHEDULE.seen(entry.kind, entry.namespace, entry.name, entry.uid, controller.requeue_seconds(body))
    try:
        reconcile(controller, body, logger)
    except StaleObject:
        # Only the status write lost to a newer version of the object: go again at once.
        SCHEDULE.retry(entry.uid, 1.0)


class _ObjectLogger(logging.LoggerAdapter):
    """Names the object in each message, as kopf's per-object loggers do."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['object']}] {msg}", kwargs


_requeuer: Requeuer | None = None


def start_periodic_passes(logger: logging.Logger, workers: int) -> None:
    """`workers`: as many as kopf's own executor has (a TrainingJob's progress read may wait
    seconds on a pod that does not answer, and other objects' passes must not queue behind it)."""
    global _requeuer
    stop_periodic_passes()
    SCHEDULE.clear()  # a fresh start (an operator restarted in the same process) sees every object anew
    _requeuer = Requeuer(SCHEDULE, periodic_pass, workers=workers, logger=logger)
    _requeuer.start()


def stop_periodic_passes() -> None:
    global _requeuer
    if _requeuer is not None:
        _requeuer.stop()
        _requeuer = None


def watch_children(api_version: str, kind: str) -> None:
    """Reconcile a child's owner whenever the child changes or goes, so a deleted or edited
    child is repaired (and a child's progress reaches status) within seconds, not at the
    next resync. Registered once per child kind, for every owner kind."""
    if (api_version, kind) in _WATCHED_CHILDREN:
        return
    _WATCHED_CHILDREN.add((api_version, kind))

    def child_changed(event: dict[str, Any], body: kopf.Body, namespace: str, logger, **_: Any) -> None:
        # The initial listing (type None) is covered by the owners' own resume handlers.
        if event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return
        for owner_kind, owner_name, owner_uid in owner_of(body):
            controller = CONTROLLERS.get(owner_kind)
            if controller:
                reconcile_owner(controller, namespace, owner_name, owner_uid, f"{kind} {body['metadata']['name']}", logger)

    kopf.on.event(api_version, _CHILD_PLURALS[(api_version, kind)], id=f"owner-of-{kind.lower()}",
                  labels={LABEL_OWNER_KIND: kopf.PRESENT})(child_changed)


def owner_of(child: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """Pure: the Strata object a child belongs to, as (kind, name, uid or None).

    Its controller reference when it has one; else its owner labels, which the children of a
    child carry too (a Job's Pods are controlled by the Job, labelled for the TrainingJob).
    """
    meta = child["metadata"]
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return [(ref["kind"], ref["name"], ref["uid"])]
    labels = meta.get("labels") or {}
    kinds = {controller.info.singular: kind for kind, controller in CONTROLLERS.items()}
    if labels.get(LABEL_OWNER_KIND) in kinds and labels.get(LABEL_OWNER_NAME):
        return [(kinds[labels[LABEL_OWNER_KIND]], labels[LABEL_OWNER_NAME], None)]
    return []


def reconcile_owner(controller: Controller, namespace: str, name: str, uid: str | None, child: str,
                    logger: logging.Logger) -> None:
    owner = live_object(controller.info, namespace, name, uid)
    # Gone or going: the garbage collector is removing its children, nothing to repair.
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    logger.info(f"{child} changed; reconciling its owner {controller.info.kind} {name}")
    try:
        reconcile(controller, owner, logger)
    except StaleObject:
        # The children were applied already; only the status write lost to a newer version of
        # the owner (often another pass's status), and the next event or resync reports.
        logger.debug(f"{controller.info.kind} {name} changed while reconciling after {child} changed")
    except Exception as error:  # the owner's own handlers and the resync retry it
        logger.warning(f"Reconciling {controller.info.kind} {name} after {child} changed failed: {error}")


def recheck_dependents(kind: str, name: str, namespace: str, logger: logging.Logger) -> None:
    """Reconcile now every object in `namespace` whose spec names the `kind` called `name`."""
    for controller in list(CONTROLLERS.values()):
        for body in k8s.list_objects(controller.info, namespace):
            try:
                spec = parse_spec(controller.info, body)
            except ValidationError:
                continue  # an invalid spec names nothing; its status already says so
            if not any(ref.kind == kind and ref.name == name for ref in spec.references()):
                continue
            logger.info(f"{kind} {name} appeared or went; re-checking {controller.info.kind} {body['metadata']['name']}")
            try:
                reconcile(controller, body, logger)
            except Exception as error:  # the dependent's own handlers and the resync retry it
                logger.warning(f"Re-checking {controller.info.kind} {body['metadata']['name']} failed: {error}")
