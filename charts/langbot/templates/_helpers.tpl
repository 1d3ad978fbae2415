{{/* Names ------------------------------------------------------------------------------ */}}
{{- define "langbot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "langbot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "langbot.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{/* Object name of a component: langbot -> <fullname>, others -> <fullname>-<component>. */}}
{{- define "langbot.componentName" -}}
{{- $full := include "langbot.fullname" .root -}}
{{- if eq .component "langbot" -}}{{ $full }}{{- else -}}{{ printf "%s-%s" ($full | trunc (int (sub 62 (len .component))) | trimSuffix "-") .component }}{{- end -}}
{{- end -}}

{{- define "langbot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels: call with (dict "root" $ "component" "box"). */}}
{{- define "langbot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "langbot.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "langbot.labels" -}}
{{ include "langbot.selectorLabels" . }}
helm.sh/chart: {{ include "langbot.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: langbot
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata block shared by every object: (dict "root" $ "component" "x" "name" "n" "annotations" map) */}}
{{- define "langbot.metadata" -}}
name: {{ .name }}
namespace: {{ include "langbot.namespace" .root }}
labels:
  {{- include "langbot.labels" . | nindent 2 }}
{{- $ann := merge (dict) (.annotations | default dict) (.root.Values.commonAnnotations | default dict) }}
{{- with $ann }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Images: (dict "root" $ "image" .Values.x.image "defaultTag" "v1") */}}
{{- define "langbot.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry -}}
{{- $tag := .image.tag | default .defaultTag | toString -}}
{{- $ref := .image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $ref $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref $tag -}}
{{- end -}}
{{- end -}}

{{- define "langbot.appTag" -}}v{{ .Chart.AppVersion }}{{- end -}}

{{/* Service accounts ------------------------------------------------------------------- */}}
{{- define "langbot.serviceAccountName" -}}
{{- if .values.serviceAccount.create -}}
{{- default (include "langbot.componentName" .) .values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Control tokens -------------------------------------------------------------------- */}}
{{- define "langbot.boxTokenSecret" -}}
{{- .Values.controlTokens.box.existingSecret | default (printf "%s-box-token" (include "langbot.fullname" .)) -}}
{{- end -}}
{{- define "langbot.boxTokenKey" -}}
{{- if .Values.controlTokens.box.existingSecret }}{{ .Values.controlTokens.box.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}
{{- define "langbot.pluginTokenSecret" -}}
{{- .Values.controlTokens.pluginRuntime.existingSecret | default (printf "%s-plugin-runtime-token" (include "langbot.fullname" .)) -}}
{{- end -}}
{{- define "langbot.pluginTokenKey" -}}
{{- if .Values.controlTokens.pluginRuntime.existingSecret }}{{ .Values.controlTokens.pluginRuntime.existingSecretKey }}{{ else }}token{{ end -}}
{{- end -}}

{{/* Box paths --------------------------------------------------------------------------- */}}
{{- define "langbot.boxSubPath" -}}
{{- if hasPrefix "/" .path }}{{ .path }}{{ else }}{{ printf "%s/%s" (trimSuffix "/" .root.Values.box.hostRoot) .path }}{{ end -}}
{{- end -}}
{{- define "langbot.boxDefaultWorkspace" -}}
{{- include "langbot.boxSubPath" (dict "root" . "path" .Values.box.defaultWorkspace) -}}
{{- end -}}
{{- define "langbot.boxSkillsRoot" -}}
{{- include "langbot.boxSubPath" (dict "root" . "path" .Values.box.skillsRoot) -}}
{{- end -}}
{{- define "langbot.boxAllowedMountRoots" -}}
{{- if .Values.box.allowedMountRoots }}{{ join "," .Values.box.allowedMountRoots }}{{ else }}{{ .Values.box.hostRoot }}{{ end -}}
{{- end -}}
{{- define "langbot.boxDocker" -}}
{{- if and .Values.box.enabled (eq .Values.box.backend "docker") }}true{{ end -}}
{{- end -}}

{{/* Environment from the ConfigMap, used by every component. */}}
{{- define "langbot.configEnv" -}}
- name: TZ
  valueFrom:
    configMapKeyRef:
      name: {{ include "langbot.fullname" .root }}-config
      key: TZ
{{- if .blockingExecutor }}
{{- range $k := list "LANGBOT_BLOCKING_EXECUTOR_MAX_WORKERS" "LANGBOT_BLOCKING_EXECUTOR_MAX_PENDING" "LANGBOT_BLOCKING_EXECUTOR_MAX_INFLIGHT_PER_SCOPE" }}
- name: {{ $k }}
  valueFrom:
    configMapKeyRef:
      name: {{ include "langbot.fullname" $.root }}-config
      key: {{ $k }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the three components: (dict "root" $ "component" "x" "values" .Values.x) */}}
{{- define "langbot.podCommon" -}}
{{- $g := .root.Values.global -}}
serviceAccountName: {{ include "langbot.serviceAccountName" . }}
automountServiceAccountToken: {{ .values.serviceAccount.automountServiceAccountToken }}
{{- $pullSecrets := concat ($g.imagePullSecrets | default list) (.values.imagePullSecrets | default list) | uniq }}
{{- with $pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.nodeSelector | default $g.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.tolerations | default $g.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (.values.priorityClassName | default $g.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Probes, resources, container security context: (dict "values" .Values.x) */}}
{{- define "langbot.containerCommon" -}}
{{- with .values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod template annotations: checksum of the shared config plus user annotations. */}}
{{- define "langbot.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* PVC claim name: (dict "root" $ "component" "x" "volume" "data" "p" persistence) */}}
{{- define "langbot.claimName" -}}
{{- .p.existingClaim | default (printf "%s-%s" (include "langbot.componentName" .) .volume) -}}
{{- end -}}

{{/* Webhook ports as a list of ints. */}}
{{- define "langbot.webhookPorts" -}}
{{- $ports := list -}}
{{- if .Values.langbot.webhookPorts -}}
{{- $ports = .Values.langbot.webhookPorts -}}
{{- else if .Values.langbot.webhookPortRange -}}
{{- $ports = untilStep (int .Values.langbot.webhookPortRange.start) (int (add1 .Values.langbot.webhookPortRange.end)) 1 -}}
{{- end -}}
{{- toJson $ports -}}
{{- end -}}
