import re

import yaml

from strata.api import TRAINING_JOB
from strata.render.config import render_config_map

OWNER = {"metadata": {"name": "support-lm", "namespace": "ml", "uid": "1234"}}


def test_config_map_is_owned_labelled_and_holds_the_resolved_spec():
    spec = TRAINING_JOB.spec_model.model_validate({"dataset": {"name": "d"}, "model": {"family": "gan"}})
    manifest = render_config_map(TRAINING_JOB, OWNER, spec)
    meta = manifest["metadata"]
    assert meta["name"].startswith("support-lm-trainer-") and meta["namespace"] == "ml"
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


def test_config_map_is_immutable_created_once_and_named_by_its_content():
    spec = TRAINING_JOB.spec_model.model_validate({"dataset": {"name": "d"}, "model": {"family": "gan"}})
    manifest = render_config_map(TRAINING_JOB, OWNER, spec)
    assert manifest["immutable"] is True
    assert manifest["metadata"]["annotations"] == {"strata.dev/child-policy": "CreateOnce"}
    assert render_config_map(TRAINING_JOB, OWNER, spec)["metadata"]["name"] == manifest["metadata"]["name"]
    changed = spec.model_copy(update={"deepspeed": spec.deepspeed.model_copy(update={"zero_stage": 3})})
    renamed = render_config_map(TRAINING_JOB, OWNER, changed)
    assert renamed["data"] != manifest["data"]
    assert renamed["metadata"]["name"] != manifest["metadata"]["name"]
    assert renamed["metadata"]["name"].startswith("support-lm-trainer-")


def test_a_long_owner_name_still_gives_a_valid_config_map_name():
    owner = {"metadata": {**OWNER["metadata"], "name": "x" * 253}}
    spec = TRAINING_JOB.spec_model.model_validate({"dataset": {"name": "d"}, "model": {"family": "gan"}})
    name = render_config_map(TRAINING_JOB, owner, spec)["metadata"]["name"]
    assert len(name) == 253 and re.fullmatch(r"x+-trainer-[0-9a-f]{10}", name)
