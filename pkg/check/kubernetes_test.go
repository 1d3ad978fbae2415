package check

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/schema"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

func kubeSet(set ...string) []string {
	return append([]string{"box.enabled=true", "box.backend=kubernetes"}, set...)
}

// box.kubernetes values each schema refuses, naming the field (both validators, as for the
// rest of the chart).
var kubeSchemaCases = []badCase{
	{name: "kubernetes namespace not DNS-1123", set: kubeSet("box.kubernetes.namespace=Sandboxes"), field: "box.kubernetes.namespace"},
	{name: "runtime class with underscore", set: kubeSet("box.kubernetes.runtimeClassName=g_visor"), field: "box.kubernetes.runtimeClassName"},
	{name: "toleration operator", set: kubeSet("box.kubernetes.tolerations[0].key=a", "box.kubernetes.tolerations[0].operator=Matches"), field: "box.kubernetes.tolerations.0.operator"},
	{name: "toleration unknown key", set: kubeSet("box.kubernetes.tolerations[0].kye=a"), field: "box.kubernetes.tolerations.0.kye", helm: []string{"/box/kubernetes/tolerations/0", "kye"}},
	{name: "sandbox pull policy", set: kubeSet("box.kubernetes.imagePullPolicy=Sometimes"), field: "box.kubernetes.imagePullPolicy"},
	{name: "sandbox cpu request", set: kubeSet("box.kubernetes.cpuRequest=some"), field: "box.kubernetes.cpuRequest"},
	{name: "start timeout zero", set: kubeSet("box.kubernetes.startTimeoutSec=0"), field: "box.kubernetes.startTimeoutSec"},
	{name: "schedule timeout too long", set: kubeSet("box.kubernetes.scheduleTimeoutSec=7200"), field: "box.kubernetes.scheduleTimeoutSec"},
	{name: "box root size", set: kubeSet("box.kubernetes.boxRoot.size=big"), field: "box.kubernetes.boxRoot.size"},
	{name: "box root access mode", set: kubeSet("box.kubernetes.boxRoot.accessModes={ReadWriteAll}"), field: "box.kubernetes.boxRoot.accessModes.0"},
	{name: "box root claim name", set: kubeSet("box.kubernetes.boxRoot.existingClaim=Box_Root"), field: "box.kubernetes.boxRoot.existingClaim"},
	{name: "egress except not a CIDR", set: kubeSet("box.kubernetes.sandboxEgress.exceptCIDRs={10.0.0.0}"), field: "box.kubernetes.sandboxEgress.exceptCIDRs.0"},
	{name: "egress except /0", set: kubeSet("box.kubernetes.sandboxEgress.exceptCIDRs={0.0.0.0/0}"), field: "box.kubernetes.sandboxEgress.exceptCIDRs.0"},
	{name: "unknown kubernetes key", set: kubeSet("box.kubernetes.privileged=true"), field: "box.kubernetes.privileged", helm: []string{"/box/kubernetes", "privileged"}},
}

func TestKubernetesBadValuesRejectedByBothValidators(t *testing.T) {
	schemaJSON, err := os.ReadFile(chartPath + "/values.schema.json")
	require.NoError(t, err)
	v, err := schema.NewValidator(schemaJSON)
	require.NoError(t, err)
	for _, tc := range kubeSchemaCases {
		t.Run(tc.name, func(t *testing.T) {
			user, err := values.Stack{Set: tc.set, SetString: tc.str}.Merge()
			require.NoError(t, err)
			full, err := withChartDefaults(chartPath, user)
			require.NoError(t, err)
			probs, err := v.Validate(full)
			require.NoError(t, err)
			var fields []string
			for _, p := range probs {
				fields = append(fields, p.Field)
			}
			assert.Contains(t, fields, tc.field, "gojsonschema must name the field; got %v", probs)
			_, err = render.Render(context.Background(), render.Options{ChartPath: chartPath}, user)
			require.Error(t, err, "Helm must reject it too")
			want := tc.helm
			if want == nil {
				want = []string{"/" + strings.ReplaceAll(tc.field, ".", "/")}
			}
			for _, w := range want {
				assert.Contains(t, err.Error(), w, "Helm's error must name the field")
			}
		})
	}
}

// The chart's kubernetes rules (validate.yaml): each names the field and the fix.
func TestKubernetesCrossFieldRules(t *testing.T) {
	cases := []struct {
		name string
		set  []string
		want []string
	}{
		{"sandbox namespace differs", kubeSet("box.kubernetes.namespace=sandboxes"),
			[]string{`box.kubernetes.namespace="sandboxes"`, "claims are namespaced", "remove box.kubernetes.namespace"}},
		{"ReadWriteOncePod", kubeSet("box.kubernetes.boxRoot.accessModes={ReadWriteOncePod}"),
			[]string{"box.kubernetes.boxRoot.accessModes", "ReadWriteOncePod", "use [ReadWriteOnce]"}},
		{"ReadOnlyMany", kubeSet("box.kubernetes.boxRoot.accessModes={ReadOnlyMany}"),
			[]string{"box.kubernetes.boxRoot.accessModes=[ReadOnlyMany]", "no write access"}},
		{"no access modes", kubeSet("box.kubernetes.boxRoot.accessModes=null"),
			[]string{"box.kubernetes.boxRoot.accessModes=[] gives no write access"}},
		{"existing claim with a size", kubeSet("box.kubernetes.boxRoot.existingClaim=mine", "box.kubernetes.boxRoot.size=20Gi"),
			[]string{`box.kubernetes.boxRoot.size="20Gi"`, "remove size"}},
		{"existing claim with a class", kubeSet("box.kubernetes.boxRoot.existingClaim=mine", "box.kubernetes.boxRoot.storageClassName=fast"),
			[]string{`box.kubernetes.boxRoot.storageClassName="fast"`, "remove storageClassName"}},
		{"RWO with sandboxes on another pool", kubeSet("box.kubernetes.nodeSelector.pool=sandbox"),
			[]string{"box.kubernetes.nodeSelector pool=sandbox", "stay Pending", "box.nodeSelector", "ReadWriteMany"}},
		{"RWO with a sandbox pool differing from boxd's", kubeSet("box.nodeSelector.pool=box", "langbot.nodeSelector.pool=box", "box.kubernetes.nodeSelector.pool=sandbox"),
			[]string{"box.kubernetes.nodeSelector pool=sandbox"}},
		{"reserved sandbox label", kubeSet("box.kubernetes.labels.langbot\\.box/network=on"),
			[]string{`box.kubernetes.labels key "langbot.box/network" is reserved`}},
		{"sandbox labels mimic a component", kubeSet("box.kubernetes.labels.app\\.kubernetes\\.io/instance=langbot", "box.kubernetes.labels.app\\.kubernetes\\.io/component=box"),
			[]string{"box.kubernetes.labels sets app.kubernetes.io/instance and app.kubernetes.io/component"}},
		{"boxd as root", kubeSet("box.podSecurityContext.runAsUser=0"),
			[]string{"box.podSecurityContext runs boxd as root", "remove runAsUser/runAsNonRoot"}},
		{"Role on the default ServiceAccount", kubeSet("box.serviceAccount.create=false"),
			[]string{"box.serviceAccount.create=false", "default ServiceAccount"}},
		{"allowed mount root outside the claim", kubeSet("box.allowedMountRoots={/app/data/box,/tmp}"),
			[]string{`box.allowedMountRoots contains "/tmp", which is not box.hostRoot="/app/data/box" or under it`, `remove "/tmp" from box.allowedMountRoots`}},
		{"allowed mount root above the claim", kubeSet("box.allowedMountRoots={/app/data}"),
			[]string{`box.allowedMountRoots contains "/app/data"`}},
		{"blocked mount path", kubeSet("box.hostRoot=/var/run/box"),
			[]string{`box.hostRoot="/var/run/box"`, "/var/run"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Set: tc.set}})
			require.NoError(t, err)
			assert.Empty(t, rep.Schema, "the schema alone accepts these values")
			require.NotEmpty(t, rep.RenderError, "the chart must refuse them")
			for _, w := range tc.want {
				assert.Contains(t, rep.RenderError, w)
			}
		})
	}
}

// Valid combinations the rules must not refuse.
func TestKubernetesGoodValuesAccepted(t *testing.T) {
	for _, set := range [][]string{
		kubeSet(),
		kubeSet("box.kubernetes.namespace=default"),
		kubeSet("box.kubernetes.boxRoot.accessModes={ReadWriteMany}", "box.kubernetes.nodeSelector.pool=sandbox"),
		kubeSet("box.nodeSelector.pool=box", "langbot.nodeSelector.pool=box", "box.kubernetes.nodeSelector.pool=box"),
		kubeSet("global.nodeSelector.pool=box", "box.kubernetes.nodeSelector.pool=box"),
		kubeSet("box.kubernetes.boxRoot.existingClaim=mine"),
		kubeSet("box.allowedMountRoots={/app/data/box}"),
		kubeSet("box.allowedMountRoots={/app/data/box,/app/data/box/shared}"),
		kubeSet("box.podSecurityContext.runAsUser=1000", "box.podSecurityContext.fsGroup=1000"),
		kubeSet("box.serviceAccount.create=false", "box.serviceAccount.name=boxd"),
	} {
		rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Set: set}})
		require.NoError(t, err)
		assert.True(t, rep.OK(), "%v: %v", set, rep.Problems())
	}
}

// Settings that are valid but ignored or risky with the kubernetes backend are warnings of
// langbotctl validate, not errors.
func TestKubernetesWarnings(t *testing.T) {
	cases := []struct {
		name string
		set  []string
		json []string
		want []string // substrings of the backend warnings; nil = none
	}{
		{"none by default", kubeSet(), nil, nil},
		{"docker settings ignored", kubeSet("box.docker.execAgent=true", "box.docker.socketPath=/run/podman/podman.sock"), nil,
			[]string{"box.docker.execAgent, box.docker.socketPath set, but box.backend=kubernetes does not use box.docker.*"}},
		{"docker settings with the docker backend", []string{"box.enabled=true", "box.docker.execAgent=true"}, nil, nil},
		{"boxd tolerates a taint the sandboxes do not", kubeSet(), []string{`box.tolerations=[{"key":"dedicated","value":"box","effect":"NoSchedule"}]`},
			[]string{"the box tolerates dedicated=box:NoSchedule but box.kubernetes.tolerations does not"}},
		{"both tolerate it", kubeSet(), []string{`box.tolerations=[{"key":"dedicated","value":"box","effect":"NoSchedule"}]`,
			`box.kubernetes.tolerations=[{"key":"dedicated","value":"box","effect":"NoSchedule"}]`}, nil},
		{"ReadWriteMany spreads sandboxes anyway", kubeSet("box.kubernetes.boxRoot.accessModes={ReadWriteMany}"),
			[]string{`box.tolerations=[{"key":"dedicated","operator":"Exists"}]`}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath},
				Values: values.Stack{Set: append(tc.set, fixedTokens...), SetJSON: tc.json}})
			require.NoError(t, err)
			require.True(t, rep.OK(), "%v", rep.Problems())
			assert.Len(t, rep.Warnings, len(tc.want), "%v", rep.Warnings)
			for i, w := range tc.want {
				if i < len(rep.Warnings) {
					assert.Contains(t, rep.Warnings[i], w)
				}
			}
		})
	}
}
