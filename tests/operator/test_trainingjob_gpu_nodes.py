"""GPU scheduling of a TrainingJob's worker group on kwok's simulated GPU nodes (8 GPUs each)."""

from __future__ import annotations

import json

import pytest

from kwok_training import apply_training_inputs, gpu_training_job, trainer_pods
from tests_support import get_json, wait_for


def placement_report(cluster, namespace: str) -> str:
    """Why workers are not placed: the job's state, its pods' scheduling events, and what else
    holds the GPU nodes (a pod left by another test takes GPUs an 8-GPU worker needs)."""
    lines = [f"TrainingJob status: {(get_json(cluster, 'trainingjob', '-n', namespace, 'big-lm') or {}).get('status')}"]
    for event in (get_json(cluster, "events", "-n", namespace) or {}).get("items", []):
        lines.append(f"event {event['involvedObject']['kind']} {event['involvedObject']['name']}: "
                     f"{event['reason']}: {event['message']}")
    for node in ("kwok-gpu-0", "kwok-gpu-1"):
        pods = (get_json(cluster, "pods", "-A", "--field-selector", f"spec.nodeName={node}") or {}).get("items", [])
        lines.append(f"{node}: " + ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']} "
                                            f"({p['status'].get('phase')})" for p in pods))
    return "\n".join(lines)


def test_two_nodes_of_eight_gpus_schedule_one_worker_on_each_gpu_node(operator, crds_installed, namespace):
    cluster = crds_installed
    apply_training_inputs(cluster, namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(gpu_training_job(namespace, "big-lm", nodes=2, gpus_per_node=8)))
    # kwok runs a Job's pods to completion within seconds: what matters is where they were placed.
    try:
        running = wait_for(lambda: (pods := trainer_pods(cluster, namespace, "big-lm")) and len(pods) == 2
                           and all(p["spec"].get("nodeName") for p in pods) and pods,
                           timeout=120, what="two scheduled workers")
    except pytest.fail.Exception as error:
        pytest.fail(f"{error}\n{placement_report(cluster, namespace)}")
    assert sorted(p["spec"]["nodeName"] for p in running) == ["kwok-gpu-0", "kwok-gpu-1"]
    for pod in running:
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "8"
        # The GPU nodes' taint is tolerated through the ExtendedResourceToleration admission plugin.
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod["spec"].get("tolerations") or [])
    status = wait_for(lambda: (s := (get_json(cluster, "trainingjob", "-n", namespace, "big-lm") or {}).get("status") or {})
                      .get("phase") == "Succeeded" and s, timeout=60, what="the job's phase Succeeded")
    assert status["attempt"] == 1 and status["attempts"][0]["state"] == "Succeeded"
