package manifest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeStrict(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		wantErr string
		kinds   []string
	}{
		{"typed objects", "# Source: a.yaml\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n# Source: b.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", "", []string{"Service", "Deployment"}},
		{"unknown field is an error naming the template", "# Source: langbot/templates/x.yaml\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {portz: []}\n", "langbot/templates/x.yaml", nil},
		{"misplaced field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {nodeSelector: {a: b}, containers: [{name: c, image: i, volumeMount: []}]}}}\n", "volumeMount", nil},
		{"CRDs kept as unstructured", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: m}\n", "", []string{"ServiceMonitor"}},
		{"empty documents skipped", "---\n# only a comment\n---\n", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Decode(tc.doc)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			var kinds []string
			for _, o := range set.Objects {
				kinds = append(kinds, o.Kind)
			}
			assert.Equal(t, tc.kinds, kinds)
		})
	}
}
