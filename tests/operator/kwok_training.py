"""TrainingJobs on kwok's simulated nodes: static volumes (kwok clusters have no provisioner)
and a Dataset to name, so the scheduler, the Job controller and Kueue see real objects."""

from __future__ import annotations

import json


def _volume(namespace: str, claim: str) -> list[dict]:
    # kwok does not mount volumes; the claim only has to bind for the scheduler.
    pv = f"{namespace}-{claim}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "",
                  "hostPath": {"path": f"/tmp/{pv}"},
                  "claimRef": {"namespace": namespace, "name": claim}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]


def apply_training_inputs(cluster, namespace: str) -> None:
    """PVCs `corpus` and `checkpoints`, and a Dataset `chats` reading the corpus."""
    items = _volume(namespace, "corpus") + _volume(namespace, "checkpoints") + [{
        "apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": "chats", "namespace": namespace},
        "spec": {"modality": "text", "schema": {"textField": "text"},
                 "sources": [{"pvc": {"claimName": "corpus", "path": "text"}, "format": "text"}],
                 "storage": {"pvc": {"claimName": "corpus", "path": "versions"}}},
    }]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def gpu_training_job(namespace: str, name: str, nodes: int, gpus_per_node: int, queue: str | None = None) -> dict:
    topology = {"nodes": nodes, "gpusPerNode": gpus_per_node}
    if queue:
        topology["queueName"] = queue
    return {
        "apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": namespace},
        "spec": {"dataset": {"name": "chats"}, "model": {"family": "transformer"}, "topology": topology,
                 "resources": {"cpu": "4", "memory": "16Gi"},
                 "checkpoints": {"storage": {"pvc": {"claimName": "checkpoints", "path": name}}}},
    }


def trainer_pods(cluster, namespace: str, name: str) -> list[dict]:
    listing = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"strata.dev/owner-name={name}", "-o", "json")
    return json.loads(listing.stdout)["items"]
