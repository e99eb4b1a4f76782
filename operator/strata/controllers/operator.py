"""Operator-wide settings, health probes and the metrics endpoint."""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
import prometheus_client

from strata import k8s
from strata.controllers.registration import start_periodic_passes, stop_periodic_passes
from strata.metrics import RECONCILES

METRICS_PORT_ENV = "STRATA_METRICS_PORT"
DEFAULT_METRICS_PORT = 8080


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # The CRDs' status schemas are structural, so kopf must keep its bookkeeping in
    # annotations, not in status where the API server would prune it.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="strata.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="strata.dev", key="last-handled-configuration"
    )
    # Strata's handlers need no finalizer (see controllers/requeue.py). kopf removes this one,
    # which earlier builds of Strata put on every object, at the object's next event.
    settings.persistence.finalizer = "strata.dev/finalizer"
    # Events say what happened ("Created Job trainer-x"), posted by the passes themselves
    # (k8s.post_event); kopf's would repeat every log line and handler retry as an event.
    settings.posting.enabled = False
    # One replica by design (the Deployment uses Recreate), so no peering objects are needed.
    settings.peering.standalone = True
    settings.execution.max_workers = 8
    start_periodic_passes(logger, workers=settings.execution.max_workers)
    port = int(os.environ.get(METRICS_PORT_ENV, DEFAULT_METRICS_PORT))
    if port:
        prometheus_client.start_http_server(port)
        logger.info(f"Serving Prometheus metrics on :{port}/metrics")


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    stop_periodic_passes()


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the same credentials the operator's client uses (see strata.k8s)."""
    configuration = k8s.api_client().configuration
    # In a pod the client re-reads the rotated token file here, so a re-login gets a fresh one.
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _separator, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        expiration=None,
    )


@kopf.on.probe(id="reconciles")
def reconcile_count(**_: Any) -> float:
    """Liveness detail: reconciliations so far, so a stuck operator is visible in /healthz."""
    return sum(sample.value for metric in RECONCILES.collect() for sample in metric.samples if sample.name.endswith("_total"))
