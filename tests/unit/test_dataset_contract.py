"""The operator and the pipeline agree: the config the operator renders is what the pipeline runs,
and the termination message the pipeline writes is what the operator's status is built from.

The pod is played by running the real pipeline CLI with the pod's mount points mapped into a
temporary directory; nothing on either side is stubbed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from strata.api import DATASET
from strata.api.dataset import DatasetSpec
from strata.constants import Phase, Reason
from strata.controllers.dataset import DatasetInputs, observe
from strata.observe.dataset import observe_run
from strata.render.config import render_config_map
from strata.render.dataset import ANNOTATION_REFRESH_TICK, ANNOTATION_RUN_CONFIG
from strata.render.feedback_policy import drift_reference
from strata_workloads.data.result import CONFIG_FILE, CONTAINER_NAME, SOURCES_DIR, STORAGE_DIR
from strata_workloads.monitor.sketch import TEXT_COLUMN, TOKENS_COLUMN, TokenSketch

OWNER = {"metadata": {"name": "notes", "namespace": "ml", "uid": "u-1"}}
SPEC = DatasetSpec.model_validate({
    "modality": "text", "schema": {"textField": "text"},
    "sources": [{"pvc": {"claimName": "corpus", "path": "notes"}, "format": "text"}],
    "preprocessing": {"text": {"tokenizer": {"kind": "byte"}}},
    "storage": {"pvc": {"claimName": "datasets", "path": "notes"}},
    "qualityGates": {"maxDuplicateRatio": 0.5, "minRecords": 3},
})


def _run_pod(tmp_path, config_text: str) -> dict:
    """The pipeline as the pod runs it, its mounts under tmp_path; returns the pod's status as the API shows it."""
    mounts = {STORAGE_DIR: str(tmp_path / "pvc-datasets" / "notes"), SOURCES_DIR: str(tmp_path / "sources")}
    for pod_path, here in mounts.items():
        config_text = config_text.replace(pod_path, here)
    config = tmp_path / CONFIG_FILE
    config.write_text(config_text)
    log = tmp_path / "termination-log"
    done = subprocess.run([sys.executable, "-m", "strata_workloads.data", "--config", str(config),
                           "--termination-log", str(log)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {"metadata": {"name": "notes-x"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": CONTAINER_NAME, "state": {"terminated": {"exitCode": 0, "message": log.read_text(),
                                                          "finishedAt": "2026-01-01T00:01:00Z"}}}]}}


def test_the_rendered_config_runs_and_its_result_becomes_the_status_a_training_job_reads(tmp_path):
    (tmp_path / "sources" / "0").mkdir(parents=True)
    (tmp_path / "sources" / "0" / "a.txt").write_text("first note\nsecond note\nthird note\nfirst note\n")
    config_map = render_config_map(DATASET, OWNER, SPEC)
    config_text = config_map["data"][CONFIG_FILE]
    assert yaml.safe_load(config_text)["output"] == STORAGE_DIR
    pod = _run_pod(tmp_path, config_text)

    job = {"kind": "Job", "metadata": {"name": "notes-1", "annotations": {ANNOTATION_RUN_CONFIG: config_map["metadata"]["name"],
                                                           ANNOTATION_REFRESH_TICK: "0"}},
           "status": {"startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    run = observe_run(job, [pod], (ANNOTATION_RUN_CONFIG, ANNOTATION_REFRESH_TICK))
    inputs = DatasetInputs(namespace="ml", name="notes", now="2026-01-01T00:02:00Z", created="2026-01-01T00:00:00Z",
                           runs=(run,))
    outcome = observe(DATASET, SPEC, inputs, [config_map, job])
    status = outcome.extra_status
    assert (outcome.phase, outcome.ready[1]) == (Phase.SUCCEEDED, Reason.VERSION_PUBLISHED)
    version = status["version"]
    # status.path is the version's directory on spec.storage.pvc: what a TrainingJob mounts as its subPath.
    assert status["path"] == f"notes/{version}"
    assert (tmp_path / "pvc-datasets" / status["path"] / "manifest.json").is_file()
    assert status["records"] == {"in": 4, "out": 3, "duplicates": 1, "nearDuplicates": 0, "missing": 0,
                                 "quarantined": 0, "synthetic": 0}
    assert [gate["name"] for gate in status["gates"]] == ["maxDuplicateRatio", "minRecords"]
    DATASET.status_model.model_validate(json.loads(json.dumps({**status, "phase": outcome.phase})))

    # The version's token sketch travels in the termination message into status.history, where
    # a FeedbackPolicy finds the drift reference of a model trained on the version.
    manifest = json.loads((tmp_path / "pvc-datasets" / status["path"] / "manifest.json").read_text())
    sketches = manifest["pipeline"]["referenceStatistics"]["sketches"]
    sketch = sketches[TOKENS_COLUMN]
    assert set(sketches) == {TOKENS_COLUMN, TEXT_COLUMN} and sketch["rows"] == sketches[TEXT_COLUMN]["rows"] == 3
    assert sorted(status["history"][-1]["reference"], key=lambda item: item["column"]) == [
        {"column": name, **sketches[name]} for name in sorted(sketches)]
    trained = {"metadata": {"name": "lm"}, "spec": {"dataset": {"name": "notes"}}, "status": {"datasetVersion": version}}
    reference = drift_reference(trained, {"metadata": {"name": "notes"}, "status": status})
    assert reference.problem is None
    assert reference.sketches == {name: TokenSketch.from_dict(value) for name, value in sketches.items()}
