"""The models refuse every object the API server refuses (tests/invalid_objects.py), naming the
same field: CEL rules are evaluated client-side from the same rule text."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from invalid_objects import INVALID
from strata.api import KINDS_BY_NAME, TRAINING_JOB
from strata.api.cel import failed_rules, is_transition_rule
from strata.api.training import CHANGEABLE_WHILE_RUNNING
from strata.api.errors import describe_validation_error
from strata.validate import object_problems
from tests_support import example_documents


@pytest.mark.parametrize("kind, mutate, expected", INVALID)
def test_the_models_refuse_what_the_api_server_refuses(kind, mutate, expected):
    obj = copy.deepcopy(next(doc for doc in example_documents() if doc["kind"] == kind))
    mutate(obj)
    field_path = expected[0].removeprefix('unknown field "').rstrip('"')
    if field_path.startswith("spec"):
        with pytest.raises(ValidationError) as caught:
            KINDS_BY_NAME[kind].spec_model.model_validate(obj["spec"])
        assert field_path in describe_validation_error(caught.value)
    # `strata validate` reports it too, the kind's rules on the whole object included.
    assert any(problem.startswith(field_path) for problem in object_problems(obj)), object_problems(obj)


def test_a_rule_that_cannot_be_evaluated_counts_as_failed():
    rules = [{"rule": "self.missing.field == 1", "message": "m"}]
    assert failed_rules(rules, {}) == rules
    assert failed_rules([{"rule": "self.a == 1", "message": "m"}], {"a": 1}) == []


def test_transition_rules_are_left_to_the_api_server():
    # A rule that reads oldSelf judges an update; one object alone (strata validate) never fails it.
    rule = {"rule": "self.spec.model == oldSelf.spec.model", "message": "m"}
    assert is_transition_rule(rule)
    assert failed_rules([rule], {"spec": {"model": {"family": "gan"}}}) == []
    transition = [rule for rule in TRAINING_JOB.object_rules if is_transition_rule(rule)]
    assert {rule["fieldPath"] for rule in transition} == {
        f".spec.{field.alias or name}" for name, field in TRAINING_JOB.spec_model.model_fields.items()
        if (field.alias or name) not in CHANGEABLE_WHILE_RUNNING
    }
    assert [rule for rule in TRAINING_JOB.object_rules if not is_transition_rule(rule)] == [
        rule for rule in TRAINING_JOB.object_rules if "fieldPath" not in rule]  # the name rule
