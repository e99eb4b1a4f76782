"""The API-server behaviour the child policies rest on, on the real API server."""

import json

import pytest
from kubernetes.client.rest import ApiException

from conftest import get_json
from strata import k8s


def config_map(namespace, name, data, **extra):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data, **extra}


def test_someone_elses_child_applied_without_force_keeps_what_its_user_changed(dev_cluster, namespace, operator):
    manifest = config_map(namespace, "users-deployment", {"replicas": "1", "model": "v1"})
    k8s.apply(manifest, force=False)
    # Its user (a FeedbackPolicy, a person) takes over one field.
    dev_cluster.kubectl("patch", "configmap", "users-deployment", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"data": {"replicas": "3"}}))
    with pytest.raises(ApiException) as refused:
        k8s.apply(manifest, force=False)
    assert refused.value.status == 409
    assert get_json(dev_cluster, "configmap", "users-deployment", "-n", namespace)["data"]["replicas"] == "3"
    # What the operator's own child gets instead: the spec wins.
    k8s.apply(manifest, force=True)
    assert get_json(dev_cluster, "configmap", "users-deployment", "-n", namespace)["data"]["replicas"] == "1"


def test_a_create_once_child_is_created_once_and_its_content_cannot_change(dev_cluster, namespace, operator):
    manifest = config_map(namespace, "config-0123456789", {"train.yaml": "a"}, immutable=True)
    assert k8s.create(manifest)["metadata"]["name"] == "config-0123456789"
    # A second create finds it there and leaves it as it is.
    assert k8s.create(config_map(namespace, "config-0123456789", {"train.yaml": "b"}, immutable=True)) is None
    with pytest.raises(ApiException) as refused:
        k8s.apply(config_map(namespace, "config-0123456789", {"train.yaml": "b"}, immutable=True))
    assert refused.value.status == 422  # immutable: a changed configuration needs a new name
    assert get_json(dev_cluster, "configmap", "config-0123456789", "-n", namespace)["data"] == {"train.yaml": "a"}
