"""A Dataset's pipeline Job on kwok's simulated nodes: what the operator creates and reports.

kwok runs a Job's pod to completion within seconds and runs nothing, so the pod leaves no
result: the run ends as ResultMissing, which is what a pipeline that wrote no result is. What
the pipeline computes is tested in tests/workloads/ and, as pods, in test_dataset_realnode.py.
"""

from __future__ import annotations

import json

from kwok_training import _volume
from tests_support import get_json, wait_for

from strata_workloads.data.result import CONFIG_DIR, CONTAINER_NAME, SECRETS_DIR, SOURCES_DIR, STORAGE_DIR


def _dataset(namespace: str, name: str, **spec) -> dict:
    return {"apiVersion": "strata.dev/v1alpha1", "kind": "Dataset", "metadata": {"name": name, "namespace": namespace},
            "spec": {"modality": "text", "schema": {"textField": "text"},
                     "sources": [{"pvc": {"claimName": "corpus", "path": "chats"}, "format": "jsonl"},
                                 {"s3": {"uri": "s3://corpora/chats/", "endpoint": "http://s3.local:8333",
                                         "secretRef": {"name": "corpora-s3"}}, "format": "csv"}],
                     "storage": {"pvc": {"claimName": "datasets", "path": "chats"}}, **spec}}


def _status(cluster, namespace, name):
    return ((get_json(cluster, "dataset", name, "-n", namespace) or {}).get("status")) or {}


def _events(cluster, namespace, name):
    events = get_json(cluster, "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return [(event["reason"], event["message"]) for event in events["items"]]


def test_the_pipeline_job_mounts_what_the_spec_names_and_its_end_reaches_status(operator, crds_installed, namespace):
    cluster = crds_installed
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items":
                                                          _volume(namespace, "corpus") + _volume(namespace, "datasets")}))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_dataset(namespace, "chats")))
    status = wait_for(lambda: (s := _status(cluster, namespace, "chats")).get("job") and s, what="the run's Job in status")
    job = get_json(cluster, "job", status["job"], "-n", namespace)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["name"] == CONTAINER_NAME and container["image"].startswith("ghcr.io/strata-dev/strata-data:")
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts[CONFIG_DIR]["name"]]["configMap"]["name"] == status["configMap"]
    assert (volumes[mounts[STORAGE_DIR]["name"]]["persistentVolumeClaim"]["claimName"], mounts[STORAGE_DIR]["subPath"]) == \
        ("datasets", "chats")
    source = mounts[f"{SOURCES_DIR}/0"]
    assert volumes[source["name"]]["persistentVolumeClaim"]["claimName"] == "corpus" and source["readOnly"]
    assert volumes[mounts[f"{SECRETS_DIR}/s3-1"]["name"]]["secret"]["secretName"] == "corpora-s3"
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert ("Started", f"Started the first pipeline run (Job {status['job']})") in _events(cluster, namespace, "chats")

    # kwok completes the pod without running it: no result, and the status says so.
    ended = wait_for(lambda: (s := _status(cluster, namespace, "chats")).get("phase") == "Failed" and s,
                     timeout=120, what="the run to end")
    conditions = {c["type"]: c for c in ended["conditions"]}
    assert conditions["Degraded"]["reason"] == "ResultMissing" and status["job"] in conditions["Degraded"]["message"]
    assert conditions["Ready"]["status"] == "False" and "version" not in ended
    assert wait_for(lambda: any(reason == "ResultMissing" for reason, _ in _events(cluster, namespace, "chats")),
                    what="a ResultMissing event")

    # A changed spec is a new run under a new name; the old run's Job is pruned.
    cluster.kubectl("patch", "dataset", "chats", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"cleaning": {"filters": {"minLength": 4}}}}))
    changed = wait_for(lambda: (s := _status(cluster, namespace, "chats")).get("job") not in (None, status["job"]) and s,
                       what="a new run for the changed spec")
    new_job = get_json(cluster, "job", changed["job"], "-n", namespace)
    assert new_job["metadata"]["annotations"]["strata.dev/pipeline-config"] == changed["configMap"] != status["configMap"]
    wait_for(lambda: [j["metadata"]["name"] for j in get_json(cluster, "jobs", "-n", namespace, "-l",
                                                              "strata.dev/owner-name=chats")["items"]] == [changed["job"]],
             timeout=60, what="only the new run's Job left")


def test_a_spec_the_pipeline_cannot_run_is_invalid_naming_the_field_and_runs_nothing(operator, crds_installed, namespace):
    cluster = crds_installed
    cluster.kubectl("apply", "-f", "-", input=json.dumps(
        _dataset(namespace, "stop", storage={"s3": {"uri": "s3://versions/chats"}})))
    status = wait_for(lambda: (s := _status(cluster, namespace, "stop")).get("phase") == "Invalid" and s,
                      what="the Dataset to be refused")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "UnsupportedFeature" and ready["message"].startswith("spec.storage.s3")
    assert get_json(cluster, "jobs", "-n", namespace, "-l", "strata.dev/owner-name=stop")["items"] == []
