package explain

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

func renderSet(t *testing.T, set, setJSON []string) *manifest.Set {
	t.Helper()
	vals, err := values.Stack{Set: set, SetJSON: setJSON}.Merge()
	require.NoError(t, err)
	res, err := render.Render(context.Background(), render.Options{ChartPath: "../../charts/langbot"}, vals)
	require.NoError(t, err)
	s, err := manifest.Decode(res.All())
	require.NoError(t, err)
	return s
}

func node(name, pool string, taint bool) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": pool, corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	if taint {
		n.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: pool, Effect: corev1.TaintEffectNoSchedule}}
	}
	return n
}

// Where the kubernetes backend's sandbox Pods may land, from boxd's rendered configuration:
// boxd's node when the box root is not ReadWriteMany, else the nodes their selector and
// tolerations allow.
func TestSandboxPlacement(t *testing.T) {
	nodes := []corev1.Node{node("general-1", "general", false), node("general-2", "general", false), node("sandbox-1", "sandbox", true), node("sandbox-2", "sandbox", true)}
	const tolerate = `box.kubernetes.tolerations=[{"key":"dedicated","value":"sandbox","effect":"NoSchedule"}]`
	kube := []string{"box.enabled=true", "box.backend=kubernetes"}
	cases := []struct {
		name    string
		set     []string
		json    []string
		nodes   []corev1.Node
		pinned  bool
		fits    []string // nil = not predicted (no nodes)
		pending string
	}{
		{"RWO without nodes", kube, nil, nil, true, nil, ""},
		{"RWO on the general pool: boxd's candidates", append(kube, "global.nodeSelector.pool=general"), nil, nodes, true, []string{"general-1", "general-2"}, ""},
		{"RWX spreads over the sandbox pool", append(kube, "box.kubernetes.boxRoot.accessModes={ReadWriteMany}", "box.kubernetes.nodeSelector.pool=sandbox"), []string{tolerate}, nodes, false,
			[]string{"sandbox-1", "sandbox-2"}, ""},
		{"RWX without the toleration stays Pending", append(kube, "box.kubernetes.boxRoot.accessModes={ReadWriteMany}", "box.kubernetes.nodeSelector.pool=sandbox"), nil, nodes, false,
			[]string{}, "2 node(s) had untolerated taint {dedicated: sandbox}"},
		{"RWO behind boxd, which cannot schedule", append(kube, "global.nodeSelector.pool=gpu"), nil, nodes, true, []string{}, "boxd itself cannot be scheduled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Explain(renderSet(t, tc.set, tc.json), tc.nodes)
			require.NoError(t, err)
			sb := rep.Sandboxes
			require.NotNil(t, sb)
			assert.Equal(t, tc.pinned, sb.PinnedToNode)
			assert.Equal(t, "langbot-box-root", sb.Claim)
			assert.Equal(t, "default", sb.Namespace)
			if tc.fits == nil {
				assert.Nil(t, sb.Schedulable)
				return
			}
			require.NotNil(t, sb.Schedulable)
			assert.Equal(t, len(tc.fits) > 0, *sb.Schedulable)
			assert.ElementsMatch(t, tc.fits, sb.Nodes)
			assert.Contains(t, sb.Pending, tc.pending)
		})
	}
}

func TestNoSandboxesWithoutTheKubernetesBackend(t *testing.T) {
	for _, set := range [][]string{nil, {"box.enabled=true"}, {"box.enabled=true", "box.backend=e2b", "box.e2b.existingSecret=e2b"}} {
		rep, err := Explain(renderSet(t, set, nil), nil)
		require.NoError(t, err)
		assert.Nil(t, rep.Sandboxes, "%v", set)
	}
}
