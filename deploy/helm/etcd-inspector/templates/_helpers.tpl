{{- define "etcd-inspector.labels" -}}
app.kubernetes.io/name: etcd-inspector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "etcd-inspector.selector" -}}
app.kubernetes.io/name: etcd-inspector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
