{{- /*
LangBot's production settings (database, vector database, object storage, public URLs) as
LangBot env overrides. LangBot 4.10.8 (pkg/core/stages/load_config.py) maps an upper-case
SECTION__KEY variable to section.key of data/config.yaml, converts the string to the type of the
key already there (bool: true/1/yes/on; int; float; list: comma-separated) and writes the result
back into data/config.yaml on the data volume at every start. Hence:
  - every key below is rendered in every state (an unset key would keep its last value);
  - secrets come only from valueFrom.secretKeyRef, and an unused secret key is set to "" so a
    password of a previous configuration does not stay in data/config.yaml;
  - a key missing from an older data/config.yaml is created as a string, so booleans are
    rendered "true" or "" (both read right as a bool and as a string; "false" would be truthy).
*/ -}}

{{- /* langbot.secretRefErrors: problems of one {name, key} reference (dict "ref" . "field" "a.b"). */ -}}
{{- define "langbot.secretRefErrors" -}}
{{- $r := .ref | default dict -}}
{{- if and $r.name (not $r.key) -}}
- {{ .field }}.key is empty: set it to the key of Secret {{ $r.name | quote }} that holds the value (e.g. {{ .field }}.key=password)
{{ end -}}
{{- if and $r.key (not $r.name) -}}
- {{ .field }}.name is empty: set it to the name of an existing Secret holding key {{ $r.key | quote }}
{{ end -}}
{{- end -}}

{{- /* langbot.urlCredentialErrors: a plain URL value must not carry a password. */ -}}
{{- define "langbot.urlCredentialErrors" -}}
{{- if regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/@?#]*:[^/@?#]*@" .url -}}
- {{ .field }} contains a password (user:password@): put the whole URL in a Secret and set {{ .secretField }} {name: <Secret>, key: <key>} instead{{ with .passwordField }}, or drop the password from the URL and set {{ . }}{{ end }}
{{ end -}}
{{- end -}}

{{- /* langbot.publicOrigin: scheme://host of the web UI from the Ingress or the HTTPRoute, or "". */ -}}
{{- define "langbot.publicOrigin" -}}
{{- $v := .Values -}}
{{- $origin := "" -}}
{{- if $v.ingress.enabled -}}
  {{- range $h := $v.ingress.hosts -}}
    {{- if and (not $origin) $h.host (not (hasPrefix "*" $h.host)) -}}
      {{- $scheme := "http" -}}
      {{- range $t := $v.ingress.tls -}}
        {{- if has $h.host ($t.hosts | default list) -}}{{- $scheme = "https" -}}{{- end -}}
      {{- end -}}
      {{- $origin = printf "%s://%s" $scheme $h.host -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- if and (not $origin) $v.httpRoute.enabled -}}
  {{- range $h := $v.httpRoute.hostnames -}}
    {{- if and (not $origin) $h (not (hasPrefix "*" $h)) -}}
      {{- $origin = printf "%s://%s" (ternary "https" "http" $v.api.httpRouteTls) $h -}}
    {{- end -}}
  {{- end -}}
{{- end -}}
{{- $origin -}}
{{- end -}}

{{- /* langbot.settingsErrors: every cross-field problem of the settings, one "- ..." line each. */ -}}
{{- define "langbot.settingsErrors" -}}
{{- $v := .Values -}}
{{- $pg := $v.database.postgresql -}}
{{- $pgUrlRef := $pg.urlSecretRef | default dict -}}
{{- $pgPassRef := $pg.passwordSecretRef | default dict -}}
{{- range $f, $r := dict "database.postgresql.urlSecretRef" $pg.urlSecretRef "database.postgresql.passwordSecretRef" $pg.passwordSecretRef "vdb.qdrant.apiKeySecretRef" $v.vdb.qdrant.apiKeySecretRef "vdb.milvus.tokenSecretRef" $v.vdb.milvus.tokenSecretRef "vdb.pgvector.passwordSecretRef" $v.vdb.pgvector.passwordSecretRef "vdb.valkeySearch.passwordSecretRef" $v.vdb.valkeySearch.passwordSecretRef "storage.s3.accessKeyIdSecretRef" $v.storage.s3.accessKeyIdSecretRef "storage.s3.secretAccessKeySecretRef" $v.storage.s3.secretAccessKeySecretRef "api.globalApiKeySecretRef" $v.api.globalApiKeySecretRef -}}
{{- include "langbot.secretRefErrors" (dict "ref" $r "field" $f) -}}
{{- end -}}
{{- include "langbot.urlCredentialErrors" (dict "url" $pg.url "field" "database.postgresql.url" "secretField" "database.postgresql.urlSecretRef" "passwordField" "database.postgresql.passwordSecretRef") -}}
{{- include "langbot.urlCredentialErrors" (dict "url" $v.vdb.qdrant.url "field" "vdb.qdrant.url" "secretField" "vdb.qdrant.apiKeySecretRef (the API key)" "passwordField" "") -}}
{{- include "langbot.urlCredentialErrors" (dict "url" $v.vdb.milvus.uri "field" "vdb.milvus.uri" "secretField" "vdb.milvus.tokenSecretRef (token user:password)" "passwordField" "") -}}
{{- include "langbot.urlCredentialErrors" (dict "url" $v.storage.s3.endpointUrl "field" "storage.s3.endpointUrl" "secretField" "storage.s3.accessKeyIdSecretRef / secretAccessKeySecretRef" "passwordField" "") -}}
{{- if eq $v.database.use "postgresql" -}}
  {{- if and $pg.url $pgUrlRef.name -}}
- database.postgresql.url and database.postgresql.urlSecretRef are both set: keep one (urlSecretRef when the URL holds a password)
{{ end -}}
  {{- if and (not $pg.url) (not $pgUrlRef.name) -}}
    {{- if not $pg.host -}}
- database.use=postgresql needs database.postgresql.host (or url / urlSecretRef): set it to the PostgreSQL server's address
{{ end -}}
    {{- if not $pgPassRef.name -}}
- database.use=postgresql needs database.postgresql.passwordSecretRef {name: <Secret>, key: <key>} naming an existing Secret with the password (LangBot would otherwise use its default password "postgres")
{{ end -}}
  {{- end -}}
  {{- if gt (add (int $pg.poolSize) (int $pg.maxOverflow)) 100 -}}
- database.postgresql.poolSize + database.postgresql.maxOverflow = {{ add (int $pg.poolSize) (int $pg.maxOverflow) }} exceeds LangBot's limit of 100 connections: lower one of them
{{ end -}}
{{- end -}}
{{- $vdb := $v.vdb.use -}}
{{- if and (eq $vdb "qdrant") (not $v.vdb.qdrant.url) (not $v.vdb.qdrant.host) -}}
- vdb.use=qdrant needs vdb.qdrant.url (e.g. http://qdrant:6333) or vdb.qdrant.host
{{ end -}}
{{- if and (eq $vdb "milvus") (not $v.vdb.milvus.uri) -}}
- vdb.use=milvus needs vdb.milvus.uri (e.g. http://milvus:19530)
{{ end -}}
{{- if eq $vdb "pgvector" -}}
  {{- if $v.vdb.pgvector.useBusinessDatabase -}}
    {{- if ne $v.database.use "postgresql" -}}
- vdb.pgvector.useBusinessDatabase=true needs database.use=postgresql (it stores vectors in LangBot's own PostgreSQL): set database.use=postgresql or turn useBusinessDatabase off and set vdb.pgvector.host
{{ end -}}
  {{- else -}}
    {{- if not $v.vdb.pgvector.host -}}
- vdb.use=pgvector needs vdb.pgvector.host (or vdb.pgvector.useBusinessDatabase=true with database.use=postgresql)
{{ end -}}
    {{- if not (($v.vdb.pgvector.passwordSecretRef | default dict).name) -}}
- vdb.use=pgvector needs vdb.pgvector.passwordSecretRef {name: <Secret>, key: <key>} naming an existing Secret with the password
{{ end -}}
  {{- end -}}
{{- end -}}
{{- if and (has $vdb (list "valkey_search" "valkey-search")) (not $v.vdb.valkeySearch.host) -}}
- vdb.use={{ $vdb }} needs vdb.valkeySearch.host
{{ end -}}
{{- if and (has $vdb (list "valkey_search" "valkey-search")) $v.vdb.valkeySearch.username (not (($v.vdb.valkeySearch.passwordSecretRef | default dict).name)) -}}
- vdb.valkeySearch.username is set without vdb.valkeySearch.passwordSecretRef: LangBot refuses an ACL user without a password; set the Secret reference or clear the username
{{ end -}}
{{- if eq $v.storage.use "s3" -}}
  {{- if not $v.storage.s3.bucket -}}
- storage.use=s3 needs storage.s3.bucket
{{ end -}}
  {{- if or (not (($v.storage.s3.accessKeyIdSecretRef | default dict).name)) (not (($v.storage.s3.secretAccessKeySecretRef | default dict).name)) -}}
- storage.use=s3 needs storage.s3.accessKeyIdSecretRef and storage.s3.secretAccessKeySecretRef {name: <Secret>, key: <key>} (LangBot passes both to boto3; empty keys cannot sign requests)
{{ end -}}
{{- end -}}
{{- end -}}

{{- /* langbot.secretEnv: one env entry from a {name, key} reference, or "" when the reference is unset or unused. */ -}}
{{- define "langbot.secretEnv" -}}
{{- $r := .ref | default dict -}}
- name: {{ .env }}
{{- if and .use $r.name }}
  valueFrom:
    secretKeyRef:
      name: {{ $r.name }}
      key: {{ $r.key }}
{{- else }}
  value: ""
{{- end }}
{{- end -}}

{{- /* langbot.settingsEnv: the env entries of langbot's container (list; indent with nindent). */ -}}
{{- define "langbot.settingsEnv" -}}
{{- $errs := include "langbot.settingsErrors" . -}}
{{- if $errs -}}
{{- fail (printf "\n\nlangbot chart: invalid values:\n%s" $errs) -}}
{{- end -}}
{{- $v := .Values -}}
{{- $pg := $v.database.postgresql -}}
{{- $pgUrlRef := $pg.urlSecretRef | default dict -}}
{{- $pgPassRef := $pg.passwordSecretRef | default dict -}}
{{- $usePg := eq $v.database.use "postgresql" -}}
{{- $vdb := $v.vdb.use | replace "-" "_" -}}
{{- $q := $v.vdb.qdrant -}}
{{- $m := $v.vdb.milvus -}}
{{- $pv := $v.vdb.pgvector -}}
{{- $vk := $v.vdb.valkeySearch -}}
{{- $s3 := $v.storage.s3 -}}
{{- $useS3 := eq $v.storage.use "s3" -}}
{{- $origin := include "langbot.publicOrigin" . -}}
# Database: sqlite = data/langbot.db on the data volume.
- name: DATABASE__USE
  value: {{ $v.database.use | quote }}
{{- if and $usePg $pgUrlRef.name }}
{{ include "langbot.secretEnv" (dict "env" "DATABASE__POSTGRESQL__URL" "ref" $pg.urlSecretRef "use" true) }}
{{- else }}
- name: DATABASE__POSTGRESQL__URL
  value: {{ ternary $pg.url "" $usePg | quote }}
{{- end }}
- name: DATABASE__POSTGRESQL__HOST
  value: {{ $pg.host | quote }}
- name: DATABASE__POSTGRESQL__PORT
  value: {{ int $pg.port | quote }}
- name: DATABASE__POSTGRESQL__USER
  value: {{ $pg.user | quote }}
- name: DATABASE__POSTGRESQL__DATABASE
  value: {{ $pg.database | quote }}
{{ include "langbot.secretEnv" (dict "env" "DATABASE__POSTGRESQL__PASSWORD" "ref" $pg.passwordSecretRef "use" $usePg) }}
{{- if and $usePg $pg.url $pgPassRef.name }}
# asyncpg reads PGPASSWORD when the URL carries no password.
{{ include "langbot.secretEnv" (dict "env" "PGPASSWORD" "ref" $pg.passwordSecretRef "use" true) }}
{{- end }}
- name: DATABASE__POSTGRESQL__POOL_SIZE
  value: {{ int $pg.poolSize | quote }}
- name: DATABASE__POSTGRESQL__MAX_OVERFLOW
  value: {{ int $pg.maxOverflow | quote }}
- name: DATABASE__POSTGRESQL__POOL_TIMEOUT_SECONDS
  value: {{ int $pg.poolTimeoutSeconds | quote }}
- name: DATABASE__POSTGRESQL__POOL_RECYCLE_SECONDS
  value: {{ int $pg.poolRecycleSeconds | quote }}
# Vector database: chroma = data/chroma on the data volume.
- name: VDB__USE
  value: {{ $vdb | quote }}
- name: VDB__QDRANT__URL
  value: {{ $q.url | quote }}
- name: VDB__QDRANT__HOST
  value: {{ $q.host | quote }}
- name: VDB__QDRANT__PORT
  value: {{ int $q.port | quote }}
{{ include "langbot.secretEnv" (dict "env" "VDB__QDRANT__API_KEY" "ref" $q.apiKeySecretRef "use" (eq $vdb "qdrant")) }}
- name: VDB__MILVUS__URI
  value: {{ $m.uri | quote }}
{{ include "langbot.secretEnv" (dict "env" "VDB__MILVUS__TOKEN" "ref" $m.tokenSecretRef "use" (eq $vdb "milvus")) }}
- name: VDB__MILVUS__DB_NAME
  value: {{ $m.dbName | quote }}
- name: VDB__PGVECTOR__USE_BUSINESS_DATABASE
  value: {{ ternary "true" "" (and (eq $vdb "pgvector") $pv.useBusinessDatabase) | quote }}
- name: VDB__PGVECTOR__HOST
  value: {{ $pv.host | quote }}
- name: VDB__PGVECTOR__PORT
  value: {{ int $pv.port | quote }}
- name: VDB__PGVECTOR__DATABASE
  value: {{ $pv.database | quote }}
- name: VDB__PGVECTOR__USER
  value: {{ $pv.user | quote }}
{{ include "langbot.secretEnv" (dict "env" "VDB__PGVECTOR__PASSWORD" "ref" $pv.passwordSecretRef "use" (and (eq $vdb "pgvector") (not $pv.useBusinessDatabase))) }}
- name: VDB__VALKEY_SEARCH__HOST
  value: {{ $vk.host | quote }}
- name: VDB__VALKEY_SEARCH__PORT
  value: {{ int $vk.port | quote }}
- name: VDB__VALKEY_SEARCH__DB
  value: {{ int $vk.db | quote }}
- name: VDB__VALKEY_SEARCH__USERNAME
  value: {{ $vk.username | quote }}
{{ include "langbot.secretEnv" (dict "env" "VDB__VALKEY_SEARCH__PASSWORD" "ref" $vk.passwordSecretRef "use" (eq $vdb "valkey_search")) }}
- name: VDB__VALKEY_SEARCH__TLS
  value: {{ ternary "true" "" $vk.tls | quote }}
- name: VDB__VALKEY_SEARCH__INDEX_ALGORITHM
  value: {{ $vk.indexAlgorithm | quote }}
- name: VDB__VALKEY_SEARCH__DISTANCE_METRIC
  value: {{ $vk.distanceMetric | quote }}
- name: VDB__VALKEY_SEARCH__REQUEST_TIMEOUT
  value: {{ int $vk.requestTimeout | quote }}
# Object storage: local = data/storage on the data volume.
- name: STORAGE__USE
  value: {{ $v.storage.use | quote }}
- name: STORAGE__S3__ENDPOINT_URL
  value: {{ $s3.endpointUrl | quote }}
- name: STORAGE__S3__REGION
  value: {{ $s3.region | quote }}
- name: STORAGE__S3__BUCKET
  value: {{ $s3.bucket | quote }}
{{ include "langbot.secretEnv" (dict "env" "STORAGE__S3__ACCESS_KEY_ID" "ref" $s3.accessKeyIdSecretRef "use" $useS3) }}
{{ include "langbot.secretEnv" (dict "env" "STORAGE__S3__SECRET_ACCESS_KEY" "ref" $s3.secretAccessKeySecretRef "use" $useS3) }}
# Public URLs: the values, else the Ingress / HTTPRoute host, else LangBot's defaults.
- name: API__WEBHOOK_PREFIX
  value: {{ $v.api.webhookPrefix | default $origin | default "http://127.0.0.1:5300" | quote }}
- name: API__WEBUI_URL
  value: {{ $v.api.webuiUrl | default $origin | quote }}
{{ include "langbot.secretEnv" (dict "env" "API__GLOBAL_API_KEY" "ref" $v.api.globalApiKeySecretRef "use" true) }}
{{- end -}}
