"""No drift for GitOps: once the operator has reconciled a user's object, applying the user's
manifest again changes nothing, so Argo CD never shows it OutOfSync. Defaults come from the
CRD schema and the operator writes only status (and kopf's bookkeeping) on objects users own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from conftest import example_documents, get_json, wait_for
from strata.api import KINDS_BY_NAME
from strata.conditions import status_is_current

# Argo CD's field manager for server-side apply.
USER_MANAGER = "argocd-controller"
EXAMPLES = {doc["kind"]: doc for doc in example_documents()}


def apply(cluster, namespace: str, doc: dict[str, Any], *extra: str) -> dict[str, Any]:
    result = cluster.kubectl("apply", "--server-side", f"--field-manager={USER_MANAGER}", "-n", namespace,
                             "-o", "json", *extra, "-f", "-", input=yaml.safe_dump(doc))
    return json.loads(result.stdout)


def spec_owners(obj: dict[str, Any]) -> set[str]:
    return {entry["manager"] for entry in obj["metadata"].get("managedFields", [])
            if "f:spec" in (entry.get("fieldsV1") or {})}


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_reapplying_the_users_manifest_after_reconciliation_changes_nothing(dev_cluster, namespace, operator, kind):
    doc = EXAMPLES[kind]
    apply(dev_cluster, namespace, doc)
    plural = KINDS_BY_NAME[kind].crd_name
    name = doc["metadata"]["name"]

    def reconciled():
        obj = get_json(dev_cluster, plural, name, "-n", namespace, "--show-managed-fields")
        return obj if obj and obj.get("status") and status_is_current(obj) else None

    wait_for(reconciled, what=f"{kind} reconciled")

    def unchanged_by_a_dry_run():
        live = reconciled()
        dry_run = apply(dev_cluster, namespace, doc, "--dry-run=server", "--show-managed-fields")
        # The operator or kopf may write between the two reads; only a pair read together counts.
        return (live, dry_run) if live == reconciled() else None

    live, dry_run = wait_for(unchanged_by_a_dry_run, what="a dry run bracketed by identical reads")
    assert dry_run["metadata"]["generation"] == live["metadata"]["generation"], "the spec would change"
    assert dry_run == live, "re-applying the manifest would change the object"
    assert spec_owners(live) == {USER_MANAGER}, "only the user may own spec fields"
