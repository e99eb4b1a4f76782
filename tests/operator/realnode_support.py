"""What the real-node modules share: manifests, and reading what the cluster did.

The manifests are what a user would apply; nothing here stands in for a component.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from strata.devcluster import DevCluster
from tests_support import get_json, wait_for

WORDS = ("the model learns to predict the next token from the context of previous tokens in a sequence "
         "of text written by people who answer questions about their orders").split()


def apply(cluster: DevCluster, namespace: str, *manifests: dict) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document))


def claim(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}


def volume_dir(cluster: DevCluster, namespace: str, claim_name: str) -> Path:
    """The host directory behind a bound claim (the real node's local-path volumes)."""
    bound = wait_for(lambda: (get_json(cluster, "pvc", "-n", namespace, claim_name) or {}).get("spec", {}).get("volumeName"),
                     timeout=60, what=f"PVC {claim_name} to bind")
    return Path(get_json(cluster, "pv", bound)["spec"]["hostPath"]["path"])


def training_job(name: str, max_steps: int, **spec_changes) -> dict:
    spec = {
        "dataset": {"name": "chats"},
        "model": {"family": "transformer", "size": {"layers": 2, "hidden": 64, "heads": 4, "contextLength": 64}},
        "deepspeed": {"zeroStage": 1, "precision": "fp32", "microBatchSize": 4},
        "topology": {"nodes": 2, "gpusPerNode": 0},
        "resources": {"cpu": "500m", "memory": "2Gi"},
        "hyperparameters": {"maxSteps": max_steps, "learningRate": 1.0e-3},
        "checkpoints": {"everySteps": 50},
        "validation": {"everySteps": 500},
        "export": {"tritonRepository": {"pvc": {"claimName": "models", "path": "repository"}}},
        **spec_changes,
    }
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": spec}


def status(cluster: DevCluster, namespace: str, name: str) -> dict:
    return (get_json(cluster, "trainingjob", "-n", namespace, name) or {}).get("status") or {}


def pods(cluster: DevCluster, namespace: str, name: str) -> list[dict]:
    return get_json(cluster, "pods", "-n", namespace, "-l", f"strata.dev/owner-name={name}")["items"]


def trainer_events(cluster: DevCluster, namespace: str, pod: str, event: str) -> list[dict]:
    logs = cluster.kubectl("logs", "-n", namespace, pod, check=False).stdout
    records = []
    for line in logs.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                records.append(record)
    return records


def events_of(cluster: DevCluster, namespace: str, name: str) -> list[str]:
    listing = get_json(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return [f"{item['reason']}: {item['message']}" for item in listing["items"]]


def write_text_corpus(directory: Path, parts: int = 4, lines_per_part: int = 400, seed: int = 7) -> None:
    """Plain-text lines of random words from WORDS."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = random.Random(seed)
    for part in range(parts):
        lines = (" ".join(generator.choice(WORDS) for _ in range(generator.randint(5, 20))) + "." for _ in range(lines_per_part))
        (directory / f"part{part}.txt").write_text("\n".join(lines) + "\n")


def text_dataset(name: str, claim_name: str) -> dict:
    """A Dataset reading plain text from `claim_name`/text, publishing under `claim_name`/versions."""
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name},
            "spec": {"modality": "text", "schema": {"textField": "text"},
                     "sources": [{"pvc": {"claimName": claim_name, "path": "text"}, "format": "text"}],
                     "storage": {"pvc": {"claimName": claim_name, "path": "versions"}}}}
