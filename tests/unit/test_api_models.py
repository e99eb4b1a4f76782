"""Client-side validation: the constraints the CRD also enforces, with messages naming the field.

tests/unit/test_api_parity.py checks the models against every object the API server refuses.
"""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from strata.api import KINDS_BY_NAME
from strata.api.errors import describe_validation_error
from tests_support import example_documents



def example_specs() -> dict[str, dict]:
    return {doc["kind"]: doc["spec"] for doc in example_documents()}


@pytest.mark.parametrize("kind", sorted(example_specs()))
def test_every_example_parses(kind):
    KINDS_BY_NAME[kind].spec_model.model_validate(example_specs()[kind])


def test_examples_cover_all_four_kinds():
    assert set(example_specs()) == set(KINDS_BY_NAME)


def test_defaults_are_filled_in_and_written_back_in_camel_case():
    spec = KINDS_BY_NAME["TrainingJob"].spec_model.model_validate(
        {"dataset": {"name": "d"}, "model": {"family": "vae"}}
    )
    wire = spec.to_wire()
    assert wire["deepspeed"]["zeroStage"] == 2
    assert wire["hyperparameters"]["lrSchedule"] == "cosine"
    assert "export" not in wire


@pytest.mark.parametrize(
    "kind, mutate, field",
    [
        pytest.param("TrainingJob", lambda s: s["deepspeed"].update(zeroStage=4), "spec.deepspeed.zeroStage", id="zero stage 4 names the field"),
        pytest.param("TrainingJob", lambda s: s["model"].update(family="rnn"), "spec.model.family", id="unknown family names the field"),
        pytest.param("TrainingJob", lambda s: s["deepspeed"].update(microBatchSize=0), "spec.deepspeed.microBatchSize", id="zero batch size names the field"),
        pytest.param("Dataset", lambda s: s.pop("sources"), "spec.sources", id="missing sources names the field"),
        pytest.param("ModelDeployment", lambda s: s["monitoring"].update(auditSampleRate=2), "spec.monitoring.auditSampleRate", id="rate above one names the field"),
        pytest.param("FeedbackPolicy", lambda s: s.update(window="an hour"), "spec.window", id="bad duration names the field"),
        pytest.param("TrainingJob", lambda s: s["deepspeed"].update(zeroStag=1), "spec.deepspeed.zeroStag", id="unknown field is refused"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(kind, mutate, field):
    spec = copy.deepcopy(example_specs()[kind])
    mutate(spec)
    with pytest.raises(ValidationError) as caught:
        KINDS_BY_NAME[kind].spec_model.model_validate(spec)
    assert describe_validation_error(caught.value).startswith(field + ":")
