"""What a FeedbackPolicy's monitors read: its target's sidecars (GET /feedback, /review,
/stats, /exchanges and /pods on each pod's metrics port, or on spec.signals.url), Prometheus
with spec.signals.prometheus, and the served model's training Dataset version as the drift
reference. A sidecar that does not answer costs only what it would have said.
"""

from __future__ import annotations

import urllib.error
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from strata import k8s, podmetrics
from strata.api import DATASET, MODEL_DEPLOYMENT, TRAINING_JOB
from strata.api.feedback import FeedbackPolicySpec
from strata.render import feedback_policy as policy
from strata.render.common import owner_labels
from strata.render.sidecar import SIDECAR_METRICS_PORT
from strata_workloads.monitor.sketch import TokenSketch, ValueSketch

# Feedback records read per sidecar per evaluation at most (pages of FEEDBACK_PAGE).
MAX_FEEDBACK_RECORDS = 200_000
MAX_REVIEW_RECORDS = 20_000
# Answers whose text a refresh asks the sidecars for at most, in pages (their GET /exchanges limit).
MAX_SAMPLE_EXCHANGES = 5_000
EXCHANGES_PAGE = 200
FEEDBACK_PAGE = 5000


def sidecar_urls(spec: FeedbackPolicySpec, namespace: str) -> list[str]:
    if spec.signals.url:
        return [spec.signals.url.rstrip("/")]
    pods = k8s.list_children("v1", "Pod", namespace, owner_labels(MODEL_DEPLOYMENT, spec.target.model_deployment))
    return [podmetrics.pod_url(pod["status"]["podIP"], SIDECAR_METRICS_PORT) for pod in pods
            if (pod.get("status") or {}).get("phase") == "Running" and (pod.get("status") or {}).get("podIP")]


def read_signals(urls: list[str], window_seconds: float) -> policy.Signals:
    """Every sidecar's feedback records, toxicity counts and input sketches over the window;
    the ones that answer count."""
    records: list[dict[str, Any]] = []
    sketches: dict[str, dict[str, TokenSketch]] = {}
    value_sketches: dict[str, dict[str, ValueSketch]] = {}
    scored: int | None = None
    flagged = 0
    since: float | None = None
    review: list[dict[str, Any]] = []
    errors: list[str] = []
    sources = 0
    every_pods_logs_read = False  # with shared state, one sidecar serves every pod's logs
    for url in urls:
        try:
            mine, queued, shared = read_logs(url) if not every_pods_logs_read else ([], [], True)
            stats = podmetrics.fetch_json(f"{url}/stats?{urlencode({'window': window_seconds})}")
        except OSError as error:
            errors.append(str(error))
            continue
        sources += 1
        every_pods_logs_read = shared
        records.extend(mine)
        review.extend(queued)
        toxicity = stats.get("toxicity")
        if toxicity is not None:
            scored = (scored or 0) + int(toxicity.get("scored") or 0)
            flagged += int(toxicity.get("flagged") or 0)
        if stats.get("since") is not None:
            since = min(since or stats["since"], stats["since"])
        for inputs in (stats.get("sketches") or {}).values():  # per model: the sidecar serves one
            for name, sides in inputs.items():
                total = sketches.setdefault(name, {"current": TokenSketch(), "previous": TokenSketch()})
                for side in total:
                    total[side] = total[side].merge(TokenSketch.from_dict(sides.get(side) or {}))
        for inputs in (stats.get("valueSketches") or {}).values():  # absent from sidecars before float drift
            for name, sides in inputs.items():
                values = value_sketches.setdefault(name, {"current": ValueSketch(), "previous": ValueSketch()})
                for side in values:
                    values[side] = values[side].merge(ValueSketch.from_dict(sides.get(side) or {}))
    if not urls:
        error = "no running pod of the target serves yet"
    else:
        error = None if sources else "no sidecar answered: " + "; ".join(errors)[:900]
    return policy.Signals(tuple(records), scored, flagged, since, sources, error, sketches, review=tuple(review),
                          value_sketches=value_sketches)


def read_input_samples(urls: list[str], window_seconds: float, limit: int) -> dict[str, dict[str, list]]:
    """Input name -> {"current": rows, "previous": rows}: the rows the sidecars kept whole for
    embedding tests (GET /stats?window=&samples=), at most `limit` per side from each."""
    samples: dict[str, dict[str, list]] = {}
    for url in urls:
        try:
            stats = podmetrics.fetch_json(f"{url}/stats?{urlencode({'window': window_seconds, 'samples': limit})}")
        except OSError:
            continue
        for inputs in (stats.get("inputSamples") or {}).values():  # per model: the sidecar serves one
            for name, sides in inputs.items():
                total = samples.setdefault(name, {"current": [], "previous": []})
                for side in total:
                    total[side].extend(sides.get(side) or [])
    return samples


def read_exchanges(urls: list[str], request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The text the sidecars' audit logs kept of these answers (GET /exchanges), by request id;
    a sidecar that does not answer costs only its answers."""
    found: dict[str, dict[str, Any]] = {}
    for url in urls:
        for start in range(0, len(request_ids), EXCHANGES_PAGE):
            ids = [i for i in request_ids[start:start + EXCHANGES_PAGE] if i not in found]
            if not ids:
                continue
            try:
                found.update(podmetrics.fetch_json(f"{url}/exchanges?{urlencode({'ids': ','.join(ids)})}")
                             .get("exchanges") or {})
            except OSError:
                break
    return found


def feedback_for_refresh(spec: FeedbackPolicySpec, namespace: str, annotations: dict[str, str],
                         dataset: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """The samples a refresh of `dataset` folds in (spec.retrain.refreshDataset.includeFeedback)."""
    urls = sidecar_urls(spec, namespace)
    signals = read_signals(urls, policy.duration_seconds(spec.window))
    exchanges = read_exchanges(urls, policy.exchanges_wanted(signals.feedback, annotations)[:MAX_SAMPLE_EXCHANGES])
    text_field = ((dataset.get("spec") or {}).get("schema") or {}).get("textField") or "text"
    return policy.feedback_samples(signals.feedback, exchanges, signals.review, annotations, text_field)


def read_logs(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(feedback, review queue, whether they are every pod's): a sidecar with shared state
    (ModelDeployment monitoring.storage) serves every pod's, gone pods' too; one without, its own."""
    try:
        listing = podmetrics.fetch_json(f"{url}/pods")
    except OSError as error:
        cause = error.__cause__
        if not (isinstance(cause, urllib.error.HTTPError) and cause.code == 404):
            raise
        listing = {"shared": False}  # a sidecar from before shared state
    if not listing.get("shared"):
        return read_pages(url, "/feedback", MAX_FEEDBACK_RECORDS), read_pages(url, "/review", MAX_REVIEW_RECORDS), False
    feedback: list[dict[str, Any]] = []
    review: list[dict[str, Any]] = []
    for entry in listing.get("pods") or []:
        feedback.extend(read_pages(url, "/feedback", MAX_FEEDBACK_RECORDS - len(feedback), entry["pod"]))
        review.extend(read_pages(url, "/review", MAX_REVIEW_RECORDS - len(review), entry["pod"]))
    return feedback, review, True


def read_pages(url: str, path: str, most: int, pod: str | None = None) -> list[dict[str, Any]]:
    """Every record of a sidecar's paged log (GET /feedback or /review; another pod's with
    shared state), up to `most`."""
    after, records = 0, []
    while len(records) < most:
        query = {"after": after, "limit": FEEDBACK_PAGE} | ({"pod": pod} if pod is not None else {})
        page = podmetrics.fetch_json(f"{url}{path}?{urlencode(query)}")
        records.extend(page.get("records") or [])
        if page.get("next", after) == after or not page.get("records"):
            break
        after = page["next"]
    return records[:most]


def read_prometheus(spec: FeedbackPolicySpec, namespace: str, seconds: float,
                    window: str) -> tuple[policy.WindowCounts | None, str | None]:
    """Approval and toxicity counts over the last `seconds` from spec.signals.prometheus, or why not."""
    prometheus = spec.signals.prometheus
    assert prometheus is not None
    values: dict[str, int] = {}
    for name, query in policy.prometheus_queries(policy.prometheus_selector(spec, namespace), seconds).items():
        try:
            values[name] = policy.query_value(podmetrics.prometheus_query(prometheus.url, query))
        except (OSError, ValueError) as error:
            return None, f"Prometheus ({prometheus.url}) did not answer {query}: {error}"[:900]
    return policy.WindowCounts(window=window, **values), None


def read_all_signals(spec: FeedbackPolicySpec, namespace: str) -> policy.Signals:
    """The sidecars' signals, or with spec.signals.prometheus, approval and toxicity from
    Prometheus and the sidecars read only for what needs their records (bias, drift, the review
    queue). Then sidecars that cannot be read cost only those: approval and toxicity stand."""
    seconds = policy.duration_seconds(spec.window)
    if spec.signals.prometheus is None:
        return read_signals(sidecar_urls(spec, namespace), seconds)
    counts, error = read_prometheus(spec, namespace, seconds, spec.window)
    if spec.monitors.bias is None and spec.monitors.drift is None and not spec.review.queue_flagged:
        return policy.Signals(counts=counts, error=error)
    sidecars = read_signals(sidecar_urls(spec, namespace), seconds)
    if sidecars.error is not None:
        return policy.Signals(counts=counts, error=error, sidecar_error=sidecars.error)
    return replace(sidecars, counts=counts, error=error)


def served_training(namespace: str, serving: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The TrainingJob whose model is served, and the Dataset it trained on (when they exist)."""
    jobs = k8s.list_objects(TRAINING_JOB, namespace, serving) if serving else []
    dataset_name = (((jobs[0].get("spec") or {}).get("dataset") or {}).get("name")) if jobs else None
    datasets = k8s.list_objects(DATASET, namespace, dataset_name) if dataset_name else []
    return jobs[0] if jobs else None, datasets[0] if datasets else None


def drift_reference(spec: FeedbackPolicySpec, namespace: str, serving: str | None) -> policy.DriftReference | None:
    """The served model's training Dataset version's sketches, when a drift monitor compares with them."""
    if spec.monitors.drift is None or spec.monitors.drift.reference != "dataset":
        return None
    return policy.drift_reference(*served_training(namespace, serving))
