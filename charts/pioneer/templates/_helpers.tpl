{{- define "pioneer.name" -}}{{ .Release.Name }}-pioneer{{- end -}}
{{- define "pioneer.labels" -}}
app.kubernetes.io/name: pioneer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
{{- define "pioneer.selector" -}}
app.kubernetes.io/name: pioneer
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
