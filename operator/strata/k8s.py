"""All of the operator's Kubernetes API I/O: server-side apply, creating, listing and deleting
children, status patches and events. No other operator module talks to the API server.

Handlers run in kopf's thread pool, so the synchronous official client is fine here.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from strata.api import KindInfo
from strata.conditions import now_rfc3339
from strata.constants import FIELD_MANAGER, GROUP, VERSION
from strata.render.event import event_manifest

_log = logging.getLogger(__name__)

# The dynamic client's discovery cache is not thread-safe, and kopf runs handlers in threads.
_discovery_lock = threading.RLock()


def load_configuration() -> kubernetes.client.Configuration:
    """In-cluster credentials when running in a pod, else $KUBECONFIG's current context.

    $KUBECONFIG is read now, not when the client library was imported.
    """
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return configuration


@functools.cache
def current_namespace() -> str:
    """The kubeconfig context's namespace, as kubectl picks it ("default" when it names none)."""
    try:
        _, context = kubernetes.config.list_kube_config_contexts()
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return (context.get("context") or {}).get("namespace") or "default"


def api_client() -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient(load_configuration())


@functools.cache
def dynamic_client() -> DynamicClient:
    with _discovery_lock:
        return DynamicClient(api_client())


def _resource(api_version: str, kind: str):
    with _discovery_lock:
        return dynamic_client().resources.get(api_version=api_version, kind=kind)


def apply(manifest: dict[str, Any], force: bool = True) -> dict[str, Any]:
    """Server-side apply with the operator's one field manager; returns the live object.

    Without `force`, fields another manager owns are not taken over: the API server answers
    409 Conflict instead (an ApiException with status 409).
    """
    meta = manifest["metadata"]
    live = _resource(manifest["apiVersion"], manifest["kind"]).server_side_apply(
        body=manifest,
        name=meta["name"],
        namespace=meta.get("namespace"),
        field_manager=FIELD_MANAGER,
        force_conflicts=force,
    )
    return live.to_dict()


def create(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Create the object; None if one of that name exists already (it is left as it is)."""
    meta = manifest["metadata"]
    try:
        live = _resource(manifest["apiVersion"], manifest["kind"]).create(
            body=manifest, namespace=meta.get("namespace"), field_manager=FIELD_MANAGER
        )
    except ApiException as error:
        if error.status == 409:
            return None
        raise
    return live.to_dict()


def serves_kind(api_version: str, kind: str) -> bool:
    """Whether the API server serves this kind now (a CRD may be installed or removed at any
    time: a miss re-reads discovery)."""
    try:
        _resource(api_version, kind)
    except ResourceNotFoundError:
        return False
    return True


def serves_api(group_version: str) -> bool:
    """Whether /apis/<group_version> answers now. An aggregated API (custom.metrics.k8s.io,
    served by prometheus-adapter) may be registered or removed at any time, and answers 503
    while its server is down: either way it is not served."""
    client = api_client()
    try:
        response = client.call_api("GET", f"{client.configuration.host}/apis/{group_version}",
                                   header_params={"Accept": "application/json"}, _request_timeout=5)
    except (ApiException, OSError):
        return False
    return 200 <= response.status < 300


def list_children(api_version: str, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Objects of a kind with these labels; none when the kind is not served (an optional
    CRD, such as the Prometheus Operator's, that is not installed)."""
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    try:
        resource = _resource(api_version, kind)
    except ResourceNotFoundError:
        return []
    result = resource.get(namespace=namespace, label_selector=selector)
    return [item.to_dict() for item in result.items]


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """One object by name; None when there is none. Listed by name, so the list verb the
    chart grants on children is enough."""
    result = _resource(api_version, kind).get(namespace=namespace, field_selector=f"metadata.name={name}")
    return result.items[0].to_dict() if result.items else None


def delete(api_version: str, kind: str, namespace: str, name: str) -> None:
    """Delete the object and, in the background, what it owns (a Job's pods: the API's
    default for Jobs would orphan them)."""
    try:
        _resource(api_version, kind).delete(name=name, namespace=namespace, propagation_policy="Background")
    except ApiException as error:
        if error.status != 404:
            raise


def patch_status(info: KindInfo, namespace: str, name: str, status: dict[str, Any], resource_version: str) -> None:
    """Merge-patch the status subresource with `status`, a JSON merge patch (null deletes).

    The resourceVersion makes the patch conditional: 409 Conflict if the object changed.
    """
    kubernetes.client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, info.plural, name,
        {"metadata": {"resourceVersion": resource_version}, "status": status},
    )


def list_objects(info: KindInfo, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    """Objects of a Strata kind in a namespace; only the one called `name` when given.

    A field selector rather than a GET, so the operator needs no verb beyond list and watch.
    """
    selector = f"metadata.name={name}" if name else None
    result = kubernetes.client.CustomObjectsApi(api_client()).list_namespaced_custom_object(
        GROUP, VERSION, namespace, info.plural, field_selector=selector
    )
    return result["items"]


def exists(info: KindInfo, namespace: str, name: str) -> bool:
    return bool(list_objects(info, namespace, name))


def post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """An event on the object, posted now. Best-effort: an event the API server refuses (a
    namespace being deleted accepts no new objects) is logged, never fails the pass."""
    manifest = event_manifest(body, type_, reason, message, now_rfc3339(), socket.gethostname())
    try:
        kubernetes.client.CoreV1Api(api_client()).create_namespaced_event(manifest["metadata"]["namespace"], manifest)
    except (ApiException, OSError) as error:
        _log.debug(f"Event {reason!r} on {body['kind']} {body['metadata']['name']} not posted: {error}")


def merge_patch_object(api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any],
                       field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
    """A JSON merge patch of someone else's object (a FeedbackPolicy promoting a ModelDeployment's
    model): the operator's field manager comes to own only the fields the patch sets, and every
    other field stays its user's (a server-side apply would claim the whole applied intent)."""
    live = _resource(api_version, kind).patch(
        body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json",
        field_manager=field_manager,
    )
    return live.to_dict()
