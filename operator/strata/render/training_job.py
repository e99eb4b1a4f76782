"""A TrainingJob's children, rendered purely from its spec and what the controller resolved.

- the trainer's config: an immutable, content-named ConfigMap (render/config.py);
- a headless Service, so each worker has a stable DNS name and rank 0's is the rendezvous;
- a checkpoint PVC when the spec names no storage (created once, deleted with the job);
- one Indexed Job per attempt: one pod per node running the trainer under torchrun.

Group restart: a Job is one attempt of the whole group (backoffLimit 0), because one replaced
pod cannot rejoin its peers' collectives. When a worker fails the Job fails, its peers are
stopped, and the next pass renders attempt n+1, which resumes from the last checkpoint.
Each attempt is created once and never updated (a Job's pod template is immutable); the
previous attempt's Job is kept for its logs, older ones are pruned (status keeps their story).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from strata.api import TRAINING_JOB
from strata.api.training import TrainingJobSpec
from strata.constants import ANNOTATION_CREATED_BECAUSE, KUEUE_QUEUE_LABEL, ChildPolicy
from strata.observe.training import (
    ANNOTATION_RESUME_FROM,
    EXIT_INTERRUPTED,
    EXIT_INVALID_CONFIG,
    LABEL_ATTEMPT,
    TRAINER_CONTAINER,
    AttemptView,
)
from strata.render.common import (
    child_labels,
    child_metadata,
    owner_labels,
    volume_mount,
    workload_container_security,
    workload_pod_security,
)
from strata.render.config import render_config_map
from strata.render.trainer import (
    CHECKPOINT_DIR,
    DATA_DIR,
    EXPORT_CREDENTIALS_DIR,
    EXPORT_DIR,
    METRICS_PORT,
    TRAINER_CONFIG_DIR,
    TRAINER_CONFIG_PATH,
)

COMPONENT = "trainer"
RENDEZVOUS_PORT = 29500
# The checkpoint volume the operator creates when spec.checkpoints.storage is unset.
CHECKPOINT_VOLUME_SIZE = "20Gi"
# Long enough for every rank to finish its step and write a checkpoint after SIGTERM.
TERMINATION_GRACE_SECONDS = 120
# Longest TrainingJob name whose Jobs (<name>-<attempt>) and pod hostnames
# (<name>-<attempt>-<index>) stay within a 63-character DNS label.
MAX_NAME_LENGTH = 52


@dataclass(frozen=True)
class DataVolume:
    """Where the dataset is, resolved from the Dataset: a PVC and a directory on it."""

    claim_name: str
    path: str
    version: str | None = None


@dataclass(frozen=True)
class NewAttempt:
    number: int
    resume_from_step: int | None
    because: str  # the event's words: "Started attempt 2 from step 400: pod x exited 137"


def service_name(owner_name: str) -> str:
    return owner_name


def job_name(owner_name: str, attempt: int) -> str:
    return f"{owner_name}-{attempt}"


def checkpoint_claim(spec: TrainingJobSpec, owner_name: str) -> tuple[str, str]:
    """(claim, sub-path) of the checkpoint volume."""
    storage = spec.checkpoints.storage
    if storage is not None and storage.pvc is not None:
        return storage.pvc.claim_name, storage.pvc.path
    return f"{owner_name}-checkpoints", ""


def render_service(owner: dict[str, Any]) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(TRAINING_JOB, owner, service_name(name), COMPONENT),
        "spec": {
            "clusterIP": "None",
            # Rank 0's name must resolve while the group is still starting, before any pod is ready.
            "publishNotReadyAddresses": True,
            "selector": {**owner_labels(TRAINING_JOB, name), "app.kubernetes.io/component": COMPONENT},
            "ports": [
                {"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT},
            ],
        },
    }


def render_checkpoint_claim(spec: TrainingJobSpec, owner: dict[str, Any]) -> dict[str, Any]:
    claim, _ = checkpoint_claim(spec, owner["metadata"]["name"])
    # Every worker writes its shards of each checkpoint to the one volume.
    access = "ReadWriteMany" if spec.topology.nodes > 1 else "ReadWriteOnce"
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": child_metadata(TRAINING_JOB, owner, claim, "checkpoints", ChildPolicy.CREATE_ONCE),
        "spec": {"accessModes": [access], "resources": {"requests": {"storage": CHECKPOINT_VOLUME_SIZE}}},
    }


def _environment(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    env = [
        # Declared here so $(JOB_COMPLETION_INDEX) expands in the container's arguments.
        {"name": "JOB_COMPLETION_INDEX",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "STRATA_TRAIN_CONFIG", "value": TRAINER_CONFIG_PATH},
        # The root filesystem is read-only; caches (torch, MLflow) go to the /tmp volume.
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.topology.gpus_per_node > 0:
        env += [
            # Fail a hung collective instead of waiting forever, so the group restarts.
            {"name": "TORCH_NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
            {"name": "NCCL_DEBUG", "value": "WARN"},
        ]
    else:
        # gloo over the pod network (the pod's only interface besides loopback).
        env.append({"name": "GLOO_SOCKET_IFNAME", "value": "eth0"})
    return env


def render_attempt_job(
    spec: TrainingJobSpec, owner: dict[str, Any], attempt: NewAttempt, config_map: str, data: DataVolume, image: str
) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    topology, resources = spec.topology, spec.resources
    job = job_name(name, attempt.number)
    meta = child_metadata(TRAINING_JOB, owner, job, COMPONENT, ChildPolicy.CREATE_ONCE)
    meta["labels"][LABEL_ATTEMPT] = str(attempt.number)
    meta["annotations"][ANNOTATION_CREATED_BECAUSE] = attempt.because
    if attempt.resume_from_step is not None:
        meta["annotations"][ANNOTATION_RESUME_FROM] = str(attempt.resume_from_step)
    if topology.queue_name:
        meta["labels"][KUEUE_QUEUE_LABEL] = topology.queue_name

    limits: dict[str, Any] = {"cpu": str(resources.cpu), "memory": str(resources.memory)}
    if topology.gpus_per_node > 0:
        limits[topology.gpu_resource] = str(topology.gpus_per_node)
    checkpoint_claim_name, checkpoint_path = checkpoint_claim(spec, name)
    mounts = [
        volume_mount("config", TRAINER_CONFIG_DIR, read_only=True),
        volume_mount("data", DATA_DIR, data.path, read_only=True),
        volume_mount("checkpoints", CHECKPOINT_DIR, checkpoint_path),
        volume_mount("dshm", "/dev/shm"),
        volume_mount("tmp", "/tmp"),
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "data", "persistentVolumeClaim": {"claimName": data.claim_name, "readOnly": True}},
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": checkpoint_claim_name}},
        # NCCL and DataLoader workers share tensors through /dev/shm; the default 64 MiB is too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if spec.export is not None and spec.export.triton_repository.pvc is not None:
        repository = spec.export.triton_repository.pvc
        mounts.append(volume_mount("models", EXPORT_DIR, repository.path))
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": repository.claim_name}})
    elif spec.export is not None and spec.export.triton_repository.s3 is not None:
        # Written here, then uploaded by rank 0 (strata_workloads.train.export).
        mounts.append(volume_mount("models", EXPORT_DIR))
        volumes.append({"name": "models", "emptyDir": {}})
        secret = spec.export.triton_repository.s3.secret_ref
        if secret is not None:
            mounts.append(volume_mount("export-credentials", EXPORT_CREDENTIALS_DIR, read_only=True))
            volumes.append({"name": "export-credentials", "secret": {"secretName": secret.name, "defaultMode": 0o440}})

    pod_labels = {**child_labels(TRAINING_JOB, name, COMPONENT), LABEL_ATTEMPT: str(attempt.number)}
    container = {
        "name": TRAINER_CONTAINER,
        "image": image,
        # torchrun, but the pod exits with the trainer's own code (2, 143, ...), which the
        # failure policy and the attempt's story read (strata_workloads.train.launch).
        "command": ["python3", "-m", "strata_workloads.train.launch"],
        "args": [
            f"--nnodes={topology.nodes}",
            f"--nproc-per-node={max(topology.gpus_per_node, 1)}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            # Rank 0's stable name through the headless Service.
            f"--master-addr={job}-0.{service_name(name)}",
            f"--master-port={RENDEZVOUS_PORT}",
            "-m", "strata_workloads.train", "--config", TRAINER_CONFIG_PATH,
        ],
        "env": _environment(spec),
        "ports": [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": mounts,
        # The trainer writes its result (or error) here; a crash leaves the log's tail instead.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": workload_container_security(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service_name(name),
        # The trainer never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": workload_pod_security(),
        "containers": [container],
        "volumes": volumes,
    }
    if topology.node_selector:
        pod_spec["nodeSelector"] = dict(topology.node_selector)
    if topology.tolerations:
        pod_spec["tolerations"] = [toleration.to_wire() for toleration in topology.tolerations]
    if topology.priority_class_name:
        pod_spec["priorityClassName"] = topology.priority_class_name
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": topology.nodes,
            "parallelism": topology.nodes,
            # One failed worker fails the attempt; the operator restarts the whole group.
            "backoffLimit": 0,
            # Every worker exit but success fails the attempt at once, and the Job's Failed
            # condition names the pod and its exit code, which outlives the pods themselves:
            # 2, the trainer refused its configuration (the operator does not retry it); 143,
            # stopped by SIGTERM after a checkpoint (an outside stop, not counted as a failure);
            # anything else, a failure that uses up one of spec.retries.
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In",
                                                      "values": [EXIT_INVALID_CONFIG]}},
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "In",
                                                      "values": [EXIT_INTERRUPTED]}},
                {"action": "FailJob", "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "NotIn",
                                                      "values": [0]}},
            ]},
            # Kueue admits the whole group at once, or keeps it suspended with no pod at all.
            "suspend": bool(topology.queue_name),
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def kept_job(owner: dict[str, Any], attempt: AttemptView) -> dict[str, Any]:
    """A live attempt that stays: only who it belongs to is re-asserted (it is create-once)."""
    meta = child_metadata(TRAINING_JOB, owner, attempt.job, COMPONENT, ChildPolicy.CREATE_ONCE)
    meta["labels"][LABEL_ATTEMPT] = str(attempt.number)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta}


def plan_attempts(
    spec: TrainingJobSpec, attempts: list[AttemptView], hold: bool, last_checkpoint_step: int | None
) -> tuple[list[AttemptView], NewAttempt | None]:
    """Pure: which live attempts stay, and whether to start a new one (and why).

    No new attempt while the spec suspends the job, after success, after the trainer refused
    its configuration, once failures exceed spec.retries, or while `hold`: workers of an
    earlier attempt are still stopping (they may be writing the checkpoint the next one
    resumes from), or something the job needs (its data) is missing.
    """
    newest = attempts[-1] if attempts else None
    keep = [a for a in attempts if a.live and newest is not None and a.number >= newest.number - 1
            and not (spec.suspend and not a.ended)]
    if spec.suspend or hold:
        return keep, None
    if newest is None:
        return keep, NewAttempt(1, None, "Started attempt 1")
    if not newest.ended or newest.state == "Succeeded" or newest.reason == "InvalidConfiguration":
        return keep, None
    failures = sum(attempt.counts_as_failure for attempt in attempts)
    if failures > spec.retries:
        return keep, None
    number = newest.number + 1
    start = (f"from the last checkpoint (step {last_checkpoint_step} when last read)" if last_checkpoint_step
             else "from the last checkpoint, if any")
    because = f"Started attempt {number} {start}: {newest.message or newest.reason}"
    keep = [a for a in keep if a.number >= newest.number]
    return keep, NewAttempt(number, last_checkpoint_step, because)


def render_training_children(
    spec: TrainingJobSpec, owner: dict[str, Any], data: DataVolume, image: str, attempts: list[AttemptView],
    hold: bool, last_checkpoint_step: int | None,
) -> list[dict[str, Any]]:
    config_map = render_config_map(TRAINING_JOB, owner, spec)
    children = [config_map, render_service(owner)]
    if spec.checkpoints.storage is None:
        children.append(render_checkpoint_claim(spec, owner))
    keep, new = plan_attempts(spec, attempts, hold, last_checkpoint_step)
    children += [kept_job(owner, attempt) for attempt in keep]
    if new is not None:
        children.append(render_attempt_job(spec, owner, new, config_map["metadata"]["name"], data, image))
    return children
