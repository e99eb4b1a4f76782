"""Strata's Argo CD health checks and actions, evaluated by Argo CD's own code.

`argocd-lua` is built from Argo CD's Go module (util/lua, util/settings): it reads argocd-cm
from the cluster exactly as Argo CD does, after the README's install step has patched it, and
runs the Lua in Argo CD's restricted VM. The objects are real: captured from the API server
in every phase each kind reaches here (Waiting, Retrying and their first passes; Invalid specs are refused
by the API server first), plus hand-made edge cases built on a real capture.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, RESYNC_SECONDS, example_documents, get_json, wait_for
from strata.api import KINDS_BY_NAME
from strata.argocd import PATCH_FILE
from strata.conditions import status_is_current
from strata.constants import NOT_FOUND_REASONS, Phase
from strata.controllers.reconcile import build_status, invalid_outcome
from strata.devcluster import BuildError
from strata.devcluster.binaries import ARGOCD_LUA, build_component

PATCH = REPO / "helm" / "strata" / "argocd" / PATCH_FILE
KINDS = ["Dataset", "TrainingJob", "ModelDeployment", "FeedbackPolicy"]
# Kinds that apply children while the examples wait (a ModelDeployment waits for its model first).
APPLYING_KINDS = ["Dataset", "TrainingJob", "FeedbackPolicy"]
ARGOCD_NAMESPACE = "argocd"


@pytest.fixture(scope="session")
def argocd_lua() -> Path:
    try:
        build_component(ARGOCD_LUA, ["argocd-lua"])  # a no-op once cached
    except BuildError as error:
        pytest.fail(f"argocd-lua could not be built:\n{error}", pytrace=False)
    return ARGOCD_LUA.cache_dir() / "argocd-lua"


@pytest.fixture(scope="session")
def argocd_cm(crds_installed):
    """argocd-cm as Argo CD installs it, then patched the way the README tells admins to."""
    cluster = crds_installed
    cluster.kubectl("create", "namespace", ARGOCD_NAMESPACE)
    cluster.kubectl("create", "configmap", "argocd-cm", "-n", ARGOCD_NAMESPACE, "--from-literal=timeout.reconciliation=180s")
    cluster.kubectl("label", "configmap", "argocd-cm", "-n", ARGOCD_NAMESPACE,
                    "app.kubernetes.io/name=argocd-cm", "app.kubernetes.io/part-of=argocd")
    cluster.kubectl("patch", "configmap", "argocd-cm", "-n", ARGOCD_NAMESPACE, "--type", "merge",
                    "--patch-file", str(PATCH))
    data = get_json(cluster, "configmap", "argocd-cm", "-n", ARGOCD_NAMESPACE)["data"]
    assert data["timeout.reconciliation"] == "180s", "the patch must keep Argo CD's own settings"
    yield cluster
    cluster.kubectl("delete", "namespace", ARGOCD_NAMESPACE, "--wait=false", check=False)


class ArgoCD:
    """Argo CD's verdicts on objects, through the argocd-lua runner."""

    def __init__(self, binary: Path, cluster, tmp_path: Path):
        self.binary, self.cluster, self.tmp_path = binary, cluster, tmp_path

    def _run(self, command: str, obj: dict[str, Any], *extra: str) -> subprocess.CompletedProcess:
        path = self.tmp_path / f"{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(obj))
        return subprocess.run([str(self.binary), "--namespace", ARGOCD_NAMESPACE, command, str(path), *extra],
                              env=self.cluster.env(), capture_output=True, text=True, timeout=60)

    def _json(self, command: str, obj: dict[str, Any], *extra: str) -> Any:
        result = self._run(command, obj, *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def health(self, obj: dict[str, Any]) -> dict[str, str]:
        return self._json("health", obj)

    def actions(self, obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {action["name"]: action for action in self._json("actions", obj)}

    def run_action(self, obj: dict[str, Any], name: str) -> list[dict[str, Any]]:
        return self._json("run", obj, name)

    def action_error(self, obj: dict[str, Any], name: str) -> str:
        result = self._run("run", obj, name)
        assert result.returncode != 0, f"{name} should have been refused, got {result.stdout}"
        return result.stderr


@pytest.fixture
def argocd(argocd_lua, argocd_cm, tmp_path) -> ArgoCD:
    return ArgoCD(argocd_lua, argocd_cm, tmp_path)


def example(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for doc in example_documents() if doc["kind"] == kind))


def first_reference(kind: str):
    """The first object the kind's example names, or None for a kind that names none."""
    references = KINDS_BY_NAME[kind].spec_model.model_validate(example(kind)["spec"]).references()
    return references[0] if references else None


# The kinds whose example names another object, so it can be made to wait for it.
KINDS_WITH_REFERENCES = [kind for kind in KINDS if first_reference(kind) is not None]


def live(cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    return get_json(cluster, KINDS_BY_NAME[kind].crd_name, name, "-n", namespace)


def reconciled(cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The live object once the operator has reported on its current generation."""
    def current():
        obj = live(cluster, namespace, kind, name)
        return obj if obj and obj.get("status") and status_is_current(obj) else None
    return wait_for(current, what=f"{kind}/{name} reconciled")


@pytest.fixture(scope="module")
def captured(crds_installed, operator) -> dict[str, dict[str, Any]]:
    """Real objects in each state the operator puts them in today, keyed "<state>/<Kind>"."""
    cluster = crds_installed
    states: dict[str, dict[str, Any]] = {}
    # "accepted": the examples as the operator first reports them (none is refused).
    accepted = f"t-argo-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", accepted)
    cluster.kubectl("apply", "-n", accepted, "-f", "-", input=yaml.safe_dump_all(example_documents()))
    # Apply failing: a quota that allows no ConfigMap beyond the namespace's root CA.
    failing = f"t-argo-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", failing)
    cluster.kubectl("create", "quota", "no-configmaps", "-n", failing, "--hard=configmaps=1")
    wait_for(lambda: (get_json(cluster, "resourcequota", "no-configmaps", "-n", failing) or {}).get("status", {}).get("used"),
             what="the quota to be counted")
    cluster.kubectl("apply", "-n", failing, "-f", "-", input=yaml.safe_dump_all(example_documents()))
    # Waiting: each kind that names another object, alone in a namespace, so what it names is missing.
    waiting = {kind: f"t-argo-{uuid.uuid4().hex[:6]}" for kind in KINDS_WITH_REFERENCES}
    for kind, namespace in waiting.items():
        cluster.kubectl("create", "namespace", namespace)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(example(kind)))
    # Not yet reported on: a namespace the operator does not watch (it watches t-* only).
    unwatched = f"argo-unwatched-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", unwatched)
    cluster.kubectl("apply", "-n", unwatched, "-f", "-", input=yaml.safe_dump_all(example_documents()))
    for kind in KINDS:
        name = example(kind)["metadata"]["name"]
        states[f"accepted/{kind}"] = reconciled(cluster, accepted, kind, name)
        states[f"unreported/{kind}"] = live(cluster, unwatched, kind, name)
        if kind in waiting:
            states[f"waiting/{kind}"] = reconciled(cluster, waiting[kind], kind, name)
        if kind not in APPLYING_KINDS:  # nothing to apply while it waits for the model
            continue

        def apply_failed(kind=kind, name=name):
            obj = live(cluster, failing, kind, name)
            conditions = {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}
            return obj if conditions.get("Degraded", {}).get("reason") == "ApplyFailed" else None

        states[f"apply-failed/{kind}"] = wait_for(apply_failed, what=f"{kind} ApplyFailed")
    yield states
    for namespace in (accepted, failing, unwatched, *waiting.values()):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- Application manifests -----------------------------------------------------------------

APPLICATIONS = sorted((REPO / "examples" / "argocd").glob("*.yaml"))


def decode_application(argocd_lua: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(argocd_lua), "application", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("path", APPLICATIONS, ids=lambda path: path.name)
def test_application_manifests_decode_strictly_with_argo_cds_types(argocd_lua, path):
    result = decode_application(argocd_lua, path)
    assert result.returncode == 0, result.stderr
    app = json.loads(result.stdout)
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert (REPO / app["spec"]["source"]["path"]).is_dir()


def test_a_misspelt_application_field_is_refused_by_the_strict_decoding(argocd_lua, tmp_path):
    app = yaml.safe_load(APPLICATIONS[0].read_text())
    app["spec"]["syncPolicy"]["selfHeel"] = True
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    result = decode_application(argocd_lua, path)
    assert result.returncode != 0 and "selfHeel" in result.stderr


def test_the_examples_application_syncs_only_the_examples(argocd_lua):
    app = json.loads(decode_application(argocd_lua, REPO / "examples" / "argocd" / "strata-examples.yaml").stdout)
    assert app["spec"]["source"]["path"] == "examples"
    assert not app["spec"]["source"]["directory"].get("recurse", False)


# --- Real objects --------------------------------------------------------------------------


def test_a_feedback_policy_whose_target_serves_no_pod_yet_is_progressing_saying_so(argocd, captured):
    obj = captured["accepted/FeedbackPolicy"]
    assert obj["status"]["phase"] == Phase.MONITORING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Progressing"
    # Captured at its first report: before the first evaluation, or after it found no pod to read.
    assert (verdict["message"].startswith("AwaitingFirstEvaluation: Waiting for the first evaluation")
            or "SignalsUnavailable: Cannot read the monitors' signals: no running pod of the target" in verdict["message"])


def test_a_dataset_whose_pipeline_pod_waits_to_run_is_progressing_saying_so(argocd, captured):
    """The example's storage claim does not exist in the test namespace: its pod stays unscheduled."""
    obj = captured["accepted/Dataset"]
    assert obj["status"]["phase"] == Phase.PENDING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Progressing"
    assert verdict["message"].startswith(f"PipelinePending: Job {obj['status']['job']} waits for its pod to run")


def test_a_model_deployment_waiting_for_its_training_jobs_export_is_degraded_saying_so(argocd, captured):
    obj = captured["accepted/ModelDeployment"]
    assert obj["status"]["phase"] == Phase.WAITING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Degraded"
    assert verdict["message"].startswith('ModelNotExported: TrainingJob "support-lm" has not exported a model yet')


@pytest.mark.parametrize("kind", APPLYING_KINDS)
def test_a_resource_whose_children_cannot_be_applied_is_degraded_with_the_api_error(argocd, captured, kind):
    obj = captured[f"apply-failed/{kind}"]
    assert obj["status"]["phase"] == Phase.RETRYING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Degraded"
    assert verdict["message"].startswith("ApplyFailed: Applying children failed: 403")


@pytest.mark.parametrize("kind", KINDS_WITH_REFERENCES)
def test_a_resource_waiting_for_an_object_it_names_is_degraded_naming_that_object(argocd, captured, kind):
    """Degraded, not Progressing: why is in common.lua, beside the check."""
    obj = captured[f"waiting/{kind}"]
    missing = first_reference(kind)
    assert obj["status"]["phase"] == Phase.WAITING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Degraded"
    assert verdict["message"].startswith(
        f'{NOT_FOUND_REASONS[missing.kind]}: {missing.kind} "{missing.name}" (named by {missing.field}) '
        f'does not exist in namespace "{obj["metadata"]["namespace"]}"')


@pytest.mark.parametrize("kind", KINDS)
def test_a_resource_the_operator_has_not_reported_on_is_progressing(argocd, captured, kind):
    obj = captured[f"unreported/{kind}"]
    assert "status" not in obj
    assert argocd.health(obj) == {
        "status": "Progressing",
        "message": "Waiting for the Strata operator to report status (is it running?)",
    }


# --- Hand-made edge cases on a real capture -------------------------------------------------


def condition(type_: str, status: str, reason: str = "", message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-28T10:00:00Z", "observedGeneration": generation}


def with_status(obj: dict[str, Any], generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    """The captured object at `generation`, carrying `status` (checked against the kind's model)."""
    made = copy.deepcopy(obj)
    made["metadata"]["generation"] = generation
    made.pop("status", None)
    if status is not None:
        KINDS_BY_NAME[made["kind"]].status_model.model_validate(status)  # a status the API allows
        made["status"] = status
    return made


CONDITIONS_HEALTHY = [condition("Ready", "True", "Reconciled", "All good."), condition("Progressing", "False", "AsExpected"),
                      condition("Degraded", "False", "AsExpected", "No errors.")]

# States the operator does not reach yet (training, serving, trained, failed) carry conditions only:
# no phase the status models accept (strata.constants.Phase) describes them, and the health
# scripts judge them by their conditions.
EDGE_CASES = [
    pytest.param("TrainingJob", 2, {"observedGeneration": 1, "conditions": CONDITIONS_HEALTHY},
                 "Progressing", "Waiting for the Strata operator to observe generation 2 (status describes 1)",
                 id="a status written for an older generation is progressing, however healthy it was"),
    pytest.param("Dataset", 3, {"observedGeneration": 3, "conditions": [condition("Ready", "True", generation=2)]},
                 "Progressing", "Waiting for the Strata operator to report Ready for generation 3",
                 id="a Ready condition from an older generation is progressing"),
    pytest.param("Dataset", 1, {"observedGeneration": 1, "conditions": [condition("Quantized", "True", "Done")]},
                 "Progressing", "Waiting for the Strata operator to report the Ready condition",
                 id="an unknown condition without Ready is progressing, not healthy"),
    pytest.param("FeedbackPolicy", 1, {"observedGeneration": 1, "conditions": [condition("Ready", "Unknown", "Probing", "Reading monitors.")]},
                 "Progressing", "Ready is Unknown: Probing: Reading monitors.",
                 id="Ready Unknown is progressing with its reason"),
    pytest.param("Dataset", 1, {"observedGeneration": 1, "version": "sha256-1f2e", "records": {"out": 182000},
                                "conditions": CONDITIONS_HEALTHY},
                 "Healthy", "Version sha256-1f2e with 182000 records; Reconciled: All good.",
                 id="a ready Dataset is healthy naming its version and records"),
    pytest.param("TrainingJob", 4, {"observedGeneration": 4,
                                    "progress": {"step": 1200, "totalSteps": 20000}, "loss": {"train": 2.5},
                                    "conditions": [condition("Ready", "False", "Training", generation=4),
                                                   condition("Progressing", "True", "Training", "Workers running.", generation=4)]},
                 "Progressing", "Step 1200 of 20000 (6%), training loss 2.5; Training: Workers running.",
                 id="a TrainingJob still training is progressing with its step"),
    pytest.param("TrainingJob", 1, {"observedGeneration": 1,
                                    "exportedModel": {"repository": {"pvc": {"claimName": "models", "path": "support-lm"}}, "path": "pvc://models/support-lm", "modelName": "support-lm", "version": 3},
                                    "conditions": CONDITIONS_HEALTHY},
                 "Healthy", "Exported support-lm version 3; Reconciled: All good.",
                 id="a trained TrainingJob is healthy naming its exported model"),
    pytest.param("TrainingJob", 1, {"observedGeneration": 1, "attempt": 4, "progress": {"step": 800},
                                    "conditions": [condition("Ready", "False", "RetriesExhausted", "Worker 1 exited 137."),
                                                   condition("Progressing", "False", "RetriesExhausted", "Worker 1 exited 137."),
                                                   condition("Degraded", "True", "RetriesExhausted", "Worker 1 exited 137.")]},
                 "Degraded", "Step 800, attempt 4; RetriesExhausted: Worker 1 exited 137.",
                 id="a failed TrainingJob is degraded with where it stopped"),
    pytest.param("ModelDeployment", 2, {"observedGeneration": 2,
                                        "modelVersion": {"current": 4, "previous": 3}, "replicas": {"ready": 1, "desired": 2},
                                        "conditions": [condition("Ready", "False", "RollingOut", generation=2),
                                                       condition("Progressing", "True", "RollingOut", "Waiting for replicas.", generation=2)]},
                 "Progressing", "Model version 4; 1/2 replicas ready; RollingOut: Waiting for replicas.",
                 id="a ModelDeployment rolling out is progressing with its replicas"),
    pytest.param("ModelDeployment", 1, {"observedGeneration": 1,
                                        "modelVersion": {"current": 4}, "replicas": {"ready": 2, "desired": 2},
                                        "conditions": CONDITIONS_HEALTHY},
                 "Healthy", "Model version 4; 2/2 replicas ready; Reconciled: All good.",
                 id="a serving ModelDeployment is healthy naming its model version"),
    pytest.param("FeedbackPolicy", 1, {"observedGeneration": 1, "breached": 1,
                                       "conditions": [condition("Ready", "True", "Watching"),
                                                      condition("Degraded", "True", "MonitorBreached", "approval 0.71 < 0.8")]},
                 "Degraded", "1 monitor(s) breached; MonitorBreached: approval 0.71 < 0.8",
                 id="Degraded True wins over Ready True"),
    pytest.param("Dataset", 1, build_status(KINDS_BY_NAME["Dataset"], {"metadata": {"generation": 1}}, invalid_outcome("spec.sources: at least one")),
                 "Degraded", "InvalidSpec: spec.sources: at least one",
                 id="an invalid spec, as the operator reports it, is degraded with the field to fix"),
    pytest.param("ModelDeployment", 1, {"observedGeneration": 1, "phase": "Retrying",
                                        "conditions": [condition("Ready", "False", "ApplyFailed", "Applying children failed: 403 Forbidden")]},
                 "Degraded", "ApplyFailed: Applying children failed: 403 Forbidden",
                 id="a phase the operator writes with Degraded True degrades even without that condition"),
]


@pytest.mark.parametrize("kind, generation, status, health, message", EDGE_CASES)
def test_edge_cases(argocd, captured, kind, generation, status, health, message):
    obj = with_status(captured[f"accepted/{kind}"], generation, status)
    assert argocd.health(obj) == {"status": health, "message": message}


# --- Actions --------------------------------------------------------------------------------


def repository_deployment(name: str) -> dict[str, Any]:
    deployment = example("ModelDeployment")
    deployment["metadata"] = {"name": name}
    deployment["spec"]["model"] = {"repository": {"location": {"pvc": {"claimName": "models"}}, "name": "support-lm", "version": 4}}
    return deployment


def test_rollback_is_offered_only_when_a_previous_version_is_recorded(argocd, captured):
    served_from_training_job = captured["accepted/ModelDeployment"]
    assert argocd.actions(served_from_training_job)["rollback"]["disabled"] is True
    made = with_status(repository_deployment("md"), 1, {"observedGeneration": 1, "modelVersion": {"current": 4}})
    assert argocd.actions(made)["rollback"]["disabled"] is True
    made["status"]["modelVersion"]["previous"] = 3
    assert argocd.actions(made)["rollback"].get("disabled", False) is False


def test_rollback_refuses_clearly_without_a_version_to_return_to(argocd, captured):
    assert "rollback needs spec.model.repository" in argocd.action_error(captured["accepted/ModelDeployment"], "rollback")
    made = with_status(repository_deployment("md"), 1, {"observedGeneration": 1, "modelVersion": {"current": 4}})
    assert "status.modelVersion.previous is not set" in argocd.action_error(made, "rollback")


def test_rollback_pins_the_previous_version_and_the_operator_reconciles_it(argocd, namespace, operator, dev_cluster):
    name = "rollback"
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(repository_deployment(name)))
    reconciled(dev_cluster, namespace, "ModelDeployment", name)
    # The versions as the operator records them once 3 and then 4 were available (the PVC is
    # absent on this kwok-only cluster, so no replica becomes available here: see test_serving.py).
    # The patched object as the API server returned it: the operator's next pass rebuilds its
    # status from what it observes, and drops versions it did not record itself.
    obj = json.loads(dev_cluster.kubectl("patch", KINDS_BY_NAME["ModelDeployment"].crd_name, name, "-n", namespace,
                                         "--subresource=status", "--type=merge", "-o", "json", "-p",
                                         json.dumps({"status": {"modelVersion": {"current": 4, "previous": 3}}})).stdout)
    assert {key: obj["status"]["modelVersion"][key] for key in ("current", "previous")} == {"current": 4, "previous": 3}

    (impact,) = argocd.run_action(obj, "rollback")
    assert impact == {"operation": "patch", "patch": {"spec": {"model": {"repository": {"version": 3}}}}}
    # What Argo CD's API server then does: a merge patch of the object.
    dev_cluster.kubectl("patch", KINDS_BY_NAME["ModelDeployment"].crd_name, name, "-n", namespace,
                        "--type=merge", "-p", json.dumps(impact["patch"]))
    after = wait_for(lambda: (o := live(dev_cluster, namespace, "ModelDeployment", name))
                     and o["metadata"]["generation"] == obj["metadata"]["generation"] + 1 and status_is_current(o) and o,
                     timeout=RESYNC_SECONDS * 10, what="the operator to reconcile the rollback")
    assert after["spec"]["model"]["repository"]["version"] == 3
    assert after["status"]["modelVersion"]["target"] == 3
    deployment = get_json(dev_cluster, "deployment", name, "-n", namespace)
    assert json.loads(deployment["spec"]["template"]["metadata"]["annotations"]["strata.dev/model"])["version"] == 3


# --- TrainingJob: a workload that runs ------------------------------------------------------


def test_a_training_job_waiting_for_its_datasets_data_is_progressing_saying_so(argocd, captured):
    obj = captured["accepted/TrainingJob"]
    assert obj["status"]["phase"] == Phase.PENDING
    verdict = argocd.health(obj)
    assert verdict["status"] == "Progressing"
    assert verdict["message"].startswith('DatasetNotReady: Dataset "support-chats" has published no version yet')


def test_suspend_and_resume_actions_drive_a_real_training_job(argocd, namespace, operator, dev_cluster):
    """On kwok's nodes: the operator suspends the job for real (no pods), and Argo CD reads it."""
    from kwok_training import apply_training_inputs, gpu_training_job

    apply_training_inputs(dev_cluster, namespace)
    job = gpu_training_job(namespace, "argo-lm", nodes=1, gpus_per_node=1)
    job["spec"]["suspend"] = True  # created suspended: kwok would otherwise finish it at once
    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
    suspended = wait_for(lambda: (o := live(dev_cluster, namespace, "TrainingJob", "argo-lm")) and status_is_current(o)
                         and o["status"].get("phase") == Phase.SUSPENDED and o, what="a suspended TrainingJob")
    assert argocd.health(suspended)["status"] == "Suspended"
    offered = argocd.actions(suspended)
    assert offered["suspend"]["disabled"] is True and offered["resume"].get("disabled", False) is False
    assert "not suspended" in argocd.action_error({**suspended, "spec": {**suspended["spec"], "suspend": False}}, "resume")

    (impact,) = argocd.run_action(suspended, "resume")
    assert impact == {"operation": "patch", "patch": {"spec": {"suspend": False}}}
    dev_cluster.kubectl("patch", KINDS_BY_NAME["TrainingJob"].crd_name, "argo-lm", "-n", namespace,
                        "--type=merge", "-p", json.dumps(impact["patch"]))
    done = wait_for(lambda: (o := live(dev_cluster, namespace, "TrainingJob", "argo-lm")) and status_is_current(o)
                    and o["status"].get("phase") == Phase.SUCCEEDED and o, timeout=60,
                    what="the resumed job to run (kwok completes its pods)")
    verdict = argocd.health(done)
    assert verdict["status"] == "Healthy" and verdict["message"].startswith("TrainingSucceeded")
    assert argocd.actions(done)["suspend"]["disabled"] is True
    assert "no workers to suspend" in argocd.action_error(done, "suspend")
