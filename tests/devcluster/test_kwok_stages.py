"""The kwok Stage config we ship is kwok's own defaults for the pinned version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from strata.devcluster.binaries import KWOK, KWOK_VERSION
from strata.devcluster.kwok_stages import DEFAULT_STAGES_YAML, KWOK_STAGES_VERSION

UPSTREAM_FILES = {
    "node-initialize": "node/fast/node-initialize.yaml",
    "node-heartbeat-with-lease": "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod-ready": "pod/fast/pod-ready.yaml",
    "pod-complete": "pod/fast/pod-complete.yaml",
    "pod-delete": "pod/fast/pod-delete.yaml",
}


def _stages() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(DEFAULT_STAGES_YAML)}


def test_stages_cover_node_and_pod_lifecycles():
    assert KWOK_STAGES_VERSION == KWOK_VERSION
    stages = _stages()
    assert set(stages) == set(UPSTREAM_FILES)
    kinds = {stage["spec"]["resourceRef"]["kind"] for stage in stages.values()}
    assert kinds == {"Node", "Pod"}
    # Only Job-owned pods complete; others (Deployments) stay Running.
    complete = stages["pod-complete"]["spec"]["selector"]["matchExpressions"]
    assert {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]} in complete


def test_stages_match_the_pinned_kwok_module_source():
    go = shutil.which("go")
    assert go is not None, "Go is required (it builds the control plane): can't locate the kwok module source"
    module_cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    stage_dir = Path(module_cache) / f"sigs.k8s.io/kwok@{KWOK_VERSION}/kustomize/stage"
    if not stage_dir.is_dir():  # binaries came from PATH/KUBEBUILDER_ASSETS: fetch the source
        subprocess.run([go, "mod", "download", f"sigs.k8s.io/kwok@{KWOK_VERSION}"], check=True,
                       cwd=KWOK.module_dir, capture_output=True)
    stages = _stages()
    for name, relative in UPSTREAM_FILES.items():
        assert stages[name] == yaml.safe_load((stage_dir / relative).read_text()), name
