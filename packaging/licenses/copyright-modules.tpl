{{- /* go-licenses report template: one line per module for the copyright file's Comment. */ -}}
{{- range . }}
 {{ .Name }} {{ .Version }}: {{ .LicenseName }}
{{- end }}
