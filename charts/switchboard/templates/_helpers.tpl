{{/* The chart name, or nameOverride. */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.operatorName" -}}{{ include "switchboard.fullname" . }}-operator{{- end }}
{{- define "switchboard.signalingName" -}}{{ include "switchboard.fullname" . }}-signaling{{- end }}
{{- define "switchboard.configSecretName" -}}{{ include "switchboard.fullname" . }}-config{{- end }}

{{/* Where Rooms, SfuNodes, the TURN Secret, the Lease and the Roles live. */}}
{{- define "switchboard.watchNamespace" -}}{{ default .Release.Namespace .Values.watchNamespace }}{{- end }}

{{- define "switchboard.turnSecretName" -}}{{ default (printf "%s-turn" (include "switchboard.fullname" .)) .Values.turn.secretName }}{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{/* Selector labels of one component: include with (list $ "operator"). */}}
{{- define "switchboard.selectorLabels" -}}
{{- $ := index . 0 }}
app.kubernetes.io/name: {{ include "switchboard.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchboard.image" -}}
{{- $ := index . 0 }}{{- $image := index . 1 }}
{{- printf "%s:%s" $image.repository (default $.Chart.AppVersion $image.tag) }}
{{- end }}

{{/* Whether the chart's own config Secret holds anything. */}}
{{- define "switchboard.configSecretNeeded" -}}
{{- if or (and .Values.redis.url (not .Values.redis.existingSecret)) (and .Values.jwt.hs256 (not .Values.jwt.existingSecret)) (and .Values.turn.enabled .Values.turn.redisUrls (not .Values.turn.redisUrlsExistingSecret)) (and .Values.signaling.webhooks.urls .Values.signaling.webhooks.key (not .Values.signaling.webhooks.existingSecret)) }}true{{- end }}
{{- end }}

{{/* Fails with a clear message when a required value is missing. */}}
{{- define "switchboard.validate" -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "switchboard: set redis.url or redis.existingSecret: signaling pods share room state through Redis" }}
{{- end }}
{{- if not (or .Values.jwt.hs256 .Values.jwt.existingSecret .Values.jwt.publicKeys) }}
{{- fail "switchboard: set jwt.hs256, jwt.existingSecret or jwt.publicKeys: signaling refuses to start without a key for join tokens" }}
{{- end }}
{{- if and .Values.jwt.publicKeys (not .Values.jwt.publicKeysSecret) }}
{{- fail "switchboard: jwt.publicKeys needs jwt.publicKeysSecret, the Secret holding the PEM files" }}
{{- end }}
{{- if and .Values.signaling.webhooks.urls (not (or .Values.signaling.webhooks.key .Values.signaling.webhooks.existingSecret)) }}
{{- fail "switchboard: signaling.webhooks.urls needs signaling.webhooks.key or signaling.webhooks.existingSecret: webhooks are always signed" }}
{{- end }}
{{- if and .Values.turn.enabled (or .Values.turn.redisUrls .Values.turn.redisUrlsExistingSecret) (not .Values.turn.realm) }}
{{- fail "switchboard: turn.realm is required with turn.redisUrls or turn.redisUrlsExistingSecret" }}
{{- end }}
{{- end }}
