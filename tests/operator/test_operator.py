"""The operator, run by kopf's test runner, reconciling every kind on the real API server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
import yaml

from conftest import RESYNC_SECONDS, example_documents, get_json, wait_for
from tests_support import wait_until_empty
from strata.api import KINDS_BY_NAME
from strata.conditions import status_is_current
from strata.render.config import CONFIG_FILES
from strata_workloads.data.config import PipelineConfig
from strata_workloads.train.config import parse_config

KINDS = ["Dataset", "TrainingJob", "ModelDeployment", "FeedbackPolicy"]
# The name each kind's config ConfigMap starts with (a content hash follows), and its file.
CONFIG_MAPS = {
    "Dataset": ("support-chats-pipeline-", "pipeline.yaml"),
    "TrainingJob": ("support-lm-trainer-", "train.yaml"),
    "FeedbackPolicy": ("support-lm-monitor-", "policy.yaml"),
}


@pytest.fixture
def lifecycle(dev_cluster, namespace, operator):
    """The examples applied to a fresh namespace, with the operator running."""
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(example_documents()))
    return {doc["kind"]: doc["metadata"]["name"] for doc in example_documents()}


def resource(cluster, namespace, kind, name):
    return get_json(cluster, KINDS_BY_NAME[kind].crd_name, name, "-n", namespace)


def observed(cluster, namespace, kind, name):
    """The object once the operator has reported on its latest spec, else None."""
    obj = resource(cluster, namespace, kind, name)
    return obj if obj and status_is_current(obj) else None


def config_map_in_status(cluster, namespace, kind, name):
    """The live config ConfigMap the object's status names, once both exist."""
    config_name = ((resource(cluster, namespace, kind, name) or {}).get("status") or {}).get("configMap")
    return config_name and get_json(cluster, "configmap", config_name, "-n", namespace, "--show-managed-fields")


def owned_config_maps(cluster, namespace, kind, name):
    selector = f"strata.dev/owner-kind={kind.lower()},strata.dev/owner-name={name}"
    return sorted(item["metadata"]["name"] for item in get_json(cluster, "configmaps", "-n", namespace, "-l", selector)["items"])


def test_a_feedback_policy_says_its_target_serves_no_pod_to_read_and_what_it_does_not_act_on(
        dev_cluster, namespace, lifecycle):
    """The example's ModelDeployment waits for its TrainingJob's export, so no sidecar runs yet."""
    obj = wait_for(lambda: (o := observed(dev_cluster, namespace, "FeedbackPolicy", lifecycle["FeedbackPolicy"]))
                   and o["status"].get("phase") == "Monitoring" and o, what="FeedbackPolicy status")
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "SignalsUnavailable")
    assert "no running pod of the target serves yet" in conditions["Ready"]["message"]
    assert conditions["Degraded"]["status"] == "False"
    assert (conditions["Retraining"]["status"], conditions["Retraining"]["reason"]) == ("False", "NoTrigger")
    assert conditions["Promotion"]["reason"] == "NoCandidate"
    assert "breached" not in obj["status"] and "monitors" not in obj["status"]


def test_a_training_job_waits_progressing_until_its_dataset_has_data(dev_cluster, namespace, lifecycle):
    """The example Dataset reads S3 and HTTP, and publishes no version in this version of Strata."""
    obj = wait_for(lambda: observed(dev_cluster, namespace, "TrainingJob", lifecycle["TrainingJob"]), what="status")
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "DatasetNotReady")
    assert conditions["Progressing"]["status"] == "True" and conditions["Degraded"]["status"] == "False"
    assert obj["status"]["phase"] == "Pending"
    assert 'Dataset "support-chats" has published no version yet' in conditions["Ready"]["message"]
    assert get_json(dev_cluster, "jobs", "-n", namespace, "-l", "strata.dev/owner-kind=trainingjob")["items"] == []


def test_the_example_dataset_runs_its_pipeline_as_a_job_waiting_for_its_storage(dev_cluster, namespace, lifecycle):
    """Its storage claim does not exist here, so the pipeline's pod cannot be scheduled: pending, saying so."""
    name = lifecycle["Dataset"]
    obj = wait_for(lambda: (o := observed(dev_cluster, namespace, "Dataset", name)) and o["status"].get("job") and o,
                   what="the Dataset's run in status")
    conditions = {c["type"]: c for c in obj["status"]["conditions"]}
    assert obj["status"]["phase"] == "Pending"
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == ("True", "PipelinePending")
    assert conditions["Ready"]["status"] == "False" and conditions["Degraded"]["status"] == "False"
    job = get_json(dev_cluster, "job", obj["status"]["job"], "-n", namespace)
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]


@pytest.mark.parametrize("kind", list(CONFIG_MAPS))
def test_the_resolved_config_is_applied_as_an_owned_child_and_announced(dev_cluster, namespace, lifecycle, kind):
    prefix, key = CONFIG_MAPS[kind]
    config_map = wait_for(lambda: config_map_in_status(dev_cluster, namespace, kind, lifecycle[kind]),
                          what=f"the ConfigMap named in the {kind}'s status")
    name = config_map["metadata"]["name"]
    assert name.startswith(prefix) and len(name) == len(prefix) + 10
    assert config_map["immutable"] is True
    owner = resource(dev_cluster, namespace, kind, lifecycle[kind])
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
    managers = {entry["manager"] for entry in config_map["metadata"]["managedFields"]}
    assert managers == {"strata-operator"}
    mounted = yaml.safe_load(config_map["data"][key])
    _, _, build = CONFIG_FILES[kind]
    assert mounted == build(KINDS_BY_NAME[kind].spec_model.model_validate(owner["spec"]), owner["metadata"]["name"])
    if kind == "TrainingJob":
        parse_config(mounted)  # the trainer accepts what the operator mounts
    elif kind == "Dataset":
        PipelineConfig.model_validate(mounted)  # so does the pipeline
    else:
        # The API server's defaults and the models' defaults agree field for field.
        assert mounted == owner["spec"]

    def created_event():
        events = get_json(dev_cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={lifecycle[kind]}")
        return [e for e in events["items"] if e["message"] == f"Created ConfigMap {name}"]

    event = wait_for(created_event, what=f"a 'Created ConfigMap {name}' event")[0]
    # kubectl describe's "From" column: the Strata operator, not kopf.
    assert event["source"]["component"] == "strata-operator"
    assert event["reportingComponent"] == "strata-operator"


def test_a_spec_change_is_reconciled_into_the_child_and_the_observed_generation(dev_cluster, namespace, lifecycle):
    name = lifecycle["TrainingJob"]
    first = wait_for(lambda: observed(dev_cluster, namespace, "TrainingJob", name), what="first reconcile")
    old_config = first["status"]["configMap"]
    dev_cluster.kubectl("patch", "trainingjob", name, "-n", namespace, "--type=merge",
                        "-p", '{"spec": {"deepspeed": {"zeroStage": 3}}}')
    obj = wait_for(lambda: observed(dev_cluster, namespace, "TrainingJob", name), what="status of generation 2")
    assert obj["metadata"]["generation"] == 2

    # A new configuration is a new ConfigMap; the old one is pruned once the new one exists.
    config_map = get_json(dev_cluster, "configmap", obj["status"]["configMap"], "-n", namespace)
    assert config_map["metadata"]["name"] != old_config
    assert yaml.safe_load(config_map["data"]["train.yaml"])["deepspeed"]["zeroStage"] == 3
    wait_for(lambda: owned_config_maps(dev_cluster, namespace, "TrainingJob", name) == [config_map["metadata"]["name"]],
             timeout=30, what=f"only {config_map['metadata']['name']} to be left")


def test_a_deleted_child_is_recreated(dev_cluster, namespace, lifecycle):
    config_map = wait_for(lambda: config_map_in_status(dev_cluster, namespace, "Dataset", lifecycle["Dataset"]),
                          what="the child")
    name, before = config_map["metadata"]["name"], config_map["metadata"]["uid"]
    dev_cluster.kubectl("delete", "configmap", name, "-n", namespace)

    def recreated():
        config_map = get_json(dev_cluster, "configmap", name, "-n", namespace)
        return config_map and config_map["metadata"]["uid"] != before

    wait_for(recreated, timeout=30, what="the ConfigMap to be recreated")


@pytest.fixture
def slow_resync_operator(crds_installed, tmp_path):
    """`strata run` in its own namespace with a resync far longer than any test: whatever it
    repairs within a test, it repaired because it watches the children."""
    namespace = f"w-{uuid.uuid4().hex[:8]}"
    crds_installed.kubectl("create", "namespace", namespace)
    log = tmp_path / "operator.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "strata.cli", "run", "--namespace", namespace, "--metrics-port", "0",
             "--liveness", "http://127.0.0.1:0/healthz"],
            stdout=log_file, stderr=subprocess.STDOUT,
            env={**crds_installed.env(), "STRATA_RESYNC_SECONDS": "3600"},
        )
    try:
        yield namespace, process, log
    finally:
        process.terminate()
        process.wait(timeout=30)
        crds_installed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_a_deleted_or_changed_child_is_repaired_at_once_not_at_the_resync(dev_cluster, slow_resync_operator):
    namespace, process, log = slow_resync_operator
    doc = next(d for d in example_documents() if d["kind"] == "Dataset")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    name = doc["metadata"]["name"]

    def config_map():
        assert process.poll() is None, f"operator exited:\n{log.read_text()[-3000:]}"
        return config_map_in_status(dev_cluster, namespace, "Dataset", name)

    before = wait_for(config_map, what="the first reconcile")
    dev_cluster.kubectl("delete", "configmap", before["metadata"]["name"], "-n", namespace)
    # The resync is an hour away: only the watch on the ConfigMap can bring it back.
    after = wait_for(lambda: (live := config_map()) and live["metadata"]["uid"] != before["metadata"]["uid"] and live,
                     timeout=20, what="the deleted ConfigMap to be recreated")
    assert after["metadata"]["name"] == before["metadata"]["name"]
    assert f"ConfigMap {before['metadata']['name']} changed; reconciling its owner" in log.read_text()

    # Its content is immutable; its labels are not, and they are the operator's to keep.
    component = after["metadata"]["labels"]["app.kubernetes.io/component"]
    dev_cluster.kubectl("label", "configmap", after["metadata"]["name"], "-n", namespace, "--overwrite",
                        "app.kubernetes.io/component=edited-by-hand")
    wait_for(lambda: (live := config_map()) and live["metadata"]["labels"]["app.kubernetes.io/component"] == component,
             timeout=20, what="the edited label to be restored")


def test_deleting_a_resource_deletes_its_children(dev_cluster, namespace, lifecycle):
    name = lifecycle["Dataset"]
    wait_for(lambda: config_map_in_status(dev_cluster, namespace, "Dataset", name), what="the child")
    dev_cluster.kubectl("delete", "dataset", name, "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: owned_config_maps(dev_cluster, namespace, "Dataset", name) == [],
             timeout=60, what="the garbage collector to delete the ConfigMap")


def test_metrics_and_health_endpoints_report_the_reconciles(dev_cluster, namespace, lifecycle, operator):
    wait_for(lambda: observed(dev_cluster, namespace, "FeedbackPolicy", lifecycle["FeedbackPolicy"]), what="a reconcile")
    metrics = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    for kind in KINDS:
        line = next(l for l in metrics.splitlines() if l.startswith(f'strata_reconcile_total{{kind="{kind}",result="success"}}'))
        assert float(line.split()[-1]) >= 1
    assert "strata_reconcile_duration_seconds_bucket" in metrics
    with urllib.request.urlopen(operator.health_url, timeout=5) as health:
        assert health.status == 200


def test_an_idle_resource_is_not_rewritten_by_the_resync(dev_cluster, namespace, lifecycle):
    name = lifecycle["ModelDeployment"]

    def handled(obj):
        # kopf's bookkeeping is done too: the last handled spec recorded, no handler to retry.
        annotations = obj["metadata"].get("annotations") or {}
        return "strata.dev/last-handled-configuration" in annotations and "strata.dev/reconcile" not in annotations

    settled = wait_for(lambda: (obj := observed(dev_cluster, namespace, "ModelDeployment", name)) and handled(obj) and obj,
                       what="the first pass, handled")
    before = settled["metadata"]["resourceVersion"]
    time.sleep(RESYNC_SECONDS * 2 + 1)  # at least two resync passes
    after = resource(dev_cluster, namespace, "ModelDeployment", name)
    assert after["metadata"]["resourceVersion"] == before
    assert after["status"]["conditions"] == settled["status"]["conditions"]


def test_a_child_lookalike_and_someone_elses_child_are_left_alone_and_a_stale_owned_child_is_pruned(
        dev_cluster, namespace, lifecycle):
    name = lifecycle["TrainingJob"]
    owner = wait_for(lambda: observed(dev_cluster, namespace, "TrainingJob", name), what="first reconcile")
    labels = {"strata.dev/owner-kind": "trainingjob", "strata.dev/owner-name": name}
    controller_ref = [{"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "name": name,
                       "uid": owner["metadata"]["uid"], "controller": True}]
    lookalike = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "users-own-copy", "labels": labels}, "data": {"k": "v"}}
    stale = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{name}-leftover", "labels": labels, "ownerReferences": controller_ref}}
    # Owned, but marked as its user's (ChildPolicy Foreign): never pruned, spec or no spec.
    foreign = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": f"{name}-users", "labels": labels, "ownerReferences": controller_ref,
                            "annotations": {"strata.dev/child-policy": "Foreign"}}}
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all([lookalike, stale, foreign]))

    wait_for(lambda: get_json(dev_cluster, "configmap", f"{name}-leftover", "-n", namespace) is None,
             timeout=30, what="the stale child to be pruned")
    assert get_json(dev_cluster, "configmap", "users-own-copy", "-n", namespace) is not None
    assert get_json(dev_cluster, "configmap", f"{name}-users", "-n", namespace) is not None
    assert get_json(dev_cluster, "configmap", owner["status"]["configMap"], "-n", namespace) is not None


def test_a_failing_apply_is_reported_as_degraded_and_recovers(dev_cluster, namespace, operator):
    # A real API failure: a quota that allows no ConfigMaps beyond the namespace's root CA.
    dev_cluster.kubectl("create", "quota", "no-configmaps", "-n", namespace, "--hard=configmaps=1")
    wait_for(lambda: (get_json(dev_cluster, "resourcequota", "no-configmaps", "-n", namespace) or {})
             .get("status", {}).get("used"), what="the quota to be counted")
    doc = next(d for d in example_documents() if d["kind"] == "FeedbackPolicy")
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))
    name = doc["metadata"]["name"]

    def degraded():
        obj = resource(dev_cluster, namespace, "FeedbackPolicy", name)
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        return conditions if conditions.get("Degraded", {}).get("status") == "True" else None

    conditions = wait_for(degraded, what="Degraded=True")
    assert conditions["Degraded"]["reason"] == "ApplyFailed"
    assert "403" in conditions["Degraded"]["message"]
    assert conditions["Ready"]["status"] == "False"

    dev_cluster.kubectl("delete", "quota", "no-configmaps", "-n", namespace)

    def recovered():
        obj = resource(dev_cluster, namespace, "FeedbackPolicy", name)
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}
        return conditions.get("Degraded", {}).get("reason") not in (None, "ApplyFailed") and conditions

    # The apply succeeds now; what is left is the truth: the policy's ModelDeployment is not there.
    conditions = wait_for(recovered, timeout=60, what="the ApplyFailed condition to clear after the quota is gone")
    assert conditions["Degraded"]["reason"] == "ModelDeploymentNotFound"
    assert config_map_in_status(dev_cluster, namespace, "FeedbackPolicy", name)
    metrics = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    assert 'strata_reconcile_errors_total{kind="FeedbackPolicy",reason="ApplyFailed"}' in metrics


def conditions_of(obj):
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions", [])}


@pytest.mark.parametrize(
    "kind, missing_kind, reason, then",
    [
        pytest.param("TrainingJob", "Dataset", "DatasetNotFound", ("DatasetNotReady", "Pending", "False"),
                     id="a training job waits for its dataset"),
        # A TrainingJob that exists but has exported nothing yet: the deployment waits for the export.
        pytest.param("ModelDeployment", "TrainingJob", "TrainingJobNotFound", ("ModelNotExported", "Waiting", "True"),
                     id="a deployment waits for its training job"),
    ],
)
def test_a_missing_reference_is_reported_and_clears_when_the_object_appears(dev_cluster, namespace, operator,
                                                                               kind, missing_kind, reason, then):
    doc = next(d for d in example_documents() if d["kind"] == kind)
    missing = next(d for d in example_documents() if d["kind"] == missing_kind)
    name = doc["metadata"]["name"]
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))

    def waiting():
        obj = observed(dev_cluster, namespace, kind, name)
        return obj if conditions_of(obj).get("Ready", {}).get("reason") == reason else None

    obj = wait_for(waiting, what=f"{kind} Ready=False/{reason}")
    ready = conditions_of(obj)["Ready"]
    assert ready["status"] == "False"
    assert f'{missing_kind} "{missing["metadata"]["name"]}"' in ready["message"]
    assert f'namespace "{namespace}"' in ready["message"]
    assert conditions_of(obj)["Degraded"]["status"] == "True"
    assert obj["status"]["phase"] == "Waiting"

    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(missing))

    def recovered():
        obj = resource(dev_cluster, namespace, kind, name)
        return obj if conditions_of(obj).get("Ready", {}).get("reason") == then[0] else None

    obj = wait_for(recovered, timeout=30, what=f"{kind} to stop waiting once the {missing_kind} exists")
    assert obj["status"]["phase"] == then[1]
    assert conditions_of(obj)["Degraded"]["status"] == then[2]


def namespace_blockers(cluster, namespace):
    """What keeps a terminating namespace: its status conditions that are True, and each Strata
    object still there with its finalizers; empty once the namespace is gone."""
    ns = get_json(cluster, "namespace", namespace)
    if ns is None:
        return []
    left = [f"{c['type']}: {c.get('message', '')}" for c in ns.get("status", {}).get("conditions", [])
            if c.get("status") == "True"]
    for kind in KINDS_BY_NAME:
        for item in (get_json(cluster, kind.lower(), "-n", namespace) or {}).get("items", []):
            meta = item["metadata"]
            left.append(f"{kind} {meta['name']} finalizers={meta.get('finalizers')} "
                        f"deleting={bool(meta.get('deletionTimestamp'))}")
    return left or [f"namespace {namespace} (phase {ns.get('status', {}).get('phase')})"]


def test_deleting_the_namespace_removes_every_resource_in_it(dev_cluster, namespace, lifecycle):
    """A terminating namespace refuses every write: the operator must let its objects go (their
    finalizer released) rather than retry passes that can only fail."""
    for kind, name in lifecycle.items():
        wait_for(lambda kind=kind, name=name: observed(dev_cluster, namespace, kind, name), what=f"{kind} status")
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_until_empty(lambda: namespace_blockers(dev_cluster, namespace), timeout=120, interval=2,
                     what=f"namespace {namespace} and everything in it to be deleted")


def test_the_finalizer_earlier_builds_put_on_objects_is_removed(dev_cluster, namespace, operator):
    """Earlier builds put `strata.dev/finalizer` on every object; left there, an object would
    wait for the operator to be deleted."""
    dataset = next(doc for doc in example_documents() if doc["kind"] == "Dataset")
    dataset["metadata"]["finalizers"] = ["strata.dev/finalizer"]
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(dataset))
    name = dataset["metadata"]["name"]
    wait_for(lambda: not resource(dev_cluster, namespace, "Dataset", name)["metadata"].get("finalizers"),
             what=f"the finalizer on Dataset {name} to be removed")


def test_a_status_field_no_pass_sets_disappears_from_the_live_status(dev_cluster, namespace, lifecycle):
    name = lifecycle["ModelDeployment"]
    # Waiting for its TrainingJob's export, so nothing but the stale fields changes from here on.
    settled = wait_for(lambda: (obj := observed(dev_cluster, namespace, "ModelDeployment", name))
                       and obj["status"]["phase"] == "Waiting" and obj, what="the ModelDeployment to wait for the export")
    stale = {"modelVersion": {"current": 4, "previous": 3}, "configMap": "support-lm-serving-stale"}
    dev_cluster.kubectl("patch", KINDS_BY_NAME["ModelDeployment"].crd_name, name, "-n", namespace,
                        "--subresource=status", "--type=merge", "-p", json.dumps({"status": stale}))

    def rebuilt():
        status = resource(dev_cluster, namespace, "ModelDeployment", name)["status"]
        return status if "modelVersion" not in status and status.get("configMap") == settled["status"].get("configMap") else None

    # Any pass does it: the resync's, or this one that an annotation (a change kopf reacts to) starts.
    dev_cluster.kubectl("annotate", KINDS_BY_NAME["ModelDeployment"].crd_name, name, "-n", namespace, "example.com/touched=1")
    status = wait_for(rebuilt, timeout=60, what="the next pass to drop modelVersion and restore configMap")
    assert status["conditions"] == settled["status"]["conditions"]
