"""A FeedbackPolicy closing the loop on kwok: real feedback in the real sidecar's store, a
breached approval monitor, a retraining TrainingJob that kwok's GPU nodes run to Succeeded,
the cooldown holding back a second, and the promotion patching the ModelDeployment.

The sidecar (python -m strata_workloads.serve) runs on this host, since kwok's pods run
nothing; the policy reads it through spec.signals.url, the documented way to point a policy
at a sidecar it cannot reach on pod IPs. Its upstream Triton is absent: feedback and the
metrics port do not need it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from kwok_training import apply_training_inputs, gpu_training_job
from strata.devcluster import free_port
from tests_support import get_json, sidecar_env, wait_for


def start_sidecar(tmp_path, upstream: tuple[int, int] | None = None, **settings):
    """The real sidecar (one worker, no keys) in front of `upstream` (Triton's gRPC and HTTP
    ports; free ports with nothing behind them when none). Yields (metrics URL, rate, ports)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    ports = {"httpPort": free_port(), "grpcPort": free_port(), "metricsPort": free_port()}
    grpc_port, http_port = upstream or (free_port(), free_port())
    config = {"modelName": "lm", "workers": 1, "stateDir": str(tmp_path / "state"),
              "listen": {"host": "127.0.0.1", **ports},
              "upstream": {"host": "127.0.0.1", "httpPort": http_port, "grpcPort": grpc_port}, **settings}
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "sidecar.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "strata_workloads.serve", "--config", str(path)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=sidecar_env(config))
    metrics_url = f"http://127.0.0.1:{ports['metricsPort']}"

    def healthy():
        assert process.poll() is None, (tmp_path / "sidecar.log").read_text()
        try:
            with urllib.request.urlopen(f"{metrics_url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=60, what="the sidecar's workers")

    def stored() -> int:
        with urllib.request.urlopen(f"{metrics_url}/feedback?limit=100000", timeout=5) as response:
            return len(json.loads(response.read())["records"])

    def rate(request_id: str, rating: str, attributes: dict | None = None) -> None:
        """Post a rating, and wait until the store the policy reads has it (a worker takes the
        POST and hands it to the supervisor)."""
        before = stored()
        body = json.dumps({"requestId": request_id, "rating": rating, "text": f"{rating}: {request_id}",
                           **({"attributes": attributes} if attributes else {})}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{ports['httpPort']}/v2/feedback", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
        wait_for(lambda: stored() > before, timeout=10, interval=0.05, what=f"rating {request_id} to be stored")

    try:
        yield metrics_url, rate, ports
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def sidecar(tmp_path):
    for metrics_url, rate, _ports in start_sidecar(tmp_path):
        yield metrics_url, rate


def policy(namespace: str, signals_url: str) -> dict:
    return {
        "apiVersion": "strata.dev/v1alpha1", "kind": "FeedbackPolicy",
        "metadata": {"name": "lm-loop", "namespace": namespace},
        "spec": {"target": {"modelDeployment": "lm"}, "window": "1h", "evaluationInterval": "1s",
                 "signals": {"url": signals_url},
                 "monitors": {"approval": {"minRate": 0.8, "minSamples": 20}},
                 "retrain": {"triggers": [{"monitorBreached": "approval"}], "cooldown": "1h", "maxConcurrent": 1,
                             "template": {"fromTrainingJob": {"name": "lm"}}},
                 "promotion": {"mode": "automatic", "rollbackOnBreach": True}},
    }


def model_deployment(namespace: str) -> dict:
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "lm", "namespace": namespace},
            "spec": {"model": {"trainingJob": {"name": "lm"}}, "replicas": 1}}


def conditions_of(obj: dict | None) -> dict:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


def test_low_approval_retrains_once_within_the_cooldown_promotes_the_result_and_rolls_it_back_when_it_does_worse(
        operator, crds_installed, namespace, sidecar):
    cluster = crds_installed
    metrics_url, rate = sidecar
    for n in range(25):
        rate(f"req-{n}", "down" if n % 5 else "up")  # approval 0.2
    apply_training_inputs(cluster, namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        gpu_training_job(namespace, "lm", nodes=1, gpus_per_node=1), model_deployment(namespace),
        policy(namespace, metrics_url)]}))

    def fetch():
        return get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace) or {}

    started = wait_for(lambda: (p := fetch()).get("status", {}).get("lastRetrain") and p, timeout=90,
                       what="a retraining")
    status = started["status"]
    assert status["lastRetrain"]["trainingJob"] == "lm-retrain-1"
    assert status["lastRetrain"]["reason"].startswith("Retraining because approval breached: approval 0.200")
    approval = next(m for m in status["monitors"] if m["name"] == "approval")
    assert (approval["verdict"], approval["samples"], approval["value"], approval["window"]) == ("Breached", 25, 0.2, "1h")
    assert status["breachedMonitors"] == "approval"

    # The same reading, as the operator's metrics (what the chart's alert rule watches).
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        exposition = response.read().decode()
    labels = f'monitor="approval",namespace="{namespace}",policy="lm-loop",target="lm"'
    for line in (f"strata_feedback_monitor_breached{{{labels}}} 1.0", f"strata_feedback_monitor_value{{{labels}}} 0.2",
                 f"strata_feedback_monitor_samples{{{labels}}} 25.0"):
        assert line in exposition, [row for row in exposition.splitlines() if "feedback_monitor" in row]

    retraining = get_json(cluster, "trainingjob", "lm-retrain-1", "-n", namespace)
    assert retraining["metadata"]["annotations"]["strata.dev/retrained-from"] == "lm"
    assert "approval breached" in retraining["metadata"]["annotations"]["strata.dev/created-because"]
    owner = retraining["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("FeedbackPolicy", "lm-loop", True)
    assert retraining["spec"]["checkpoints"]["storage"]["pvc"]["path"] == "lm-retrain-1"

    # kwok runs the retraining to Succeeded; the automatic promotion (no metric to compare)
    # then points the ModelDeployment at it, and the approval, still low, is held by the cooldown.
    promoted = wait_for(lambda: (p := fetch()).get("status", {}).get("serving") == "lm-retrain-1"
                        and conditions_of(p).get("Retraining", {}).get("reason") == "Cooldown" and p,
                        timeout=120, what="the promotion and the cooldown")
    conditions = conditions_of(promoted)
    assert "spec.retrain.cooldown (1h)" in conditions["Retraining"]["message"]
    assert conditions["Promotion"]["reason"] in ("Promoted", "NoCandidate")
    promotion = promoted["status"]["promotion"]
    assert {key: promotion.get(key) for key in ("trainingJob", "state", "message", "previous")} == {
        "trainingJob": "lm-retrain-1", "state": "Promoted", "message": "Promoted lm-retrain-1.", "previous": "lm"}
    assert [(h["action"], h["reason"]) for h in promoted["status"]["history"]] == [
        ("Retrained", "RetrainingStarted"), *[("Held", r) for r in
                                              [h["reason"] for h in promoted["status"]["history"][1:]]]]
    assert promoted["status"]["history"][-1]["reason"] == "Cooldown"
    jobs = get_json(cluster, "trainingjobs", "-n", namespace, "-l", "strata.dev/owner-name=lm-loop")["items"]
    assert [job["metadata"]["name"] for job in jobs] == ["lm-retrain-1"]

    deployment = get_json(cluster, "modeldeployment", "lm", "-n", namespace, "--show-managed-fields")
    assert deployment["spec"]["model"] == {"trainingJob": {"name": "lm-retrain-1"}}
    assert deployment["spec"]["replicas"] == 1
    assert deployment["metadata"]["annotations"]["strata.dev/promoted-over"] == "lm"
    assert deployment["metadata"]["annotations"]["strata.dev/promoted-at"] == promotion["at"]
    # The operator owns the fields it set; everything else stays its user's.
    ours = [entry for entry in deployment["metadata"]["managedFields"]
            if entry["manager"] == "strata-operator" and entry.get("subresource") != "status"]
    assert [entry["fieldsV1"] for entry in ours] == [
        {"f:metadata": {"f:annotations": {"f:strata.dev/promoted-at": {}, "f:strata.dev/promoted-over": {}}},
         "f:spec": {"f:model": {"f:trainingJob": {"f:name": {}}}}}]

    events = get_json(cluster, "events", "-n", namespace, "--field-selector",
                      "involvedObject.kind=FeedbackPolicy,involvedObject.name=lm-loop")["items"]
    reasons = {event["reason"] for event in events}
    assert {"Started", "Cooldown", "Promoted"} <= reasons, reasons
    columns = cluster.kubectl("get", "feedbackpolicy", "lm-loop", "-n", namespace).stdout
    header, row = columns.split("\n")[:2]
    shown = dict(zip(header.split(), row.split()))
    assert {key: shown.get(key) for key in ("TARGET", "BREACHED", "LAST-RETRAIN", "SERVING")} == {
        "TARGET": "lm", "BREACHED": "approval", "LAST-RETRAIN": "lm-retrain-1", "SERVING": "lm-retrain-1"}, columns

    # The promoted model's own feedback: approval 0 since its promotion, so it goes back out.
    for n in range(20):
        rate(f"after-{n}", "down")
    rolled = wait_for(lambda: (p := fetch()).get("status", {}).get("promotion", {}).get("state") == "RolledBack" and p,
                      timeout=60, what="the rollback")
    assert rolled["status"]["serving"] == "lm"
    assert rolled["status"]["promotion"]["rolledBack"] == "lm-retrain-1"
    assert rolled["status"]["promotion"]["message"].startswith(
        "Rolled back from lm-retrain-1 to lm: breached since its promotion (approval: approval 0.000 over 20 rating(s)")
    assert rolled["status"]["history"][-1]["action"] == "RolledBack"
    deployment = get_json(cluster, "modeldeployment", "lm", "-n", namespace)
    assert deployment["spec"]["model"] == {"trainingJob": {"name": "lm"}}
    annotations = deployment["metadata"]["annotations"]
    assert annotations.get("strata.dev/rolled-back") == "lm-retrain-1" and "strata.dev/promoted-over" not in annotations
    assert any(e["reason"] == "RolledBack" for e in get_json(
        cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=lm-loop")["items"])
    # Not promoted again: lm-retrain-1 stays out of service at the evaluations that follow.
    later = wait_for(lambda: (p := fetch())["status"]["lastEvaluation"] > rolled["status"]["promotion"]["at"] and p,
                     timeout=90, what="a later evaluation")
    assert later["status"]["promotion"]["state"] == "RolledBack" and later["status"]["serving"] == "lm"
    assert get_json(cluster, "modeldeployment", "lm", "-n", namespace)["spec"]["model"] == {"trainingJob": {"name": "lm"}}


def test_with_refresh_dataset_the_retraining_waits_for_a_run_of_the_datasets_pipeline_and_says_how_it_ended(
        operator, crds_installed, namespace, sidecar):
    """kwok runs the pipeline's pod to completion without running it: the requested run ends
    publishing no version (ResultMissing), which the retraining's reason says."""
    cluster = crds_installed
    metrics_url, rate = sidecar
    for n in range(25):
        rate(f"req-{n}", "down")
    apply_training_inputs(cluster, namespace)
    refreshing = policy(namespace, metrics_url)
    refreshing["spec"]["retrain"]["refreshDataset"] = {"includeFeedback": False}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        gpu_training_job(namespace, "lm", nodes=1, gpus_per_node=1), model_deployment(namespace), refreshing]}))

    def fetch():
        return get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace) or {}

    requested = wait_for(lambda: (p := fetch()).get("status", {}).get("datasetRefresh") and p, timeout=90,
                         what="a dataset refresh request")
    refresh = requested["status"]["datasetRefresh"]
    assert refresh["dataset"] == "chats" and refresh["reason"].startswith("Retraining because approval breached")
    retraining = conditions_of(requested)["Retraining"]
    assert (retraining["status"], retraining["reason"]) == ("True", "RefreshingDataset")
    dataset = get_json(cluster, "dataset", "chats", "-n", namespace)
    assert dataset["metadata"]["annotations"]["strata.dev/refresh-requested-at"] >= refresh["requestedAt"]

    try:
        started = wait_for(lambda: (p := fetch()).get("status", {}).get("lastRetrain") and p, timeout=120,
                           what="the retraining after the refresh")
    except pytest.fail.Exception as error:
        dataset = get_json(cluster, "dataset", "chats", "-n", namespace)
        jobs = get_json(cluster, "jobs", "-n", namespace, "-l", "strata.dev/owner-name=chats")["items"]
        pytest.fail(f"{error}\npolicy status: {fetch().get('status')}\ndataset: {dataset.get('metadata', {}).get('annotations')} "
                    f"{dataset.get('status')}\njobs: {[(j['metadata']['name'], j.get('status')) for j in jobs]}")
    assert "datasetRefresh" not in started["status"]
    assert started["status"]["lastRetrain"]["reason"].endswith(
        "Dataset chats's refresh published no version; training on no version yet.")
    dataset = get_json(cluster, "dataset", "chats", "-n", namespace)
    assert dataset["status"]["refreshRequestedAt"] >= refresh["requestedAt"]
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=chats")["items"]
    assert any(e["message"].startswith(f"Started the refresh requested at {refresh['requestedAt']}") for e in events), \
        [e["message"] for e in events]
    # Not acted on, and said so: folding feedback into the refresh.
    assert "spec.retrain.refreshDataset.includeFeedback" not in conditions_of(started)["Ready"]["message"]


def test_a_second_policy_on_the_same_deployment_and_an_invalid_schedule_are_reported_naming_the_field(
        operator, crds_installed, namespace):
    cluster = crds_installed
    first = policy(namespace, "http://127.0.0.1:1")
    second = {**policy(namespace, "http://127.0.0.1:1"), "metadata": {"name": "second", "namespace": namespace}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(first))
    wait_for(lambda: conditions_of(get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace)),
             what="the first policy's status")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(second))
    ready = wait_for(lambda: conditions_of(get_json(cluster, "feedbackpolicy", "second", "-n", namespace))
                     .get("Ready", {}).get("reason") == "PolicyConflict"
                     and conditions_of(get_json(cluster, "feedbackpolicy", "second", "-n", namespace))["Ready"],
                     what="the conflict")
    assert ready["message"].startswith('spec.target.modelDeployment: ModelDeployment "lm" is already governed by '
                                       'FeedbackPolicy "lm-loop"')
    assert conditions_of(get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace))["Ready"]["reason"] != \
        "PolicyConflict"

    bad = policy(namespace, "http://127.0.0.1:1")
    bad["metadata"]["name"] = "lm-loop"
    bad["spec"]["retrain"]["triggers"] = [{"schedule": "99 * * * *"}]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(bad))
    ready = wait_for(lambda: (c := conditions_of(get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace))
                              .get("Ready", {})).get("reason") == "InvalidSpec" and c, what="the invalid schedule")
    assert ready["message"].startswith("spec.retrain.triggers[0].schedule: the minute field '99' is out of range")

    # Out of range thresholds are refused by the API server itself, naming the field.
    out_of_range = policy(namespace, "http://127.0.0.1:1")
    out_of_range["metadata"]["name"] = "third"
    out_of_range["spec"]["monitors"]["approval"]["minRate"] = 1.5
    result = cluster.kubectl("apply", "-f", "-", input=json.dumps(out_of_range), check=False)
    assert result.returncode != 0 and "spec.monitors.approval.minRate" in result.stderr


@pytest.fixture
def prometheus(sidecar, tmp_path):
    """A real Prometheus (built from its Go module, as `strata dev up --monitoring` runs it)
    scraping the sidecar every second twice: as a pod of ModelDeployment "lm", and as a pod of
    another deployment whose name begins the same ("lm-big"), which the policy must not count."""
    from strata.devcluster.binaries import PROMETHEUS_SERVER, build_component

    metrics_url, _ = sidecar
    build_component(PROMETHEUS_SERVER, ["prometheus"])
    target = metrics_url.removeprefix("http://")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state: dict = {}

    def configure(namespace: str) -> str:
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [target], "labels": {"namespace": namespace, "pod": pod}}]}
            for name, pod in (("lm", "lm-7c9f5d8b4-x2k4q"), ("decoy", "lm-big-7c9f5d8b4-x2k4q"))]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp_path / "prometheus.log").open("w")
        state["process"] = subprocess.Popen(
            [str(PROMETHEUS_SERVER.cache_dir() / "prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        state["log"] = log
        return url

    yield configure
    if "process" in state:
        state["process"].terminate()
        state["process"].wait(timeout=30)
        state["log"].close()


def prometheus_value(url: str, query: str) -> float | None:
    """The query's value; None while Prometheus starts or no series matches."""
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                    timeout=5) as response:
            result = json.loads(response.read())["data"]["result"]
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def test_approval_and_toxicity_are_read_from_prometheus_over_the_window_counting_only_the_targets_pods(
        operator, crds_installed, namespace, sidecar, prometheus):
    cluster = crds_installed
    _, rate = sidecar
    url = prometheus(namespace)
    # Both scrapes see the counters at 0 before any rating, so the window's growth is all 25.
    scraped = f'strata_sidecar_feedback_total{{namespace="{namespace}",rating="down"}}'
    wait_for(lambda: prometheus_value(url, f"count({scraped})") == 2, timeout=60, what="Prometheus to scrape both jobs")
    for n in range(25):
        rate(f"req-{n}", "down" if n % 5 else "up")  # approval 0.2
    wait_for(lambda: prometheus_value(url, f"min({scraped})") == 20, timeout=60, what="Prometheus to scrape the ratings")
    spec = {"target": {"modelDeployment": "lm"}, "window": "1h", "evaluationInterval": "1s",
            "signals": {"prometheus": {"url": url}},
            "monitors": {"approval": {"minRate": 0.8, "minSamples": 20}, "toxicity": {"maxRate": 0.1, "minSamples": 5}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        gpu_training_job(namespace, "lm", nodes=1, gpus_per_node=1), model_deployment(namespace),
        {"apiVersion": "strata.dev/v1alpha1", "kind": "FeedbackPolicy",
         "metadata": {"name": "lm-prometheus", "namespace": namespace}, "spec": spec}]}))
    apply_training_inputs(cluster, namespace)

    def monitors():
        status = (get_json(cluster, "feedbackpolicy", "lm-prometheus", "-n", namespace) or {}).get("status") or {}
        readings = {m["name"]: m for m in status.get("monitors") or []}
        return readings if readings.get("approval", {}).get("verdict") == "Breached" else None

    readings = wait_for(monitors, timeout=90, what="the approval monitor to read Prometheus")
    approval = readings["approval"]
    # The decoy's series ("lm-big-...") would have doubled these.
    assert (approval["samples"], approval["value"]) == (25, 0.2), approval
    assert approval["window"] == "1h" and "below the minimum 0.8" in approval["message"]
    # No toxicity histogram is scraped (the sidecar scores no outputs): Prometheus answered the
    # query with nothing, which is too few samples, not an error.
    assert readings["toxicity"]["verdict"] == "InsufficientData" and readings["toxicity"]["samples"] == 0


def test_the_worst_served_groups_down_ratings_are_queued_for_review_and_resolved_with_the_strata_command(
        operator, crds_installed, namespace, sidecar):
    cluster = crds_installed
    metrics_url, rate = sidecar
    for n in range(6):
        rate(f"en-{n}", "up", {"locale": "en"})
    for n in range(6):
        rate(f"de-{n}", "down" if n < 4 else "up", {"locale": "de"})
    spec = {"target": {"modelDeployment": "lm"}, "window": "1h", "evaluationInterval": "1s",
            "signals": {"url": metrics_url},
            "monitors": {"bias": {"groups": [{"field": "locale"}], "maxDisparity": 0.3, "minSamples": 5}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        gpu_training_job(namespace, "lm", nodes=1, gpus_per_node=1), model_deployment(namespace),
        {"apiVersion": "strata.dev/v1alpha1", "kind": "FeedbackPolicy",
         "metadata": {"name": "lm-review", "namespace": namespace}, "spec": spec}]}))
    apply_training_inputs(cluster, namespace)

    def review(check):
        def read():
            status = (get_json(cluster, "feedbackpolicy", "lm-review", "-n", namespace) or {}).get("status") or {}
            return status["review"] if check(status.get("review") or {}) else None
        return read

    queued = wait_for(review(lambda r: r.get("open") == 4), timeout=90, what="the down-rated answers to be queued")
    assert {(item["source"], item["group"]) for item in queued["items"]} == {("bias", "locale=de")}
    assert sorted(item["requestId"] for item in queued["items"]) == ["de-0", "de-1", "de-2", "de-3"]
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as response:
        exposition = response.read().decode()
    assert f'strata_feedback_review_open{{namespace="{namespace}",policy="lm-review",target="lm"}} 4.0' in exposition

    def strata(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "strata.cli", "review", *args, "-n", namespace,
                               "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=60)

    first = queued["items"][0]["id"]
    done = strata("resolve", "lm-review", first, "reject")
    assert done.returncode == 0 and f"review.strata.dev/{first}=reject" in done.stdout, done.stderr
    wait_for(review(lambda r: (r.get("open"), r.get("resolved")) == (3, 1)), timeout=60, what="the verdict to count")
    listed = strata("list", "lm-review")
    assert listed.returncode == 0 and "3 open (3 shown), 1 resolved" in listed.stdout and first not in listed.stdout
    refused = strata("resolve", "lm-review", "not-an-id", "approve")
    assert refused.returncode == 1 and "lists no open item 'not-an-id'" in refused.stderr

    # With kubectl alone; a value that is no verdict resolves nothing and is reported.
    second = queued["items"][1]["id"]
    cluster.kubectl("annotate", "feedbackpolicy", "lm-review", "-n", namespace, f"review.strata.dev/{second}=maybe")
    problems = wait_for(review(lambda r: r.get("problems")), timeout=60, what="the bad verdict to be reported")
    assert problems["open"] == 3 and "the value must be one of approve, reject" in problems["problems"][0]


def test_include_feedback_folds_the_answers_rated_up_into_the_refreshed_datasets_sources(
        operator, crds_installed, namespace, tmp_path):
    """refreshDataset.includeFeedback with the real Triton behind the real sidecar: the text of
    the answers rated up, as the audit log kept it, goes to the policy's samples ConfigMap, which
    the Dataset's run reads as one more source."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workloads"))
    import numpy as np
    import tritonclient.grpc as grpcclient
    from sidecar_harness import write_model_repository
    from workload_harness import start_tritonserver

    cluster = crds_installed
    repository = write_model_repository(tmp_path / "repository", {"text": ("TYPE_STRING", 0.0)})
    triton, _ = start_tritonserver(repository, ["text"], tmp_path / "triton")
    try:
        for metrics_url, rate, ports in start_sidecar(tmp_path / "sidecar", (triton.grpc_port, triton.http_port),
                                                      audit={"sampleRate": 1.0}):
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpcPort']}")
            questions = [f"where is parcel {n}?" for n in range(5)]
            answered = {}
            for question in questions:
                tensor = grpcclient.InferInput("INPUT", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[question.encode()]], dtype=object))
                answered[client.infer("text", [tensor]).get_response().id] = question
            for request_id in answered:
                rate(request_id, "up")
            for n in range(20):
                rate(f"other-{n}", "down")  # approval 5/25: breached
            apply_training_inputs(cluster, namespace)
            refreshing = policy(namespace, metrics_url)
            refreshing["spec"]["retrain"]["refreshDataset"] = {"includeFeedback": True}
            cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
                gpu_training_job(namespace, "lm", nodes=1, gpus_per_node=1), model_deployment(namespace), refreshing]}))
            requested = wait_for(lambda: (p := get_json(cluster, "feedbackpolicy", "lm-loop", "-n", namespace) or {})
                                 .get("status", {}).get("datasetRefresh") and p, timeout=90, what="a dataset refresh request")
    finally:
        triton.close()

    samples = get_json(cluster, "configmap", "lm-loop-feedback-samples", "-n", namespace)
    assert samples["metadata"]["ownerReferences"][0]["name"] == "lm-loop"
    lines = [json.loads(line) for line in samples["data"]["samples.jsonl"].splitlines()]
    # The Dataset's text field: the question, then the answer (the model echoes it).
    assert sorted(line["text"] for line in lines) == sorted(f"{q}\n{q}" for q in questions)
    assert {line["requestId"] for line in lines} == set(answered)
    summary = json.loads(samples["metadata"]["annotations"]["strata.dev/feedback-summary"])
    assert (summary["samples"], summary["fromFeedback"], summary["withoutText"]) == (5, 5, 0)
    assert requested["status"]["datasetRefresh"]["dataset"] == "chats"
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", "involvedObject.name=lm-loop")["items"]
    assert any(event["reason"] == "RefreshingDataset" and "with 5 feedback samples (0 approved in review)" in event["message"]
               for event in events), [event["message"] for event in events]

    dataset = get_json(cluster, "dataset", "chats", "-n", namespace)
    assert dataset["metadata"]["annotations"]["strata.dev/feedback-samples"] == "lm-loop-feedback-samples"

    def run_reading_the_samples():
        for job in get_json(cluster, "jobs", "-n", namespace, "-l", "strata.dev/owner-name=chats")["items"]:
            if any(volume["name"] == "feedback" and volume.get("configMap", {}).get("name") == "lm-loop-feedback-samples"
                   for volume in job["spec"]["template"]["spec"]["volumes"]):
                return job
        return None

    job = wait_for(run_reading_the_samples, timeout=60, what="a pipeline run that mounts the samples")
    config_map = job["metadata"]["annotations"]["strata.dev/pipeline-config"]
    config = yaml.safe_load(get_json(cluster, "configmap", config_map, "-n", namespace)["data"]["pipeline.yaml"])
    assert config["sources"][-1] == {"path": "/var/lib/strata/feedback/samples.jsonl", "format": "jsonl"}
