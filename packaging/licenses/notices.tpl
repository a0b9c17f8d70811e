{{- /* go-licenses report template: THIRD_PARTY_NOTICES (scripts/release-files.sh). */ -}}
{{- range . }}
================================================================================
{{ .Name }} {{ .Version }} — {{ .LicenseName }}
================================================================================

{{ .LicenseText }}
{{ end -}}
