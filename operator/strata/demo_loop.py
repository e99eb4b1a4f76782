"""The whole loop on a running dev cluster with a real node, driven as its users would drive it.

`strata demo` runs it (and a real-node test runs the same code): it applies examples/loop/ (a
Dataset, a TrainingJob, a ModelDeployment and a FeedbackPolicy), puts a text corpus into the
corpus claim, and then acts only as a person and a client would:

    data        the Dataset's pipeline pod publishes a version
    training    two CPU workers train on it with DeepSpeed and export the model
    serving     Triton serves it behind the monitoring sidecar
    feedback    a client calls the model over gRPC with random token ids (traffic unlike
                the training data, which the drift monitor reports) and rates most answers down
    retraining  the FeedbackPolicy sees approval fall and starts a retraining TrainingJob
    promotion   the retrained model is promoted (its validation loss is no worse) and served

and prints how long each stage took. The corpus is written straight into the claim's volume,
which on the dev cluster's real node is a host directory.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from strata.constants import GROUP
from strata.render.sidecar import SIDECAR_GRPC_PORT, SIDECAR_HTTP_PORT

# How many client calls the demo makes, and the share it rates up: below the example
# policy's minRate (0.6), over more than its minSamples (20).
CALLS = 30
APPROVAL = 0.2

SUBJECTS = ("my order", "the parcel", "a refund", "the invoice", "my account", "the courier", "a replacement",
            "the tracking number", "the return label", "my subscription")
ACTIONS = ("has not arrived", "was charged twice", "needs a new address", "shows the wrong amount",
           "cannot be found", "arrived damaged", "was cancelled by mistake", "is late again")
REPLIES = ("we are sorry for the trouble", "a new parcel is on its way", "the refund takes three days",
           "please check the tracking page", "our team will call you today", "the invoice is corrected")


class LoopError(Exception):
    """A stage did not finish; the message says which and what was last seen."""


class Kubectl(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> str: ...


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str
    # What the stage saw that a later check may want (the monitors when a retraining began).
    observed: dict[str, Any] = field(default_factory=dict)


def corpus_lines(count: int, seed: int = 7) -> list[str]:
    """Support conversations, one per line: a question and an answer."""
    generator = random.Random(seed)
    return [f"customer: {generator.choice(SUBJECTS)} {generator.choice(ACTIONS)}. "
            f"agent: {generator.choice(REPLIES)}." for _ in range(count)]


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json"))
    except Exception:  # noqa: BLE001 - not there yet (kubectl's own error says why)
        return None


def _status(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return ((_get(kubectl, namespace, f"{kind}.{GROUP}", name) or {}).get("status")) or {}


def _wait(what: str, check: Callable[[], Any], timeout: float, describe: Callable[[], str], interval: float = 2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise LoopError(f"{what} did not happen within {timeout:.0f}s; last seen: {describe()}")
        time.sleep(interval)


def _ready_message(status: dict[str, Any]) -> str:
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return f"phase {status.get('phase')}: {ready.get('reason')}: {ready.get('message')}"


def _volume_dir(kubectl: Kubectl, namespace: str, claim: str) -> Path:
    def bound() -> str | None:
        return ((_get(kubectl, namespace, "pvc", claim) or {}).get("spec") or {}).get("volumeName")

    volume = _wait(f"PVC {claim} to bind", bound, 60, lambda: "unbound")
    return Path(json.loads(kubectl("get", "pv", volume, "-o", "json"))["spec"]["hostPath"]["path"])


def _serving_pod_ip(kubectl: Kubectl, namespace: str, deployment: str) -> str | None:
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"strata.dev/owner-name={deployment}",
                              "-o", "json"))["items"]
    for pod in pods:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])
        if ready and not pod["metadata"].get("deletionTimestamp"):
            return pod["status"].get("podIP")
    return None


def call_and_rate(pod_ip: str, model: str, key: str, calls: int, approval: float, seed: int = 11) -> tuple[int, int]:
    """Call the model through the sidecar as a client does (tritonclient over gRPC, an API key),
    then rate each answer through the sidecar's feedback endpoint. Returns (up, down)."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import triton_to_np_dtype

    headers = {"authorization": f"Bearer {key}"}
    client = grpcclient.InferenceServerClient(f"{pod_ip}:{SIDECAR_GRPC_PORT}")
    metadata = client.get_model_metadata(model, headers=headers, as_json=True)
    generator = random.Random(seed)
    up = down = 0
    for _ in range(calls):
        inputs = []
        for spec in metadata["inputs"]:
            shape = [1] + [8 if int(d) < 0 else int(d) for d in spec["shape"][1:]]
            values = np.array([generator.randrange(1, 200) for _ in range(int(np.prod(shape)))])
            tensor = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
            tensor.set_data_from_numpy(values.reshape(shape).astype(triton_to_np_dtype(spec["datatype"])))
            inputs.append(tensor)
        request_id = client.infer(model, inputs, headers=headers).get_response().id
        rating = "up" if generator.random() < approval else "down"
        body = json.dumps({"requestId": request_id, "rating": rating, "text": "demo feedback"}).encode()
        request = urllib.request.Request(f"http://{pod_ip}:{SIDECAR_HTTP_PORT}/v2/feedback", data=body, method="POST",
                                         headers={**headers, "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 201:
                raise LoopError(f"the sidecar answered {response.status} to feedback")
        up, down = (up + 1, down) if rating == "up" else (up, down + 1)
    return up, down


def run_loop(kubectl: Kubectl, namespace: str, manifests: Path, report: Callable[[Stage], None] = lambda _: None,
             stage_timeout: float = 900) -> list[Stage]:
    """Run every stage; each finished stage is passed to `report` as it ends."""
    documents = [doc for doc in yaml.safe_load_all(manifests.read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in documents}
    names = {kind: by_kind[kind]["metadata"]["name"] for kind in ("Dataset", "TrainingJob", "ModelDeployment",
                                                                   "FeedbackPolicy")}
    key = next(iter(by_kind["Secret"]["stringData"].values()))
    stages: list[Stage] = []

    def finish(name: str, started: float, detail: str, **observed: Any) -> None:
        stages.append(Stage(name, time.monotonic() - started, detail, observed))
        report(stages[-1])

    def apply(docs: list[dict[str, Any]]) -> None:
        kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    started = time.monotonic()
    # The claims and the key first, then the corpus, then the Dataset; the rest once it has
    # published a version (as Argo CD's sync waves order them), so training reads that version.
    apply([doc for doc in documents if doc["apiVersion"] == "v1"])
    dataset = by_kind["Dataset"]
    claim = dataset["spec"]["sources"][0]["pvc"]["claimName"]
    text_dir = _volume_dir(kubectl, namespace, claim) / dataset["spec"]["sources"][0]["pvc"]["path"]
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "support.txt").write_text("\n".join(corpus_lines(800)) + "\n")
    apply([dataset])

    def dataset_status() -> dict[str, Any]:
        return _status(kubectl, namespace, "dataset", names["Dataset"])

    published = _wait("the Dataset to publish a version", lambda: (s := dataset_status()).get("version") and s,
                      stage_timeout, lambda: _ready_message(dataset_status()))
    counts = published.get("records") or {}
    finish("data", started, f"version {published['version']}: {counts.get('out')} records of {counts.get('in')} read "
           f"({counts.get('duplicates', 0)} duplicates removed)")
    apply([doc for doc in documents if doc["apiVersion"] != "v1" and doc["kind"] != "Dataset"])

    started = time.monotonic()

    def job_status(name: str) -> dict[str, Any]:
        return _status(kubectl, namespace, "trainingjob", name)

    def finished(name: str) -> dict[str, Any] | None:
        status = job_status(name)
        if status.get("phase") == "Failed":
            raise LoopError(f"TrainingJob {name} failed: {_ready_message(status)}")
        return status if status.get("phase") == "Succeeded" else None

    trained = _wait(f"TrainingJob {names['TrainingJob']} to finish", lambda: finished(names["TrainingJob"]),
                    stage_timeout, lambda: _ready_message(job_status(names["TrainingJob"])))
    finish("training", started, f"{trained['progress']['step']} steps on version {trained.get('datasetVersion')}, "
           f"loss {trained['metrics'].get('loss', 0):.3f}, "
           f"exported {trained['exportedModel']['modelName']} version {trained['exportedModel']['version']}")

    started = time.monotonic()

    def deployment_status() -> dict[str, Any]:
        return _status(kubectl, namespace, "modeldeployment", names["ModelDeployment"])

    _wait("the ModelDeployment to serve", lambda: deployment_status().get("phase") == "Serving",
          stage_timeout, lambda: _ready_message(deployment_status()))
    pod_ip = _wait("a ready serving pod", lambda: _serving_pod_ip(kubectl, namespace, names["ModelDeployment"]),
                   120, lambda: "none ready")
    served = trained["exportedModel"]["variants"]["python"]
    finish("serving", started, f"{served} through the sidecar at {pod_ip}:{SIDECAR_GRPC_PORT}")

    started = time.monotonic()
    up, down = call_and_rate(pod_ip, served, key, CALLS, APPROVAL)
    finish("feedback", started, f"{up + down} gRPC calls through the sidecar, rated {up} up and {down} down")

    started = time.monotonic()

    def policy_status() -> dict[str, Any]:
        return _status(kubectl, namespace, "feedbackpolicy", names["FeedbackPolicy"])

    retrained = _wait("the FeedbackPolicy to start a retraining",
                      lambda: (policy_status().get("lastRetrain") or {}).get("trainingJob"),
                      stage_timeout, lambda: json.dumps(policy_status().get("monitors")))
    at_retraining = policy_status()
    why = at_retraining["lastRetrain"]["reason"]
    drift = next((m for m in at_retraining.get("monitors") or [] if m["name"] == "drift"), None)
    _wait(f"TrainingJob {retrained} to finish", lambda: finished(retrained), stage_timeout,
          lambda: _ready_message(job_status(retrained)))
    seen = f" Drift: {drift['verdict']}, {drift.get('message')}" if drift else ""
    embedding = None
    if ((by_kind["FeedbackPolicy"]["spec"]["monitors"].get("drift") or {}).get("embedding")) is not None:
        # The embedding test ran beside the retraining (a Job in the embedder image).
        embedding = _wait("the embedding drift test to end",
                          lambda: (e := policy_status().get("embeddingTest") or {}).get("finished") and e,
                          stage_timeout, lambda: json.dumps(policy_status().get("embeddingTest")))
        seen += (f" Embedding test ({embedding['job']}): inputs per cluster {embedding['currentCounts']} against "
                 f"{embedding['referenceCounts']}" if embedding.get("currentCounts") else
                 f" Embedding test: {embedding.get('message')}")
    finish("retraining", started, f"{retrained}: {why}{seen}", monitors=at_retraining.get("monitors") or [],
           embedding=embedding)

    started = time.monotonic()
    decided = _wait("the promotion decision",
                    lambda: (p := policy_status().get("promotion") or {}).get("state") in ("Promoted", "Refused") and p,
                    stage_timeout, lambda: json.dumps(policy_status().get("promotion")))
    if decided["state"] == "Promoted":
        new_model = job_status(retrained)["exportedModel"]["variants"]["python"]
        _wait(f"the ModelDeployment to serve {new_model}",
              lambda: (s := deployment_status()).get("phase") == "Serving"
              and (s.get("revisions") or [{}])[-1].get("modelName") == new_model,
              stage_timeout, lambda: _ready_message(deployment_status()))
        detail = f"{new_model} served: {decided['message']}"
    else:
        detail = f"refused: {decided['message']}"
    finish("promotion", started, detail)
    return stages


def stage_table(stages: list[Stage]) -> str:
    width = max(len(stage.name) for stage in stages)
    lines = [f"{'STAGE':<{width}}  {'SECONDS':>7}  WHAT HAPPENED"]
    lines += [f"{stage.name:<{width}}  {stage.seconds:>7.0f}  {stage.detail}" for stage in stages]
    lines.append(f"{'total':<{width}}  {sum(stage.seconds for stage in stages):>7.0f}")
    return "\n".join(lines)
