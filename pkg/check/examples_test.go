package check

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

// Every values file under examples/ is what `langbotctl validate -f` accepts.
func TestExamplesValidate(t *testing.T) {
	files, err := filepath.Glob("../../examples/*-values.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), "-values.yaml"), func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Files: []string{f}}})
			require.NoError(t, err)
			assert.True(t, rep.OK(), "problems: %v", rep.Problems())
		})
	}
}

// The production example wires PostgreSQL, qdrant, S3 and the Ingress URL into LangBot, each
// credential as a secretKeyRef.
func TestProductionExampleWiring(t *testing.T) {
	rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Files: []string{"../../examples/production-values.yaml"}}})
	require.NoError(t, err)
	require.True(t, rep.OK(), "problems: %v", rep.Problems())
	d := rep.Set.Component("langbot")
	require.NotNil(t, d)
	c := manifest.Container(&d.Spec.Template.Spec, "langbot")
	require.NotNil(t, c)
	for name, want := range map[string]string{
		"DATABASE__USE":       "postgresql",
		"VDB__USE":            "qdrant",
		"STORAGE__USE":        "s3",
		"API__WEBHOOK_PREFIX": "https://langbot.example.com",
		"API__WEBUI_URL":      "https://langbot.example.com",
	} {
		e := manifest.Env(c, name)
		require.NotNil(t, e, name)
		assert.Equal(t, want, e.Value, name)
	}
	for name, ref := range map[string][2]string{
		"DATABASE__POSTGRESQL__PASSWORD": {"langbot-postgresql", "password"},
		"VDB__QDRANT__API_KEY":           {"langbot-qdrant", "api-key"},
		"STORAGE__S3__ACCESS_KEY_ID":     {"langbot-s3", "access-key-id"},
		"STORAGE__S3__SECRET_ACCESS_KEY": {"langbot-s3", "secret-access-key"},
		"API__GLOBAL_API_KEY":            {"langbot-api-key", "key"},
	} {
		e := manifest.Env(c, name)
		require.NotNil(t, e, name)
		require.NotNil(t, e.ValueFrom, "%s must be a secretKeyRef", name)
		require.NotNil(t, e.ValueFrom.SecretKeyRef, name)
		assert.Equal(t, ref, [2]string{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key}, name)
		assert.Empty(t, e.Value, name)
	}
}
