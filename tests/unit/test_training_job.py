"""A TrainingJob's pure parts: the Indexed Job it renders, when a new attempt starts, what an
attempt's Job and pods say, and the trainer's reporting contract (gauges, termination message)."""

from __future__ import annotations

import copy

import pytest

from strata.api.training import TrainingJobSpec
from strata.constants import KUEUE_QUEUE_LABEL, Reason
from strata.controllers.trainingjob import resolve_data, unsupported_storage
from strata.observe.training import (
    AttemptView,
    attempt_from_status,
    format_duration,
    merge_attempts,
    observe_attempt,
    parse_progress,
    parse_termination_message,
)
from strata.render.training_job import DataVolume, NewAttempt, plan_attempts, render_attempt_job, render_training_children
from tests_support import example_spec

OWNER = {"metadata": {"name": "lm", "namespace": "ml", "uid": "u-1"}}
DATA = DataVolume("corpus", "text")


def spec(**changes) -> TrainingJobSpec:
    raw = copy.deepcopy(example_spec("TrainingJob"))
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return TrainingJobSpec.model_validate(raw)


def job(**changes):
    return render_attempt_job(spec(**changes), OWNER, NewAttempt(3, 400, "Started attempt 3"), "lm-trainer-abc", DATA, "trainer:1")


def container(manifest):
    return manifest["spec"]["template"]["spec"]["containers"][0]


# --- the Indexed Job -------------------------------------------------------------------------

def test_one_pod_per_node_under_torchrun_with_rank_zero_as_the_rendezvous():
    manifest = job(topology={"nodes": 2, "gpusPerNode": 8})
    assert manifest["metadata"]["name"] == "lm-3"
    assert (manifest["spec"]["completionMode"], manifest["spec"]["completions"], manifest["spec"]["parallelism"]) == ("Indexed", 2, 2)
    args = container(manifest)["args"]
    assert args[:5] == ["--nnodes=2", "--nproc-per-node=8", "--node-rank=$(JOB_COMPLETION_INDEX)",
                        "--master-addr=lm-3-0.lm", "--master-port=29500"]
    assert manifest["spec"]["template"]["spec"]["subdomain"] == "lm"
    # $(JOB_COMPLETION_INDEX) expands only for a variable the container declares.
    assert "JOB_COMPLETION_INDEX" in {env["name"] for env in container(manifest)["env"]}


@pytest.mark.parametrize("topology, gpu_key, gpus, nproc", [
    pytest.param({"nodes": 2, "gpusPerNode": 8}, "nvidia.com/gpu", "8", 8, id="eight GPUs per node are requested and limited"),
    pytest.param({"nodes": 1, "gpusPerNode": 2, "gpuResource": "amd.com/gpu"}, "amd.com/gpu", "2", 2, id="the declared GPU resource name is used"),
    pytest.param({"nodes": 2, "gpusPerNode": 0}, None, None, 1, id="a CPU job requests no GPU and runs one process per pod"),
])
def test_gpu_requests_follow_the_topology(topology, gpu_key, gpus, nproc):
    manifest = job(topology=topology)
    resources = container(manifest)["resources"]
    assert resources["requests"] == resources["limits"]
    assert {k: v for k, v in resources["limits"].items() if k not in ("cpu", "memory")} == ({gpu_key: gpus} if gpu_key else {})
    assert f"--nproc-per-node={nproc}" in container(manifest)["args"]


def test_pods_are_restricted_and_say_why_they_ended():
    manifest = job()
    pod = manifest["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container(manifest)["securityContext"]
    assert security == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container(manifest)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    mounts = {m["mountPath"]: m for m in container(manifest)["volumeMounts"]}
    assert mounts["/var/strata/data"]["readOnly"] and mounts["/var/strata/data"]["subPath"] == "text"
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"] == {"medium": "Memory"}


def test_an_s3_export_writes_to_an_empty_dir_and_mounts_the_secret_read_only():
    manifest = job(export={"tritonRepository": {"s3": {"uri": "s3://models/lm", "secretRef": {"name": "keys"}}}})
    pod = manifest["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {}}
    assert volumes["export-credentials"]["secret"] == {"secretName": "keys", "defaultMode": 0o440}
    mounts = {m["name"]: m for m in container(manifest)["volumeMounts"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/var/strata/models"}
    assert mounts["export-credentials"] == {"name": "export-credentials", "mountPath": "/var/strata/export-credentials",
                                            "readOnly": True}


def test_the_invalid_configuration_exit_fails_the_job_at_once():
    rules = job()["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]}}
    assert job()["spec"]["backoffLimit"] == 0


def test_placement_settings_reach_the_pods():
    manifest = job(topology={"nodes": 1, "nodeSelector": {"pool": "a100"}, "priorityClassName": "training",
                             "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]})
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["priorityClassName"] == "training"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_queued_job_is_created_suspended_with_kueues_label():
    queued = job(topology={"nodes": 2, "queueName": "team-a"})
    assert queued["spec"]["suspend"] is True and queued["metadata"]["labels"][KUEUE_QUEUE_LABEL] == "team-a"
    assert job()["spec"]["suspend"] is False and KUEUE_QUEUE_LABEL not in job()["metadata"]["labels"]


def test_children_include_a_checkpoint_claim_only_when_the_spec_names_no_storage():
    def kinds(s):
        return [c["kind"] for c in render_training_children(s, OWNER, DATA, "img", [], False, None)]

    own = spec(checkpoints={"everySteps": 10})
    assert kinds(own) == ["ConfigMap", "Service", "PersistentVolumeClaim", "Job"]
    assert kinds(spec()) == ["ConfigMap", "Service", "Job"]  # the example names its checkpoint PVC


# --- when a new attempt starts ---------------------------------------------------------------

def attempt(number, state, reason=None, live=True):
    return AttemptView(number=number, job=f"lm-{number}", state=state, live=live, reason=reason, message=f"why {number}")


@pytest.mark.parametrize("attempts, suspend, hold, retries, expected", [
    pytest.param([], False, False, 3, 1, id="a new job starts attempt 1"),
    pytest.param([attempt(1, "Running")], False, False, 3, None, id="a running attempt is left to run"),
    pytest.param([attempt(1, "Failed", Reason.WORKER_FAILED)], False, False, 3, 2, id="a failed worker restarts the group"),
    pytest.param([attempt(1, "Failed", Reason.WORKER_FAILED)], False, True, 3, None,
                 id="no restart while the failed attempt's workers are still stopping"),
    pytest.param([attempt(1, "Failed", Reason.INVALID_CONFIGURATION)], False, False, 3, None,
                 id="an invalid configuration is never retried"),
    pytest.param([attempt(1, "Failed", Reason.WORKER_FAILED), attempt(2, "Failed", Reason.WORKER_FAILED)], False, False, 1, None,
                 id="no restart once failures exceed retries"),
    pytest.param([attempt(1, "Interrupted", Reason.INTERRUPTED), attempt(2, "Interrupted", Reason.INTERRUPTED)], False, False, 0, 3,
                 id="interruptions from outside use up no retry"),
    pytest.param([attempt(1, "Succeeded", Reason.COMPLETED)], False, False, 3, None, id="nothing follows success"),
    pytest.param([attempt(1, "Running")], True, False, 3, None, id="a suspended job starts nothing"),
    pytest.param([attempt(1, "Interrupted", Reason.SUSPENDED, live=False)], False, False, 3, 2,
                 id="resuming after suspension starts the next attempt"),
])
def test_plan_attempts(attempts, suspend, hold, retries, expected):
    keep, new = plan_attempts(spec(suspend=suspend, retries=retries), attempts, hold, 400)
    assert (new.number if new else None) == expected
    if new and new.number > 1:
        assert new.resume_from_step == 400 and "step 400" in new.because and f"why {new.number - 1}" in new.because


def test_suspending_drops_the_running_attempts_job_and_keeps_only_the_latest_two():
    attempts = [attempt(1, "Failed", Reason.WORKER_FAILED), attempt(2, "Failed", Reason.WORKER_FAILED), attempt(3, "Running")]
    keep, _ = plan_attempts(spec(), attempts, False, None)
    assert [a.number for a in keep] == [2, 3]
    keep, _ = plan_attempts(spec(suspend=True), attempts, False, None)
    assert [a.number for a in keep] == [2]


# --- what an attempt's Job and pods say ------------------------------------------------------

def live_job(conditions=(), suspend=False, number=1):
    return {"metadata": {"name": f"lm-{number}", "labels": {"strata.dev/attempt": str(number)},
                         "annotations": {"strata.dev/resume-from-step": "300"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"suspend": suspend},
            "status": {"conditions": [{"type": t, "status": "True", "message": m, "lastTransitionTime": "2026-01-01T01:00:00Z"}
                                      for t, m in conditions]}}


def pod(index, phase="Running", exit_code=None, message="", finished="2026-01-01T00:59:00Z"):
    status = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {
            "exitCode": exit_code, "reason": "Error", "message": message, "finishedAt": finished}}}]
    return {"metadata": {"name": f"lm-1-{index}-x", "labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": status}


@pytest.mark.parametrize("job_, pods, state, reason, words", [
    pytest.param(live_job(), [pod(0), pod(1, "Pending")], "Pending", None, None, id="a group with a pending worker is pending"),
    pytest.param(live_job(), [pod(0), pod(1)], "Running", None, None, id="a group with every worker running runs"),
    pytest.param(live_job([("Failed", "")]), [pod(0, "Failed", 1, "oom"), pod(1, "Failed", 137, finished="2026-01-01T00:58:00Z")],
                 "Failed", Reason.WORKER_FAILED, "lm-1-1-x exited 137", id="the first worker to fail explains the failure"),
    pytest.param(live_job([("Failed", "")]), [pod(0, "Failed", 2, '{"status":"failed","error":"model.numClasses: no labels"}')],
                 "Failed", Reason.INVALID_CONFIGURATION, "model.numClasses: no labels", id="exit 2 is the trainer refusing its configuration"),
    pytest.param(live_job([("Failed", "")]), [pod(1, "Failed", 143)], "Interrupted", Reason.INTERRUPTED, "exited 143",
                 id="exit 143 is an interruption after a checkpoint"),
    pytest.param(live_job([("Failed", "Container trainer for pod ml/lm-1-1-abc failed with exit code 143 matching FailJob rule at index 1")]),
                 [], "Interrupted", Reason.INTERRUPTED, "lm-1-1-abc exited 143",
                 id="with the pods gone the Job's failure condition still names the pod and its exit code"),
    pytest.param(live_job([("Complete", "")]), [pod(0, "Succeeded", 0, '{"status":"succeeded","step":60}')], "Succeeded", Reason.COMPLETED, None,
                 id="a complete Job succeeded"),
])
def test_observe_attempt(job_, pods, state, reason, words):
    view = observe_attempt(job_, pods, workers=2)
    assert (view.state, view.reason) == (state, reason)
    assert view.resumed_from_step == 300
    if words:
        assert words in view.message


def test_a_suspended_job_waiting_for_kueue_is_queued():
    assert observe_attempt(live_job(suspend=True), [], workers=2).queued


def test_an_attempt_whose_job_went_while_running_is_interrupted():
    recorded = [attempt_from_status({"number": 1, "job": "lm-1", "state": "Running", "startTime": "t0"})]
    merged = merge_attempts(recorded, [], "t1", suspended=True)
    assert (merged[0].state, merged[0].reason, merged[0].end_time) == ("Interrupted", Reason.SUSPENDED, "t1")


@pytest.mark.parametrize("seconds, text", [(5, "5s"), (125, "2m5s"), (3725, "1h2m5s"), (0.4, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --- where the data is -----------------------------------------------------------------------

def dataset(status=None, sources=({"pvc": {"claimName": "raw", "path": "text"}},)):
    return {"spec": {"sources": list(sources), "storage": {"pvc": {"claimName": "store", "path": "sets"}}}, "status": status or {}}


@pytest.mark.parametrize("pinned, data, volume, reason", [
    pytest.param(None, dataset({"version": "v1", "path": "sets/v1"}), DataVolume("store", "sets/v1", "v1"), None,
                 id="a published version is trained on"),
    pytest.param(None, dataset(), DataVolume("raw", "text"), None, id="until a version exists the PVC source is read as it is"),
    pytest.param(None, dataset(sources=({"s3": {"uri": "s3://b/p"}},)), None, Reason.DATASET_NOT_READY,
                 id="without a version or a PVC source the job waits"),
    pytest.param("v0", dataset({"version": "v1", "path": "sets/v1"}), None, Reason.DATASET_NOT_READY,
                 id="a pinned version that is not current waits"),
])
def test_resolve_data(pinned, data, volume, reason):
    found, blocked = resolve_data(spec(dataset={"name": "d", "version": pinned}), data)
    assert found == volume
    assert (blocked[1] if blocked else None) == reason


def test_s3_checkpoints_are_refused_by_name_and_an_s3_export_is_not():
    problem = unsupported_storage(spec(checkpoints={"storage": {"s3": {"uri": "s3://b/ckpt"}}}))
    assert problem.startswith("spec.checkpoints.storage") and "pvc" in problem
    assert unsupported_storage(spec(export={"tritonRepository": {"s3": {"uri": "s3://b/models"}}})) is None


# --- the trainer's reporting contract --------------------------------------------------------

def test_the_operator_parses_what_the_trainer_reports():
    """Both sides of the progress contract: the trainer's real Metrics endpoint, parsed."""
    import urllib.request

    from strata.devcluster import free_port
    from strata_workloads.train.reporting import Metrics

    port = free_port()
    metrics = Metrics(port=port, enabled=True, family="transformer")
    try:
        metrics.record_resumed(300)
        metrics.record_checkpoint(350)
        metrics.record_step(360, 1000, {"loss": 2.5}, 12.0, 800.0, 1e-3)
        metrics.record_step(370, 1000, {"loss": 2.4}, 12.0, 800.0, 1e-3)
        metrics.record_validation({"loss": 2.7, "perplexity": 14.9})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
    progress = parse_progress(text)
    assert (progress.step, progress.total_steps, progress.checkpoint_step, progress.resumed_from_step) == (370, 1000, 350, 300)
    assert (progress.train_loss, progress.validation_loss, progress.samples_per_second) == (2.4, 2.7, 12.0)
    assert progress.steps_per_second and progress.steps_per_second > 0


def test_the_operator_reads_the_trainers_termination_message():
    from strata_workloads.train.reporting import encode_termination_message

    result = {"status": "succeeded", "step": 60, "metrics": {"loss": 2.8}, "checkpoint": "/var/strata/checkpoints",
              "export": {"modelName": "lm", "version": 2, "repository": "/var/strata/models"}}
    assert parse_termination_message(encode_termination_message(result)) == result
    assert parse_termination_message("Traceback (most recent call last): ...") == {}


def test_the_exported_model_in_status_names_each_variants_directory():
    from strata.controllers.trainingjob import _exported_model

    spec = TrainingJobSpec.model_validate({**example_spec("TrainingJob"), "export": {
        "tritonRepository": {"pvc": {"claimName": "models", "path": "lm"}}, "quantization": "int8"}})
    export = {"repository": "/var/strata/export", "modelName": "lm", "version": 2,
              "models": {"torchscript": "/var/strata/export/lm/2", "python": "/var/strata/export/lm-python/2"},
              "variants": {"torchscript": "lm", "python": "lm-python", "int8": "lm-int8", "int8-python": "lm-int8-python"},
              "quantization": {"kind": "int8", "change": {"loss": 0.01}}}
    status = _exported_model(spec, {"status": "succeeded", "export": export})
    assert status == {"repository": {"pvc": {"claimName": "models", "path": "lm"}}, "path": "pvc://models/lm",
                      "modelName": "lm", "version": 2, "quantization": "int8", "validationChange": 0.01,
                      "variants": {"torchscript": "lm", "python": "lm-python", "int8": "lm-int8", "int8-python": "lm-int8-python"}}
