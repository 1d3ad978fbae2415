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

{{/* metadata block shared by every object:
     (dict "root" $ "component" "x" "name" "n" "annotations" map "labels" map).
     Extra labels go into metadata.labels (merged with the chart's labels), never after the block:
     the block ends with the annotations when commonAnnotations or annotations are set. */}}
{{- define "langbot.metadata" -}}
name: {{ .name }}
namespace: {{ include "langbot.namespace" .root }}
labels:
  {{- if .labels }}
  {{- toYaml (merge (dict) .labels (include "langbot.labels" . | fromYaml)) | nindent 2 }}
  {{- else }}
  {{- include "langbot.labels" . | nindent 2 }}
  {{- end }}
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
{{- define "langbot.boxKube" -}}
{{- if and .Values.box.enabled (eq .Values.box.backend "kubernetes") }}true{{ end -}}
{{- end -}}
{{/* The backends whose sandboxes see the box root at box.hostRoot, as LangBot does (LangBot's
     shared-file-system mode: BOX__LOCAL__* are the real paths): docker and kubernetes (boxd). */}}
{{- define "langbot.boxShared" -}}
{{- if or (include "langbot.boxDocker" .) (include "langbot.boxKube" .) }}true{{ end -}}
{{- end -}}

{{/* kubernetes backend ------------------------------------------------------------------ */}}
{{- define "langbot.boxRootClaim" -}}
{{- .Values.box.kubernetes.boxRoot.existingClaim | default (printf "%s-root" (include "langbot.componentName" (dict "root" . "component" "box"))) -}}
{{- end -}}
{{/* A ReadWriteMany claim can be mounted on every node; any other claim attaches to one node,
     so langbot, boxd and the sandboxes must share it ("true" = pin to one node). */}}
{{- define "langbot.boxPinned" -}}
{{- if not (has "ReadWriteMany" .Values.box.kubernetes.boxRoot.accessModes) }}true{{ end -}}
{{- end -}}
{{- define "langbot.boxOwnerConfigMap" -}}
{{- printf "%s-box-sandboxes" (include "langbot.fullname" .) -}}
{{- end -}}
{{/* BOXD_SCOPE. docker: box.docker.scope or "<namespace>.<fullname>". kubernetes: that default
     as a label value (sandbox Pods carry it as langbot.box/scope): at most 63 characters, so a
     longer one keeps its first 54 characters (ending alphanumeric) and 8 hex digits of its hash. */}}
{{- define "langbot.boxScope" -}}
{{- $default := printf "%s.%s" (include "langbot.namespace" .) (include "langbot.fullname" .) -}}
{{- if eq .Values.box.backend "kubernetes" -}}
{{- if le (len $default) 63 -}}
{{- $default -}}
{{- else -}}
{{- printf "%s-%s" (regexReplaceAll "[^A-Za-z0-9]+$" (trunc 54 $default) "") (trunc 8 (sha256sum $default)) -}}
{{- end -}}
{{- else -}}
{{- .Values.box.docker.scope | default $default -}}
{{- end -}}
{{- end -}}
{{/* Labels boxd puts on every sandbox Pod of this release (boxd/internal/kube/pod.go). */}}
{{- define "langbot.sandboxSelector" -}}
langbot.box: "true"
langbot.box/scope: {{ include "langbot.boxScope" . | quote }}
{{- end -}}
{{/* Pull secrets of the sandbox Pods: the sandbox image's and the boxd image's (the exec
     agent's init container), as a JSON list. */}}
{{- define "langbot.sandboxPullSecrets" -}}
{{- toJson (concat (.Values.global.imagePullSecrets | default list) (.Values.box.imagePullSecrets | default list) (.Values.box.kubernetes.imagePullSecrets | default list) | uniq) -}}
{{- end -}}

{{/* Environment from the ConfigMap, used by every component: (dict "root" $ "component" "x").
     config.blockingExecutor reaches the runtimes as LANGBOT_BLOCKING_EXECUTOR_* (read by
     langbot-plugin's bounded executor) and LangBot as SYSTEM__BLOCKING_EXECUTOR__* (its config
     keys system.blocking_executor.*, applied by the env override rule of LangBot v4.10.8
     src/langbot/pkg/core/stages/load_config.py; docker/kubernetes.yaml sets the same). */}}
{{- define "langbot.blockingExecutorKeys" -}}
{{- if eq .component "langbot" -}}
["SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS","SYSTEM__BLOCKING_EXECUTOR__MAX_PENDING","SYSTEM__BLOCKING_EXECUTOR__MAX_INFLIGHT_PER_SCOPE"]
{{- else -}}
["LANGBOT_BLOCKING_EXECUTOR_MAX_WORKERS","LANGBOT_BLOCKING_EXECUTOR_MAX_PENDING","LANGBOT_BLOCKING_EXECUTOR_MAX_INFLIGHT_PER_SCOPE"]
{{- end -}}
{{- end -}}
{{- define "langbot.configEnv" -}}
{{- range $k := prepend (include "langbot.blockingExecutorKeys" . | fromJsonArray) "TZ" }}
- name: {{ $k }}
  valueFrom:
    configMapKeyRef:
      name: {{ include "langbot.fullname" $.root }}-config
      key: {{ $k }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by the three components: (dict "root" $ "component" "x" "values" .Values.x),
     optionally with "podSecurityContext" and "automountToken" replacing the values' own. */}}
{{- define "langbot.podCommon" -}}
{{- $g := .root.Values.global -}}
serviceAccountName: {{ include "langbot.serviceAccountName" . }}
automountServiceAccountToken: {{ if hasKey . "automountToken" }}{{ .automountToken }}{{ else }}{{ .values.serviceAccount.automountServiceAccountToken }}{{ end }}
{{- $pullSecrets := concat ($g.imagePullSecrets | default list) (.values.imagePullSecrets | default list) | uniq }}
{{- with $pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with (ternary .podSecurityContext .values.podSecurityContext (hasKey . "podSecurityContext")) }}
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

{{/* The chart's default probes per component. They live here and not in values.yaml: Helm
     deep-merges a user's map into the defaults, so `livenessProbe: {}` could not disable a
     default from values.yaml and a tcpSocket/exec override would keep the default httpGet too.
     - LangBot serves GET /healthz (LangBot v4.10.8 src/langbot/pkg/api/http/controller/main.py).
     - The plugin runtime answers plain HTTP only on /healthz; any other path is taken as a
       WebSocket handshake and fails (langbot-plugin 0.5.5
       src/langbot_plugin/runtime/io/controllers/ws/server.py, process_http_request).
     - The box (boxd, or `lbp box` for e2b: langbot-plugin 0.5.5 src/langbot_plugin/box/server.py)
       serves /healthz (liveness) and /readyz (backend readiness). */}}
{{- define "langbot.defaultProbes" -}}
langbot:
  livenessProbe: {httpGet: {path: /healthz, port: web}, initialDelaySeconds: 60, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3}
  readinessProbe: {httpGet: {path: /healthz, port: web}, initialDelaySeconds: 10, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3}
plugin-runtime:
  livenessProbe: {httpGet: {path: /healthz, port: runtime}, initialDelaySeconds: 30, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3}
  readinessProbe: {httpGet: {path: /healthz, port: runtime}, initialDelaySeconds: 5, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3}
box:
  livenessProbe: {httpGet: {path: /healthz, port: rpc}, initialDelaySeconds: 5, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3}
  readinessProbe: {httpGet: {path: /readyz, port: rpc}, initialDelaySeconds: 2, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3}
{{- end -}}

{{/* One probe: (dict "probe" <value> "default" <chart default or nil>).
     unset (null) = the default; {} = no probe; a map = that map, its omitted timings taken from
     the default, and the default handler only when the map names no handler of its own. */}}
{{- define "langbot.probe" -}}
{{- $p := .probe -}}
{{- $default := .default | default dict -}}
{{- if kindIs "invalid" $p -}}
{{- $p = $default -}}
{{- else if $p -}}
{{- $own := false -}}
{{- range $h := include "langbot.probeHandlers" . | fromJsonArray }}{{ if get $p $h }}{{ $own = true }}{{ end }}{{ end -}}
{{- if $own }}{{ $default = omit $default "httpGet" "tcpSocket" "exec" "grpc" }}{{ end -}}
{{- $p = merge (deepCopy $p) $default -}}
{{- end -}}
{{- with $p }}{{ toYaml . }}{{ end -}}
{{- end -}}

{{- define "langbot.probeHandlers" -}}["httpGet","tcpSocket","exec","grpc"]{{- end -}}

{{/* Probes, resources, container security context: (dict "root" $ "component" "x" "values" .Values.x) */}}
{{- define "langbot.containerCommon" -}}
{{- with .values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $defaults := index (include "langbot.defaultProbes" .root | fromYaml) .component | default dict }}
{{- range $kind := list "startupProbe" "livenessProbe" "readinessProbe" }}
{{- with include "langbot.probe" (dict "probe" (index $.values $kind) "default" (index $defaults $kind)) }}
{{ $kind }}:
  {{- . | nindent 2 }}
{{- end }}
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

{{/* LangBot config keys the chart manages, as env entries, set in EVERY state.
     LangBot applies SECTION__KEY env overrides to data/config.yaml and writes the file back on
     the data volume at every start (LangBot v4.10.8 src/langbot/pkg/core/stages/load_config.py),
     so a key the chart stopped setting would keep its last value there. When a feature is off,
     its keys get the value of LangBot's own template (v4.10.8 src/langbot/templates/config.yaml)
     instead of being left out. The tests list these keys in both states. */}}
{{- define "langbot.managedEnv" -}}
{{- $box := .Values.box -}}
{{- $pr := .Values.pluginRuntime -}}
{{- $shared := include "langbot.boxShared" . -}}
{{- $env := list -}}
{{- $env = append $env (list "PLUGIN__ENABLE" $pr.enabled) -}}
{{- $env = append $env (list "PLUGIN__RUNTIME_WS_URL" (printf "ws://%s:%d%s" (include "langbot.componentName" (dict "root" . "component" "plugin-runtime")) (int $pr.port) $pr.wsPath)) -}}
{{- $env = append $env (list "PLUGIN__DISPLAY_PLUGIN_DEBUG_URL" (include "langbot.pluginDebugUrl" .)) -}}
{{- $env = append $env (list "BOX__ENABLED" $box.enabled) -}}
{{- /* box.backend reaches boxd in LangBot's box_init. boxd picks its backend once, at start-up,
       from LANGBOT_BOX_CONFIG, and then accepts only "" or the name of that backend ("local"
       only for docker: boxd/internal/server/server.go selectBackend), reporting no backend for
       anything else; so BOX__BACKEND is box.backend itself: docker, kubernetes or e2b. */ -}}
{{- $env = append $env (list "BOX__BACKEND" (ternary $box.backend "local" $box.enabled)) -}}
{{- $env = append $env (list "BOX__RUNTIME__ENDPOINT" (ternary (printf "ws://%s:%d" (include "langbot.componentName" (dict "root" . "component" "box")) (int $box.port)) "" $box.enabled)) -}}
{{- if $shared -}}
{{- $env = append $env (list "BOX__LOCAL__HOST_ROOT" $box.hostRoot) -}}
{{- $env = append $env (list "BOX__LOCAL__DEFAULT_WORKSPACE" (include "langbot.boxDefaultWorkspace" .)) -}}
{{- $env = append $env (list "BOX__LOCAL__SKILLS_ROOT" (include "langbot.boxSkillsRoot" .)) -}}
{{- $env = append $env (list "BOX__LOCAL__ALLOWED_MOUNT_ROOTS" (include "langbot.boxAllowedMountRoots" .)) -}}
{{- else -}}
{{- $env = append $env (list "BOX__LOCAL__HOST_ROOT" "./data/box") -}}
{{- $env = append $env (list "BOX__LOCAL__DEFAULT_WORKSPACE" "") -}}
{{- $env = append $env (list "BOX__LOCAL__SKILLS_ROOT" "skills") -}}
{{- $env = append $env (list "BOX__LOCAL__ALLOWED_MOUNT_ROOTS" "./data/box,/tmp") -}}
{{- end -}}
{{- $env = append $env (list "BOX__DOCKER__CPU_LIMIT_ENABLED" $box.docker.cpuLimitEnabled) -}}
{{- $env = append $env (list "BOX__DOCKER__HARDENING" $box.docker.hardening) -}}
{{- $env = append $env (list "BOX__DOCKER__EXEC_AGENT" $box.docker.execAgent) -}}
{{- with $box.docker.sandboxUser -}}
{{- $env = append $env (list "BOX__DOCKER__USER" .) -}}
{{- end -}}
{{- /* LangBot hands its whole box section to the runtime in box_init; the e2b backend of
       `lbp box` reads e2b.template from it (langbot-plugin 0.5.5 src/langbot_plugin/box/e2b_backend.py). */ -}}
{{- $env = append $env (list "BOX__E2B__TEMPLATE" $box.e2b.template) -}}
{{- $env = append $env (list "BOX__E2B__API_URL" $box.e2b.apiUrl) -}}
{{- range $env }}
- name: {{ index . 0 }}
  value: {{ index . 1 | toString | quote }}
{{- end }}
{{- end -}}

{{/* plugin.display_plugin_debug_url: the URL LangBot's web UI shows plugin developers for
     `lbp run` remote debugging. Default: LangBot's own default form on the debug port, reachable
     with kubectl port-forward. */}}
{{- define "langbot.pluginDebugUrl" -}}
{{- .Values.pluginRuntime.debug.displayUrl | default (printf "ws://localhost:%d/plugin/debug/ws" (int .Values.pluginRuntime.debug.port)) -}}
{{- end -}}
