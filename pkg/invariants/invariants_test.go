package invariants

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

func renderSet(t *testing.T, set ...string) *manifest.Set {
	t.Helper()
	vals, err := values.Stack{Set: set}.Merge()
	require.NoError(t, err)
	res, err := render.Render(context.Background(), render.Options{ChartPath: "../../charts/langbot"}, vals)
	require.NoError(t, err)
	s, err := manifest.Decode(res.All())
	require.NoError(t, err)
	return s
}

func container(d *appsv1.Deployment, name string) *corev1.Container {
	return manifest.Container(&d.Spec.Template.Spec, name)
}

func setEnv(c *corev1.Container, name, value string) {
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			c.Env[i].ValueFrom = nil
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func removeEnv(c *corev1.Container, name string) {
	out := c.Env[:0]
	for _, e := range c.Env {
		if e.Name != name {
			out = append(out, e)
		}
	}
	c.Env = out
}

// breakage breaks a valid render of the chart (rendered with set) in one way; the named check
// must catch it with a message containing msg.
type breakage struct {
	name   string
	set    []string
	mutate func(r *Release)
	check  string
	msg    string
}

// assertBreakagesCaught renders each case with its values (chart defaults coalesced, as
// langbotctl validate does), requires the render to pass every check, applies the mutation and
// requires the named check to fire.
func assertBreakagesCaught(t *testing.T, cases []breakage) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, vals := renderRelease(t, tc.set...)
			require.Empty(t, Run(set, vals), "the chart's render must pass every check")
			tc.mutate(NewRelease(set, vals))
			var hit []string
			for _, f := range Run(set, vals) {
				if f.Check == tc.check {
					hit = append(hit, f.Message)
				}
			}
			require.NotEmpty(t, hit, "check %s must fire; all findings: %v", tc.check, Run(set, vals))
			assert.Contains(t, hit[0], tc.msg)
		})
	}
}

// Each mutation breaks exactly one invariant of a valid render; the named check must catch it.
func TestEachInvariantCatchesItsBreakage(t *testing.T) {
	assertBreakagesCaught(t, []breakage{
		{"box mount path differs", []string{"box.enabled=true"}, func(r *Release) {
			manifest.Mount(container(r.Box, "box"), "box-root").MountPath = "/data/box"
		}, "box-root-same-path", "differs from BOX__LOCAL__HOST_ROOT"},
		{"langbot mount missing", []string{"box.enabled=true"}, func(r *Release) {
			c := container(r.LangBot, "langbot")
			c.VolumeMounts = c.VolumeMounts[:2]
		}, "box-root-same-path", "missing"},
		{"host root env differs", []string{"box.enabled=true"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envHostRoot, "/srv/box")
		}, "box-root-same-path", "/app/data/box"},
		{"box root is a PVC", []string{"box.enabled=true"}, func(r *Release) {
			v := manifest.Volume(&r.Box.Spec.Template.Spec, "box-root")
			v.HostPath = nil
			v.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "x"}
		}, "box-root-same-path", "PVC path is invisible"},
		{"root outside allowed roots", []string{"box.enabled=true"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envAllowedRoots, "/tmp,/srv")
		}, "box-root-allowed", "not inside"},
		{"endpoint with underscore", []string{"box.enabled=true"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envBoxEndpoint, "ws://langbot_box:5410")
		}, "box-endpoint", "DNS-1123"},
		{"endpoint missing", []string{"box.enabled=true"}, func(r *Release) {
			removeEnv(container(r.LangBot, "langbot"), envBoxEndpoint)
		}, "box-endpoint", "langbot_box"},
		{"endpoint wrong port", []string{"box.enabled=true"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envBoxEndpoint, "ws://langbot-box:5411")
		}, "box-endpoint", "not a port"},
		{"affinity selects nothing", []string{"box.enabled=true"}, func(r *Release) {
			r.Box.Spec.Template.Spec.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app.kubernetes.io/component"] = "web"
		}, "box-affinity", "selects langbot"},
		{"affinity removed", []string{"box.enabled=true"}, func(r *Release) {
			r.Box.Spec.Template.Spec.Affinity = nil
		}, "box-affinity", "no podAffinity"},
		{"box token key differs", []string{"box.enabled=true"}, func(r *Release) {
			for i, e := range container(r.Box, "box").Env {
				if e.Name == "LANGBOT_BOX_CONTROL_TOKEN" {
					container(r.Box, "box").Env[i].ValueFrom.SecretKeyRef.Key = "other"
				}
			}
		}, "control-tokens", "both ends must share"},
		{"plugin token literal", nil, func(r *Release) {
			setEnv(container(r.PluginRuntime, "plugin-runtime"), "LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN", "x")
		}, "control-tokens", "not read from a Secret"},
		{"box off but enabled env true", nil, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envBoxEnabled, "true")
		}, "box-enabled-consistent", "must be \"false\""},
		{"box on but enabled env false", []string{"box.enabled=true"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), envBoxEnabled, "false")
		}, "box-enabled-consistent", "set it to \"true\""},
		{"e2b with hostPath", []string{"box.enabled=true", "box.backend=e2b", "box.e2b.existingSecret=e2b"}, func(r *Release) {
			r.Box.Spec.Template.Spec.Volumes = append(r.Box.Spec.Template.Spec.Volumes, corev1.Volume{Name: "box-root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/app/data/box"}}})
		}, "box-e2b-no-host-access", "hostPath"},
		{"latest image", nil, func(r *Release) {
			container(r.LangBot, "langbot").Image = "rockchin/langbot:latest"
		}, "image-tags", "latest"},
		{"untagged image", nil, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").Image = "rockchin/langbot"
		}, "image-tags", "no tag"},
	})
}

func TestPodSecurityLevels(t *testing.T) {
	levels, err := PodSecurityLevels(renderSet(t, "box.enabled=true"))
	require.NoError(t, err)
	got := map[string]string{}
	for _, l := range levels {
		got[l.Object] = l.Level
	}
	assert.Equal(t, map[string]string{
		"Deployment/langbot":                "privileged", // box-root hostPath
		"Deployment/langbot-box":            "privileged", // docker socket + box-root hostPath
		"Deployment/langbot-plugin-runtime": "baseline",   // upstream image runs as root
		"Pod/langbot-test":                  "restricted",
	}, got)

	levels, err = PodSecurityLevels(renderSet(t))
	require.NoError(t, err)
	for _, l := range levels {
		if l.Object == "Deployment/langbot" {
			assert.Equal(t, "baseline", l.Level, "without the box, langbot needs no hostPath")
		}
	}
}
