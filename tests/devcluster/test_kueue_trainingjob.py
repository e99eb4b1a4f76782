"""Kueue admits a TrainingJob's whole worker group or none of it (Kueue's real controller)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from strata.devcluster import kueue
from tests_support import get_json, install_crds, operator_process, temporary_namespace, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from kwok_training import apply_training_inputs, gpu_training_job, trainer_pods  # noqa: E402


@pytest.fixture(scope="module")
def namespace(kueue_cluster):
    yield from temporary_namespace(kueue_cluster, "kq")


@pytest.fixture(scope="module")
def operator(kueue_cluster, namespace):
    install_crds(kueue_cluster)
    yield from operator_process(kueue_cluster, [namespace], {"STRATA_RESYNC_SECONDS": "5"})


def status(cluster, namespace, name):
    return (get_json(cluster, "trainingjob", "-n", namespace, name) or {}).get("status") or {}


def test_kueue_admits_a_group_that_fits_and_holds_one_that_does_not_with_no_pod(kueue_cluster, namespace, operator):
    cluster = kueue_cluster
    kueue.create_queues(cluster, namespace=namespace, gpus=8, cluster_queue=f"cq-{namespace}", local_queue="training")
    apply_training_inputs(cluster, namespace)
    # Too big first: it must not hold up the one that fits.
    for name, gpus in (("too-big", 8), ("fits", 4)):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(
            gpu_training_job(namespace, name, nodes=2, gpus_per_node=gpus, queue="training")))

    # kwok runs admitted pods to completion within seconds: where they went is what counts.
    pods = wait_for(lambda: (p := trainer_pods(cluster, namespace, "fits")) and len(p) == 2
                    and all(x["spec"].get("nodeName") for x in p) and p,
                    timeout=180, what="the admitted group's two workers scheduled")
    assert {p["spec"]["nodeName"] for p in pods} <= {"kwok-gpu-0", "kwok-gpu-1"}
    wait_for(lambda: status(cluster, namespace, "fits").get("phase") in ("Running", "Succeeded"), timeout=60,
             what="the admitted job running or done")

    held = wait_for(lambda: (s := status(cluster, namespace, "too-big")).get("phase") == "Pending" and s,
                    timeout=60, what="too-big Pending")
    ready = next(c for c in held["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Queued" and "training" in ready["message"]
    workload = wait_for(lambda: kueue.workload_for_job(cluster, namespace, "too-big-1"), timeout=60, what="its Workload")
    reserved = next((c for c in workload["status"].get("conditions") or [] if c["type"] == "QuotaReserved"), {})
    assert reserved.get("status") == "False" and "insufficient quota" in reserved.get("message", "")
    assert trainer_pods(cluster, namespace, "too-big") == []
    assert get_json(cluster, "job", "-n", namespace, "too-big-1")["spec"]["suspend"] is True
