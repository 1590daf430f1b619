{{/* The StatefulSet's name: pods are FULLNAME-ORDINAL. */}}
{{- define "deeb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless Service that publishes every pod's DNS name. */}}
{{- define "deeb.peersService" -}}
{{- printf "%s-peers" (include "deeb.fullname" .) -}}
{{- end -}}

{{- define "deeb.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "deeb.labels" -}}
{{ include "deeb.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* https when clients must use TLS (the probes follow). */}}
{{- define "deeb.scheme" -}}
{{- if .Values.tls.client.enabled }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}
