package kube

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
)

// TestNewRefuses: start-up errors name the variable or key and the fix (nothing is contacted).
func TestNewRefuses(t *testing.T) {
	pinned := testSettings(t, map[string]any{"namespace": "ns", "box_root": map[string]any{"claim_name": "box-root", "mount_path": "/data/box", "pin_to_node": true}})
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"pin_to_node without BOXD_NODE_NAME", Options{InstanceID: "i", Settings: pinned},
			"box.kubernetes.box_root.pin_to_node is true (the box root claim is ReadWriteOnce) but BOXD_NODE_NAME is empty: set BOXD_NODE_NAME in boxd's container from the downward API (fieldRef spec.nodeName)"},
		{"BOXD_NODE_NAME not a node name", Options{InstanceID: "i", Settings: pinned, NodeName: "Node A"}, `BOXD_NODE_NAME "Node A" is not a node name`},
		{"BOXD_SCOPE not a label value", Options{InstanceID: "i", Settings: pinned, NodeName: "node-a", Scope: "a/b"}, `BOXD_SCOPE "a/b" cannot be a Kubernetes label value`},
		{"no instance id", Options{Settings: pinned}, "Options.InstanceID is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Rest = &rest.Config{Host: "https://127.0.0.1:1"}
			_, err := New(tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	b, err := New(Options{InstanceID: "i", Settings: pinned, NodeName: "node-a", Rest: &rest.Config{Host: "https://127.0.0.1:1"}})
	require.NoError(t, err)
	assert.Equal(t, "ns", b.Namespace())
}
