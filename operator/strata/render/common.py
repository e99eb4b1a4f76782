"""Metadata every child shares: names, labels, owner references."""

from __future__ import annotations

from typing import Any

from strata.api import KindInfo
from strata.api.base import S3Location
from strata.constants import (
    ANNOTATION_CHILD_POLICY,
    API_VERSION,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_OWNER_KIND,
    LABEL_OWNER_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    PART_OF,
    ChildPolicy,
)


def owner_labels(info: KindInfo, name: str) -> dict[str, str]:
    """Labels that find every child of one custom resource."""
    return {LABEL_OWNER_KIND: info.singular, LABEL_OWNER_NAME: name}


def child_labels(info: KindInfo, name: str, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: info.singular,
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: component,
        LABEL_PART_OF: PART_OF,
        LABEL_MANAGED_BY: MANAGED_BY,
        **owner_labels(info, name),
    }


def owner_reference(info: KindInfo, name: str, uid: str) -> dict[str, Any]:
    """Makes the garbage collector delete the child with its owner."""
    return {
        "apiVersion": API_VERSION,
        "kind": info.kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    info: KindInfo, owner: dict[str, Any], child_name: str, component: str, policy: str = ChildPolicy.DECLARATIVE
) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "name": child_name,
        "namespace": meta["namespace"],
        "labels": child_labels(info, meta["name"], component),
        "annotations": {ANNOTATION_CHILD_POLICY: policy},
        "ownerReferences": [owner_reference(info, meta["name"], meta["uid"])],
    }


def child_policy(child: dict[str, Any]) -> str:
    """The policy a rendered or live child carries; unmarked children are declarative."""
    annotations = child["metadata"].get("annotations") or {}
    return annotations.get(ANNOTATION_CHILD_POLICY, ChildPolicy.DECLARATIVE)


# The workload images' non-root user (devcluster/images.py: "strata", 1000).
WORKLOAD_UID = 1000


def workload_pod_security() -> dict[str, Any]:
    """A workload pod's securityContext: the images' non-root user, the runtime's seccomp profile."""
    return {"runAsNonRoot": True, "runAsUser": WORKLOAD_UID, "runAsGroup": WORKLOAD_UID, "fsGroup": WORKLOAD_UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def workload_container_security() -> dict[str, Any]:
    """A workload container's securityContext: no privilege to gain, nothing written outside its volumes."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def volume_mount(name: str, path: str, sub_path: str = "", read_only: bool = False) -> dict[str, Any]:
    """A container's volumeMount, with subPath and readOnly only when set."""
    mount: dict[str, Any] = {"name": name, "mountPath": path}
    if sub_path:
        mount["subPath"] = sub_path
    if read_only:
        mount["readOnly"] = True
    return mount


def s3_settings(location: S3Location, credentials_path: str) -> dict[str, Any]:
    """An S3 location as a pod reads it (strata_workloads.data.config.S3Source): its Secret's
    keys mounted at `credentials_path` where the spec names one, the pod's AWS_* environment
    otherwise."""
    settings: dict[str, Any] = {"uri": location.uri}
    if location.endpoint:
        settings["endpoint"] = location.endpoint
    if location.secret_ref is not None:
        settings["credentialsPath"] = credentials_path
    return settings
