"""The pure steps of the reconcile core: child plans per policy, fresh status, merge patches, owners."""

import pytest
from pydantic import ValidationError

from strata.api import DATASET, MODEL_DEPLOYMENT, TRAINING_JOB
from strata.constants import ANNOTATION_CHILD_POLICY, ChildPolicy
from strata.controllers.reconcile import Outcome, build_status, merge_patch, metadata_differs, plan_children
import strata.controllers  # noqa: F401 - registers every kind, as the operator does
from strata.controllers.registration import owner_of

OWNER = {"metadata": {"name": "support-lm", "namespace": "ml", "uid": "1234", "generation": 2}}


def child(name, policy=None, kind="ConfigMap", resource_version="1"):
    meta = {"name": name, "namespace": "ml", "resourceVersion": resource_version}
    if policy:
        meta["annotations"] = {ANNOTATION_CHILD_POLICY: policy}
    return {"apiVersion": "v1", "kind": kind, "metadata": meta}


def labelled(manifest, **labels):
    manifest["metadata"]["labels"] = labels
    return manifest


def verbs(actions):
    return [(action.verb, action.manifest["metadata"]["name"]) for action in actions]


@pytest.mark.parametrize(
    "desired, existing, expected",
    [
        pytest.param([child("a", ChildPolicy.DECLARATIVE)], [], [("apply", "a")],
                     id="a new declarative child is applied"),
        pytest.param([child("a", ChildPolicy.DECLARATIVE)], [child("a", ChildPolicy.DECLARATIVE)], [("apply", "a")],
                     id="an existing declarative child is re-applied"),
        pytest.param([child("a")], [child("a")], [("apply", "a")],
                     id="a child without a policy is declarative"),
        pytest.param([child("a", ChildPolicy.CREATE_ONCE)], [], [("create", "a")],
                     id="a missing create-once child is created"),
        pytest.param([child("a", ChildPolicy.CREATE_ONCE)], [child("a", ChildPolicy.CREATE_ONCE)], [("keep", "a")],
                     id="an existing create-once child as it should be is left alone, with no write"),
        pytest.param([labelled(child("a", ChildPolicy.CREATE_ONCE), attempt="2")], [child("a", ChildPolicy.CREATE_ONCE)],
                     [("apply-metadata", "a")],
                     id="an existing create-once child whose labels drifted gets only its metadata re-applied"),
        pytest.param([child("a", ChildPolicy.FOREIGN)], [child("a", ChildPolicy.FOREIGN)], [("apply-unforced", "a")],
                     id="someone else's child is applied without force"),
        pytest.param([], [child("old", ChildPolicy.FOREIGN)], [],
                     id="someone else's child is never pruned"),
        pytest.param([], [child("old", ChildPolicy.DECLARATIVE), child("once", ChildPolicy.CREATE_ONCE)],
                     [("delete", "old"), ("delete", "once")],
                     id="owned children no longer desired are pruned"),
        pytest.param([child("cfg-new", ChildPolicy.CREATE_ONCE)], [child("cfg-old", ChildPolicy.CREATE_ONCE)],
                     [("create", "cfg-new"), ("delete", "cfg-old")],
                     id="a replacement is created before the child it replaces is pruned"),
        pytest.param([child("a", ChildPolicy.CREATE_ONCE)], [child("a", ChildPolicy.CREATE_ONCE, kind="Secret")],
                     [("create", "a"), ("delete", "a")],
                     id="children are told apart by kind and name"),
    ],
)
def test_plan_children(desired, existing, expected):
    assert verbs(plan_children(desired, existing)) == expected


def test_an_existing_create_once_child_gets_its_metadata_and_never_its_content_re_applied():
    rendered = {**child("a", ChildPolicy.CREATE_ONCE), "immutable": True, "data": {"train.yaml": "new"}}
    rendered["metadata"]["labels"] = {"app.kubernetes.io/component": "trainer"}
    (action,) = plan_children([rendered], [child("a", ChildPolicy.CREATE_ONCE)])
    assert action.manifest == {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "a", "namespace": "ml", "labels": {"app.kubernetes.io/component": "trainer"},
        "annotations": {ANNOTATION_CHILD_POLICY: ChildPolicy.CREATE_ONCE}}}


@pytest.mark.parametrize(
    "live_metadata, differs",
    [
        pytest.param({"labels": {"a": "1", "extra": "x"}, "annotations": {"p": "q"}, "ownerReferences": [{"uid": "u"}]},
                     False, id="labels and annotations others added are no difference"),
        pytest.param({"labels": {"a": "2"}, "annotations": {"p": "q"}, "ownerReferences": [{"uid": "u"}]},
                     True, id="a changed label is"),
        pytest.param({"labels": {"a": "1"}, "ownerReferences": [{"uid": "u"}]}, True, id="a removed annotation is"),
        pytest.param({"labels": {"a": "1"}, "annotations": {"p": "q"}}, True, id="a removed owner reference is"),
    ],
)
def test_metadata_differs(live_metadata, differs):
    manifest = {"metadata": {"labels": {"a": "1"}, "annotations": {"p": "q"}, "ownerReferences": [{"uid": "u"}]}}
    assert metadata_differs({"metadata": live_metadata}, manifest) is differs


def pending(extra=None):
    return Outcome(phase="Pending", ready=("False", "Pending", "m"), progressing=("True", "Pending", "m"),
                   degraded=("False", "AsExpected", "No errors."), extra_status=extra or {})


def test_status_is_built_fresh_so_a_field_no_pass_sets_disappears():
    body = {**OWNER, "status": {"configMap": "support-lm-trainer-0123456789", "phase": "Waiting", "conditions": []}}
    status = build_status(TRAINING_JOB, body, pending())
    assert "configMap" not in status
    assert status["phase"] == "Pending" and status["observedGeneration"] == 2
    assert [c["type"] for c in status["conditions"]] == ["Degraded", "Progressing", "Ready"]


def test_a_condition_of_a_type_no_pass_sets_disappears():
    body = {**OWNER, "status": {"conditions": [{"type": "Stalled", "status": "True", "reason": "X", "message": "",
                                                "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    status = build_status(DATASET, body, pending())
    assert "Stalled" not in [c["type"] for c in status["conditions"]]


def test_unchanged_conditions_keep_their_transition_times():
    first = build_status(DATASET, OWNER, pending())
    again = build_status(DATASET, {**OWNER, "status": first}, pending())
    assert again == first


def test_a_status_the_model_does_not_allow_fails_the_pass():
    with pytest.raises(ValidationError, match="noSuchField"):
        build_status(MODEL_DEPLOYMENT, OWNER, pending({"noSuchField": 1}))


def test_the_status_model_accepts_the_kinds_own_fields():
    status = build_status(TRAINING_JOB, OWNER, pending({"attempt": 2, "configMap": "support-lm-trainer-0123456789"}))
    assert status["attempt"] == 2


OWNER_REF = {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "name": "lm", "uid": "u1", "controller": True}
OWNER_LABELS = {"strata.dev/owner-kind": "trainingjob", "strata.dev/owner-name": "lm"}


@pytest.mark.parametrize(
    "metadata, owners",
    [
        pytest.param({"ownerReferences": [OWNER_REF], "labels": OWNER_LABELS}, [("TrainingJob", "lm", "u1")],
                     id="a child controlled by a Strata object belongs to it"),
        pytest.param({"ownerReferences": [{**OWNER_REF, "apiVersion": "batch/v1", "kind": "Job", "name": "lm-0"}],
                      "labels": OWNER_LABELS}, [("TrainingJob", "lm", None)],
                     id="a child of a child belongs to the Strata object its labels name"),
        pytest.param({"ownerReferences": [{**OWNER_REF, "controller": False}]}, [],
                     id="a plain owner reference is not control"),
        pytest.param({"labels": {**OWNER_LABELS, "strata.dev/owner-kind": "widget"}}, [],
                     id="labels naming no Strata kind name no owner"),
        pytest.param({}, [], id="an unlabelled object belongs to no one"),
    ],
)
def test_owner_of(metadata, owners):
    assert owner_of({"metadata": {"name": "c", **metadata}}) == owners


def apply_merge_patch(target, patch):
    """RFC 7386, as the API server applies it, to check the patches below against."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = apply_merge_patch(result.get(key) if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = value
    return result


@pytest.mark.parametrize(
    "current, desired, patch",
    [
        pytest.param({"phase": "Waiting"}, {"phase": "Pending"}, {"phase": "Pending"}, id="a changed field is set"),
        pytest.param({"phase": "Pending", "configMap": "old"}, {"phase": "Pending"}, {"configMap": None},
                     id="a field that is gone is deleted"),
        pytest.param({"progress": {"step": 4, "totalSteps": 10}}, {"progress": {"step": 5}},
                     {"progress": {"step": 5, "totalSteps": None}}, id="a nested field that is gone is deleted"),
        pytest.param({"conditions": [{"type": "A"}, {"type": "B"}]}, {"conditions": [{"type": "A"}]},
                     {"conditions": [{"type": "A"}]}, id="lists are replaced whole"),
        pytest.param({}, {"progress": {"step": 1}}, {"progress": {"step": 1}}, id="a new object is set whole"),
        pytest.param({"progress": {"step": 1}}, {"progress": {"step": 1}}, {}, id="nothing changed, nothing sent"),
    ],
)
def test_merge_patch(current, desired, patch):
    assert merge_patch(current, desired) == patch
    assert apply_merge_patch(current, patch) == desired
