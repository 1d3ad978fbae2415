package check

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

// LangBot's production settings (database, vdb, storage, api): bad values are refused by the
// schema (gojsonschema in `langbotctl validate` and Helm's own validator), each naming the field;
// TestBadValuesRejectedByBothValidators runs them.
var settingsSchemaCases = []badCase{
	{name: "unknown database", set: []string{"database.use=mysql"}, field: "database.use"},
	{name: "postgres port 0", set: []string{"database.postgresql.port=0"}, field: "database.postgresql.port"},
	{name: "pool size 0", set: []string{"database.postgresql.poolSize=0"}, field: "database.postgresql.poolSize"},
	{name: "pool size above LangBot's 100", set: []string{"database.postgresql.poolSize=101"}, field: "database.postgresql.poolSize"},
	{name: "negative overflow", set: []string{"database.postgresql.maxOverflow=-1"}, field: "database.postgresql.maxOverflow"},
	{name: "pool timeout above 300", set: []string{"database.postgresql.poolTimeoutSeconds=301"}, field: "database.postgresql.poolTimeoutSeconds"},
	{name: "pool recycle 0", set: []string{"database.postgresql.poolRecycleSeconds=0"}, field: "database.postgresql.poolRecycleSeconds"},
	{name: "pool size as string", str: []string{"database.postgresql.poolSize=ten"}, field: "database.postgresql.poolSize"},
	{name: "non-postgres URL", set: []string{"database.postgresql.url=mysql://db/langbot"}, field: "database.postgresql.url"},
	{name: "plain password key", set: []string{"database.postgresql.password=hunter2"}, field: "database.postgresql.password", helm: []string{"/database/postgresql", "password"}},
	{name: "secret ref without key", set: []string{"database.postgresql.passwordSecretRef.name=pg"}, field: "database.postgresql.passwordSecretRef.key", helm: []string{"/database/postgresql/passwordSecretRef", "key"}},
	{name: "secret ref without name", set: []string{"api.globalApiKeySecretRef.key=k"}, field: "api.globalApiKeySecretRef.name", helm: []string{"/api/globalApiKeySecretRef", "name"}},
	{name: "secret name not DNS-1123", set: []string{"vdb.qdrant.apiKeySecretRef.name=Bad_Name", "vdb.qdrant.apiKeySecretRef.key=k"}, field: "vdb.qdrant.apiKeySecretRef.name"},
	{name: "secret key with spaces", str: []string{"storage.s3.accessKeyIdSecretRef.name=s3", "storage.s3.accessKeyIdSecretRef.key=access key"}, field: "storage.s3.accessKeyIdSecretRef.key"},
	{name: "unknown secret ref field", set: []string{"vdb.milvus.tokenSecretRef.namespace=other"}, field: "vdb.milvus.tokenSecretRef.namespace", helm: []string{"/vdb/milvus/tokenSecretRef", "namespace"}},
	{name: "unknown vector database", set: []string{"vdb.use=weaviate"}, field: "vdb.use"},
	{name: "plain qdrant api key", set: []string{"vdb.qdrant.apiKey=k"}, field: "vdb.qdrant.apiKey", helm: []string{"/vdb/qdrant", "apiKey"}},
	{name: "qdrant url without scheme", set: []string{"vdb.qdrant.url=qdrant:6333"}, field: "vdb.qdrant.url"},
	{name: "milvus uri with spaces", str: []string{"vdb.milvus.uri=http://milvus 19530"}, field: "vdb.milvus.uri"},
	{name: "valkey index algorithm", set: []string{"vdb.valkeySearch.indexAlgorithm=IVF"}, field: "vdb.valkeySearch.indexAlgorithm"},
	{name: "valkey tls as string", str: []string{"vdb.valkeySearch.tls=yes"}, field: "vdb.valkeySearch.tls"},
	{name: "pgvector port too large", set: []string{"vdb.pgvector.port=70000"}, field: "vdb.pgvector.port"},
	{name: "unknown storage", set: []string{"storage.use=gcs"}, field: "storage.use"},
	{name: "bucket with capitals", set: []string{"storage.s3.bucket=My_Bucket"}, field: "storage.s3.bucket"},
	{name: "S3 endpoint without scheme", set: []string{"storage.s3.endpointUrl=minio:9000"}, field: "storage.s3.endpointUrl"},
	{name: "webhook prefix with trailing slash", set: []string{"api.webhookPrefix=https://bot.example.com/"}, field: "api.webhookPrefix"},
	{name: "web UI URL without scheme", set: []string{"api.webuiUrl=bot.example.com"}, field: "api.webuiUrl"},
}

const (
	pgHost = "database.postgresql.host=pg.example.com"
	pgPass = "database.postgresql.passwordSecretRef.name=pg"
	pgKey  = "database.postgresql.passwordSecretRef.key=password"
)

// Rules across fields: the schema accepts these, the chart's fail() refuses them naming the
// values to change and how; TestCrossFieldRulesFailTheRender runs them.
var settingsCrossFieldCases = []struct {
	name string
	set  []string
	want []string
}{
	{"postgresql without host", []string{"database.use=postgresql", pgPass, pgKey}, []string{"database.postgresql.host", "url / urlSecretRef"}},
	{"postgresql without password", []string{"database.use=postgresql", pgHost}, []string{"database.postgresql.passwordSecretRef {name: <Secret>, key: <key>}", "existing Secret"}},
	{"postgresql URL with a password", []string{"database.use=postgresql", "database.postgresql.url=postgresql://langbot:hunter2@pg:5432/langbot"},
		[]string{"database.postgresql.url contains a password", "database.postgresql.urlSecretRef", "database.postgresql.passwordSecretRef"}},
	{"URL with a password, even with sqlite", []string{"database.postgresql.url=postgresql+asyncpg://u:p@pg/db"}, []string{"database.postgresql.url contains a password"}},
	{"url and urlSecretRef", []string{"database.use=postgresql", "database.postgresql.url=postgresql://pg/db", "database.postgresql.urlSecretRef.name=pg", "database.postgresql.urlSecretRef.key=url"},
		[]string{"database.postgresql.url and database.postgresql.urlSecretRef are both set"}},
	{"pool above 100 connections", []string{"database.use=postgresql", pgHost, pgPass, pgKey, "database.postgresql.poolSize=60", "database.postgresql.maxOverflow=50"},
		[]string{"database.postgresql.poolSize + database.postgresql.maxOverflow = 110", "100"}},
	{"qdrant without address", []string{"vdb.use=qdrant"}, []string{"vdb.qdrant.url", "vdb.qdrant.host"}},
	{"qdrant URL with a password", []string{"vdb.use=qdrant", "vdb.qdrant.url=https://u:p@qdrant:6333"}, []string{"vdb.qdrant.url contains a password", "vdb.qdrant.apiKeySecretRef"}},
	{"milvus without uri", []string{"vdb.use=milvus"}, []string{"vdb.milvus.uri"}},
	{"pgvector on the business database with sqlite", []string{"vdb.use=pgvector", "vdb.pgvector.useBusinessDatabase=true"}, []string{"vdb.pgvector.useBusinessDatabase=true needs database.use=postgresql"}},
	{"pgvector without host", []string{"vdb.use=pgvector", "vdb.pgvector.passwordSecretRef.name=pv", "vdb.pgvector.passwordSecretRef.key=p"}, []string{"vdb.pgvector.host"}},
	{"pgvector without password", []string{"vdb.use=pgvector", "vdb.pgvector.host=pv"}, []string{"vdb.pgvector.passwordSecretRef"}},
	{"valkey without host", []string{"vdb.use=valkey-search"}, []string{"vdb.valkeySearch.host"}},
	{"valkey user without password", []string{"vdb.use=valkey_search", "vdb.valkeySearch.host=vk", "vdb.valkeySearch.username=langbot"}, []string{"vdb.valkeySearch.username", "vdb.valkeySearch.passwordSecretRef"}},
	{"s3 without credentials", []string{"storage.use=s3"}, []string{"storage.s3.accessKeyIdSecretRef", "storage.s3.secretAccessKeySecretRef"}},
	{"S3 endpoint with a password", []string{"storage.s3.endpointUrl=https://id:secret@minio:9000"}, []string{"storage.s3.endpointUrl contains a password"}},
}

// With Helm's schema validation skipped (helm --skip-schema-validation), a half secret
// reference still fails the render, naming the missing field.
func TestHalfSecretRefFailsWithoutSchema(t *testing.T) {
	for set, want := range map[string]string{
		"database.postgresql.passwordSecretRef.name=pg": "database.postgresql.passwordSecretRef.key is empty",
		"storage.s3.accessKeyIdSecretRef.key=id":        "storage.s3.accessKeyIdSecretRef.name is empty",
	} {
		user, err := values.Stack{Set: []string{set}}.Merge()
		require.NoError(t, err)
		_, err = render.Render(context.Background(), render.Options{ChartPath: chartPath, SkipSchemaValidation: true}, user)
		require.Error(t, err, set)
		assert.Contains(t, err.Error(), want)
	}
}
