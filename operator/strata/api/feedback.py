"""FeedbackPolicy: monitor a deployed model and close the loop by retraining it."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from strata.api.base import (
    CronSchedule,
    DNS1123Name,
    Duration,
    Fraction,
    KindInfo,
    LocalObjectRef,
    ObjectReference,
    PrinterColumn,
    PVCLocation,
    StatusBase,
    StrataModel,
    cel,
    exactly_one_of,
)

MonitorName = Literal["approval", "toxicity", "bias", "drift"]


class Target(StrataModel):
    model_deployment: DNS1123Name = Field(description="ModelDeployment in the same namespace to watch.")


class ApprovalMonitor(StrataModel):
    min_rate: Fraction = Field(description="Breached when the share of positive feedback falls below this.")
    min_samples: int = Field(default=100, ge=1, description="No verdict until the window holds this many ratings.")


class ToxicityMonitor(StrataModel):
    max_rate: Fraction = Field(description="Breached when the share of toxic outputs rises above this.")
    min_samples: int = Field(default=100, ge=1, description="No verdict until this many outputs were scored.")


class BiasGroup(StrataModel):
    field: str = Field(max_length=128, description="Request attribute that defines the groups (e.g. locale).")


class BiasMonitor(StrataModel):
    groups: list[BiasGroup] = Field(min_length=1, max_length=8, description="Request attributes whose groups are compared.")
    max_disparity: Fraction = Field(description="Largest allowed gap in approval rate between groups.")
    min_samples: int = Field(default=30, ge=1, description="Ratings a group needs in the window to be compared.")


class DriftMonitor(StrataModel):
    reference: Literal["dataset", "previousWindow"] = Field(
        default="dataset",
        description="Compare inputs with the Dataset version the served model trained on (a model input named "
                    "like a Dataset column: tokens for token ids, text for text), or with the window before the last one. "
                    "Float inputs are always compared with the window before (a Dataset version has no float columns).",
    )
    max_psi: float = Field(default=0.2, gt=0, le=10, alias="maxPSI", description="Population stability index limit.")
    min_samples: int = Field(default=100, ge=1, description="No verdict until the window holds this many sampled input rows (see the ModelDeployment's spec.monitoring.driftSampleRate).")
    embedding: EmbeddingDrift | None = Field(
        default=None,
        description="Also compare text inputs in embedding space: a Job embeds sampled inputs (the target's "
                    "spec.monitoring.inputSamplesPerMinute keeps them) and reference texts with a sentence-transformers "
                    "model, counts them over clusters of the reference, and the counts join the drift verdict as one "
                    "more PSI and chi-squared test.")


class EmbeddingModel(StrataModel):
    pvc: PVCLocation = Field(description="A sentence-transformers model directory on a claim (mounted read-only).")


class EmbeddingDrift(StrataModel):
    input: str | None = Field(
        default=None, max_length=253,
        description="The model input whose texts (a BYTES input) or token ids are compared; unset: the input named "
                    "like the Dataset's text column (text), else tokens.")
    sample_size: int = Field(default=500, ge=50, le=5000,
                             description="Texts compared on each side; the reference also gives as many to fit the clusters on.")
    clusters: int = Field(default=10, ge=2, le=50, description="Clusters of the reference's embeddings the texts are counted in.")
    every: Duration | None = Field(default=None, description="How often the embedding test runs (a Job); unset: once per spec.window.")
    model: EmbeddingModel | None = Field(
        default=None, description="The sentence-transformers model; unset: all-MiniLM-L6-v2, which ships in the embedder image.")


class Monitors(StrataModel):
    approval: ApprovalMonitor | None = Field(default=None, description="Watch the share of positive user feedback.")
    toxicity: ToxicityMonitor | None = Field(default=None, description="Watch the share of toxic outputs.")
    bias: BiasMonitor | None = Field(default=None, description="Watch the gap in approval between groups of requests.")
    drift: DriftMonitor | None = Field(default=None, description="Watch how far inputs move from the reference.")


class RetrainTrigger(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel((exactly_one_of("schedule", "monitorBreached"), "set exactly one of schedule or monitorBreached"))
    )

    schedule: CronSchedule | None = Field(default=None, description="Retrain on this cron schedule.")
    monitor_breached: Literal["any", "approval", "toxicity", "bias", "drift"] | None = Field(default=None, description="Retrain when this monitor (or any) is breached.")


class RefreshDataset(StrataModel):
    include_feedback: bool = Field(default=True, description="Fold feedback into the refreshed version: answers rated up and outputs a person approved in review, as the sidecars' audit logs kept their text (input then output, redacted), go to a ConfigMap the Dataset's runs read as one more source; answers a person rejected stay out.")


class RetrainTemplate(StrataModel):
    from_training_job: LocalObjectRef = Field(description="TrainingJob whose spec the retraining copies.")


class Retrain(StrataModel):
    triggers: list[RetrainTrigger] = Field(min_length=1, max_length=8, description="When to retrain; any trigger starts a retraining.")
    cooldown: Duration = Field(default="24h", description="Least time between two retrainings.")
    max_concurrent: int = Field(default=1, ge=1, le=16, description="Most retraining TrainingJobs running at once.")
    refresh_dataset: RefreshDataset | None = Field(default=None, description="Run the template's Dataset pipeline first (it publishes a new version when its sources changed), and train on what it then serves; train on the current version when unset.")
    template: RetrainTemplate = Field(description="Which TrainingJob the retraining copies.")


class Promotion(StrataModel):
    mode: Literal["automatic", "manual"] = Field(default="manual", description="automatic: a retrained model replaces the served one if it passes requireNoWorse; manual: it must also be approved by a person, who annotates the FeedbackPolicy strata.dev/approve-promotion=<retraining TrainingJob>.")
    require_no_worse: list[Literal["valLoss", "perplexity", "approval", "toxicity"]] = Field(
        default_factory=list, max_length=4
    , description="Metrics a retrained model must not be worse on to be promoted.")
    rollback_on_breach: bool = Field(default=False, description="Return to the model served before the latest promotion when a monitor is breached on feedback given since that promotion.")


class Review(StrataModel):
    queue_flagged: bool = Field(
        default=True,
        description="List outputs flagged for a person's review in status.review: those the sidecar scored toxic, and "
        "the down-rated answers of the worst-served group while the bias monitor is breached. Resolve one with "
        "`strata review resolve` or the annotation review.strata.dev/<id>=approve|reject.",
    )


class PrometheusSignals(StrataModel):
    url: str = Field(max_length=1024, pattern=r"^https?://",
                     description="Prometheus's HTTP API (http://prometheus.monitoring:9090) that scrapes the target's sidecars.")
    selector: str | None = Field(
        default=None, max_length=512, pattern=r'^[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"',
        description='PromQL label matchers of the target\'s sidecar series, e.g. namespace="ml",service="assistant". '
        'Unset: namespace="<namespace>",pod=~"<target>-<hash>-<id>" (the labels the Prometheus Operator and '
        "kubernetes_sd scrape configs give pods).",
    )


class Signals(StrataModel):
    prometheus: PrometheusSignals | None = Field(
        default=None,
        description="Read approval and toxicity over the window from Prometheus (the sidecars' "
        "strata_sidecar_feedback_total and strata_sidecar_toxicity_score), so they outlive pods. Bias and drift "
        "need per-request records and sketches and are still read from the sidecars.",
    )
    url: str | None = Field(
        default=None, max_length=1024, pattern=r"^https?://",
        description="The monitoring sidecar's metrics endpoint (http://host:9090) to read feedback and statistics "
        "from, instead of every pod of the target: a Service or port-forward in front of one sidecar, or a sidecar "
        "outside the cluster. Unset: each of the target's pods is read on its pod IP.",
    )


class FeedbackPolicySpec(StrataModel):
    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "has(self.monitors.approval) || has(self.monitors.toxicity) || "
                "has(self.monitors.bias) || has(self.monitors.drift)",
                "enable at least one monitor",
                ".monitors",
            ),
        )
    )

    target: Target = Field(description="The ModelDeployment to watch.")
    window: Duration = Field(default="1h", description="Sliding window the monitors evaluate.")
    evaluation_interval: Duration = Field(default="1m", description="How often the monitors are evaluated.")
    signals: Signals = Field(default_factory=Signals, description="Where the monitors' signals are read.")
    monitors: Monitors = Field(description="What to watch; at least one monitor.")
    retrain: Retrain | None = Field(default=None, description="When and how to retrain; monitoring only when unset.")
    promotion: Promotion = Field(default_factory=Promotion, description="Whether and when retrained models are served.")
    review: Review = Field(default_factory=Review, description="Human review of flagged outputs.")

    def references(self) -> list[ObjectReference]:
        found = [ObjectReference("ModelDeployment", self.target.model_deployment, "spec.target.modelDeployment")]
        if self.retrain is not None:
            job = self.retrain.template.from_training_job.name
            found.append(ObjectReference("TrainingJob", job, "spec.retrain.template.fromTrainingJob.name"))
        return found


class ReviewItem(StrataModel):
    id: str = Field(max_length=16, description="The item's id: resolve it with the annotation review.strata.dev/<id>=approve|reject.")
    source: Literal["toxicity", "bias"] = Field(description="Which monitor flagged it.")
    request_id: str = Field(max_length=128, description="The sidecar's request id of the answer.")
    time: str | None = Field(default=None, max_length=64, description="When it was answered or rated (RFC 3339).")
    score: float | None = Field(default=None, description="The toxicity score (toxicity items).")
    group: str | None = Field(default=None, max_length=300, description="The group served worst, field=value (bias items).")
    excerpt: str = Field(default="", max_length=512, description="The start of the output, redacted (toxicity), or of the rating's text (bias).")


class ReviewState(StrataModel):
    open: int = Field(default=0, ge=0, description="Flagged outputs no one has resolved.")
    resolved: int = Field(default=0, ge=0, description="Flagged outputs resolved with a review.strata.dev/ annotation.")
    items: list[ReviewItem] = Field(default_factory=list, max_length=20, description="The newest open items (at most 20).")
    problems: list[str] = Field(default_factory=list, max_length=8, description="review.strata.dev/ annotations that resolve nothing, and why.")


class MonitorReading(StrataModel):
    name: MonitorName = Field(description="Which monitor.")
    value: float | None = Field(default=None, description="The monitored value over the window (a rate, a gap or a PSI).")
    verdict: Literal["OK", "Breached", "InsufficientData"] = Field(default="InsufficientData", description="OK, Breached, or InsufficientData when the window holds too few samples.")
    samples: int = Field(default=0, ge=0, description="Samples in the window.")
    window: str | None = Field(default=None, max_length=64, description="The window the value covers (a duration, or since when).")
    message: str | None = Field(default=None, max_length=1024, description="What was compared with what, in a sentence.")


class RetrainRecord(StrataModel):
    training_job: str = Field(max_length=253, description="The TrainingJob the retraining created.")
    reason: str = Field(max_length=1024, description="What triggered it.")
    at: str = Field(max_length=64, description="When (RFC 3339).")


class TriggerRecord(StrataModel):
    at: str = Field(max_length=64, description="When (RFC 3339).")
    action: Literal["Retrained", "Held", "Promoted", "PromotionHeld", "PromotionRefused", "RolledBack"] = Field(
        description="What the operator did: started a retraining, held one back, promoted, held or refused a model, "
                    "or rolled a promotion back.")
    reason: str = Field(max_length=64, description="Why, as one CamelCase word (the condition's reason).")
    message: str = Field(max_length=1024, description="Why, for people.")
    training_job: str | None = Field(default=None, max_length=253, description="The retraining TrainingJob concerned.")


class PromotionState(StrataModel):
    training_job: str = Field(max_length=253, description="The retraining TrainingJob whose model is concerned; after a rollback, the one served again.")
    state: Literal["AwaitingApproval", "Promoted", "Refused", "RolledBack"] = Field(description="Where the promotion stands.")
    message: str = Field(default="", max_length=1024, description="Why, in a sentence.")
    at: str | None = Field(default=None, max_length=64, description="When it was promoted or rolled back (RFC 3339).")
    previous: str | None = Field(default=None, max_length=253, description="The TrainingJob served before the promotion: where spec.promotion.rollbackOnBreach returns to.")
    rolled_back: str | None = Field(default=None, max_length=253, description="The promoted TrainingJob a rollback took out of service; it is not promoted again.")


class DatasetRefreshState(StrataModel):
    dataset: str = Field(max_length=253, description="The Dataset asked for a new version before the retraining.")
    requested_at: str = Field(max_length=64, description="When (RFC 3339): its strata.dev/refresh-requested-at annotation.")
    reason: str = Field(default="", max_length=1024, description="Why the retraining that waits for it was triggered.")


class EmbeddingTestState(StrataModel):
    job: str = Field(max_length=253, description="The Job that ran (or runs) the latest embedding test.")
    started: str = Field(max_length=64, description="When it was created (RFC 3339).")
    finished: str | None = Field(default=None, max_length=64, description="When its result was read (RFC 3339).")
    input: str | None = Field(default=None, max_length=253, description="The model input compared.")
    reference_counts: list[int] = Field(default_factory=list, max_length=51, description="Held-out reference texts per cluster (the last: far from every cluster).")
    current_counts: list[int] = Field(default_factory=list, max_length=51, description="Sampled inputs per cluster, alike.")
    against: str | None = Field(default=None, max_length=256, description="What the inputs were compared with.")
    message: str | None = Field(default=None, max_length=1024, description="Why there is no result, when there is none.")


class FeedbackPolicyStatus(StatusBase):
    monitors: list[MonitorReading] = Field(
        default_factory=list,
        max_length=8,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    description="The latest reading of each monitor.", )
    breached: int | None = Field(default=None, ge=0, description="Monitors currently breached.")
    last_retrain: RetrainRecord | None = Field(default=None, description="The most recent retraining.")
    retrain_count: int | None = Field(default=None, ge=0, description="Retrainings so far.")
    breached_monitors: str | None = Field(default=None, max_length=128, description="Names of the breached monitors, for kubectl get.")
    serving: str | None = Field(default=None, max_length=253, description="The TrainingJob whose model the target serves.")
    last_evaluation: str | None = Field(default=None, max_length=64, description="When the monitors were last read (RFC 3339).")
    last_schedule_check: str | None = Field(default=None, max_length=64, description="Until when the retraining schedules were checked (RFC 3339).")
    promotion: PromotionState | None = Field(default=None, description="The latest retrained model's promotion.")
    dataset_refresh: DatasetRefreshState | None = Field(default=None, description="A Dataset refresh a triggered retraining waits for (spec.retrain.refreshDataset).")
    history: list[TriggerRecord] = Field(default_factory=list, max_length=20, description="The latest retraining and promotion decisions, oldest first (at most 20).")
    review: ReviewState | None = Field(default=None, description="Flagged outputs waiting for a person (spec.review.queueFlagged).")
    embedding_test: EmbeddingTestState | None = Field(default=None, description="The latest embedding drift test (spec.monitors.drift.embedding).")


FEEDBACK_POLICY = KindInfo(
    kind="FeedbackPolicy",
    plural="feedbackpolicies",
    short_names=("sfp", "fbp"),
    description="Feedback, toxicity, bias and drift monitoring of a ModelDeployment, with retraining triggers.",
    spec_model=FeedbackPolicySpec,
    status_model=FeedbackPolicyStatus,
    columns=(
        PrinterColumn(name="Target", type="string", json_path=".spec.target.modelDeployment"),
        PrinterColumn(name="Breached", type="string", json_path=".status.breachedMonitors", description="Monitors breached."),
        PrinterColumn(name="Last-Retrain", type="string", json_path=".status.lastRetrain.trainingJob"),
        PrinterColumn(name="Serving", type="string", json_path=".status.serving", description="TrainingJob whose model is served."),
        PrinterColumn(name="Review", type="integer", json_path=".status.review.open", description="Flagged outputs waiting for review.", priority=1),
    ),
)
