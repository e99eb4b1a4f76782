"""FeedbackPolicy controller: monitors a ModelDeployment, retrains it, promotes the result.

resolve: the target ModelDeployment and the TrainingJob it serves, the retraining template,
the policy's own retraining TrainingJobs, the namespace's other policies (one per target),
and, when the evaluation interval has passed, the signals of the target's sidecars
(feedback_signals.py) and the embedding drift test's state (embedding_tests.py). Then the
pure decisions (render/feedback_policy.py): monitors, retrain or hold, promote or hold.
render: the config ConfigMap, the kept retraining TrainingJobs and a new one when due; the
promotion is a merge patch of the ModelDeployment's spec.model.trainingJob.name only.
observe: monitors, breached, retrainings, history, serving and the Retraining and Promotion
conditions, built fresh each pass.

A periodic pass (STRATA_FEEDBACK_EVALUATION_SECONDS, default 30 s) re-runs it; the monitors
are read when spec.evaluationInterval has passed since status.lastEvaluation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from strata import k8s
from strata.api import DATASET, FEEDBACK_POLICY, MODEL_DEPLOYMENT, TRAINING_JOB, KindInfo
from strata.api.feedback import FeedbackPolicySpec
from strata.constants import (
    ANNOTATION_APPROVE_PROMOTION,
    ANNOTATION_CREATED_BECAUSE,
    ANNOTATION_FEEDBACK_SAMPLES,
    ANNOTATION_REFRESH_REQUESTED,
    API_VERSION,
    ConditionStatus,
    ConditionType,
    Phase,
    Reason,
)
from strata.controllers.reconcile import (
    Inputs,
    Outcome,
    is_controlled_by,
    missing_reference_outcome,
    resolve_references,
)
from strata.controllers.embedding_tests import plan_embedding_test
from strata.controllers.feedback_signals import drift_reference, feedback_for_refresh, read_all_signals, read_prometheus
from strata.controllers.registration import RESYNC_SECONDS, register_kind, watch_children
from strata.metrics import set_monitor_series, set_review_series
from strata.render import feedback_policy as policy
from strata.render.common import owner_labels
from strata.render.config import render_config_map
from strata_workloads.data.result import FEEDBACK_SAMPLES_FILE
from strata_workloads.monitor.result import BREACHED, MonitorResult

EVALUATION_SECONDS = float(os.environ.get("STRATA_FEEDBACK_EVALUATION_SECONDS", "30"))

CHILD_KINDS = (("v1", "ConfigMap"), (API_VERSION, "TrainingJob"), ("batch/v1", "Job"))


@dataclass(frozen=True)
class PolicyInputs(Inputs):
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    previous: dict[str, Any] = field(default_factory=dict)
    problem: tuple[str, str] | None = None  # (reason, message)
    target: dict[str, Any] | None = None
    serving_name: str | None = None
    retrainings: tuple[dict[str, Any], ...] = ()
    results: tuple[MonitorResult, ...] = ()
    evaluated_at: str | None = None
    signals_error: str | None = None
    retrain: policy.RetrainDecision | None = None
    new_job: dict[str, Any] | None = None
    promotion: policy.PromotionDecision | None = None
    history: tuple[dict[str, Any], ...] = ()
    last_retrain: dict[str, Any] | None = None
    retrain_count: int = 0
    # A Dataset refresh a triggered retraining waits for (status.datasetRefresh), and whether
    # this pass requests it (render annotates the Dataset).
    refresh: dict[str, Any] | None = None
    request_refresh: bool = False
    # refreshDataset.includeFeedback: the samples this pass folds in (JSON lines, counts), and the
    # ConfigMap that holds the last ones (kept as it is between refreshes).
    samples: tuple[str, dict[str, int]] | None = None
    samples_live: dict[str, Any] | None = None
    review: dict[str, Any] | None = None  # status.review
    # spec.monitors.drift.embedding: status.embeddingTest, and the tests' children (kept and new).
    embedding_state: dict[str, Any] | None = None
    embedding_children: tuple[dict[str, Any], ...] = ()


# ---------------------------------------------------------------------------------------
# what status carries over from pass to pass
# ---------------------------------------------------------------------------------------

def review_queue(spec: FeedbackPolicySpec, annotations: dict[str, str], signals: policy.Signals | None,
                 results: list[MonitorResult], previous: dict[str, Any] | None, now: dt.datetime) -> dict[str, Any] | None:
    """status.review: rebuilt from the sidecars when they were read this pass; otherwise the
    previous listing less what a person resolved since."""
    if signals is not None and signals.error is None and signals.sidecar_error is None:
        return policy.review_state(policy.flagged_outputs(signals, spec, results, now), annotations)
    if not previous:
        return None
    listed = previous.get("items") or []
    carried = policy.review_state(listed, annotations)
    newly = len(listed) - len(carried["items"])
    state = {**carried, "open": max(0, previous.get("open", 0) - newly), "resolved": previous.get("resolved", 0) + newly}
    # Ids resolved before this listing are not in it: the last full reading's problems stand.
    state.pop("problems", None)
    if previous.get("problems"):
        state["problems"] = previous["problems"]
    return state


def results_from_status(previous: dict[str, Any]) -> tuple[MonitorResult, ...]:
    return tuple(MonitorResult(r["name"], r.get("value"), r.get("verdict", "InsufficientData"), r.get("samples", 0),
                               r.get("window") or "", r.get("message") or "")
                 for r in previous.get("monitors") or [])


def recorded_retraining(inputs: PolicyInputs, retrainings: tuple[dict[str, Any], ...], target: str) -> dict[str, Any]:
    """lastRetrain, retrainCount and history as status has them, completed from the newest
    retraining TrainingJob itself when status missed it (a pass whose status write lost to a
    newer version of the policy): the job carries its reason and its creation time."""
    numbered = [(policy.retraining_number(job["metadata"]["name"], target) or 0, job) for job in retrainings]
    if not numbered:
        return {}
    number, newest = max(numbered, key=lambda pair: pair[0])
    name = newest["metadata"]["name"]
    if number <= inputs.retrain_count and (inputs.last_retrain or {}).get("trainingJob") == name:
        return {}
    reason = ((newest["metadata"].get("annotations") or {}).get(ANNOTATION_CREATED_BECAUSE) or "")[:1024]
    at = newest["metadata"].get("creationTimestamp") or policy.format_time(inputs.now)
    history = list(inputs.history)
    if not any(entry.get("trainingJob") == name and entry.get("action") == "Retrained" for entry in history):
        history = [entry for entry in history if (entry.get("at") or "") < at]
        history = policy.append_history(history, {"at": at, "action": "Retrained", "reason": Reason.RETRAINING_STARTED,
                                                  "message": reason, "trainingJob": name})
    return {"last_retrain": {"trainingJob": name, "reason": reason, "at": at},
            "retrain_count": max(number, inputs.retrain_count), "history": tuple(history)}


# ---------------------------------------------------------------------------------------
# resolve: reads, then the pure decisions
# ---------------------------------------------------------------------------------------

def resolve(info: KindInfo, body: dict[str, Any], spec: FeedbackPolicySpec) -> PolicyInputs:
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    base = resolve_references(info, body, spec)
    previous = body.get("status") or {}
    # Not rounded down to the second: the monitors' window ends now, and a rating given in the
    # current second would fall after a rounded end and go uncounted (status rounds when it shows).
    now = dt.datetime.now(dt.timezone.utc)
    inputs = PolicyInputs(namespace=namespace, missing=base.missing, now=now, previous=previous,
                          history=tuple(previous.get("history") or []), last_retrain=previous.get("lastRetrain"),
                          retrain_count=previous.get("retrainCount") or 0)
    others = k8s.list_objects(FEEDBACK_POLICY, namespace)
    problem = policy.policy_problem(spec, name, meta.get("creationTimestamp") or "", others)
    retrainings = tuple(job for job in k8s.list_children(API_VERSION, "TrainingJob", namespace, owner_labels(info, name))
                        if is_controlled_by(job, meta["uid"]))
    inputs = replace(inputs, retrainings=retrainings, **recorded_retraining(inputs, retrainings,
                                                                            spec.target.model_deployment))
    samples_name = policy.feedback_samples_name(name)
    inputs = replace(inputs, samples_live=next(
        (cm for cm in k8s.list_children("v1", "ConfigMap", namespace, owner_labels(info, name))
         if cm["metadata"]["name"] == samples_name and is_controlled_by(cm, meta["uid"])), None))
    if problem:
        reason = Reason.POLICY_CONFLICT if problem.startswith("spec.target") else Reason.INVALID_SPEC
        return replace(inputs, problem=(reason, problem))
    if base.missing:
        return inputs

    target = k8s.list_objects(MODEL_DEPLOYMENT, namespace, spec.target.model_deployment)[0]
    serving_name = (((target.get("spec") or {}).get("model") or {}).get("trainingJob") or {}).get("name")
    inputs = replace(inputs, target=target, serving_name=serving_name)

    # The monitors, read when the evaluation interval has passed; the last reading otherwise.
    last = policy.parse_time(previous.get("lastEvaluation"))
    signals: policy.Signals | None = None
    evaluating = last is None or (now - last).total_seconds() >= policy.duration_seconds(spec.evaluation_interval)
    embedding_state, embedding_children, embedding_comparison = plan_embedding_test(
        info, body, spec, serving_name, evaluating, now)
    inputs = replace(inputs, embedding_state=embedding_state, embedding_children=tuple(embedding_children))
    if evaluating:
        signals = read_all_signals(spec, namespace)
        reference = drift_reference(spec, namespace, serving_name) if signals.error is None else None
        results = (tuple(policy.evaluate(spec, signals, now, reference=reference, embedding=embedding_comparison))
                   if signals.error is None else ())
        inputs = replace(inputs, results=results, evaluated_at=policy.format_time(now), signals_error=signals.error)
    else:
        inputs = replace(inputs, results=results_from_status(previous), evaluated_at=previous.get("lastEvaluation"))
    if spec.review.queue_flagged:
        inputs = replace(inputs, review=review_queue(spec, meta.get("annotations") or {}, signals,
                                                     list(inputs.results), previous.get("review"), now))
    if spec.retrain is None:
        return inputs

    # Retraining. The latest start is the later of what status recorded and the newest
    # retraining's creation, so a pass that read an older status cannot start a second one.
    created = [policy.parse_time(job["metadata"].get("creationTimestamp")) for job in retrainings]
    recorded = policy.parse_time((inputs.last_retrain or {}).get("at"))
    last_start = max([moment for moment in [*created, recorded] if moment is not None], default=None)
    schedule_from = (policy.parse_time(previous.get("lastScheduleCheck"))
                     or policy.parse_time(meta.get("creationTimestamp")) or now)
    active = sum(policy.is_active(job) for job in retrainings)
    decision = policy.decide_retrain(spec.retrain, list(inputs.results), active, last_start, schedule_from, now)
    template_name = spec.retrain.template.from_training_job.name
    pending = previous.get("datasetRefresh")
    if pending:
        # A retraining was triggered and waits for its Dataset's refresh: created once it ran.
        datasets = k8s.list_objects(DATASET, namespace, pending["dataset"])
        ended = policy.refresh_outcome(pending, datasets[0] if datasets else None)
        if ended is None:
            decision = policy.RetrainDecision(
                False, Reason.REFRESHING_DATASET,
                f"Waiting for Dataset {pending['dataset']} to run the refresh requested at {pending['requestedAt']}, "
                f"then retraining. {pending.get('reason', '')}")
            inputs = replace(inputs, refresh=pending)
        else:
            decision = policy.RetrainDecision(True, Reason.RETRAINING_STARTED, f"{pending.get('reason', '')} {ended}")
    elif decision.create and spec.retrain.refresh_dataset is not None:
        dataset = policy.refreshable_dataset(k8s.list_objects(TRAINING_JOB, namespace, template_name)[0])
        datasets = k8s.list_objects(DATASET, namespace, dataset) if dataset else []
        if datasets:
            # A request made since the last retraining (by a pass whose status write was lost,
            # or by a person) is waited for rather than repeated.
            made = ((datasets[0]["metadata"].get("annotations") or {}).get(ANNOTATION_REFRESH_REQUESTED) or "")
            recent = made if made > (policy.format_time(last_start) if last_start else "") else None
            pending = {"dataset": dataset, "requestedAt": recent or policy.format_time(now),
                       "reason": decision.message[:900]}
            samples = None
            if recent is None and spec.retrain.refresh_dataset.include_feedback:
                samples = feedback_for_refresh(spec, namespace, meta.get("annotations") or {}, datasets[0])
            decision = policy.RetrainDecision(
                False, Reason.REFRESHING_DATASET,
                f"Requested a refresh of Dataset {dataset} (spec.retrain.refreshDataset"
                f"{f', with {policy.describe_samples(samples[1])}' if samples else ''}); the retraining starts once "
                f"it ran. {decision.message}")
            inputs = replace(inputs, refresh=pending, request_refresh=recent is None, samples=samples)
    inputs = replace(inputs, retrain=decision)
    if decision.create:
        numbers = [policy.retraining_number(job["metadata"]["name"], spec.target.model_deployment) or 0
                   for job in retrainings]
        number = max([inputs.retrain_count, *numbers]) + 1
        job_name = policy.retraining_name(spec.target.model_deployment, number)
        template = k8s.list_objects(TRAINING_JOB, namespace, template_name)[0]
        new_job = policy.render_retraining_job(info, body, template, job_name, decision.message)
        at = policy.format_time(now)
        inputs = replace(
            inputs, new_job=new_job, retrain_count=number,
            last_retrain={"trainingJob": job_name, "reason": decision.message[:1024], "at": at},
            history=tuple(policy.append_history(list(inputs.history), {
                "at": at, "action": "Retrained", "reason": decision.reason, "message": decision.message[:1024],
                "trainingJob": job_name})))
    elif decision.reason in (Reason.COOLDOWN, Reason.CONCURRENCY_LIMIT, Reason.INSUFFICIENT_SAMPLES):
        inputs = replace(inputs, history=tuple(policy.append_history(list(inputs.history), {
            "at": policy.format_time(now), "action": "Held", "reason": decision.reason,
            "message": decision.message[:1024]})))

    # A promoted model that breaches a monitor on its own feedback goes back out of service.
    # Drift is about the inputs, not the model: the previous model would see the same traffic,
    # so drift never rolls a promotion back.
    promoted_at = policy.promoted_at(target)
    if signals is not None and signals.error is None and promoted_at is not None:
        since_promotion = signals
        if spec.signals.prometheus is not None:
            counts, error = read_prometheus(spec, namespace, (now - promoted_at).total_seconds(),
                                            f"since {policy.format_time(promoted_at)}")
            since_promotion = replace(signals, counts=counts) if error is None else None
        own = ([result for result in policy.evaluate(spec, since_promotion, now, since=promoted_at)
                if result.name != "drift"] if since_promotion is not None else [])
        rollback = policy.decide_rollback(spec.promotion, target, serving_name, own)
        if rollback is not None:
            return replace(inputs, promotion=rollback, history=tuple(policy.append_history(list(inputs.history), {
                "at": policy.format_time(now), "action": "RolledBack", "reason": rollback.reason,
                "message": rollback.message[:1024], "trainingJob": serving_name})))

    # Promotion of the newest retraining that succeeded, unless it is served, was refused or
    # was rolled back.
    succeeded = sorted((job for job in retrainings if (job.get("status") or {}).get("phase") == "Succeeded"),
                       key=lambda job: policy.retraining_number(job["metadata"]["name"],
                                                                spec.target.model_deployment) or 0)
    candidate = succeeded[-1] if succeeded else None
    settled = previous.get("promotion") or {}
    if candidate is not None and (candidate["metadata"]["name"] in (serving_name, policy.rolled_back(target)) or (
            settled.get("trainingJob") == candidate["metadata"]["name"] and settled.get("state") == "Refused")):
        candidate = None
    if candidate is not None and serving_name is None:
        promotion = policy.PromotionDecision(
            "hold", Reason.NOT_PROMOTABLE,
            f'ModelDeployment "{spec.target.model_deployment}" serves a model from spec.model.repository; promotion '
            f"sets spec.model.trainingJob.name, so serve the model from its TrainingJob to have retrained models "
            f"promoted.", candidate["metadata"]["name"])
    else:
        serving = k8s.list_objects(TRAINING_JOB, namespace, serving_name) if serving_name and candidate else []
        approved = (meta.get("annotations") or {}).get(ANNOTATION_APPROVE_PROMOTION)
        promotion = policy.decide_promotion(spec.promotion, candidate, serving[0] if serving else None, approved)
    return replace(inputs, promotion=promotion)


# ---------------------------------------------------------------------------------------
# render: children, and the one patch of the ModelDeployment
# ---------------------------------------------------------------------------------------

def render(info: KindInfo, body: dict[str, Any], spec: FeedbackPolicySpec, inputs: PolicyInputs) -> list[dict[str, Any]]:
    children = [render_config_map(info, body, spec)]
    promotion = inputs.promotion
    if promotion is not None and promotion.action in ("promote", "rollback"):
        patch = (policy.promotion_patch(promotion.training_job, inputs.serving_name, inputs.now)
                 if promotion.action == "promote" else policy.rollback_patch(promotion.training_job, inputs.serving_name))
        k8s.merge_patch_object(API_VERSION, MODEL_DEPLOYMENT.kind, inputs.namespace, spec.target.model_deployment,
                               patch)
        what = f"Set ModelDeployment {spec.target.model_deployment} spec.model.trainingJob.name to " \
               f"{promotion.training_job} (was {inputs.serving_name})"
        if promotion.action == "promote":
            k8s.post_event(body, "Normal", Reason.PROMOTED, what)
        else:
            k8s.post_event(body, "Warning", Reason.ROLLED_BACK, f"{what}. {promotion.message}")
    samples = None
    if inputs.samples is not None:
        samples = policy.render_feedback_samples(info, body, *inputs.samples)
    elif inputs.samples_live is not None:
        # Between refreshes the last samples stay as they are (a Dataset's later runs read them).
        live = inputs.samples_live["metadata"]
        samples = policy.render_feedback_samples(
            info, body, (inputs.samples_live.get("data") or {}).get(FEEDBACK_SAMPLES_FILE, ""),
            json.loads((live.get("annotations") or {}).get(policy.ANNOTATION_FEEDBACK_SUMMARY) or "{}"))
    if samples is not None:
        children.append(samples)
    if inputs.request_refresh and inputs.refresh is not None:
        annotations = {ANNOTATION_REFRESH_REQUESTED: inputs.refresh["requestedAt"]}
        words = "a new version before retraining"
        if inputs.samples is not None:
            # In place before the Dataset is asked: its run must find them.
            k8s.apply(samples)
            annotations[ANNOTATION_FEEDBACK_SAMPLES] = samples["metadata"]["name"]
            words += f", with {policy.describe_samples(inputs.samples[1])} (ConfigMap {samples['metadata']['name']})"
        k8s.merge_patch_object(API_VERSION, DATASET.kind, inputs.namespace, inputs.refresh["dataset"],
                               {"metadata": {"annotations": annotations}})
        k8s.post_event(body, "Normal", Reason.REFRESHING_DATASET,
                       f"Set Dataset {inputs.refresh['dataset']} {ANNOTATION_REFRESH_REQUESTED}="
                       f"{inputs.refresh['requestedAt']}: {words}")
    _announce_changes(body, inputs)
    # The latest readings (fresh, or kept in status between evaluations) as metrics.
    set_monitor_series(inputs.namespace, body["metadata"]["name"], spec.target.model_deployment,
                       [(r.name, r.value, r.verdict, r.samples) for r in inputs.results])
    set_review_series(inputs.namespace, body["metadata"]["name"], spec.target.model_deployment,
                      inputs.review["open"] if inputs.review is not None else None)
    # Kept as they are: a retraining is created once (its policy says so), never updated, and
    # never deleted by the operator (the chart grants no delete on users' kinds): the garbage
    # collector removes them with their policy.
    children += [{**job, "metadata": {key: value for key, value in job["metadata"].items()
                                      if key in ("name", "namespace", "labels", "annotations", "ownerReferences")}}
                 for job in inputs.retrainings]
    if inputs.new_job is not None:
        children.append(inputs.new_job)
    return children + list(inputs.embedding_children)


def _announce_changes(body: dict[str, Any], inputs: PolicyInputs) -> None:
    """An event when a hold starts or the promotion's state changes (not on every pass)."""
    conditions = {c["type"]: c for c in (inputs.previous.get("conditions") or [])}
    retrain = inputs.retrain
    if retrain is not None and not retrain.create and retrain.reason in (
            Reason.COOLDOWN, Reason.CONCURRENCY_LIMIT, Reason.INSUFFICIENT_SAMPLES):
        if (conditions.get(ConditionType.RETRAINING) or {}).get("reason") != retrain.reason:
            k8s.post_event(body, "Normal", retrain.reason, retrain.message[:1024])
    promotion = inputs.promotion
    if promotion is not None and promotion.action in ("hold", "refuse"):
        if (conditions.get(ConditionType.PROMOTION) or {}).get("reason") != promotion.reason:
            k8s.post_event(body, "Warning" if promotion.action == "refuse" else "Normal", promotion.reason,
                           promotion.message[:1024])


# ---------------------------------------------------------------------------------------
# observe: pure
# ---------------------------------------------------------------------------------------

def observe(info: KindInfo, spec: FeedbackPolicySpec, inputs: PolicyInputs, children: list[dict[str, Any]]) -> Outcome:
    false, true = ConditionStatus.FALSE, ConditionStatus.TRUE
    status: dict[str, Any] = {}
    config_maps = [c["metadata"]["name"] for c in children if c["kind"] == "ConfigMap"]
    if config_maps:
        status["configMap"] = config_maps[0]
    if inputs.retrain_count:
        status["retrainCount"] = inputs.retrain_count
    if inputs.last_retrain:
        status["lastRetrain"] = inputs.last_retrain
    if inputs.history:
        status["history"] = list(inputs.history)
    if inputs.refresh:
        status["datasetRefresh"] = inputs.refresh
    if spec.retrain is not None and any(trigger.schedule for trigger in spec.retrain.triggers):
        status["lastScheduleCheck"] = policy.format_time(inputs.now)

    if inputs.problem is not None:
        reason, message = inputs.problem
        return Outcome(Phase.INVALID, (false, reason, message), (false, reason, "Waiting for a valid spec."),
                       (true, reason, message), extra_status=status)
    if inputs.missing:
        outcome = missing_reference_outcome(inputs.missing, inputs.namespace)
        outcome.extra_status.update(status)
        return outcome

    promotion = inputs.promotion
    serving = (promotion.training_job if promotion is not None and promotion.action in ("promote", "rollback")
               else inputs.serving_name)
    if serving:
        status["serving"] = serving
    if inputs.evaluated_at:
        status["lastEvaluation"] = inputs.evaluated_at
    if inputs.review is not None:
        status["review"] = inputs.review
    if inputs.embedding_state is not None:
        status["embeddingTest"] = inputs.embedding_state
    results = list(inputs.results)
    if results:
        status["monitors"] = [policy.monitor_status(result) for result in results]
    breached = [result.name for result in results if result.verdict == BREACHED]
    if results:
        # Unset until the monitors are read: "0 breached" before then would claim a verdict.
        status["breached"] = len(breached)
    if breached:
        status["breachedMonitors"] = ",".join(breached)

    conditions: dict[str, tuple[str, str, str]] = {}
    retrain = inputs.retrain
    running = [job["metadata"]["name"] for job in children
               if job["kind"] == "TrainingJob" and policy.is_active(job)]
    if spec.retrain is None:
        conditions[ConditionType.RETRAINING] = (false, Reason.RETRAINING_DISABLED,
                                                "spec.retrain is unset: this policy monitors only.")
    elif retrain is not None:
        state = true if retrain.create or running or inputs.refresh else false
        message = retrain.message
        if running and not retrain.create:
            message = f"Running: {', '.join(running)}. {message}"
        conditions[ConditionType.RETRAINING] = (state, retrain.reason, message[:4096])
    if promotion is not None:
        state = true if promotion.action == "promote" else false
        conditions[ConditionType.PROMOTION] = (state, promotion.reason, promotion.message[:4096])
        if promotion.action == "promote":
            status["promotion"] = {"trainingJob": promotion.training_job, "message": promotion.message[:1024],
                                   "state": "Promoted", "at": policy.format_time(inputs.now)}
            if inputs.serving_name:
                status["promotion"]["previous"] = inputs.serving_name
        elif promotion.action == "rollback":
            status["promotion"] = {"trainingJob": promotion.training_job, "message": promotion.message[:1024],
                                   "state": "RolledBack", "at": policy.format_time(inputs.now),
                                   "rolledBack": inputs.serving_name}
        elif promotion.training_job and promotion.action != "none":
            status["promotion"] = {"trainingJob": promotion.training_job, "message": promotion.message[:1024],
                                   "state": {"refuse": "Refused"}.get(promotion.action, "AwaitingApproval")}
        elif inputs.previous.get("promotion"):
            status["promotion"] = inputs.previous["promotion"]

    unimplemented = policy.unimplemented_fields(spec)
    note = (f" Not acted on in this version: {', '.join(unimplemented)}." if unimplemented else "")
    if inputs.signals_error is not None:
        message = f"Cannot read the monitors' signals: {inputs.signals_error}."
        return Outcome(Phase.MONITORING, (false, Reason.SIGNALS_UNAVAILABLE, message),
                       (true, Reason.SIGNALS_UNAVAILABLE, message + " Retrying at the next evaluation."),
                       # Not degraded: no replica serving yet is the usual cause, and it passes.
                       (false, Reason.AS_EXPECTED, "No errors."), extra_status=status, extra_conditions=conditions)
    if not results:
        # Nothing read yet: not ready, and on its way (Argo CD shows Progressing).
        message = "Waiting for the first evaluation of the monitors." + note
        return Outcome(Phase.MONITORING, (false, Reason.AWAITING_EVALUATION, message[:4096]),
                       (true, Reason.AWAITING_EVALUATION, message[:4096]),
                       (false, Reason.AS_EXPECTED, "No errors."), extra_status=status, extra_conditions=conditions)
    if breached:
        message = "Breached: " + "; ".join(f"{r.name}: {r.message}" for r in results if r.verdict == BREACHED)
        reason = Reason.MONITORS_BREACHED
    else:
        message = f"{len(results)} monitor(s) read at {inputs.evaluated_at}; none breached."
        reason = Reason.MONITORS_OK
    return Outcome(Phase.MONITORING, (true, reason, (message + note)[:4096]),
                   (true if running else false, reason, f"Retrainings running: {', '.join(running) or 'none'}."),
                   (false, Reason.AS_EXPECTED, "No errors."), extra_status=status, extra_conditions=conditions)


register_kind(FEEDBACK_POLICY, resolve, render, observe, child_kinds=CHILD_KINDS,
              # Monitors are read every spec.evaluationInterval and schedules fire: the pass
              # decides whether either is due, so it runs at least this often.
              requeue_seconds=lambda body: min(EVALUATION_SECONDS, RESYNC_SECONDS))
# A retraining's progress (Succeeded: promote it) re-runs its policy's pass at once.
watch_children(API_VERSION, "TrainingJob")
