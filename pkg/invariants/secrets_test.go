package invariants

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// productionSet renders the chart with an external PostgreSQL, qdrant and S3, all credentials
// from existing Secrets: the secret-refs check accepts it.
var productionSet = []string{
	"database.use=postgresql",
	"database.postgresql.host=pg.example.com",
	"database.postgresql.passwordSecretRef.name=pg",
	"database.postgresql.passwordSecretRef.key=password",
	"vdb.use=qdrant",
	"vdb.qdrant.url=http://qdrant:6333",
	"vdb.qdrant.apiKeySecretRef.name=qdrant",
	"vdb.qdrant.apiKeySecretRef.key=api-key",
	"storage.use=s3",
	"storage.s3.accessKeyIdSecretRef.name=s3",
	"storage.s3.accessKeyIdSecretRef.key=id",
	"storage.s3.secretAccessKeySecretRef.name=s3",
	"storage.s3.secretAccessKeySecretRef.key=secret",
}

func secretRefFindings(set *manifest.Set) []Finding {
	return checkSecretRefs(NewRelease(set, nil))
}

func TestSecretRefsAcceptsTheChartsOwnRenders(t *testing.T) {
	for name, set := range map[string][]string{"defaults": nil, "production": productionSet} {
		t.Run(name, func(t *testing.T) {
			assert.Empty(t, secretRefFindings(renderSet(t, set...)))
		})
	}
}

// Each mutation of a valid production render leaks or drops a secret; the finding must name the
// env variable and the values field (or the fix) to set.
func TestSecretRefsNamesTheMissingPiece(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(t *testing.T, set *manifest.Set)
		want   []string
	}{
		{"secretKeyRef without key", func(t *testing.T, set *manifest.Set) {
			envOf(t, set, "DATABASE__POSTGRESQL__PASSWORD").ValueFrom.SecretKeyRef.Key = ""
		}, []string{"DATABASE__POSTGRESQL__PASSWORD", "has no key", "database.postgresql.passwordSecretRef.key"}},
		{"secretKeyRef without name", func(t *testing.T, set *manifest.Set) {
			envOf(t, set, "VDB__QDRANT__API_KEY").ValueFrom.SecretKeyRef.Name = ""
		}, []string{"VDB__QDRANT__API_KEY", "has no name", "vdb.qdrant.apiKeySecretRef.name"}},
		{"password as a plain value", func(t *testing.T, set *manifest.Set) {
			e := envOf(t, set, "DATABASE__POSTGRESQL__PASSWORD")
			e.ValueFrom, e.Value = nil, "hunter2"
		}, []string{"DATABASE__POSTGRESQL__PASSWORD has a plain value", "database.postgresql.passwordSecretRef"}},
		{"S3 key as a plain value", func(t *testing.T, set *manifest.Set) {
			e := envOf(t, set, "STORAGE__S3__SECRET_ACCESS_KEY")
			e.ValueFrom, e.Value = nil, "AKIA-secret"
		}, []string{"STORAGE__S3__SECRET_ACCESS_KEY has a plain value", "storage.s3.secretAccessKeySecretRef"}},
		{"URL with a password", func(t *testing.T, set *manifest.Set) {
			envOf(t, set, "DATABASE__POSTGRESQL__URL").Value = "postgresql://langbot:hunter2@pg:5432/langbot"
		}, []string{"DATABASE__POSTGRESQL__URL is a URL with a password", "database.postgresql.urlSecretRef"}},
		{"postgresql without a password", func(t *testing.T, set *manifest.Set) {
			e := envOf(t, set, "DATABASE__POSTGRESQL__PASSWORD")
			e.ValueFrom, e.Value = nil, ""
		}, []string{"DATABASE__USE=postgresql without a password", "database.postgresql.passwordSecretRef"}},
		{"s3 without credentials", func(t *testing.T, set *manifest.Set) {
			e := envOf(t, set, "STORAGE__S3__ACCESS_KEY_ID")
			e.ValueFrom, e.Value = nil, ""
		}, []string{"STORAGE__USE=s3 without STORAGE__S3__ACCESS_KEY_ID", "storage.s3.accessKeyIdSecretRef"}},
		{"secret in a ConfigMap", func(t *testing.T, set *manifest.Set) {
			cm := configMap(t, set)
			cm.Data["API__GLOBAL_API_KEY"] = "k"
		}, []string{"ConfigMap/", "holds the secret API__GLOBAL_API_KEY", "api.globalApiKeySecretRef"}},
		{"key absent from a Secret of the release", func(t *testing.T, set *manifest.Set) {
			for name, s := range set.Secrets() {
				e := envOf(t, set, "API__GLOBAL_API_KEY")
				e.Value, e.ValueFrom = "", &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: "no-such-key"}}
				require.NotEmpty(t, secretKeys(s))
				return
			}
			t.Fatal("the release renders no Secret")
		}, []string{"API__GLOBAL_API_KEY", "has no key \"no-such-key\""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set := renderSet(t, productionSet...)
			require.Empty(t, secretRefFindings(set), "precondition: the unmutated render is clean")
			tc.mutate(t, set)
			fs := secretRefFindings(set)
			require.NotEmpty(t, fs, "the check must catch it")
			var all string
			for _, f := range fs {
				assert.Equal(t, secretRefsCheck, f.Check)
				all += f.String() + "\n"
			}
			for _, w := range tc.want {
				assert.Contains(t, all, w)
			}
		})
	}
}

// The check is registered, so `langbotctl validate` runs it.
func TestSecretRefsIsRegistered(t *testing.T) {
	var names []string
	for _, c := range All() {
		names = append(names, c.Name)
	}
	assert.Contains(t, names, secretRefsCheck)
}

func envOf(t *testing.T, set *manifest.Set, name string) *corev1.EnvVar {
	t.Helper()
	d := set.Component(langbotName)
	require.NotNil(t, d)
	e := manifest.Env(container(d, langbotName), name)
	require.NotNil(t, e, "langbot has no env %s", name)
	return e
}

func configMap(t *testing.T, set *manifest.Set) *corev1.ConfigMap {
	t.Helper()
	for _, o := range set.Objects {
		if cm, ok := o.Typed.(*corev1.ConfigMap); ok {
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			return cm
		}
	}
	t.Fatal("the release renders no ConfigMap")
	return nil
}
