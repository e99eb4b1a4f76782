"""Wires a kind's render and observe functions into kopf: events, a periodic resync, and a
re-check of the objects that name another when that object appears or goes."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError

from strata import k8s
from strata.api import KindInfo
from strata.api.base import StrataModel
from strata.constants import GROUP, VERSION, ConditionStatus, Phase, Reason
from strata.controllers.reconcile import (
    ChildKinds,
    Observer,
    Outcome,
    Renderer,
    forget_object,
    parse_spec,
    reconcile,
)
from strata.metrics import RESOURCES_READY
from strata.render.config import render_config_map

# Level-based safety net: every object is reconciled at least this often, events or not.
RESYNC_SECONDS = float(os.environ.get("STRATA_RESYNC_SECONDS", "60"))


@dataclass(frozen=True)
class Controller:
    info: KindInfo
    render: Renderer
    observe: Observer
    child_kinds: ChildKinds


# Every registered kind, so an event of one kind can reconcile objects of another.
CONTROLLERS: dict[str, Controller] = {}


def register_kind(info: KindInfo, render: Renderer, observe: Observer, child_kinds: ChildKinds) -> None:
    CONTROLLERS[info.kind] = Controller(info, render, observe, child_kinds)

    def reconcile_handler(body: kopf.Body, logger, **_: Any) -> None:
        reconcile(info, body, logger, render, child_kinds, observe)

    def forget_handler(name: str, namespace: str, uid: str, **_: Any) -> None:
        forget_object(uid)
        try:
            RESOURCES_READY.remove(info.kind, namespace, name)
        except KeyError:  # never reconciled successfully, so no series to drop
            pass

    def appeared_or_gone_handler(event: dict[str, Any], name: str, namespace: str, logger, **_: Any) -> None:
        # Only creation and deletion change whether a reference resolves; the initial
        # listing (type None) is covered by the dependents' own resume handlers.
        if event.get("type") in ("ADDED", "DELETED"):
            recheck_dependents(info.kind, name, namespace, logger)

    resource = (GROUP, VERSION, info.plural)
    kopf.on.resume(*resource, id="reconcile")(reconcile_handler)
    kopf.on.create(*resource, id="reconcile")(reconcile_handler)
    kopf.on.update(*resource, id="reconcile")(reconcile_handler)
    # kopf puts a finalizer on objects with a timer, so it can stop the timer on deletion:
    # delete Strata resources before uninstalling the operator, or they wait for it.
    kopf.timer(*resource, id="resync", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)(reconcile_handler)
    # optional=True: cleanup is best-effort and never holds up deletion on its own.
    kopf.on.delete(*resource, id="forget", optional=True)(forget_handler)
    kopf.on.event(*resource, id="recheck-dependents")(appeared_or_gone_handler)


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
                reconcile(controller.info, body, logger, controller.render, controller.child_kinds, controller.observe)
            except Exception as error:  # the dependent's own handlers and the resync retry it
                logger.warning(f"Re-checking {controller.info.kind} {body['metadata']['name']} failed: {error}")


def not_implemented(info: KindInfo, what: str) -> Outcome:
    """An honest status for a kind whose workload this version does not run yet."""
    message = f"The {info.kind} was accepted and validated, but {what} is not implemented in this version of Strata."
    return Outcome(
        phase=Phase.ACCEPTED,
        ready=(ConditionStatus.FALSE, Reason.NOT_IMPLEMENTED, message),
        progressing=(ConditionStatus.FALSE, Reason.NOT_IMPLEMENTED, message),
        degraded=(ConditionStatus.FALSE, Reason.AS_EXPECTED, "No errors."),
    )


def config_only_kind(info: KindInfo, what: str) -> None:
    """Register a kind that so far publishes its resolved configuration and nothing else."""
    def render(kind: KindInfo, body: dict[str, Any], spec: StrataModel) -> list[dict[str, Any]]:
        return [render_config_map(kind, body, spec)]

    def observe(kind: KindInfo, body: dict[str, Any], spec: StrataModel) -> Outcome:
        return not_implemented(kind, what)

    register_kind(info, render, observe, child_kinds=(("v1", "ConfigMap"),))
