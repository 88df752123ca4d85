{{/*
The prefix of every object's name: the release name, or
"<release>-veil" when the release name does not contain "veil". A release
named `veil` gets exactly the names of manifests/ (veil-operator, …).
*/}}
{{- define "veil.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "veil.operatorName" -}}
{{- printf "%s-operator" (include "veil.fullname" .) -}}
{{- end -}}

{{- define "veil.agentName" -}}
{{- printf "%s-agent" (include "veil.fullname" .) -}}
{{- end -}}

{{/* Labels on every object; pass (dict "root" $ "component" "operator"). */}}
{{- define "veil.labels" -}}
{{ include "veil.selectorLabels" . }}
app.kubernetes.io/part-of: veil
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "veil.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "veil-%s" .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "veil.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The namespace the operator watches when rbac.scope is `namespace`. */}}
{{- define "veil.watchNamespace" -}}
{{- default .Release.Namespace .Values.rbac.namespace -}}
{{- end -}}
