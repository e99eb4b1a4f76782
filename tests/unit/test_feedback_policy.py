"""The FeedbackPolicy's decisions (render/feedback_policy.py, strata/cron.py) as tables."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from strata import cron
from strata.api.feedback import FeedbackPolicySpec, Promotion, Retrain
from strata.constants import ANNOTATION_CREATED_BECAUSE, Reason
from strata.render import feedback_policy as policy
from strata.api import FEEDBACK_POLICY
from strata_workloads.monitor.result import BREACHED, INSUFFICIENT_DATA, OK, MonitorResult

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)


def retrain(**overrides) -> Retrain:
    return Retrain.model_validate({"triggers": [{"monitorBreached": "any"}], "cooldown": "1h", "maxConcurrent": 1,
                                   "template": {"fromTrainingJob": {"name": "lm"}}, **overrides})


def reading(name: str, verdict: str) -> MonitorResult:
    return MonitorResult(name, 0.5, verdict, 200, "1h", f"{name} is {verdict}")


@pytest.mark.parametrize("case, spec, results, active, last, create, reason", [
    ("a breached monitor starts a retraining", retrain(), [reading("approval", BREACHED)], 0, None,
     True, Reason.RETRAINING_STARTED),
    ("healthy monitors start nothing", retrain(), [reading("approval", OK)], 0, None, False, Reason.NO_TRIGGER),
    ("too few samples hold it back, saying so", retrain(), [reading("approval", INSUFFICIENT_DATA)], 0, None,
     False, Reason.INSUFFICIENT_SAMPLES),
    ("within the cooldown it waits", retrain(), [reading("approval", BREACHED)], 0, NOW - dt.timedelta(minutes=30),
     False, Reason.COOLDOWN),
    ("after the cooldown it retrains again", retrain(), [reading("approval", BREACHED)], 0,
     NOW - dt.timedelta(minutes=61), True, Reason.RETRAINING_STARTED),
    ("at the concurrency limit it waits", retrain(), [reading("approval", BREACHED)], 1, None,
     False, Reason.CONCURRENCY_LIMIT),
    ("below a higher limit it starts", retrain(maxConcurrent=2), [reading("approval", BREACHED)], 1, None,
     True, Reason.RETRAINING_STARTED),
    ("a trigger naming another monitor ignores this breach", retrain(triggers=[{"monitorBreached": "drift"}]),
     [reading("approval", BREACHED), reading("drift", OK)], 0, None, False, Reason.NO_TRIGGER),
    ("a schedule that fired since the last check starts one", retrain(triggers=[{"schedule": "0 * * * *"}]),
     [], 0, None, True, Reason.RETRAINING_STARTED),
    ("a schedule that has not fired starts nothing", retrain(triggers=[{"schedule": "30 3 * * *"}]),
     [], 0, None, False, Reason.NO_TRIGGER),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_decide_retrain(case, spec, results, active, last, create, reason):
    decision = policy.decide_retrain(spec, results, active, last, NOW - dt.timedelta(minutes=5), NOW)
    assert (decision.create, decision.reason) == (create, reason), decision.message
    if reason == Reason.COOLDOWN:
        assert "2026-03-02T12:30:00Z" in decision.message  # when the next may start


def job(name: str, phase: str = "Succeeded", **metrics: float) -> dict:
    return {"metadata": {"name": name}, "status": {"phase": phase, "metrics": metrics}}


@pytest.mark.parametrize("case, promotion, candidate, serving, approved, action, reason", [
    ("no retrained model: nothing to do", {}, None, job("lm", loss=2.0), None, "none", Reason.NO_CANDIDATE),
    ("automatic with no metric to compare promotes", {"mode": "automatic"}, job("lm-retrain-1"), job("lm"), None,
     "promote", Reason.PROMOTED),
    ("a lower validation loss promotes", {"mode": "automatic", "requireNoWorse": ["valLoss"]},
     job("lm-retrain-1", loss=1.5), job("lm", loss=2.0), None, "promote", Reason.PROMOTED),
    ("an equal validation loss is no worse", {"mode": "automatic", "requireNoWorse": ["valLoss"]},
     job("lm-retrain-1", loss=2.0), job("lm", loss=2.0), None, "promote", Reason.PROMOTED),
    ("a higher validation loss is refused", {"mode": "automatic", "requireNoWorse": ["valLoss"]},
     job("lm-retrain-1", loss=2.5), job("lm", loss=2.0), None, "refuse", Reason.WORSE_THAN_SERVING),
    ("worse perplexity is refused though the loss is better", {"mode": "automatic",
     "requireNoWorse": ["valLoss", "perplexity"]}, job("lm-retrain-1", loss=1.0, perplexity=9.0),
     job("lm", loss=2.0, perplexity=8.0), None, "refuse", Reason.WORSE_THAN_SERVING),
    ("a metric the new model lacks holds it", {"mode": "automatic", "requireNoWorse": ["valLoss"]},
     job("lm-retrain-1"), job("lm", loss=2.0), None, "hold", Reason.METRICS_MISSING),
    ("manual mode waits for the reviewer", {"mode": "manual"}, job("lm-retrain-1"), job("lm"), None,
     "hold", Reason.AWAITING_APPROVAL),
    ("approval of another job does not count", {"mode": "manual"}, job("lm-retrain-2"), job("lm"), "lm-retrain-1",
     "hold", Reason.AWAITING_APPROVAL),
    ("the reviewer's approval promotes", {"mode": "manual"}, job("lm-retrain-1"), job("lm"), "lm-retrain-1",
     "promote", Reason.PROMOTED),
    ("approval never overrides a worse model", {"mode": "manual", "requireNoWorse": ["valLoss"]},
     job("lm-retrain-1", loss=3.0), job("lm", loss=2.0), "lm-retrain-1", "refuse", Reason.WORSE_THAN_SERVING),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_decide_promotion(case, promotion, candidate, serving, approved, action, reason):
    decision = policy.decide_promotion(Promotion.model_validate(promotion), candidate, serving, approved)
    assert (decision.action, decision.reason) == (action, reason), decision.message


def test_the_promotion_patch_sets_the_served_training_job_and_what_it_replaced_when():
    assert policy.promotion_patch("lm-retrain-2", "lm", NOW) == {
        "metadata": {"annotations": {"strata.dev/promoted-at": "2026-03-02T12:00:00Z", "strata.dev/promoted-over": "lm"}},
        "spec": {"model": {"trainingJob": {"name": "lm-retrain-2"}}}}


def test_the_rollback_patch_serves_the_previous_model_and_marks_the_one_taken_out():
    patch = policy.rollback_patch("lm", "lm-retrain-2")
    assert patch["spec"] == {"model": {"trainingJob": {"name": "lm"}}}
    assert patch["metadata"]["annotations"] == {"strata.dev/promoted-at": None, "strata.dev/promoted-over": None,
                                                "strata.dev/rolled-back": "lm-retrain-2"}


def promoted(over: str | None) -> dict:
    annotations = {"strata.dev/promoted-at": "2026-03-02T11:00:00Z"}
    if over:
        annotations["strata.dev/promoted-over"] = over
    return {"metadata": {"annotations": annotations}}


@pytest.mark.parametrize("case, rollback_on_breach, target, results, to", [
    ("a monitor breached since the promotion rolls back", True, promoted("lm"),
     [reading("approval", BREACHED)], "lm"),
    ("monitors OK since the promotion keep the model", True, promoted("lm"),
     [reading("approval", OK), reading("toxicity", INSUFFICIENT_DATA)], None),
    ("without rollbackOnBreach a breach keeps the model", False, promoted("lm"), [reading("approval", BREACHED)], None),
    ("a model no policy promoted is never rolled back", True, {"metadata": {}}, [reading("approval", BREACHED)], None),
    ("a promotion with nothing before it has nothing to return to", True, promoted(None),
     [reading("approval", BREACHED)], None),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_decide_rollback(case, rollback_on_breach, target, results, to):
    promotion = Promotion.model_validate({"mode": "automatic", "rollbackOnBreach": rollback_on_breach})
    decision = policy.decide_rollback(promotion, target, "lm-retrain-2", results)
    assert (decision.training_job if decision else None) == to
    if decision:
        assert (decision.action, decision.reason) == ("rollback", Reason.ROLLED_BACK)
        assert decision.message.startswith("Rolled back from lm-retrain-2 to lm: breached since its promotion")


def test_monitors_since_a_promotion_count_only_the_feedback_given_after_it():
    spec = FeedbackPolicySpec.model_validate({"target": {"modelDeployment": "lm"}, "window": "1h",
                                              "monitors": {"approval": {"minRate": 0.8, "minSamples": 2}}})
    before = [{"rating": "down", "time": (NOW - dt.timedelta(minutes=30)).timestamp()} for _ in range(5)]
    after = [{"rating": "up", "time": (NOW - dt.timedelta(minutes=5)).timestamp()} for _ in range(3)]
    signals = policy.Signals(feedback=tuple(before + after), sources=1)
    assert policy.evaluate(spec, signals, NOW)[0].verdict == BREACHED
    since = policy.evaluate(spec, signals, NOW, since=NOW - dt.timedelta(minutes=10))[0]
    assert (since.verdict, since.samples, since.value) == (OK, 3, 1.0)


POLICY = {"metadata": {"name": "lm-loop", "namespace": "ml", "uid": "u-1"}}
TEMPLATE = {"apiVersion": "strata.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "lm"},
            "spec": {"dataset": {"name": "chats", "version": "v1"}, "model": {"family": "transformer"},
                     "checkpoints": {"storage": {"pvc": {"claimName": "ckpt", "path": "runs/lm"}}}}}


def test_a_retraining_copies_its_template_with_its_lineage_and_reason():
    manifest = policy.render_retraining_job(FEEDBACK_POLICY, POLICY, TEMPLATE, "lm-retrain-3", "approval breached")
    meta = manifest["metadata"]
    assert meta["annotations"][ANNOTATION_CREATED_BECAUSE] == "approval breached"
    assert meta["annotations"]["strata.dev/retrained-from"] == "lm"
    assert meta["ownerReferences"][0]["uid"] == "u-1" and meta["ownerReferences"][0]["controller"]
    spec = manifest["spec"]
    assert spec["checkpoints"]["storage"]["pvc"]["path"] == "runs/lm-retrain-3"  # not resumed from the template's
    assert "version" not in spec["dataset"]  # trains on the Dataset's current version
    assert TEMPLATE["spec"]["dataset"]["version"] == "v1"  # the template is not changed


@pytest.mark.parametrize("target, number, expected", [
    ("lm", 1, "lm-retrain-1"),
    ("a" * 60, 12, "a" * 41 + "-retrain-12"),  # 52 characters: a TrainingJob name's limit
])
def test_retraining_names_show_the_lineage(target, number, expected):
    name = policy.retraining_name(target, number)
    assert name == expected and len(name) <= 52
    assert policy.retraining_number(name, target) == number


def test_the_history_is_bounded_and_a_repeated_hold_is_one_record():
    history: list[dict] = []
    for n in range(30):
        history = policy.append_history(history, {"action": "Retrained", "reason": "RetrainingStarted",
                                                  "trainingJob": f"lm-retrain-{n}"})
        history = policy.append_history(history, {"action": "Held", "reason": "Cooldown"})
        history = policy.append_history(history, {"action": "Held", "reason": "Cooldown"})
    assert len(history) == policy.HISTORY_LIMIT and history[-1]["reason"] == "Cooldown"
    assert history[-2]["trainingJob"] == "lm-retrain-29"


def spec_of(**overrides) -> FeedbackPolicySpec:
    return FeedbackPolicySpec.model_validate({"target": {"modelDeployment": "lm"},
                                              "monitors": {"approval": {"minRate": 0.8}}, **overrides})


@pytest.mark.parametrize("case, spec, others, field", [
    ("an impossible minute names the trigger's schedule",
     spec_of(retrain={"triggers": [{"schedule": "99 * * * *"}], "template": {"fromTrainingJob": {"name": "lm"}}}),
     [], "spec.retrain.triggers[0].schedule"),
    ("a second policy on one deployment names the target",
     spec_of(), [{"metadata": {"name": "older", "creationTimestamp": "2026-01-01T00:00:00Z"},
                  "spec": {"target": {"modelDeployment": "lm"}}}], "spec.target.modelDeployment"),
    ("a newer policy on the same deployment does not bother the older", spec_of(),
     [{"metadata": {"name": "newer", "creationTimestamp": "2026-03-01T00:00:00Z"},
       "spec": {"target": {"modelDeployment": "lm"}}}], None),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_policy_problems_name_the_field(case, spec, others, field):
    problem = policy.policy_problem(spec, "mine", "2026-02-01T00:00:00Z", others)
    assert (problem.split(":")[0] if problem else None) == field


@pytest.mark.parametrize("expression, after, until, fires", [
    ("0 * * * *", "2026-03-02T11:55", "2026-03-02T12:00", "2026-03-02T12:00"),
    ("*/15 * * * *", "2026-03-02T11:46", "2026-03-02T11:59", None),
    ("@daily", "2026-03-01T23:00", "2026-03-02T01:00", "2026-03-02T00:00"),
    ("0 12 * * 1", "2026-03-02T11:00", "2026-03-02T12:00", "2026-03-02T12:00"),  # 2 March 2026 is a Monday
    ("0 12 * * 0", "2026-03-02T11:00", "2026-03-02T12:00", None),
    ("0 12 * * 7", "2026-03-01T11:00", "2026-03-01T12:00", "2026-03-01T12:00"),  # 7 is Sunday too
])
def test_cron_fires_within_the_interval(expression, after, until, fires):
    def at(text):
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc) if text else None
    assert cron.fired(expression, at(after), at(until)) == at(fires)


def test_monitors_are_evaluated_over_the_window():
    spec = spec_of(window="1h", monitors={"approval": {"minRate": 0.8, "minSamples": 10},
                                          "bias": {"groups": [{"field": "locale"}], "maxDisparity": 0.2,
                                                   "minSamples": 5}})
    now = NOW.timestamp()
    old = [{"rating": "up", "time": now - 7200, "attributes": {"locale": "de"}}] * 50
    recent = ([{"rating": "up", "time": now - 60, "attributes": {"locale": "en"}}] * 10
              + [{"rating": "down", "time": now - 60, "attributes": {"locale": "de"}}] * 10)
    results = {r.name: r for r in policy.evaluate(spec, policy.Signals(feedback=tuple(old + recent)), NOW)}
    assert (results["approval"].verdict, results["approval"].value, results["approval"].samples) == (BREACHED, 0.5, 20)
    assert (results["bias"].verdict, results["bias"].value) == (BREACHED, 1.0)


PENDING = {"dataset": "chats", "requestedAt": "2026-03-02T11:00:00Z", "reason": "approval breached"}


def dataset_status(**status) -> dict:
    return {"metadata": {"name": "chats"}, "status": status}


@pytest.mark.parametrize("case, dataset, outcome", [
    ("an earlier run that ended does not answer the request",
     dataset_status(phase="Succeeded", version="v1", refreshRequestedAt="2026-03-01T00:00:00Z"), None),
    ("the requested run still going is waited for",
     dataset_status(phase="Running", version="v1", refreshRequestedAt="2026-03-02T11:00:00Z"), None),
    ("the requested run published: train on its version",
     dataset_status(phase="Succeeded", version="v2", refreshRequestedAt="2026-03-02T11:00:00Z"),
     "Dataset chats refreshed; training on version v2."),
    ("a run answering a later request answers this one too",
     dataset_status(phase="Succeeded", version="v2", refreshRequestedAt="2026-03-02T11:00:01Z"),
     "Dataset chats refreshed; training on version v2."),
    ("the requested run failed: train on the version still current",
     dataset_status(phase="Failed", version="v1", refreshRequestedAt="2026-03-02T11:00:00Z"),
     "Dataset chats's refresh published no version; training on version v1."),
    ("a Dataset that cannot run is not waited for", dataset_status(phase="Invalid"),
     "Dataset chats cannot run its pipeline (see its status); training on no version yet."),
    ("a Dataset deleted meanwhile is not waited for", None, "Dataset chats is gone."),
], ids=lambda v: v if isinstance(v, str) and " " in v else "")
def test_refresh_outcome(case, dataset, outcome):
    assert policy.refresh_outcome(PENDING, dataset) == outcome


def test_only_a_template_that_trains_on_a_datasets_current_version_is_refreshed_for():
    assert policy.refreshable_dataset(TEMPLATE) is None  # pins v1
    unpinned = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "dataset": {"name": "chats"}}}
    assert policy.refreshable_dataset(unpinned) == "chats"
    assert policy.refreshable_dataset({"spec": {}}) is None


# ---- drift: the served model's training Dataset version as the reference ----

def _sketch(rows: int, long: bool = False):
    from strata_workloads.monitor.sketch import TokenSketch

    made = TokenSketch()
    for row in range(rows):
        made.add_rows([(row * 7 + i) % 300 for i in range(40 if long else 10 + row % 5)], [1, 10])
    return made


TRAINED = {"metadata": {"name": "lm"}, "spec": {"dataset": {"name": "chats"}}, "status": {"datasetVersion": "v2"}}


def _dataset(*history) -> dict:
    return {"metadata": {"name": "chats"}, "status": {"history": list(history)}}


@pytest.mark.parametrize("case, job, dataset, problem", [
    ("a model from a repository has no training Dataset", None, None, "serves no TrainingJob's model"),
    ("a job still starting has not recorded its version", {**TRAINED, "status": {}}, _dataset(),
     "has not recorded the Dataset version"),
    ("a deleted Dataset", TRAINED, None, "Dataset chats, which TrainingJob lm trained on, does not exist"),
    ("a version that aged out of the history", TRAINED, _dataset({"version": "v1", "reference": []}),
     "no longer in the Dataset's status.history"),
    ("a version made before sketches existed", TRAINED, _dataset({"version": "v2"}), "has no reference sketches"),
    ("the version's sketches are the reference", TRAINED,
     _dataset({"version": "v1"}, {"version": "v2", "reference": [{"column": "tokens", **_sketch(50).to_dict()}]}), None),
])
def test_drift_reference(case, job, dataset, problem):
    reference = policy.drift_reference(job, dataset)
    if problem is None:
        assert reference.problem is None and reference.sketches == {"tokens": _sketch(50)}
        assert reference.source == "Dataset chats version v2"
    else:
        assert problem in reference.problem and not reference.sketches


def _drift_signals(current, previous=None) -> policy.Signals:
    from strata_workloads.monitor.sketch import TokenSketch

    return policy.Signals(sources=1, sketches={"tokens": {"current": current, "previous": previous or TokenSketch()}})


@pytest.mark.parametrize("case, drift, signals, reference, verdict, says", [
    ("inputs like the training data", {}, _drift_signals(_sketch(200)),
     policy.DriftReference({"tokens": _sketch(2000)}, "Dataset chats version v2"), OK,
     "against Dataset chats version v2: no drift"),
    ("longer inputs than the training data", {}, _drift_signals(_sketch(200, long=True)),
     policy.DriftReference({"tokens": _sketch(2000)}, "Dataset chats version v2"), BREACHED, "tokens.length"),
    ("no reference says why", {}, _drift_signals(_sketch(200)),
     policy.DriftReference(problem="TrainingJob lm has not recorded the Dataset version it trained on yet"),
     INSUFFICIENT_DATA, "has not recorded"),
    ("the window before as the reference", {"reference": "previousWindow"},
     _drift_signals(_sketch(200, long=True), _sketch(200)), None, BREACHED, "against the 1h before"),
    ("no traffic in the window before", {"reference": "previousWindow"}, _drift_signals(_sketch(200)), None,
     INSUFFICIENT_DATA, "no sampled request in the window before"),
])
def test_the_drift_monitor(case, drift, signals, reference, verdict, says):
    spec = spec_of(window="1h", monitors={"drift": {"maxPSI": 0.2, "minSamples": 100, **drift}})
    (result,) = policy.evaluate(spec, signals, NOW, reference=reference)
    assert (result.name, result.verdict) == ("drift", verdict) and says in result.message, result.message


def _latent(rows: int, mean: float = 0.0, seed: int = 0):
    """A float input's value sketch: rows of 16 values of N(mean, 1)."""
    import numpy as np
    from strata_workloads.monitor.sketch import ValueSketch

    made = ValueSketch()
    made.add(np.random.default_rng(seed).normal(mean, 1, rows * 16), rows=rows)
    return made


def _float_signals(current, previous, tokens=None) -> policy.Signals:
    from strata_workloads.monitor.sketch import ValueSketch

    return policy.Signals(sources=1, sketches={"tokens": tokens} if tokens else {},
                          value_sketches={"latent": {"current": current, "previous": previous or ValueSketch()}})


TRAINING_TOKENS = policy.DriftReference({"tokens": _sketch(2000)}, "Dataset chats version v2")


@pytest.mark.parametrize("case, drift, signals, reference, verdict, says", [
    ("a float input like the window before's", {"reference": "previousWindow"},
     _float_signals(_latent(200, seed=1), _latent(200, seed=2)), None, OK, "against the 1h before: no drift"),
    ("a float input whose mean moved", {"reference": "previousWindow"},
     _float_signals(_latent(200, 1.0, seed=1), _latent(200, seed=2)), None, BREACHED, "drifted in 1h: latent (PSI"),
    ("a float-only model with no training Dataset is compared with the window before", {},
     _float_signals(_latent(200, 1.0, seed=1), _latent(200, seed=2)),
     policy.DriftReference(problem="the target serves no TrainingJob's model"), BREACHED, "against the 1h before"),
    ("tokens against the Dataset and floats against the window before, in one verdict", {},
     _float_signals(_latent(200, 1.0, seed=1), _latent(200, seed=2), {"current": _sketch(200)}), TRAINING_TOKENS,
     BREACHED, "against Dataset chats version v2 (tokens) and the 1h before (latent): drifted in 1h: latent"),
    ("a float input first seen in this window says it was not compared", {},
     _float_signals(_latent(200, seed=1), None, {"current": _sketch(200)}), TRAINING_TOKENS, OK,
     "not compared: the 1h before had no sampled request with the float inputs latent"),
    ("token inputs without a reference say so beside the floats' verdict", {},
     _float_signals(_latent(200, seed=1), _latent(200, seed=2), {"current": _sketch(200)}),
     policy.DriftReference(problem="TrainingJob lm has not recorded the Dataset version it trained on yet"), OK,
     "not compared: TrainingJob lm has not recorded"),
    ("too few rows of a float input for a verdict", {"reference": "previousWindow"},
     _float_signals(_latent(20, 1.0, seed=1), _latent(200, seed=2)), None, INSUFFICIENT_DATA, "100 needed"),
    ("no float input in either window and no reference", {},
     policy.Signals(sources=1), policy.DriftReference(problem="the target serves no TrainingJob's model"),
     INSUFFICIENT_DATA, "serves no TrainingJob's model"),
])
def test_the_drift_monitor_with_float_inputs(case, drift, signals, reference, verdict, says):
    spec = spec_of(window="1h", monitors={"drift": {"maxPSI": 0.2, "minSamples": 100, **drift}})
    (result,) = policy.evaluate(spec, signals, NOW, reference=reference)
    assert (result.name, result.verdict) == ("drift", verdict) and says in result.message, result.message


# ---- Prometheus as the source of approval and toxicity ----

def test_the_prometheus_selector_is_the_targets_pods_unless_the_spec_names_one():
    spec = spec_of(signals={"prometheus": {"url": "http://prometheus:9090"}})
    assert policy.prometheus_selector(spec, "ml") == 'namespace="ml",pod=~"lm-[a-z0-9]+-[a-z0-9]+"'
    spec = spec_of(signals={"prometheus": {"url": "http://prometheus:9090", "selector": 'service="lm"'}})
    assert policy.prometheus_selector(spec, "ml") == 'service="lm"'
    queries = policy.prometheus_queries('service="lm"', 3600)
    up = 'strata_sidecar_feedback_total{service="lm",rating="up"}[3600s]'
    assert queries["up"] == f"sum(max_over_time({up}) - min_over_time({up}))"
    bucket = 'strata_sidecar_toxicity_score_bucket{service="lm",le="0.5"}[3600s]'
    assert queries["flagged"].endswith(f"sum(max_over_time({bucket}) - min_over_time({bucket}))")


def test_a_selector_that_is_not_label_matchers_is_refused_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="selector"):
        spec_of(signals={"prometheus": {"url": "http://prometheus:9090", "selector": "up{job='x'}"}})


@pytest.mark.parametrize("case, response, value", [
    ("an empty vector: no series matched yet", {"status": "success", "data": {"resultType": "vector", "result": []}}, 0),
    ("a count", {"status": "success", "data": {"result": [{"value": [1, "20"]}]}}, 20),
])
def test_query_value(case, response, value):
    assert policy.query_value(response) == value


def test_a_refused_query_says_why():
    with pytest.raises(ValueError, match="parse error"):
        policy.query_value({"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected"})


def test_counts_from_prometheus_replace_the_records_for_approval_and_toxicity():
    spec = spec_of(window="1h", monitors={"approval": {"minRate": 0.8, "minSamples": 10},
                                          "toxicity": {"maxRate": 0.1, "minSamples": 10}})
    stale = tuple({"rating": "up", "time": NOW.timestamp() - 60} for _ in range(50))
    counts = policy.WindowCounts(up=3, down=17, scored=40, flagged=8, window="1h")
    results = {r.name: r for r in policy.evaluate(spec, policy.Signals(feedback=stale, toxicity_scored=100,
                                                                       counts=counts), NOW)}
    assert (results["approval"].verdict, results["approval"].value, results["approval"].samples) == (BREACHED, 0.15, 20)
    assert (results["toxicity"].verdict, results["toxicity"].value, results["toxicity"].window) == (BREACHED, 0.2, "1h")


# ---- the review queue ----

def _queued(request_id: str, at: float, score: float = 0.9) -> dict:
    return {"requestId": request_id, "time": at, "model": "lm", "key": "alice", "source": "toxicity", "score": score,
            "input": ["hi"], "output": ["you idiot [REDACTED:email]"]}


def _rated(request_id: str, rating: str, locale: str, at: float) -> dict:
    return {"requestId": request_id, "rating": rating, "time": at, "text": f"{rating} from {locale}",
            "attributes": {"locale": locale}}


def test_flagged_outputs_are_the_toxic_ones_and_the_worst_served_groups_down_ratings_while_bias_is_breached():
    now = NOW.timestamp()
    spec = spec_of(window="1h", monitors={"bias": {"groups": [{"field": "locale"}], "maxDisparity": 0.2,
                                                   "minSamples": 2}})
    feedback = (_rated("en-1", "up", "en", now - 30), _rated("en-2", "up", "en", now - 20),
                _rated("de-1", "down", "de", now - 10), _rated("de-2", "up", "de", now - 5),
                _rated("de-old", "down", "de", now - 7200))  # outside the window
    signals = policy.Signals(feedback=feedback, review=(_queued("r-1", now - 60), _queued("r-1", now - 60)))
    results = policy.evaluate(spec, signals, NOW)
    items = policy.flagged_outputs(signals, spec, results, NOW)
    assert [(item["source"], item["requestId"]) for item in items] == [("bias", "de-1"), ("toxicity", "r-1")]
    assert items[0]["group"] == "locale=de" and items[0]["excerpt"] == "down from de"
    assert items[1]["score"] == 0.9 and items[1]["excerpt"] == "you idiot [REDACTED:email]"
    assert items[1]["id"] == policy.review_id("toxicity", "r-1") != policy.review_id("bias", "r-1")
    # No bias breach, no bias items.
    calm = policy.Signals(feedback=feedback[:2], review=signals.review)
    assert [item["source"] for item in policy.flagged_outputs(calm, spec, policy.evaluate(spec, calm, NOW), NOW)] == ["toxicity"]


@pytest.mark.parametrize("case, annotations, open_ids, resolved, problem", [
    ("nothing resolved", {}, ["a", "b", "c"], 0, None),
    ("a verdict resolves its item", {"review.strata.dev/b": "reject"}, ["a", "c"], 1, None),
    ("other annotations are not verdicts", {"strata.dev/approve-promotion": "x"}, ["a", "b", "c"], 0, None),
    ("a value that is no verdict is reported and resolves nothing", {"review.strata.dev/a": "maybe"},
     ["a", "b", "c"], 0, "review.strata.dev/a='maybe': the value must be one of approve, reject"),
    ("a verdict on an id no one flagged is reported", {"review.strata.dev/zzz": "approve"}, ["a", "b", "c"], 0,
     "review.strata.dev/zzz: no flagged output has this id"),
])
def test_review_state(case, annotations, open_ids, resolved, problem):
    candidates = [{"id": item_id, "source": "toxicity", "requestId": item_id, "time": "2026-03-02T11:00:00Z",
                   "excerpt": ""} for item_id in ("a", "b", "c")]
    state = policy.review_state(candidates, annotations)
    assert [item["id"] for item in state["items"]] == open_ids
    assert (state["open"], state["resolved"]) == (len(open_ids), resolved)
    assert (problem is None) == ("problems" not in state)
    if problem:
        assert state["problems"][0].startswith(problem)


def test_the_review_listing_shows_at_most_twenty_items_but_counts_all():
    candidates = [{"id": f"i{n:02d}", "source": "toxicity", "requestId": f"r{n}", "time": "t", "excerpt": ""}
                  for n in range(30)]
    state = policy.review_state(candidates, {})
    assert (state["open"], len(state["items"])) == (30, 20)


def test_review_cli_table_and_patch():
    from strata.review import ReviewError, resolution_patch, review_table

    body = {"metadata": {"name": "assistant"}, "status": {"review": {"open": 2, "resolved": 1, "items": [
        {"id": "3f2a9c1d0b7e", "source": "toxicity", "requestId": "r-1", "time": "2026-03-02T11:00:00Z",
         "score": 0.93, "excerpt": "you idiot"},
        {"id": "77ab01cd23ef", "source": "bias", "requestId": "r-2", "time": "2026-03-02T10:59:00Z",
         "group": "locale=de", "excerpt": "wrong answer"}]}}}
    table = review_table(body).splitlines()
    assert table[0].split() == ["ID", "SOURCE", "TIME", "SCORE/GROUP", "EXCERPT"]
    assert table[1].split()[:4] == ["3f2a9c1d0b7e", "toxicity", "2026-03-02T11:00:00Z", "0.93"]
    assert "locale=de" in table[2] and table[-1] == "2 open (2 shown), 1 resolved"
    assert resolution_patch(body, "77ab01cd23ef", "reject") == {
        "metadata": {"annotations": {"review.strata.dev/77ab01cd23ef": "reject"}}}
    with pytest.raises(ReviewError, match="lists no open item 'nope'"):
        resolution_patch(body, "nope", "approve")
    with pytest.raises(ReviewError, match="use one of approve, reject"):
        resolution_patch(body, "77ab01cd23ef", "maybe")
    assert "no review queue yet" in review_table({"metadata": {"name": "assistant"}})
    assert review_table({"metadata": {"name": "assistant"}, "status": {"review": {"open": 0, "resolved": 2}}}) == (
        "No flagged output of FeedbackPolicy assistant waits for review (2 resolved).")


def test_with_prometheus_unreadable_sidecars_cost_only_bias_and_drift():
    spec = spec_of(window="1h", monitors={"approval": {"minRate": 0.8, "minSamples": 10},
                                          "bias": {"groups": [{"field": "locale"}], "maxDisparity": 0.2},
                                          "drift": {"reference": "previousWindow"}})
    signals = policy.Signals(counts=policy.WindowCounts(up=3, down=17, scored=0, flagged=0, window="1h"),
                             sidecar_error="no running pod of the target serves yet")
    results = {r.name: r for r in policy.evaluate(spec, signals, NOW)}
    assert results["approval"].verdict == BREACHED
    for name in ("bias", "drift"):
        assert (results[name].verdict, results[name].message) == (
            INSUFFICIENT_DATA, "the sidecars were not read: no running pod of the target serves yet")


# --- feedback folded into a Dataset refresh (refreshDataset.includeFeedback) --------------------

def _rating(request_id, rating, time, **extra):
    return {"requestId": request_id, "rating": rating, "time": time, **extra}


FEEDBACK = (_rating("r1", "up", 10), _rating("r2", "up", 30), _rating("r3", "down", 20), _rating("r4", "up", 40),
            _rating("r5", "down", 50), _rating("r6", "up", 60))
EXCHANGES = {"r1": {"input": ["where is my parcel"], "output": ["it ships today"]},
             "r2": {"input": ["refund?"], "output": ["within 14 days"]},
             "r5": {"input": ["hola"], "output": ["hello"]},
             "r6": {"input": ["rude?"], "output": ["you idiot"]}}
FLAGGED = ({"requestId": "t1", "time": 70, "input": ["say it"], "output": ["awful words"]},
           {"requestId": "r6", "time": 60, "input": ["rude?"], "output": ["you idiot"]})
VERDICTS = {f"review.strata.dev/{policy.review_id('toxicity', 't1')}": "approve",
            f"review.strata.dev/{policy.review_id('toxicity', 'r6')}": "reject",
            f"review.strata.dev/{policy.review_id('bias', 'r5')}": "approve"}


def _samples(annotations=VERDICTS, max_bytes=policy.FEEDBACK_SAMPLES_MAX_BYTES):
    text, counts = policy.feedback_samples(FEEDBACK, EXCHANGES, FLAGGED, annotations, "body", max_bytes)
    return [json.loads(line) for line in text.splitlines()], counts


def test_samples_are_approved_reviews_then_answers_rated_up_newest_first_without_rejected_or_textless_ones():
    lines, counts = _samples()
    # t1: flagged toxic, approved by a person; r5: rated down, approved in a bias review; r2,
    # r1: rated up; r6: rated up but rejected in review; r4: rated up, no text kept.
    assert [(line["requestId"], line["strataSource"]) for line in lines] == [
        ("t1", "review"), ("r5", "review"), ("r2", "feedback"), ("r1", "feedback")]
    assert lines[0]["body"] == "say it\nawful words"  # the Dataset's text field: input, then output
    assert counts == {"samples": 4, "fromFeedback": 2, "fromReview": 2, "withoutText": 1, "rejected": 1, "cut": 0}
    assert "4 feedback samples (2 approved in review); 1 answer had no text" in policy.describe_samples(counts)


def test_without_verdicts_only_answers_rated_up_with_text_are_samples():
    lines, counts = _samples(annotations={})
    assert [line["requestId"] for line in lines] == ["r6", "r2", "r1"]
    assert counts["fromReview"] == 0 and counts["withoutText"] == 1
    assert policy.exchanges_wanted(FEEDBACK, {}) == ["r6", "r4", "r2", "r1"]
    assert policy.exchanges_wanted(FEEDBACK, VERDICTS)[:2] == ["r6", "r5"]  # a bias approval needs its text


def test_samples_stop_at_the_size_a_config_map_holds():
    lines, counts = _samples(max_bytes=120)
    assert len(lines) == 1 and counts["cut"] == 3


def test_the_samples_config_map_is_the_policys_and_says_what_it_holds():
    owner = {"apiVersion": "strata.dev/v1alpha1", "kind": "FeedbackPolicy",
             "metadata": {"name": "lm-loop", "namespace": "ns", "uid": "u1"}}
    config_map = policy.render_feedback_samples(FEEDBACK_POLICY, owner, '{"text": "x"}\n', {"samples": 1})
    assert config_map["metadata"]["name"] == "lm-loop-feedback-samples"
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert config_map["data"] == {"samples.jsonl": '{"text": "x"}\n'}
    assert json.loads(config_map["metadata"]["annotations"][policy.ANNOTATION_FEEDBACK_SUMMARY]) == {"samples": 1}
    assert "spec.retrain.refreshDataset.includeFeedback" not in policy.unimplemented_fields(FeedbackPolicySpec.model_validate({
        "target": {"modelDeployment": "lm"}, "monitors": {"approval": {"minRate": 0.5}},
        "retrain": {"triggers": [{"monitorBreached": "any"}], "refreshDataset": {"includeFeedback": True},
                    "template": {"fromTrainingJob": {"name": "lm"}}}}))
