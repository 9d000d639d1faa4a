{{/* Names ------------------------------------------------------------------------------------ */}}
{{- define "kms.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kms.fullname" -}}
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

{{- define "kms.operator.name" -}}{{ include "kms.fullname" . | trunc 54 | trimSuffix "-" }}-operator{{- end }}
{{- define "kms.facade.name" -}}{{ include "kms.fullname" . | trunc 59 | trimSuffix "-" }}-api{{- end }}

{{- define "kms.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "kms.operator.name" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kms.facade.serviceAccountName" -}}
{{- if .Values.facade.serviceAccount.create }}
{{- default (include "kms.facade.name" .) .Values.facade.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.facade.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The names the facade uses for its own state (fixed in kms_api.crclient). */}}
{{- define "kms.usersSecret" -}}kube-mapserver-users{{- end }}
{{- define "kms.jwtSecret" -}}kube-mapserver-jwt{{- end }}
{{- define "kms.configMap" -}}kube-mapserver-config{{- end }}
{{- define "kms.tombstonesMap" -}}kube-mapserver-tombstones{{- end }}

{{- define "kms.adminSecret" -}}
{{- default (printf "%s-admin" (include "kms.fullname" .)) .Values.auth.admin.existingSecret }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------------- */}}
{{- define "kms.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kms.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kms.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* usage: include "kms.labels" (dict "root" $ "component" "operator") */}}
{{- define "kms.labels" -}}
{{ include "kms.selectorLabels" . }}
app.kubernetes.io/part-of: kube-mapserver
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "kms.chart" .root }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Image ------------------------------------------------------------------------------------ */}}
{{- define "kms.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A secondary image (mapserverImage, mapcacheImage): "kms.imageRef" (dict "image" ... "root" $) */}}
{{- define "kms.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Pod spec pieces shared by the operator and the facade ---------------------------------- */}}
{{- define "kms.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* The data volume source: the claim, or an emptyDir when none is configured. */}}
{{- define "kms.dataVolume" -}}
- name: data
{{- if .root.Values.data.persistentVolumeClaim }}
  persistentVolumeClaim:
    claimName: {{ .root.Values.data.persistentVolumeClaim }}
    readOnly: {{ .readOnly }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{/* Credentials: the given value, else the live Secret's (lookup: kept across upgrades), else a
random one. Memoized in .Values so every template of one render sees the same value. */}}
{{- define "kms.memo" -}}
{{- if not (hasKey .Values "__kmsGenerated") }}
{{- $_ := set .Values "__kmsGenerated" (dict) }}
{{- end }}
{{- end }}

{{- define "kms.adminPassword" -}}
{{- include "kms.memo" . }}
{{- if not (hasKey .Values.__kmsGenerated "admin") }}
{{- $password := .Values.auth.admin.password }}
{{- if not $password }}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "kms.adminSecret" .) }}
{{- if and $live $live.data (hasKey $live.data .Values.auth.admin.passwordKey) }}
{{- $password = index $live.data .Values.auth.admin.passwordKey | b64dec }}
{{- else }}
{{- $password = randAlphaNum 24 }}
{{- end }}
{{- end }}
{{- $_ := set .Values.__kmsGenerated "admin" $password }}
{{- end }}
{{- index .Values.__kmsGenerated "admin" }}
{{- end }}

{{- define "kms.jwtSigningKey" -}}
{{- include "kms.memo" . }}
{{- if not (hasKey .Values.__kmsGenerated "jwt") }}
{{- $key := .Values.auth.jwt.signingKey }}
{{- if not $key }}
{{- $live := lookup "v1" "Secret" .Release.Namespace (include "kms.jwtSecret" .) }}
{{- if and $live $live.data (hasKey $live.data "signing-key") }}
{{- $key = index $live.data "signing-key" | b64dec }}
{{- else }}
{{- $key = randAlphaNum 64 }}
{{- end }}
{{- end }}
{{- $_ := set .Values.__kmsGenerated "jwt" $key }}
{{- end }}
{{- index .Values.__kmsGenerated "jwt" }}
{{- end }}

{{/* Changes when the admin's password or the signing key changes: restarts the facade, whose init
container re-applies the admin password. */}}
{{- define "kms.authChecksum" -}}
{{- $parts := list .Values.auth.admin.username .Values.auth.admin.existingSecret .Values.auth.admin.passwordKey }}
{{- if and .Values.auth.admin.bootstrap (not .Values.auth.admin.existingSecret) }}
{{- $parts = append $parts (include "kms.adminPassword" .) }}
{{- end }}
{{- if .Values.auth.jwt.create }}
{{- $parts = append $parts (include "kms.jwtSigningKey" .) }}
{{- end }}
{{- join "\n" $parts | sha256sum }}
{{- end }}

{{/* NetworkPolicy egress every chart pod needs: DNS and the apiserver (networkPolicy.*). */}}
{{- define "kms.netpol.baseEgress" -}}
{{- $np := .Values.networkPolicy -}}
{{- if $np.dns.enabled }}
# DNS
- ports:
    {{- range $np.dns.ports }}
    - {port: {{ . }}, protocol: UDP}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- $peer := dict }}
  {{- with $np.dns.namespaceSelector }}{{ $_ := set $peer "namespaceSelector" . }}{{ end }}
  {{- with $np.dns.podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end }}
  {{- if $peer }}
  to:
    {{- toYaml (list $peer) | nindent 4 }}
  {{- end }}
{{- end }}
# the Kubernetes apiserver (the address behind the kubernetes Service: policies see it after DNAT)
- ports:
    {{- range $np.apiServer.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
  {{- with $np.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock: {cidr: {{ . | quote }}}
    {{- end }}
  {{- end }}
{{- end }}
