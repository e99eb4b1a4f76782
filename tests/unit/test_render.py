import yaml

from strata.api import TRAINING_JOB
from strata.render.config import render_config_map

OWNER = {"metadata": {"name": "support-lm", "namespace": "ml", "uid": "1234"}}


def test_config_map_is_owned_labelled_and_holds_the_resolved_spec():
    spec = TRAINING_JOB.spec_model.model_validate({"dataset": {"name": "d"}, "model": {"family": "gan"}})
    manifest = render_config_map(TRAINING_JOB, OWNER, spec)
    meta = manifest["metadata"]
    assert meta["name"] == "support-lm-trainer" and meta["namespace"] == "ml"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "strata.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "support-lm",
            "uid": "1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"]["app.kubernetes.io/instance"] == "support-lm"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "strata-operator"
    assert yaml.safe_load(manifest["data"]["train.yaml"])["model"]["family"] == "gan"
