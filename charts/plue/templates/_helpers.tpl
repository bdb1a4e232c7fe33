{{/* Names, labels and the values several templates share. */}}

{{- define "plue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plue.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: who made it and which release it belongs to. */}}
{{- define "plue.labels" -}}
app.kubernetes.io/name: {{ include "plue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "plue.chartLabels" . }}
{{- end -}}

{{/* The labels besides name and instance (pod templates add them to their selector's). */}}
{{- define "plue.chartLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "plue.engineSelector" -}}
app.kubernetes.io/name: {{ include "plue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine
{{- end -}}

{{- define "plue.postgresSelector" -}}
app.kubernetes.io/name: {{ include "plue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: postgresql
{{- end -}}

{{/* The pool's instance name: it labels the runner pods the engine creates. */}}
{{- define "plue.poolInstance" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels every runner pod of this release carries (the pool's selector). */}}
{{- define "plue.runnerSelector" -}}
app.kubernetes.io/managed-by: plue
app.kubernetes.io/instance: {{ include "plue.poolInstance" . | quote }}
{{- end -}}

{{/* Where runner pods live: pool.namespace, else "<release namespace>-runners" (never the
engine's own namespace by default, so no runner pod can name the engine's Secrets). */}}
{{- define "plue.runnerNamespace" -}}
{{- default (printf "%s-runners" (default "default" .Release.Namespace) | trunc 63 | trimSuffix "-") .Values.pool.namespace -}}
{{- end -}}

{{- define "plue.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "plue.secretName" -}}
{{- default (include "plue.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "plue.serviceUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "plue.fullname" .) .Release.Namespace .Values.service.port -}}
{{- end -}}

{{- define "plue.runnerUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "plue.fullname" .) .Release.Namespace .Values.service.runnerPort -}}
{{- end -}}

{{- define "plue.publicUrl" -}}
{{- if .Values.publicUrl -}}
{{- .Values.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := (first .Values.ingress.hosts).host -}}
{{- if .Values.ingress.tls -}}https{{- else -}}http{{- end -}}://{{ $host }}
{{- else -}}
{{- include "plue.serviceUrl" . -}}
{{- end -}}
{{- end -}}

{{/* Where DATABASE_URL comes from: "external", "existing" or "internal". */}}
{{- define "plue.databaseSource" -}}
{{- if .Values.database.existingSecret -}}existing
{{- else if .Values.database.url -}}external
{{- else if .Values.postgresql.enabled -}}internal
{{- else -}}
{{- fail "plue: no database: set database.url, database.existingSecret, or postgresql.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* A value kept from the live object across upgrades, else `default`, else generated. */}}
{{- define "plue.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .namespace .name -}}
{{- if .value -}}
{{- .value | b64enc -}}
{{- else if and $existing (index $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum 48 | b64enc -}}
{{- end -}}
{{- end -}}

{{/* Hardened container security context (non-root, nothing to escalate to). */}}
{{- define "plue.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The cluster's egress proxy (`plue egress-proxy`): its pods, and the URL runner pods reach it at. */}}
{{- define "plue.egressProxySelector" -}}
app.kubernetes.io/name: {{ include "plue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: egress-proxy
{{- end -}}

{{- define "plue.egressProxyUrl" -}}
{{- printf "http://%s-egress.%s.svc:%v" (include "plue.fullname" .) .Release.Namespace .Values.egressProxy.port -}}
{{- end -}}
