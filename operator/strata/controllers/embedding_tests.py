"""The embedding drift test of a FeedbackPolicy (spec.monitors.drift.embedding): once per
period a `<policy>-embedding-<n>` Job embeds the rows the target's sidecars kept and the
reference, and its pod's termination message carries the counts. This plans the tests (read
the finished one's result, start the next when due) for the controller's pass; the pure parts
are render/embedding_test.py.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from strata import __version__, k8s
from strata.api import KindInfo
from strata.api.feedback import FeedbackPolicySpec
from strata.controllers import feedback_signals
from strata.controllers.reconcile import is_controlled_by
from strata.observe.jobs import container_termination, job_condition
from strata.render import embedding_test as embedding
from strata.render import feedback_policy as policy
from strata.render.common import owner_labels
from strata_workloads.monitor.embedding_contract import CONTAINER_NAME as EMBEDDER_CONTAINER
from strata_workloads.monitor.embedding_contract import EmbeddingJobConfig, parse_result

# The embedding drift test's image (torch and a sentence-transformers model) when the chart sets none.
EMBEDDER_IMAGE_ENV = "STRATA_EMBEDDER_IMAGE"
DEFAULT_EMBEDDER_IMAGE = f"ghcr.io/strata-dev/strata-embedder:{__version__}"
# The label the Job controller puts on a Job's pods.
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"


def _termination_message(pods: list[dict[str, Any]], container: str) -> tuple[str | None, str]:
    """The newest ended pod's termination message of `container`, and its last words."""
    ended = [terminated for pod in pods if (terminated := container_termination(pod, container))]
    if not ended:
        return None, "its pod left no termination message"
    last = max(ended, key=lambda t: t.get("finishedAt") or "")
    words = (last.get("message") or "").strip().splitlines()
    return last.get("message"), (f"exit code {last.get('exitCode')}" + (f": {words[-1][:300]}" if words else ""))


def plan_embedding_test(info: KindInfo, body: dict[str, Any], spec: FeedbackPolicySpec, serving: str | None,
                        evaluating: bool, now: dt.datetime) -> tuple[dict[str, Any] | None, list[dict[str, Any]],
                                                                     "policy.Comparison | None"]:
    """status.embeddingTest, the tests' children and the latest result as a drift comparison:
    a finished test's result is read from its pod; a new test starts when one is due and the
    sidecars kept enough rows (read only at an evaluation)."""
    drift = spec.monitors.drift
    settings = drift.embedding if drift is not None else None
    if settings is None:
        return None, [], None
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    every = policy.duration_seconds(settings.every or spec.window)
    stamp = policy.format_time(now)
    state = (body.get("status") or {}).get("embeddingTest")
    jobs = {job["metadata"]["name"]: job for job in k8s.list_children("batch/v1", "Job", namespace, owner_labels(info, name))
            if is_controlled_by(job, meta["uid"]) and embedding.test_number(job["metadata"]["name"], name) is not None}
    # A test newer than status knows of (a pass whose status write lost to a newer version of
    # the policy started it) is the current one: adopted from the Job, so no second one starts.
    newest = max(jobs, key=lambda job: embedding.test_number(job, name) or 0, default=None)
    if newest is not None and (not state or (embedding.test_number(state["job"], name) or 0)
                               < (embedding.test_number(newest, name) or 0)):
        state = embedding.adopted_state(jobs[newest])
    if state and not state.get("finished"):
        job = jobs.get(state["job"])
        if job is None:
            state = embedding.record_result(state, None, "the Job was deleted", stamp)
        elif embedding.job_ended(job):
            pods = [pod for pod in k8s.list_children("v1", "Pod", namespace, owner_labels(info, name))
                    if (pod["metadata"].get("labels") or {}).get(LABEL_JOB_NAME) == state["job"]]
            message, last_words = _termination_message(pods, EMBEDDER_CONTAINER)
            failed = (job_condition(job, "Failed") or {}).get("message")
            state = embedding.record_result(state, parse_result(message), failed or last_words, stamp)
    problem, new = "", []
    if evaluating and embedding.is_due(state, every, now):
        problem, new, started = _start_embedding_test(body, spec, serving, jobs, state, now)
        if started is not None:
            state = started
    # The newest tests stay (with a new one, one fewer of the old); older ones are pruned.
    keep = embedding.KEPT_TESTS - (1 if new else 0)
    kept = [job for _, job in sorted((embedding.test_number(job, name), job) for job in jobs)][-keep:] if keep else []
    children = [embedding.kept_child(body, kind, job) for job in kept for kind in ("ConfigMap", "Job")] + new
    return state, children, embedding.comparison(state, every, now, problem)


def _start_embedding_test(body: dict[str, Any], spec: FeedbackPolicySpec, serving: str | None,
                          jobs: dict[str, dict[str, Any]], state: dict[str, Any] | None, now: dt.datetime
                          ) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
    """(why no test starts, the new test's ConfigMap and Job, its status.embeddingTest)."""
    drift, settings = spec.monitors.drift, spec.monitors.drift.embedding
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    seconds = policy.duration_seconds(spec.window)
    samples = feedback_signals.read_input_samples(feedback_signals.sidecar_urls(spec, namespace), seconds, 2 * settings.sample_size)
    chosen, why = embedding.choose_input(settings, samples)
    if chosen is None:
        return why, [], None
    current, before = samples[chosen]["current"], samples[chosen]["previous"]
    if len(current) < drift.min_samples:
        return (f"{len(current)} kept row(s) of input {chosen} in the last {spec.window}, {drift.min_samples} needed "
                f"(spec.monitors.drift.minSamples)"), [], None
    reference = policy.drift_reference(*feedback_signals.served_training(namespace, serving))
    volume = (embedding.DatasetVolume(reference.claim_name, reference.path)
              if reference.claim_name and reference.path else None)
    rows = embedding.rows_of(current)
    if drift.reference == "dataset":
        if volume is None:
            return reference.problem or "the served model's training Dataset version is not known", [], None
        against, reference_rows = reference.source, None
    else:
        if len(before) < drift.min_samples:
            return (f"{len(before)} kept row(s) of input {chosen} in the {spec.window} before the last, "
                    f"{drift.min_samples} needed (spec.monitors.drift.minSamples)"), [], None
        against, reference_rows = f"the {spec.window} before", embedding.rows_of(before)
    if rows.tokens is not None and volume is None:
        return (f"input {chosen} holds token ids, which only the served model's training Dataset version can turn "
                f"back into text (its tokenizer): {reference.problem}"), [], None
    numbers = [embedding.test_number(job, name) or 0 for job in jobs]
    if state:
        numbers.append(embedding.test_number(state["job"], name) or 0)
    number = max(numbers, default=0) + 1
    test = embedding.test_name(name, number)
    config = embedding.fit_rows(EmbeddingJobConfig(
        input=chosen, current=rows, against="dataset" if drift.reference == "dataset" else "rows",
        reference=reference_rows, dataset_mounted=volume is not None, sample_size=settings.sample_size,
        clusters=settings.clusters, seed=number, model_mounted=settings.model is not None))
    image = os.environ.get(EMBEDDER_IMAGE_ENV) or DEFAULT_EMBEDDER_IMAGE
    children = [embedding.render_test_config_map(body, test, config),
                embedding.render_test_job(body, test, image, volume, settings, against)]
    return "", children, {"job": test, "started": policy.format_time(now), "against": against[:256]}
