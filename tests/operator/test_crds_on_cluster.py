"""The generated CRDs on the real API server: accepted, listed, and validating."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from conftest import example_documents
from invalid_objects import INVALID

pytestmark = pytest.mark.usefixtures("crds_installed")


def example(kind: str) -> dict:
    return copy.deepcopy(next(doc for doc in example_documents() if doc["kind"] == kind))


def server_dry_run(cluster, namespace: str, obj: dict):
    return cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(obj), check=False
    )


def test_every_example_is_accepted(dev_cluster, namespace):
    for doc in example_documents():
        result = server_dry_run(dev_cluster, namespace, doc)
        assert result.returncode == 0, f"{doc['kind']} rejected: {result.stderr}"


def test_kubectl_get_strata_lists_all_four_kinds_with_their_columns(dev_cluster, namespace):
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(example_documents()))
    table = dev_cluster.kubectl("get", "strata", "-n", namespace).stdout
    for kind in ("dataset", "trainingjob", "modeldeployment", "feedbackpolicy"):
        assert f"{kind}.strata.dev/" in table, table
    headers = dev_cluster.kubectl("get", "trainingjobs", "-n", namespace).stdout.splitlines()[0].split()
    assert headers == ["NAME", "READY", "PHASE", "STEP", "PERCENT", "ETA", "LOSS", "AGE"]


def test_short_names_collide_with_no_other_resource(dev_cluster):
    resources = dev_cluster.kubectl("api-resources", "-o", "wide", "--no-headers").stdout.splitlines()
    ours = json.loads(dev_cluster.kubectl("get", "crd", "-l", "app.kubernetes.io/part-of=strata", "-o", "json").stdout)
    short_names = [name for crd in ours["items"] for name in crd["spec"]["names"]["shortNames"]]
    assert len(short_names) == 8
    for short in short_names:
        owners = [line.split()[0] for line in resources if short in line.split()[1].split(",")]
        assert len(owners) == 1, f"short name {short} is used by {owners}"


@pytest.mark.parametrize("kind, mutate, expected", INVALID)
def test_invalid_objects_are_rejected_with_the_field_named(dev_cluster, namespace, kind, mutate, expected):
    obj = example(kind)
    mutate(obj)
    result = server_dry_run(dev_cluster, namespace, obj)
    assert result.returncode != 0, f"accepted: {yaml.safe_dump(obj)}"
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("path", ["trainingjob.spec", "trainingjob.spec.model.size", "trainingjob.spec.resources",
                                  "dataset.spec", "modeldeployment.spec.resources", "feedbackpolicy.spec",
                                  "trainingjob.status"])
def test_kubectl_explain_describes_every_field(dev_cluster, path):
    text = dev_cluster.kubectl("explain", path).stdout
    assert "<no description>" not in text, text
    if path.endswith("resources"):
        assert "quantity" in text and "Default:" in text, text
