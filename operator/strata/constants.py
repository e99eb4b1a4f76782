"""Names shared by the API models, the renderers and the controllers.

Condition types and reasons live here, beside the API, so that status written by the
operator and status read by users (kubectl, Argo CD, alert rules) agree on one spelling.
"""

GROUP = "strata.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "strata"

# The one field manager for every server-side apply the operator makes.
FIELD_MANAGER = "strata-operator"

# Recommended labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "strata"
MANAGED_BY = "strata-operator"
# Which custom resource a child belongs to, so children can be listed by owner.
LABEL_OWNER_KIND = "strata.dev/owner-kind"
LABEL_OWNER_NAME = "strata.dev/owner-name"
# How the operator treats a child it renders (one of ChildPolicy), carried on the child itself.
ANNOTATION_CHILD_POLICY = "strata.dev/child-policy"
# Kueue manages a Job that carries this label (created suspended until Kueue admits it).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Why the operator created a child, when that is news (a TrainingJob's next attempt): the
# creation event says this instead of "Created <kind> <name>".
ANNOTATION_CREATED_BECAUSE = "strata.dev/created-because"
# FeedbackPolicy with promotion.mode manual: a person approves a retrained model by setting
# this annotation on the policy to the retraining TrainingJob's name.
ANNOTATION_APPROVE_PROMOTION = "strata.dev/approve-promotion"
# On a retraining TrainingJob: the TrainingJob whose spec it copies (its lineage).
ANNOTATION_RETRAINED_FROM = "strata.dev/retrained-from"
# On a ModelDeployment a FeedbackPolicy promoted a model on: when, and which TrainingJob it
# served before (where spec.promotion.rollbackOnBreach returns to). Written in the same patch
# as the model, so they always describe the model served.
ANNOTATION_PROMOTED_AT = "strata.dev/promoted-at"
ANNOTATION_PROMOTED_OVER = "strata.dev/promoted-over"
# ... and after a rollback, the TrainingJob taken out of service (never promoted again).
ANNOTATION_ROLLED_BACK = "strata.dev/rolled-back"
# On a FeedbackPolicy: a person's verdict on an output queued for review (status.review.items):
# review.strata.dev/<item id> set to "approve" (the output is fine) or "reject" (it is not).
REVIEW_ANNOTATION_PREFIX = "review.strata.dev/"
REVIEW_VERDICTS = ("approve", "reject")
# On a Dataset: a request for a pipeline run now (an RFC 3339 time; a FeedbackPolicy's
# spec.retrain.refreshDataset sets it, and so may a person). A later time is a new request;
# status.refreshRequestedAt echoes the one the latest run answers.
ANNOTATION_REFRESH_REQUESTED = "strata.dev/refresh-requested-at"
# On a Dataset: the ConfigMap of feedback samples its runs read as one more source (a
# FeedbackPolicy's spec.retrain.refreshDataset.includeFeedback sets it with its request).
ANNOTATION_FEEDBACK_SAMPLES = "strata.dev/feedback-samples"


class ChildPolicy:
    """Per child: what the operator may do to it after rendering it."""

    # Re-applied every pass (server-side apply, forced): the spec is the only truth.
    DECLARATIVE = "Declarative"
    # Created when absent and never updated: a Job's pod template or an immutable config.
    # A change makes a new child under a new name (a new attempt, a new content hash).
    CREATE_ONCE = "CreateOnce"
    # Its user's: applied without force (fields someone else changed stay theirs), never pruned.
    FOREIGN = "Foreign"

    ALL = (DECLARATIVE, CREATE_ONCE, FOREIGN)


class ConditionType:
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    # ModelDeployment: whether its ServiceMonitor and PrometheusRule exist (the Prometheus
    # Operator's CRDs may not be installed; nothing else depends on it).
    PROMETHEUS_MONITORING = "PrometheusMonitoring"
    # ModelDeployment with autoscaling: whether the HPA scales on Triton's queue/compute ratio
    # (it needs a custom metrics API, such as prometheus-adapter's).
    QUEUE_AUTOSCALING = "QueueAutoscaling"
    # FeedbackPolicy: why the latest retraining happened or was held back, and where the
    # latest retrained model's promotion stands.
    RETRAINING = "Retraining"
    PROMOTION = "Promotion"


class ConditionStatus:
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason:
    """CamelCase reasons, as Kubernetes conventions require."""

    RECONCILED = "Reconciled"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    AS_EXPECTED = "AsExpected"
    CHILDREN_APPLIED = "ChildrenApplied"
    # An object named in the spec does not exist (yet); cleared when it appears.
    DATASET_NOT_FOUND = "DatasetNotFound"
    TRAINING_JOB_NOT_FOUND = "TrainingJobNotFound"
    MODEL_DEPLOYMENT_NOT_FOUND = "ModelDeploymentNotFound"
    # A TrainingJob's worker group (see controllers/trainingjob.py).
    DATASET_NOT_READY = "DatasetNotReady"
    UNSUPPORTED_STORAGE = "UnsupportedStorage"
    QUEUED = "Queued"  # created suspended, waiting for Kueue to admit the whole group
    WORKERS_PENDING = "WorkersPending"
    TRAINING = "Training"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "TrainingSucceeded"
    INVALID_CONFIGURATION = "InvalidConfiguration"  # the trainer refused its configuration (exit 2)
    RETRIES_EXHAUSTED = "RetriesExhausted"
    # Why one attempt of a worker group ended (status.attempts[].reason).
    WORKER_FAILED = "WorkerFailed"
    INTERRUPTED = "Interrupted"  # SIGTERM: checkpointed and exited (143); not the job's fault
    COMPLETED = "Completed"
    # A Dataset's pipeline runs (see controllers/dataset.py).
    PIPELINE_PENDING = "PipelinePending"  # its Job is created, its pod not running yet
    INGESTING = "Ingesting"  # the pipeline pod reads, cleans and writes a version
    VERSION_PUBLISHED = "VersionPublished"  # the run's version passed every gate and is current
    QUALITY_GATE_FAILED = "QualityGateFailed"  # the run's version is kept but not current
    PIPELINE_FAILED = "PipelineFailed"  # the pod failed (see its logs); retried by the Job, then the next refresh
    SOURCE_UNREADABLE = "SourceUnreadable"  # a source could not be read (exit 1)
    RESULT_MISSING = "ResultMissing"  # the pod ended without the result message the operator reads
    UNSUPPORTED_FEATURE = "UnsupportedFeature"  # the spec asks for what this version's pipeline does not do
    # ModelDeployment serving and rollout.
    MODEL_NOT_EXPORTED = "ModelNotExported"
    ROLLING_OUT = "RollingOut"
    AVAILABLE = "Available"
    ROLLED_BACK = "RolledBack"
    ROLLOUT_FAILED = "RolloutFailed"
    MONITORING_CREATED = "ServiceMonitorAndRulesCreated"
    PROMETHEUS_OPERATOR_MISSING = "PrometheusOperatorNotInstalled"
    QUEUE_METRIC_SERVED = "QueueComputeRatioServed"
    CUSTOM_METRICS_UNAVAILABLE = "CustomMetricsAPIUnavailable"
    # FeedbackPolicy: monitors.
    MONITORS_OK = "MonitorsOK"
    AWAITING_EVALUATION = "AwaitingFirstEvaluation"  # created; its monitors not read yet
    MONITORS_BREACHED = "MonitorsBreached"
    SIGNALS_UNAVAILABLE = "SignalsUnavailable"  # no sidecar answered
    POLICY_CONFLICT = "PolicyConflict"  # another policy governs the same ModelDeployment
    # FeedbackPolicy: retraining (the Retraining condition).
    RETRAINING_STARTED = "RetrainingStarted"
    NO_TRIGGER = "NoTrigger"
    COOLDOWN = "Cooldown"
    CONCURRENCY_LIMIT = "ConcurrencyLimit"
    INSUFFICIENT_SAMPLES = "InsufficientSamples"
    RETRAINING_DISABLED = "RetrainingDisabled"  # spec.retrain unset: monitoring only
    REFRESHING_DATASET = "RefreshingDataset"  # spec.retrain.refreshDataset: a new version first
    # FeedbackPolicy: promotion (the Promotion condition).
    NO_CANDIDATE = "NoCandidate"
    AWAITING_APPROVAL = "AwaitingApproval"
    METRICS_MISSING = "MetricsMissing"
    WORSE_THAN_SERVING = "WorseThanServing"
    PROMOTED = "Promoted"
    NOT_PROMOTABLE = "NotPromotable"  # the target serves from a repository, not a TrainingJob
    ROLLED_BACK = "RolledBack"  # a monitor breached after a promotion (spec.promotion.rollbackOnBreach)


# The reason given when a referenced object of this kind is missing.
NOT_FOUND_REASONS = {
    "Dataset": Reason.DATASET_NOT_FOUND,
    "TrainingJob": Reason.TRAINING_JOB_NOT_FOUND,
    "ModelDeployment": Reason.MODEL_DEPLOYMENT_NOT_FOUND,
}


class Phase:
    """status.phase: one word for where an object stands. Each value promises only what it says."""

    # Validated, its configuration published; this version of Strata runs no workload for it,
    # so nothing further will happen (Ready=False, reason NotImplemented).
    # An object it names does not exist; it carries on by itself when that object appears.
    WAITING = "Waiting"
    # The spec breaks a rule; nothing happens until the spec is fixed.
    INVALID = "Invalid"
    # Applying its children failed; the operator retries (Degraded=True says why).
    RETRYING = "Retrying"
    # A TrainingJob's worker group or a Dataset's pipeline run: created, waiting for admission or
    # for its pods to run.
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    # A TrainingJob that failed for good; a Dataset whose latest run failed or whose new version broke a
    # quality gate (its current version, if any, is still served); a ModelDeployment whose named version failed to become
    # available with no previous version to restore (none, or rollout.autoRollback is false).
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    # ModelDeployment: a model version is being rolled out (no replica ready yet, or an update).
    ROLLING_OUT = "RollingOut"
    # ModelDeployment: the model version the spec names is served by every desired replica.
    SERVING = "Serving"
    # ModelDeployment: the version the spec names failed to become available and the previous
    # one is served again; changing the version (or fixing the model) starts a new rollout.
    ROLLED_BACK = "RolledBack"
    # FeedbackPolicy: its monitors are read on schedule (retrainings run or not).
    MONITORING = "Monitoring"


PHASE_DESCRIPTIONS = {
    Phase.WAITING: "an object it references does not exist yet, and it continues when that object appears",
    Phase.INVALID: "the spec breaks a rule (the Ready condition says which), and nothing happens until it is fixed",
    Phase.RETRYING: "applying its children failed and is retried (the Degraded condition says why)",
    Phase.PENDING: "its workload is created and waits to be admitted or for its pods to start",
    Phase.RUNNING: "its workload runs",
    Phase.SUCCEEDED: "its workload finished successfully",
    Phase.FAILED: ("its workload failed for good, or the model version it names did not become available "
                   "and there was no previous version to restore (the Ready condition says why)"),
    Phase.SUSPENDED: "its workload is stopped by spec.suspend and resumes when that is false",
    Phase.ROLLING_OUT: "a model version is being rolled out and not every replica serves it yet",
    Phase.SERVING: "the model version the spec names is served by every desired replica",
    Phase.ROLLED_BACK: "the model version the spec names did not become available in time, and the previous one is served again",
    Phase.MONITORING: "its monitors are read on schedule; the Retraining and Promotion conditions say what it did about them",
}
