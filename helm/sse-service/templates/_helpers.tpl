{{/*
Expand the name of the chart.
*/}}
{{- define "sse-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-sse-service, or the release name when it
already contains the chart name (the alert SSENoReadyReplica matches
deployments by ".*sse-service.*").
*/}}
{{- define "sse-service.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sse-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "sse-service.labels" -}}
helm.sh/chart: {{ include "sse-service.chart" . }}
{{ include "sse-service.selectorLabels" . }}
app.kubernetes.io/version: {{ include "sse-service.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "sse-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sse-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the helm test pod: deliberately not the selector labels, so that
neither the Service nor the ReplicaSet picks it up.
*/}}
{{- define "sse-service.testLabels" -}}
app.kubernetes.io/name: {{ include "sse-service.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
{{- end }}

{{- define "sse-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sse-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image tag: .Values.image.tag, else the chart's appVersion; never "latest".
*/}}
{{- define "sse-service.imageTag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if or (eq $tag "latest") (eq $tag "") }}
{{- fail "image.tag must be a pinned version (it defaults to the chart's appVersion), not \"latest\"" }}
{{- end }}
{{- $tag }}
{{- end }}

{{- define "sse-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository (include "sse-service.imageTag" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "sse-service.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the publish tokens, and its key.
*/}}
{{- define "sse-service.secretName" -}}
{{- default (include "sse-service.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "sse-service.secretKey" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKey }}
{{- else -}}
tokens
{{- end }}
{{- end }}

{{/*
The publish tokens the chart's Secret holds (one a line): publishTokens,
else the token already in the release's Secret (lookup: stable across
upgrades), else a new random one. Computed once per render and memoised in
.Values, so the Secret and the Deployment's checksum annotation agree.
*/}}
{{- define "sse-service.publishTokens" -}}
{{- if not (hasKey .Values "__publishTokens") }}
{{- $tokens := "" }}
{{- if .Values.publishTokens }}
{{- $tokens = join "\n" .Values.publishTokens }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sse-service.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "tokens") }}
{{- $tokens = index $existing.data "tokens" | b64dec }}
{{- else }}
{{- $tokens = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $_ := set .Values "__publishTokens" $tokens }}
{{- end }}
{{- index .Values "__publishTokens" }}
{{- end }}

{{/*
Replicas the PDB protects: replicaCount, or hpa.minReplicas with the HPA.
*/}}
{{- define "sse-service.minReplicas" -}}
{{- if .Values.hpa.enabled }}
{{- .Values.hpa.minReplicas | int }}
{{- else }}
{{- .Values.replicaCount | int }}
{{- end }}
{{- end }}

{{/*
A config value as an environment variable string. YAML numbers reach the
templates as float64: print whole numbers without an exponent.
*/}}
{{- define "sse-service.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq (. | int64 | float64) . }}{{ . | int64 | toString }}{{ else }}{{ . | toString }}{{ end }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}
