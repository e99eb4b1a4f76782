"""Wires a kind's render and observe functions into kopf: events plus a periodic resync."""

from __future__ import annotations

import os
from typing import Any

import kopf

from strata.api import KindInfo
from strata.api.base import StrataModel
from strata.constants import GROUP, VERSION, ConditionStatus, Phase, Reason
from strata.controllers.reconcile import ChildKinds, Observer, Outcome, Renderer, forget_object, reconcile
from strata.metrics import RESOURCES_READY
from strata.render.config import render_config_map

# Level-based safety net: every object is reconciled at least this often, events or not.
RESYNC_SECONDS = float(os.environ.get("STRATA_RESYNC_SECONDS", "60"))


def register_kind(info: KindInfo, render: Renderer, observe: Observer, child_kinds: ChildKinds) -> None:
    def reconcile_handler(body: kopf.Body, logger, **_: Any) -> None:
        reconcile(info, body, logger, render, child_kinds, observe)

    def forget_handler(name: str, namespace: str, uid: str, **_: Any) -> None:
        forget_object(uid)
        try:
            RESOURCES_READY.remove(info.kind, namespace, name)
        except KeyError:  # never reconciled successfully, so no series to drop
            pass

    resource = (GROUP, VERSION, info.plural)
    kopf.on.resume(*resource, id="reconcile")(reconcile_handler)
    kopf.on.create(*resource, id="reconcile")(reconcile_handler)
    kopf.on.update(*resource, id="reconcile")(reconcile_handler)
    # kopf puts a finalizer on objects with a timer, so it can stop the timer on deletion:
    # delete Strata resources before uninstalling the operator, or they wait for it.
    kopf.timer(*resource, id="resync", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)(reconcile_handler)
    # optional=True: cleanup is best-effort and never holds up deletion on its own.
    kopf.on.delete(*resource, id="forget", optional=True)(forget_handler)


def not_implemented(info: KindInfo, what: str) -> Outcome:
    """An honest status for a kind whose workload this version does not run yet."""
    message = f"The {info.kind} was accepted and validated, but {what} is not implemented in this version of Strata."
    return Outcome(
        phase=Phase.PENDING,
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
