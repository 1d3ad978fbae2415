package schema

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The committed values.schema.json must be exactly what the source generates.
func TestGeneratedSchemaMatchesSource(t *testing.T) {
	src, err := os.ReadFile("../../schemas/values.schema.yaml")
	require.NoError(t, err)
	want, err := Generate(src)
	require.NoError(t, err)
	got, err := os.ReadFile("../../charts/langbot/values.schema.json")
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "charts/langbot/values.schema.json drifted from schemas/values.schema.yaml: run `make schema`")
}

func TestGenerateDropsAnchorHoldersAndExpandsMerges(t *testing.T) {
	out, err := Generate([]byte("x-common: &c\n  a: {type: string}\ntype: object\nproperties:\n  <<: *c\n  b: {type: integer}\n"))
	require.NoError(t, err)
	assert.NotContains(t, string(out), "x-common")
	assert.Contains(t, string(out), `"a": {`)
	assert.Contains(t, string(out), `"b": {`)
}

func TestValidateNamesFields(t *testing.T) {
	v, err := NewValidator([]byte(`{"type":"object","additionalProperties":false,"required":["r"],
	  "properties":{"r":{"type":"string"},"n":{"type":"object","properties":{"port":{"type":"integer","maximum":10}}}}}`))
	require.NoError(t, err)
	probs, err := v.Validate(map[string]any{"extra": 1, "n": map[string]any{"port": 11}})
	require.NoError(t, err)
	var fields []string
	for _, p := range probs {
		fields = append(fields, p.Field)
	}
	assert.ElementsMatch(t, []string{"extra", "n.port", "r"}, fields)
}

// Every key users can set is documented, and no stray keyword (a YAML slip) sneaks in.
func TestEveryPropertyIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../charts/langbot/values.schema.json")
	require.NoError(t, err)
	vals, err := os.ReadFile("../../charts/langbot/values.yaml")
	require.NoError(t, err)
	table, err := ValuesTable(b, vals)
	require.NoError(t, err)
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[2:] {
		cells := strings.Split(line, " | ")
		require.Len(t, cells, 4, line)
		assert.NotEqual(t, "|", strings.TrimSpace(cells[3]), "undocumented key: %s", cells[0])
		assert.NotEqual(t, "any", cells[1], "untyped key: %s", cells[0])
	}
	assert.Contains(t, table, "| `box.hostRoot` | string | `\"/app/data/box\"` |")
}
