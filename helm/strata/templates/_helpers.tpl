{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "strata.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name used for every object the chart creates. */}}
{{- define "strata.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "strata.labels" -}}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: strata
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccountCreate }}
{{- default (include "strata.fullname" .) .Values.serviceAccountName }}
{{- else }}
{{- required "serviceAccountName is required when serviceAccountCreate is false" .Values.serviceAccountName }}
{{- end }}
{{- end }}

{{/*
What the operator does inside a namespace, and no more: watch and annotate its own kinds
(kopf keeps its bookkeeping in annotations), write their status, manage the children it
creates, and post events.
*/}}
{{- define "strata.operatorRules" -}}
- apiGroups: [strata.dev]
  resources: [datasets, trainingjobs, modeldeployments, feedbackpolicies]
  verbs: [list, watch, patch]
- apiGroups: [strata.dev]
  resources: [datasets/status, trainingjobs/status, modeldeployments/status, feedbackpolicies/status]
  verbs: [patch]
# A FeedbackPolicy's retrainings: TrainingJobs it creates (never deletes: they go with their policy).
- apiGroups: [strata.dev]
  resources: [trainingjobs]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch, delete]
# A TrainingJob's children: one Indexed Job per attempt, and the checkpoint claim it creates
# when the spec names none; a Dataset's: one Job per pipeline run. Their pods are only read
# (their status, rank 0's progress, the pipeline's termination message).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# A ModelDeployment's children.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
# Only used when the Prometheus Operator's CRDs are installed.
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors, prometheusrules]
  verbs: [list, watch, create, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
Alert rules for the operator itself, and for the FeedbackPolicies' monitors. Kept in a helper so tests can render them alone and
check them with promtool. The job label is the metrics Service's name, as the
ServiceMonitor (and most scrape configs) set it.
*/}}
{{- define "strata.alertRules" -}}
{{- $job := printf "%s-metrics" (include "strata.fullname" .) -}}
groups:
  - name: strata-operator
    rules:
      - alert: StrataOperatorDown
        expr: absent(up{job="{{ $job }}"} == 1)
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: The Strata operator is not being scraped
          description: >-
            No healthy scrape of job {{ $job }} for 5 minutes: Datasets, TrainingJobs,
            ModelDeployments and FeedbackPolicies are not being reconciled.
      - alert: StrataReconcileErrors
        expr: sum by (kind) (increase(strata_reconcile_errors_total{job="{{ $job }}"}[10m])) > 0
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "Strata fails to reconcile {{`{{ $labels.kind }}`}} resources"
          description: >-
            {{`{{ $value | humanize }}`}} failed reconciliations of {{`{{ $labels.kind }}`}} in the last
            10 minutes, for 15 minutes. The resources' Degraded condition and the operator's
            events say why (kubectl get strata -A -o wide).
      - alert: StrataInvalidSpecs
        expr: sum by (kind) (increase(strata_reconcile_total{job="{{ $job }}",result="invalid"}[30m])) > 0
        for: 30m
        labels:
          severity: info
        annotations:
          summary: "Some {{`{{ $labels.kind }}`}} resources have invalid specs"
          description: >-
            Resources that the API server accepted but the operator cannot use: their
            Ready condition (reason InvalidSpec) names the field to fix.
      - alert: StrataReconcileSlow
        expr: >-
          histogram_quantile(0.99, sum by (le, kind) (rate(strata_reconcile_duration_seconds_bucket{job="{{ $job }}"}[10m]))) > 10
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "Reconciling {{`{{ $labels.kind }}`}} takes over 10 s (p99)"
          description: The API server or the operator is overloaded; status updates lag behind.
  - name: strata-feedback
    rules:
      - alert: StrataFeedbackMonitorBreached
        expr: max by (namespace, policy, target, monitor) (strata_feedback_monitor_breached{job="{{ $job }}"}) == 1
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "The {{`{{ $labels.monitor }}`}} monitor of ModelDeployment {{`{{ $labels.namespace }}`}}/{{`{{ $labels.target }}`}} is breached"
          description: >-
            FeedbackPolicy {{`{{ $labels.policy }}`}} has read its {{`{{ $labels.monitor }}`}} monitor as breached
            for 15 minutes. Its status says the value, the threshold and what it did about it
            (kubectl describe feedbackpolicy {{`{{ $labels.policy }}`}} -n {{`{{ $labels.namespace }}`}}).
      - alert: StrataFeedbackReviewBacklog
        expr: max by (namespace, policy, target) (strata_feedback_review_open{job="{{ $job }}"}) > 0
        for: 24h
        labels:
          severity: info
        annotations:
          summary: "Flagged outputs of ModelDeployment {{`{{ $labels.namespace }}`}}/{{`{{ $labels.target }}`}} wait for review"
          description: >-
            FeedbackPolicy {{`{{ $labels.policy }}`}} has listed flagged outputs that no one has resolved for a
            day ({{`{{ $value }}`}} open now). List and resolve them with
            strata review list {{`{{ $labels.policy }}`}} -n {{`{{ $labels.namespace }}`}}.
{{- end }}
