"""Argo CD customizations: the generated argocd-cm patch and argo-cd values stay in step with
the Lua sources, and every kind has a health script. (The scripts themselves are evaluated
by Argo CD's own Lua runtime in tests/operator/test_argocd_health.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from strata.api import KINDS
from strata.argocd import PATCH_FILE, REGENERATE_COMMAND, VALUES_FILE, customizations, drift, health_script, render_files
from strata.api.base import ObjectReference
from strata.constants import ConditionStatus, ConditionType, Phase
from strata.controllers.reconcile import Outcome, apply_failed_outcome, invalid_outcome, missing_reference_outcome
from strata.render.serving_status import observe_serving

REPO = Path(__file__).resolve().parents[2]
SOURCES = REPO / "helm" / "strata" / "argocd"


def test_generated_files_match_the_lua_sources():
    stale = drift(SOURCES)
    assert not stale, f"{stale} in helm/strata/argocd/ are out of date; regenerate with `{REGENERATE_COMMAND}` and commit."


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_every_kind_has_a_health_script_under_argo_cds_key(info):
    data = customizations(SOURCES)
    script = data[f"resource.customizations.health.strata.dev_{info.kind}"]
    assert script.startswith((SOURCES / "health" / "common.lua").read_text())
    assert script.endswith((SOURCES / "health" / f"{info.kind}.lua").read_text())


def test_a_kind_without_a_health_script_is_refused_naming_the_file(tmp_path):
    (tmp_path / "health").mkdir()
    (tmp_path / "health" / "common.lua").write_text("-- shared\n")
    with pytest.raises(FileNotFoundError, match="Dataset.lua is missing"):
        health_script(tmp_path, "Dataset")


def test_trailing_whitespace_is_refused_because_yaml_would_quote_the_script(tmp_path):
    (tmp_path / "health").mkdir()
    (tmp_path / "health" / "common.lua").write_text("local x = 1 \n")
    (tmp_path / "health" / "Dataset.lua").write_text("return {}\n")
    with pytest.raises(ValueError, match=r"line\(s\) \[1\]"):
        health_script(tmp_path, "Dataset")


def test_the_patch_and_the_argo_cd_chart_values_carry_the_same_keys_as_readable_lua():
    files = render_files(SOURCES)
    patch = yaml.safe_load(files[PATCH_FILE])
    values = yaml.safe_load(files[VALUES_FILE])
    assert patch["metadata"] == {"name": "argocd-cm"}
    assert patch["data"] == values["configs"]["cm"] == customizations(SOURCES)
    # Literal blocks, so an admin reading argocd-cm sees the Lua as written.
    assert "resource.customizations.health.strata.dev_TrainingJob: |\n" in files[PATCH_FILE]


def test_rollback_is_an_action_definition_with_its_discovery_script():
    actions = yaml.safe_load(customizations(SOURCES)["resource.customizations.actions.strata.dev_ModelDeployment"])
    assert [d["name"] for d in actions["definitions"]] == ["rollback"]
    training = yaml.safe_load(customizations(SOURCES)["resource.customizations.actions.strata.dev_TrainingJob"])
    assert sorted(d["name"] for d in training["definitions"]) == ["resume", "suspend"]
    assert "status.modelVersion.previous" in actions["definitions"][0]["action.lua"]
    assert "rollback" in actions["discovery.lua"]


WAVE_ORDER = ["Dataset", "TrainingJob", "ModelDeployment", "FeedbackPolicy"]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda path: path.name)
def test_examples_sync_in_lifecycle_order(path):
    """Each kind's sync wave comes after the kinds it depends on."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("apiVersion") == "strata.dev/v1alpha1"]
    waves = {}
    for doc in documents:
        wave = (doc["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave")
        assert wave is not None, f"{doc['kind']}/{doc['metadata']['name']} has no argocd.argoproj.io/sync-wave"
        waves.setdefault(doc["kind"], set()).add(int(wave))
    present = [kind for kind in WAVE_ORDER if kind in waves]
    for earlier, later in zip(present, present[1:]):
        assert max(waves[earlier]) < min(waves[later]), f"{earlier} must sync before {later}: {waves}"


def test_the_health_scripts_read_the_condition_types_and_phases_the_operator_writes():
    """The Lua's spelling of conditions and phases is the operator's (strata.constants)."""
    common = (SOURCES / "health" / "common.lua").read_text()
    types = set(re.findall(r'findCondition\(status, "(\w+)"\)', common))
    phases = set(re.findall(r'status\.phase == "(\w+)"', common))
    assert types == {ConditionType.READY, ConditionType.PROGRESSING, ConditionType.DEGRADED}
    assert phases and phases <= {value for name, value in vars(Phase).items() if name.isupper()}


def training_outcomes():
    """A TrainingJob's outcomes in each phase it has (controllers/trainingjob.py)."""
    from strata.api.training import TrainingJobSpec
    from strata.controllers.trainingjob import TrainingInputs, _phase
    from strata.observe.training import AttemptView
    from tests_support import example_spec

    spec = TrainingJobSpec.model_validate(example_spec("TrainingJob"))
    suspended = TrainingJobSpec.model_validate({**example_spec("TrainingJob"), "suspend": True})
    inputs = TrainingInputs(namespace="ml")

    def attempt(state, reason=None, queued=False):
        return [AttemptView(number=1, job="lm-1", state=state, live=True, reason=reason, queued=queued)]

    return [
        _phase(spec, inputs, attempt("Pending", queued=True)),
        _phase(spec, inputs, attempt("Running")),
        _phase(spec, inputs, attempt("Succeeded", "Completed")),
        _phase(spec, inputs, attempt("Failed", "InvalidConfiguration")),
        _phase(suspended, inputs, attempt("Running")),
    ]


def feedback_outcomes():
    """A FeedbackPolicy's outcomes in its own phase (controllers/feedbackpolicy.py): signals read, and not."""
    from strata.api.feedback import FeedbackPolicySpec
    from strata.controllers.feedbackpolicy import PolicyInputs, observe
    from tests_support import example_spec

    spec = FeedbackPolicySpec.model_validate(example_spec("FeedbackPolicy"))
    return [observe(KINDS[3], spec, PolicyInputs(namespace="ml", evaluated_at="2026-01-01T00:00:00Z"), []),
            observe(KINDS[3], spec, PolicyInputs(namespace="ml", signals_error="no sidecar answered"), [])]


def test_the_phases_the_health_scripts_degrade_are_those_the_operator_writes_with_degraded_true():
    """The Lua's phase fallback agrees with the operator's outcomes, one for every phase."""
    common = (SOURCES / "health" / "common.lua").read_text()
    degraded_phases = set(re.findall(r'status\.phase == "(\w+)"', common))
    outcomes = [
        invalid_outcome("spec.sources: at least one source is required"),
        apply_failed_outcome("Applying children failed: 403 Forbidden"),
        missing_reference_outcome([ObjectReference("Dataset", "support-data", "spec.dataset.name")], "default"),
        *training_outcomes(),
        *feedback_outcomes(),
    ]
    # A ModelDeployment's serving phases, as its observe step writes them (one case per phase).
    from unit.test_serving_render import STATUS_CASES, spec_of
    for case in STATUS_CASES:
        target, deployment, *_ = case.values
        phase, conditions, _ = observe_serving(spec_of(), "lm", "ml", target, [deployment], False)
        outcomes.append(Outcome(phase, conditions["Ready"], conditions["Progressing"], conditions["Degraded"]))
    assert {outcome.phase for outcome in outcomes} == {value for name, value in vars(Phase).items() if name.isupper()}
    assert degraded_phases == {outcome.phase for outcome in outcomes if outcome.degraded[0] == ConditionStatus.TRUE}
