"""FeedbackPolicy: the pure parts. Monitors from signals, whether to retrain, whether to
promote, and the retraining TrainingJob.

The controller (controllers/feedbackpolicy.py) reads the signals and the objects; everything
that decides lives here and is table-tested (tests/unit/test_feedback_policy.py).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from strata import cron
from strata.api import FEEDBACK_POLICY, KindInfo
from strata.api.feedback import FeedbackPolicySpec, Promotion, Retrain
from strata.constants import (
    ANNOTATION_CHILD_POLICY,
    ANNOTATION_CREATED_BECAUSE,
    ANNOTATION_PROMOTED_AT,
    ANNOTATION_PROMOTED_OVER,
    ANNOTATION_RETRAINED_FROM,
    ANNOTATION_ROLLED_BACK,
    REVIEW_ANNOTATION_PREFIX,
    REVIEW_VERDICTS,
    ChildPolicy,
    Phase,
    Reason,
)
from strata.render.common import child_labels, child_metadata, owner_reference
from strata.render.training_job import MAX_NAME_LENGTH
from strata_workloads.monitor import feedback as feedback_monitors
from strata_workloads.monitor.result import BREACHED, INSUFFICIENT_DATA, MonitorResult
from strata_workloads.monitor.sketch import (
    Comparison,
    TokenSketch,
    ValueSketch,
    compared_drift,
    token_comparison,
    value_comparison,
)
from strata_workloads.monitor.toxicity import toxicity_from_counts

RETRAIN_INFIX = "-retrain-"
HISTORY_LIMIT = 20
# Metric names of promotion.requireNoWorse -> the key in a TrainingJob's status.metrics
# (strata_workloads.train.config's metric names); lower is better for both.
TRAINING_METRICS = {"valLoss": "loss", "perplexity": "perplexity"}
_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    return float(sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(text)))


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_unix(seconds: float) -> str:
    """format_time of a Unix time (what the sidecars' records carry)."""
    return format_time(dt.datetime.fromtimestamp(float(seconds), dt.timezone.utc))


# ---------------------------------------------------------------------------------------
# monitors
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Signals:
    """What the target's sidecars reported (strata_workloads.serve: GET /feedback, GET /stats)."""

    feedback: tuple[dict[str, Any], ...] = ()
    # Outputs scored for toxicity and how many were flagged, summed over the sidecars, and the
    # earliest sidecar start (the counts cover the time since).
    toxicity_scored: int | None = None
    toxicity_flagged: int = 0
    since: float | None = None
    # Sidecars read, and why none could be (when none could).
    sources: int = 0
    error: str | None = None
    # Input name -> {"current": the token sketch of the last window, "previous": of the one
    # before}, summed over the sidecars (GET /stats?window=).
    sketches: dict[str, dict[str, TokenSketch]] = field(default_factory=dict)
    # From Prometheus (spec.signals.prometheus), over the window: these replace what the
    # records and the sidecars' since-start toxicity counts say about approval and toxicity.
    counts: "WindowCounts | None" = None
    # Outputs the sidecars queued for review (GET /review): scored toxic.
    review: tuple[dict[str, Any], ...] = ()
    # With counts from Prometheus: why the sidecars (bias, drift, review) could not be read.
    sidecar_error: str | None = None
    # Float input name -> {"current": its value sketch of the last window, "previous": of the
    # one before}, summed over the sidecars (GET /stats?window=, "valueSketches").
    value_sketches: dict[str, dict[str, ValueSketch]] = field(default_factory=dict)


# ---- Prometheus as the source of approval and toxicity ----

@dataclass(frozen=True)
class WindowCounts:
    """Ratings and scored outputs over a window, as Prometheus has them (prometheus_queries)."""

    up: int
    down: int
    scored: int
    flagged: int
    window: str  # what the counts cover, e.g. "1h" or "since 2026-03-02T11:00:00Z"


def prometheus_selector(spec: FeedbackPolicySpec, namespace: str) -> str:
    """The label matchers of the target's sidecar series: the spec's, or its pods' by name (a
    Deployment's pods are <name>-<hash>-<id>; the anchored regex leaves out <name>-other's)."""
    prometheus = spec.signals.prometheus
    assert prometheus is not None
    if prometheus.selector:
        return prometheus.selector
    return f'namespace="{namespace}",pod=~"{re.escape(spec.target.model_deployment)}-[a-z0-9]+-[a-z0-9]+"'


def prometheus_queries(selector: str, seconds: float) -> dict[str, str]:
    """PromQL instant queries for WindowCounts' fields over the last `seconds`. Toxic outputs are
    those scored above TOXIC_SCORE, a bucket bound of strata_sidecar_toxicity_score.

    Each series' growth in the window is its largest value less its smallest, not increase():
    increase() extrapolates to the window's end, reading 20 ratings as 30 or more while the
    series is young. These counters never reset within a series (the sidecar recounts its
    files on a restart; a new pod is a new series), so the difference is exact for what was
    scraped; events a new pod took before its first scrape are not counted."""
    from strata_workloads.monitor.toxicity import TOXIC_SCORE

    window = f"{max(1, int(seconds))}s"

    def total(metric: str, extra: str = "") -> str:
        series = f"{metric}{{{selector}{extra}}}[{window}]"
        return f"sum(max_over_time({series}) - min_over_time({series}))"

    scored = total("strata_sidecar_toxicity_score_count")
    not_toxic = total("strata_sidecar_toxicity_score_bucket", ',le="' + f"{TOXIC_SCORE:g}" + '"')
    return {"up": total("strata_sidecar_feedback_total", ',rating="up"'),
            "down": total("strata_sidecar_feedback_total", ',rating="down"'),
            "scored": scored, "flagged": f"{scored} - {not_toxic}"}


def query_value(response: dict[str, Any]) -> int:
    """The value of an instant query's answer (a one-element vector; none when no series matched)."""
    if response.get("status") != "success":
        raise ValueError(response.get("error") or f"Prometheus answered {response.get('status')!r}")
    result = (response.get("data") or {}).get("result") or []
    return max(0, round(float(result[0]["value"][1]))) if result else 0


# ---- the review queue ----

REVIEW_ITEMS_SHOWN = 20


def review_id(source: str, request_id: str) -> str:
    """Short and annotation-safe (request ids may hold ':' and run to 128 characters)."""
    return hashlib.sha256(f"{source}\0{request_id}".encode()).hexdigest()[:12]


def flagged_outputs(signals: Signals, spec: FeedbackPolicySpec, results: list[MonitorResult],
                    now: dt.datetime) -> list[dict[str, Any]]:
    """status.review.items candidates, newest first: what the sidecars scored toxic, and while
    the bias monitor is breached, the down-rated answers of each field's worst-served group."""
    items = [{"id": review_id("toxicity", str(item["requestId"])), "source": "toxicity",
              "requestId": str(item["requestId"])[:128], "time": format_unix(item.get("time", 0)),
              "score": round(float(item.get("score", 0)), 6),
              "excerpt": " | ".join(item.get("output") or [])[:512]}
             for item in signals.review if item.get("requestId")]
    bias = next((result for result in results if result.name == "bias"), None)
    if bias is not None and bias.breached and spec.monitors.bias is not None:
        records = feedback_monitors.in_window(signals.feedback, now.timestamp(), duration_seconds(spec.window))
        for group in spec.monitors.bias.groups:
            rates = {value: rate for value, (rate, count) in
                     feedback_monitors.approval_by_group(records, group.field).items()
                     if rate is not None and count >= spec.monitors.bias.min_samples}
            if len(rates) < 2:
                continue
            worst = min(rates, key=lambda value: rates[value])
            for record in records:
                if record.get("rating") == "down" and (record.get("attributes") or {}).get(group.field) == worst:
                    items.append({"id": review_id("bias", str(record["requestId"])), "source": "bias",
                                  "requestId": str(record["requestId"])[:128],
                                  "time": format_unix(record.get("time", 0)),
                                  "group": f"{group.field}={worst}"[:300], "excerpt": str(record.get("text") or "")[:512]})
    unique = {item["id"]: item for item in items}
    return sorted(unique.values(), key=lambda item: (item["time"], item["id"]), reverse=True)


def review_state(candidates: list[dict[str, Any]], annotations: dict[str, str]) -> dict[str, Any]:
    """status.review: the candidates without a person's verdict, and the annotations that are
    not one (an unknown id, or a value other than approve or reject)."""
    verdicts = {key[len(REVIEW_ANNOTATION_PREFIX):]: value for key, value in annotations.items()
                if key.startswith(REVIEW_ANNOTATION_PREFIX)}
    known = {item["id"] for item in candidates}
    problems = [f"{REVIEW_ANNOTATION_PREFIX}{item_id}={value!r}: the value must be one of "
                f"{', '.join(REVIEW_VERDICTS)}" for item_id, value in sorted(verdicts.items())
                if value not in REVIEW_VERDICTS]
    problems += [f"{REVIEW_ANNOTATION_PREFIX}{item_id}: no flagged output has this id (the pod that kept it may be "
                 f"gone); remove the annotation" for item_id, value in sorted(verdicts.items())
                 if value in REVIEW_VERDICTS and item_id not in known]
    resolved = [item for item in candidates if verdicts.get(item["id"]) in REVIEW_VERDICTS]
    waiting = [item for item in candidates if verdicts.get(item["id"]) not in REVIEW_VERDICTS]
    state: dict[str, Any] = {"open": len(waiting), "resolved": len(resolved), "items": waiting[:REVIEW_ITEMS_SHOWN]}
    if problems:
        state["problems"] = [problem[:512] for problem in problems[:8]]
    return state


@dataclass(frozen=True)
class DriftReference:
    """What a drift monitor with reference "dataset" compares inputs with: the token sketches
    of the Dataset version the served model was trained on, or why there are none; and where
    that version lives (an embedding test mounts it)."""

    sketches: dict[str, TokenSketch] = field(default_factory=dict)
    source: str = ""  # "Dataset lm-data version 3f2a..."
    problem: str | None = None
    claim_name: str | None = None
    path: str | None = None


def drift_reference(training_job: dict[str, Any] | None, dataset: dict[str, Any] | None) -> DriftReference:
    """Pure: the reference of the model a TrainingJob made, from its Dataset's status.history."""
    if training_job is None:
        return DriftReference(problem="the target serves no TrainingJob's model (spec.model.trainingJob), so there "
                                      "is no training Dataset to compare with; use reference: previousWindow")
    job = training_job["metadata"]["name"]
    version = (training_job.get("status") or {}).get("datasetVersion")
    name = ((training_job.get("spec") or {}).get("dataset") or {}).get("name")
    if not version:
        return DriftReference(problem=f"TrainingJob {job} has not recorded the Dataset version it trained on yet")
    if dataset is None:
        return DriftReference(problem=f"Dataset {name}, which TrainingJob {job} trained on, does not exist")
    source = f"Dataset {name} version {version[:12]}"
    entry = next((item for item in (dataset.get("status") or {}).get("history") or [] if item.get("version") == version),
                 None)
    if entry is None:
        return DriftReference(source=source, problem=f"{source}, which TrainingJob {job} trained on, is no longer in "
                                                     f"the Dataset's status.history")
    sketches = {item["column"]: TokenSketch.from_dict(item) for item in entry.get("reference") or []}
    claim = ((((dataset.get("spec") or {}).get("storage") or {}).get("pvc")) or {}).get("claimName")
    where = {"claim_name": claim, "path": entry.get("path")} if claim and entry.get("path") else {}
    if not sketches:
        return DriftReference(source=source, problem=f"{source} has no reference sketches (made by an earlier "
                                                     f"release); a new run of its pipeline records them", **where)
    return DriftReference(sketches, source, **where)


def evaluate(spec: FeedbackPolicySpec, signals: Signals, now: dt.datetime,
             since: dt.datetime | None = None, reference: DriftReference | None = None,
             embedding: Comparison | None = None) -> list[MonitorResult]:
    """Every monitor the spec enables, over the spec's window ending now; with `since`, only
    the feedback given from then on (the served model's own, after a promotion). `reference`
    is the drift monitor's when it compares with the training Dataset; `embedding` the latest
    embedding test's (render/embedding_test.py)."""
    window = spec.window
    records = feedback_monitors.in_window(signals.feedback, now.timestamp(), duration_seconds(window))
    if since is not None:
        records = [record for record in records if float(record.get("time", 0)) >= since.timestamp()]
    monitors = spec.monitors
    results = []
    counts = signals.counts
    if monitors.approval is not None:
        if counts is not None:
            results.append(feedback_monitors.approval_from_counts(counts.up, counts.down, monitors.approval.min_rate,
                                                                  monitors.approval.min_samples, counts.window))
        else:
            results.append(feedback_monitors.approval(records, monitors.approval.min_rate,
                                                      monitors.approval.min_samples, window))
    if monitors.toxicity is not None:
        if counts is not None:
            results.append(toxicity_from_counts(counts.flagged, counts.scored, monitors.toxicity.max_rate,
                                                monitors.toxicity.min_samples, counts.window))
        elif signals.toxicity_scored is None:
            results.append(MonitorResult("toxicity", None, INSUFFICIENT_DATA, 0, window,
                                         "the sidecar scores no outputs: set the target ModelDeployment's "
                                         "spec.monitoring.toxicity to true"))
        else:
            since = format_unix(signals.since) if signals.since else "start"
            # The sidecar counts since it started, not per window (see MonitorReading.window).
            results.append(toxicity_from_counts(signals.toxicity_flagged, signals.toxicity_scored,
                                                monitors.toxicity.max_rate, monitors.toxicity.min_samples,
                                                f"since {since}"))
    unread = f"the sidecars were not read: {signals.sidecar_error}" if signals.sidecar_error else None
    if monitors.bias is not None:
        results.append(MonitorResult("bias", None, INSUFFICIENT_DATA, 0, window, unread) if unread else
                       feedback_monitors.bias(records, [group.field for group in monitors.bias.groups],
                                              monitors.bias.max_disparity, monitors.bias.min_samples, window))
    if monitors.drift is not None and unread:
        results.append(MonitorResult("drift", None, INSUFFICIENT_DATA, 0, window, unread))
    elif monitors.drift is not None:
        results.append(drift_monitor(monitors.drift.reference, monitors.drift.max_psi, monitors.drift.min_samples,
                                     window, signals, reference, embedding))
    return results


def drift_monitor(mode: str, max_psi: float, min_samples: int, window: str, signals: Signals,
                  reference: DriftReference | None, embedding: Comparison | None = None) -> MonitorResult:
    """One verdict over token-id and text inputs (against `mode`'s reference), float inputs
    (against the window before, whatever the mode: a Dataset version sketches only its token
    and text columns, so it has no float reference to give) and the embedding test's counts."""
    current = {name: sides["current"] for name, sides in signals.sketches.items()}
    before = f"the {window} before"
    values = value_comparison({name: sides["previous"] for name, sides in signals.value_sketches.items()},
                              {name: sides["current"] for name, sides in signals.value_sketches.items()},
                              window, against=before)
    if mode == "previousWindow":
        baseline = {name: sides["previous"] for name, sides in signals.sketches.items() if sides["previous"].rows}
        if baseline:
            tokens = token_comparison(baseline, current, window, against=before)
        else:
            tokens = Comparison(before, [], 0, unmet=f"no sampled request in the window before the last {window} to "
                                                      f"compare with", seen=not values.tests and embedding is None)
    elif reference is None or reference.problem:
        why = reference.problem if reference is not None else "the training Dataset's reference was not read"
        tokens = Comparison("the training Dataset", [], 0, unmet=why,
                            seen=any(sketch.rows for sketch in current.values()))
    else:
        tokens = token_comparison(reference.sketches, current, window, against=reference.source)
    return compared_drift([tokens, values] + ([embedding] if embedding is not None else []), max_psi, min_samples,
                          window)


def monitor_status(result: MonitorResult) -> dict[str, Any]:
    reading: dict[str, Any] = {"name": result.name, "verdict": result.verdict, "samples": result.samples,
                               "window": result.window[:64]}
    if result.value is not None:
        reading["value"] = round(result.value, 6)
    if result.message:
        reading["message"] = result.message[:1024]
    return reading


# ---------------------------------------------------------------------------------------
# validity
# ---------------------------------------------------------------------------------------

def policy_problem(spec: FeedbackPolicySpec, name: str, created: str, others: list[dict[str, Any]]) -> str | None:
    """What makes the policy unusable, naming the field and the fix; None when nothing does.

    `others` are the namespace's other FeedbackPolicies: of two on one ModelDeployment the
    older (then the first by name) governs it, and the other reports the conflict.
    """
    if spec.retrain is not None:
        for index, trigger in enumerate(spec.retrain.triggers):
            if trigger.schedule is not None:
                try:
                    cron.parse(trigger.schedule)
                except cron.CronError as error:
                    return (f"spec.retrain.triggers[{index}].schedule: {error}; write five fields "
                            f"(minute hour day-of-month month day-of-week) such as \"0 3 * * *\", or @daily.")
    target = spec.target.model_deployment
    for other in others:
        meta = other["metadata"]
        if meta["name"] == name or ((other.get("spec") or {}).get("target") or {}).get("modelDeployment") != target:
            continue
        if (meta.get("creationTimestamp") or "", meta["name"]) < (created, name):
            return (f'spec.target.modelDeployment: ModelDeployment "{target}" is already governed by FeedbackPolicy '
                    f'"{meta["name"]}"; one policy per deployment: merge the monitors into that policy, or delete '
                    f"one of the two.")
    return None


# ---------------------------------------------------------------------------------------
# feedback folded into a Dataset refresh (spec.retrain.refreshDataset.includeFeedback)
# ---------------------------------------------------------------------------------------

FEEDBACK_SAMPLES_COMPONENT = "feedback-samples"
# What one ConfigMap holds comfortably (the API server's limit is 1 MiB): newest samples first.
FEEDBACK_SAMPLES_MAX_BYTES = 512 * 1024
# What the samples ConfigMap says of them (JSON counts), for kubectl describe and the event.
ANNOTATION_FEEDBACK_SUMMARY = "strata.dev/feedback-summary"


def feedback_samples_name(policy_name: str) -> str:
    return f"{policy_name[:253 - len('-feedback-samples')]}-feedback-samples"


def _verdicts(annotations: dict[str, str]) -> dict[str, str]:
    return {key[len(REVIEW_ANNOTATION_PREFIX):]: value for key, value in annotations.items()
            if key.startswith(REVIEW_ANNOTATION_PREFIX) and value in REVIEW_VERDICTS}


def exchanges_wanted(feedback: tuple[dict[str, Any], ...], annotations: dict[str, str]) -> list[str]:
    """Request ids whose answers' text the samples need: rated up, or down-rated answers a person
    approved in review (bias items); newest first."""
    verdicts = _verdicts(annotations)
    wanted = [str(record["requestId"]) for record in sorted(feedback, key=lambda r: r.get("time", 0), reverse=True)
              if record.get("requestId") and (record.get("rating") == "up"
                                              or verdicts.get(review_id("bias", str(record["requestId"]))) == "approve")]
    return list(dict.fromkeys(wanted))


def feedback_samples(feedback: tuple[dict[str, Any], ...], exchanges: dict[str, dict[str, Any]],
                     review: tuple[dict[str, Any], ...], annotations: dict[str, str], text_field: str,
                     max_bytes: int = FEEDBACK_SAMPLES_MAX_BYTES) -> tuple[str, dict[str, int]]:
    """The records a Dataset refresh folds in, as JSON lines, and their counts.

    A sample is an answer's text (its input then its output, as the sidecar's audit kept them,
    redacted) under the Dataset's text field. In, first: outputs a person approved in review
    (flagged toxic, or a down-rated answer of a worst-served group); then answers rated up,
    newest first. Out: any answer a person rejected in review, and answers whose text the
    sidecars did not keep (numeric tensors only, or not audited). Cut at ``max_bytes``."""
    verdicts = _verdicts(annotations)
    rejected = {str(item["requestId"]) for item in review if verdicts.get(review_id("toxicity", str(item["requestId"]))) == "reject"}
    rejected |= {str(record["requestId"]) for record in feedback
                 if verdicts.get(review_id("bias", str(record.get("requestId")))) == "reject"}
    candidates: list[tuple[str, str, list[str]]] = []  # (request id, source, texts)
    for item in sorted(review, key=lambda i: i.get("time", 0), reverse=True):
        if verdicts.get(review_id("toxicity", str(item["requestId"]))) == "approve":
            candidates.append((str(item["requestId"]), "review", [*(item.get("input") or []), *(item.get("output") or [])]))
    without_text = 0
    bias_approved = {str(record["requestId"]) for record in feedback
                     if verdicts.get(review_id("bias", str(record.get("requestId")))) == "approve"}
    for request_id in exchanges_wanted(feedback, annotations):
        exchange = exchanges.get(request_id)
        texts = [*(exchange.get("input") or []), *(exchange.get("output") or [])] if exchange else []
        if not texts:
            without_text += 1
            continue
        candidates.append((request_id, "review" if request_id in bias_approved else "feedback", texts))
    lines, seen, counts = [], set(), {"samples": 0, "fromFeedback": 0, "fromReview": 0, "withoutText": without_text,
                                      "rejected": 0, "cut": 0}
    size = 0
    for request_id, source, texts in candidates:
        if request_id in seen:
            continue
        seen.add(request_id)
        if request_id in rejected:
            counts["rejected"] += 1
            continue
        text = "\n".join(t for t in texts if t.strip())
        if not text:
            counts["withoutText"] += 1
            continue
        line = json.dumps({text_field: text, "requestId": request_id, "strataSource": source}, ensure_ascii=False) + "\n"
        if size + len(line.encode()) > max_bytes:
            counts["cut"] += 1
            continue
        size += len(line.encode())
        lines.append(line)
        counts["samples"] += 1
        counts["fromFeedback" if source == "feedback" else "fromReview"] += 1
    return "".join(lines), counts


def describe_samples(counts: dict[str, int]) -> str:
    words = f"{counts['samples']} feedback samples ({counts['fromReview']} approved in review)"
    if counts.get("withoutText"):
        plural = "s" if counts["withoutText"] != 1 else ""
        words += f"; {counts['withoutText']} answer{plural} had no text in the sidecars' audit logs"
    if counts.get("rejected"):
        words += f"; {counts['rejected']} rejected in review left out"
    if counts.get("cut"):
        words += f"; {counts['cut']} over the {FEEDBACK_SAMPLES_MAX_BYTES // 1024} KiB limit left out"
    return words


def render_feedback_samples(info: KindInfo, owner: dict[str, Any], samples: str, counts: dict[str, int]) -> dict[str, Any]:
    """The ConfigMap a Dataset's runs read the samples from (strata.dev/feedback-samples)."""
    from strata_workloads.data.result import FEEDBACK_SAMPLES_FILE

    meta = child_metadata(info, owner, feedback_samples_name(owner["metadata"]["name"]), FEEDBACK_SAMPLES_COMPONENT)
    meta["annotations"][ANNOTATION_FEEDBACK_SUMMARY] = json.dumps(counts, sort_keys=True)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {FEEDBACK_SAMPLES_FILE: samples}}


def unimplemented_fields(spec: FeedbackPolicySpec) -> list[str]:
    """Fields this version accepts but does not act on, so the status can say so."""
    fields = [f"spec.promotion.requireNoWorse[{index}] ({metric})"
               for index, metric in enumerate(spec.promotion.require_no_worse) if metric not in TRAINING_METRICS]
    return fields


# ---------------------------------------------------------------------------------------
# retraining
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetrainDecision:
    create: bool
    reason: str
    message: str


def triggered_by(retrain: Retrain, results: list[MonitorResult], schedule_from: dt.datetime,
                 now: dt.datetime) -> tuple[list[str], list[str]]:
    """(why a retraining is due, monitors a trigger waits on for want of samples)."""
    reasons, starving = [], []
    by_name = {result.name: result for result in results}
    for trigger in retrain.triggers:
        if trigger.schedule is not None:
            fired = cron.fired(trigger.schedule, schedule_from, now)
            if fired is not None:
                reasons.append(f'schedule "{trigger.schedule}" fired at {format_time(fired)}')
            continue
        wanted = list(by_name) if trigger.monitor_breached == "any" else [trigger.monitor_breached]
        for name in wanted:
            result = by_name.get(name)
            if result is None:
                continue
            if result.verdict == BREACHED:
                reasons.append(f"{name} breached: {result.message}")
            elif result.verdict == INSUFFICIENT_DATA:
                starving.append(f"{name} ({result.message})")
    return list(dict.fromkeys(reasons)), list(dict.fromkeys(starving))


def decide_retrain(retrain: Retrain, results: list[MonitorResult], active: int, last_retrain: dt.datetime | None,
                   schedule_from: dt.datetime, now: dt.datetime) -> RetrainDecision:
    """Whether to start a retraining now, and why (or why not)."""
    reasons, starving = triggered_by(retrain, results, schedule_from, now)
    if not reasons:
        if starving:
            return RetrainDecision(False, Reason.INSUFFICIENT_SAMPLES,
                                   f"Too few samples for a verdict: {'; '.join(starving)}.")
        return RetrainDecision(False, Reason.NO_TRIGGER, "No trigger fired: no monitor a trigger names is breached.")
    why = "; ".join(reasons)
    if active >= retrain.max_concurrent:
        return RetrainDecision(False, Reason.CONCURRENCY_LIMIT,
                               f"Held back: {active} retraining(s) running, the most spec.retrain.maxConcurrent "
                               f"({retrain.max_concurrent}) allows. Due because {why}.")
    cooldown = dt.timedelta(seconds=duration_seconds(retrain.cooldown))
    if last_retrain is not None and now - last_retrain < cooldown:
        return RetrainDecision(False, Reason.COOLDOWN,
                               f"Held back by spec.retrain.cooldown ({retrain.cooldown}): the last retraining started "
                               f"at {format_time(last_retrain)}, the next may start at "
                               f"{format_time(last_retrain + cooldown)}. Due because {why}.")
    return RetrainDecision(True, Reason.RETRAINING_STARTED, f"Retraining because {why}.")


def refreshable_dataset(template: dict[str, Any]) -> str | None:
    """The Dataset a retraining copied from `template` trains on, when a refresh can change
    what that is: None when the template names none or pins a version."""
    dataset = (template.get("spec") or {}).get("dataset") or {}
    return dataset.get("name") if dataset.get("name") and not dataset.get("version") else None


def refresh_outcome(pending: dict[str, Any], dataset: dict[str, Any] | None) -> str | None:
    """Pure: None while the Dataset refresh `pending` (status.datasetRefresh) runs; else a
    sentence on how it ended, for the retraining's reason."""
    name = pending["dataset"]
    if dataset is None:
        return f"Dataset {name} is gone."
    status = dataset.get("status") or {}
    phase, version = status.get("phase"), status.get("version")
    on = f"version {version}" if version else "no version yet"
    if phase == Phase.INVALID:
        return f"Dataset {name} cannot run its pipeline (see its status); training on {on}."
    # A run answering this request or a later one (RFC 3339 times in UTC compare as text).
    if (status.get("refreshRequestedAt") or "") < pending["requestedAt"] or phase not in (Phase.SUCCEEDED, Phase.FAILED):
        return None
    if phase == Phase.SUCCEEDED:
        return f"Dataset {name} refreshed; training on {on}."
    return f"Dataset {name}'s refresh published no version; training on {on}."


def retraining_number(name: str, target: str) -> int | None:
    """n of a retraining's name <target>-retrain-<n> (the target shortened as retraining_name does)."""
    head, infix, suffix = name.rpartition(RETRAIN_INFIX)
    if not infix or not suffix.isdigit() or not target.startswith(head):
        return None
    return int(suffix)


def retraining_name(target: str, number: int) -> str:
    """<target>-retrain-<n>; the target's name is shortened when the whole would not fit."""
    suffix = f"{RETRAIN_INFIX}{number}"
    return f"{target[:MAX_NAME_LENGTH - len(suffix)].rstrip('-')}{suffix}"


def render_retraining_job(info: KindInfo, policy: dict[str, Any], template: dict[str, Any], name: str,
                          because: str) -> dict[str, Any]:
    """A TrainingJob copying the template's spec, owned by the policy, saying why it exists.

    Changed from the template: the Dataset version is not pinned (a retraining trains on the
    Dataset's current version, with whatever feedback was folded into it), and checkpoints go
    to a directory of the retraining's own (the template's would be resumed from, finished).
    """
    meta = policy["metadata"]
    spec = copy.deepcopy(template.get("spec") or {})
    (spec.get("dataset") or {}).pop("version", None)
    pvc = ((spec.get("checkpoints") or {}).get("storage") or {}).get("pvc")
    if pvc is not None:
        path = (pvc.get("path") or "").rstrip("/")
        template_name = template["metadata"]["name"]
        if path == template_name or path.endswith(f"/{template_name}"):
            pvc["path"] = path[: len(path) - len(template_name)] + name
        else:
            pvc["path"] = f"{path}/{name}" if path else name
    spec.pop("suspend", None)
    return {
        "apiVersion": template["apiVersion"],
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": child_labels(info, meta["name"], "retraining"),
            "annotations": {
                ANNOTATION_CHILD_POLICY: ChildPolicy.CREATE_ONCE,
                ANNOTATION_CREATED_BECAUSE: because[:1024],
                ANNOTATION_RETRAINED_FROM: template["metadata"]["name"],
            },
            "ownerReferences": [owner_reference(info, meta["name"], meta["uid"])],
        },
        "spec": spec,
    }


def is_active(job: dict[str, Any]) -> bool:
    return (job.get("status") or {}).get("phase") not in ("Succeeded", "Failed", "Invalid")


# ---------------------------------------------------------------------------------------
# promotion
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromotionDecision:
    action: str  # "none", "promote", "hold" or "refuse"
    reason: str
    message: str
    training_job: str | None = None
    compared: dict[str, tuple[float, float]] = field(default_factory=dict)


def decide_promotion(promotion: Promotion, candidate: dict[str, Any] | None, serving: dict[str, Any] | None,
                     approved: str | None) -> PromotionDecision:
    """Whether the newest succeeded retraining replaces the served model.

    `candidate` is that TrainingJob (None when there is none left to decide on), `serving`
    the TrainingJob whose model is served, `approved` the value of the policy's
    strata.dev/approve-promotion annotation. A metric of requireNoWorse is compared when it is
    a training metric (valLoss, perplexity: lower is better); no worse means <=.
    """
    if candidate is None:
        return PromotionDecision("none", Reason.NO_CANDIDATE, "No retrained model waits for promotion.")
    name = candidate["metadata"]["name"]
    candidate_metrics = (candidate.get("status") or {}).get("metrics") or {}
    serving_metrics = ((serving or {}).get("status") or {}).get("metrics") or {}
    serving_name = (serving or {}).get("metadata", {}).get("name", "the served model")
    compared = {}
    for metric in promotion.require_no_worse:
        key = TRAINING_METRICS.get(metric)
        if key is None:
            continue
        new, old = candidate_metrics.get(key), serving_metrics.get(key)
        if new is None or old is None:
            missing = name if new is None else serving_name
            return PromotionDecision("hold", Reason.METRICS_MISSING,
                                     f"TrainingJob {missing} reports no {key} in status.metrics, so {metric} "
                                     f"(spec.promotion.requireNoWorse) cannot be compared; {name} is not promoted.",
                                     name)
        compared[metric] = (float(new), float(old))
    worse = {metric: pair for metric, pair in compared.items() if pair[0] > pair[1]}
    versus = ", ".join(f"{metric} {new:.4g} vs {old:.4g}" for metric, (new, old) in compared.items())
    if worse:
        return PromotionDecision("refuse", Reason.WORSE_THAN_SERVING,
                                 f"{name} is worse than {serving_name} ({versus}); it is not promoted.", name, compared)
    checked = f" ({versus}, no worse than {serving_name})" if compared else ""
    if promotion.mode == "manual" and approved != name:
        return PromotionDecision("hold", Reason.AWAITING_APPROVAL,
                                 f"{name} succeeded{checked} and awaits approval: annotate this FeedbackPolicy "
                                 f"strata.dev/approve-promotion={name} to serve it.", name, compared)
    return PromotionDecision("promote", Reason.PROMOTED, f"Promoted {name}{checked}.", name, compared)


def decide_rollback(promotion: Promotion, target: dict[str, Any], serving_name: str | None,
                    since_promotion: list[MonitorResult]) -> PromotionDecision | None:
    """A rollback when spec.promotion.rollbackOnBreach is set, the model a promotion put in
    service still serves (the target's promotion annotations say which it replaced), and a
    monitor read on the feedback given since is breached (`since_promotion`)."""
    previous = _annotation(target, ANNOTATION_PROMOTED_OVER)
    if not promotion.rollback_on_breach or not previous or not serving_name:
        return None
    breached = [result for result in since_promotion if result.verdict == BREACHED]
    if not breached:
        return None
    why = "; ".join(f"{result.name}: {result.message}" for result in breached)
    return PromotionDecision("rollback", Reason.ROLLED_BACK,
                             f"Rolled back from {serving_name} to {previous}: breached since its promotion ({why}).",
                             previous)


def _annotation(obj: dict[str, Any], key: str) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(key)


def promoted_at(target: dict[str, Any]) -> dt.datetime | None:
    """When a FeedbackPolicy promoted the model the target serves; None if none did."""
    return parse_time(_annotation(target, ANNOTATION_PROMOTED_AT))


def rolled_back(target: dict[str, Any]) -> str | None:
    """The TrainingJob a rollback took out of service on the target (never promoted again)."""
    return _annotation(target, ANNOTATION_ROLLED_BACK)


def promotion_patch(training_job: str, replaced: str | None, at: dt.datetime) -> dict[str, Any]:
    """The merge patch of the ModelDeployment: the model, and when and over which it was promoted."""
    return {"metadata": {"annotations": {ANNOTATION_PROMOTED_AT: format_time(at), ANNOTATION_PROMOTED_OVER: replaced}},
            "spec": {"model": {"trainingJob": {"name": training_job}}}}


def rollback_patch(previous: str, taken_out: str) -> dict[str, Any]:
    """The merge patch that serves `previous` again (null removes an annotation)."""
    return {"metadata": {"annotations": {ANNOTATION_PROMOTED_AT: None, ANNOTATION_PROMOTED_OVER: None,
                                         ANNOTATION_ROLLED_BACK: taken_out}},
            "spec": {"model": {"trainingJob": {"name": previous}}}}


def append_history(history: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The history with `entry` added, unless it repeats the latest (a hold re-decided every
    pass is one record), bounded to HISTORY_LIMIT."""
    if history and all(history[-1].get(key) == entry.get(key) for key in ("action", "reason", "trainingJob")):
        return history
    return [*history, entry][-HISTORY_LIMIT:]


FEEDBACK_INFO = FEEDBACK_POLICY
