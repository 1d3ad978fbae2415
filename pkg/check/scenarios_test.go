package check

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

var update = flag.Bool("update", false, "rewrite golden files")

// Fixed tokens keep the goldens stable (the chart generates random ones otherwise).
var fixedTokens = []string{
	"controlTokens.box.value=golden-box-token-0123456789abcdefghijkl",
	"controlTokens.pluginRuntime.value=golden-plugin-token-0123456789abcdefghij",
}

func scenarios(t *testing.T) []string {
	files, err := filepath.Glob(chartPath + "/ci/*-values.yaml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	return files
}

// Every ci/ scenario renders, decodes strictly, keeps every Box invariant and matches its golden.
func TestScenariosGolden(t *testing.T) {
	for _, f := range scenarios(t) {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{
				Render: render.Options{ChartPath: chartPath},
				Values: values.Stack{Files: []string{f}, Set: fixedTokens},
			})
			require.NoError(t, err)
			require.True(t, rep.OK(), "problems: %v", rep.Problems())
			got := rep.Rendered.All() + "\n# NOTES.txt\n" + rep.Rendered.Notes
			golden := filepath.Join("testdata", "golden", name+".yaml")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err, "missing golden: run `make golden`")
			assert.Equal(t, string(want), got, "render of %s changed: review and run `make golden`", f)
		})
	}
}

// Scenario-specific expectations beyond the invariants.
func TestScenarioExpectations(t *testing.T) {
	cases := []struct {
		file  string
		check func(t *testing.T, rep *Report)
	}{
		{"defaults", func(t *testing.T, rep *Report) {
			assert.Nil(t, rep.Set.Component("box"))
			assert.Contains(t, rep.Rendered.Manifest, "name: BOX__ENABLED\n              value: \"false\"")
		}},
		{"box-e2b", func(t *testing.T, rep *Report) {
			box := rep.Set.Component("box")
			require.NotNil(t, box)
			assert.Nil(t, box.Spec.Template.Spec.Affinity, "e2b needs no podAffinity")
			assert.Contains(t, rep.Rendered.Manifest, "value: \"e2b\"")
			assert.Contains(t, rep.Rendered.Manifest, `"langbot_plugin.cli.__init__", "box"`, "e2b runs the upstream `lbp box`")
			assert.Contains(t, rep.Rendered.Manifest, "image: docker.io/rockchin/langbot:v4.10.8")
		}},
		{"box-kubernetes", func(t *testing.T, rep *Report) {
			for _, c := range []string{"langbot", "box"} {
				d := rep.Set.Component(c)
				require.NotNil(t, d)
				v := manifest.Volume(&d.Spec.Template.Spec, "box-root")
				require.NotNil(t, v, c)
				require.NotNil(t, v.PersistentVolumeClaim, "%s mounts the box root claim", c)
				assert.Equal(t, "langbot-box-root", v.PersistentVolumeClaim.ClaimName)
				for _, vol := range d.Spec.Template.Spec.Volumes {
					assert.Nil(t, vol.HostPath, "%s volume %s", c, vol.Name)
				}
			}
			require.Contains(t, rep.Set.PersistentVolumeClaims(), "langbot-box-root")
			assert.Equal(t, "5Gi", rep.Set.PersistentVolumeClaims()["langbot-box-root"].Spec.Resources.Requests.Storage().String())
			assert.Equal(t, 2, strings.Count(rep.Rendered.Manifest, "kind: NetworkPolicy"), "the sandbox policies, with networkPolicy.enabled=false")
			levels := map[string]string{}
			for _, p := range rep.PodSecurity {
				levels[p.Object] = p.Level
			}
			assert.Equal(t, "restricted", levels["Deployment/langbot-box"])
			assert.Equal(t, "baseline", levels["Deployment/langbot"])
			assert.Contains(t, rep.Rendered.Notes, "Sandboxes are Pods in namespace default")
		}},
		{"podman-socket", func(t *testing.T, rep *Report) {
			assert.Contains(t, rep.Rendered.Manifest, "path: /run/podman/podman.sock\n            type: Socket")
		}},
		{"node-pools", func(t *testing.T, rep *Report) {
			for _, c := range []string{"langbot", "box"} {
				d := rep.Set.Component(c)
				require.NotNil(t, d)
				assert.Equal(t, map[string]string{"pool": "box"}, d.Spec.Template.Spec.NodeSelector, c)
				require.Len(t, d.Spec.Template.Spec.Tolerations, 1, c)
				assert.Equal(t, "dedicated", d.Spec.Template.Spec.Tolerations[0].Key)
			}
		}},
		{"networkpolicy", func(t *testing.T, rep *Report) {
			assert.Equal(t, 2, strings.Count(rep.Rendered.Manifest, "kind: NetworkPolicy"))
		}},
		{"existing-secrets", func(t *testing.T, rep *Report) {
			assert.Empty(t, rep.Set.Secrets(), "no token Secret is generated when existingSecret is set")
			assert.NotContains(t, rep.Rendered.Manifest, "name: langbot-data\n")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{
				Render: render.Options{ChartPath: chartPath},
				Values: values.Stack{Files: []string{chartPath + "/ci/" + tc.file + "-values.yaml"}},
			})
			require.NoError(t, err)
			require.True(t, rep.OK(), "problems: %v", rep.Problems())
			tc.check(t, rep)
		})
	}
}
