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
- apiGroups: [""]
  resources: [configmaps]
  verbs: [list, create, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}
