package tenancy

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNamespaceAndIDs(t *testing.T) {
	ctx := Context{Instance: "instance-a", Workspace: "workspace-a", Generation: 1}
	assert.Equal(t, "ws-695136eeae1cb9b6af4a8226", ctx.Namespace())
	p, err := ctx.Physical("person_12345")
	require.NoError(t, err)
	assert.Equal(t, "ws-695136eeae1cb9b6af4a8226-g1-person_12345", p)
	assert.Equal(t, "person_12345", ctx.Logical(p))
	assert.Equal(t, "other", ctx.Logical("other"))
	ns, gen, logical := ParsePhysical("ws-695136eeae1cb9b6af4a8226-g12-a-g1-b")
	assert.Equal(t, "ws-695136eeae1cb9b6af4a8226", ns)
	assert.Equal(t, 12, gen)
	assert.Equal(t, "a-g1-b", logical)
	ns, gen, logical = ParsePhysical("plain")
	assert.Equal(t, "", ns)
	assert.Equal(t, 0, gen)
	assert.Equal(t, "plain", logical)

	for in, want := range map[string]string{" My Session!@# ": "My-Session", "group_x@chatroom": "group_x-chatroom"} {
		got, err := Sanitize(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err = Sanitize("!!!")
	assert.EqualError(t, err, "ValueError: Box session_id must contain a valid character")
	_, err = Sanitize("  ")
	assert.EqualError(t, err, "ValueError: Box session_id must not be empty")
}

func TestParseContext(t *testing.T) {
	ctx, ok, err := ParseContext(json.RawMessage(`{"instance_uuid":" i ","workspace_uuid":"w"}`))
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, Context{"i", "w", 1}, ctx)

	_, ok, err = ParseContext(json.RawMessage(`null`))
	require.NoError(t, err)
	assert.False(t, ok)

	for _, bad := range []string{`{"instance_uuid":"i","workspace_uuid":"w","extra":1}`, `{"instance_uuid":"","workspace_uuid":"w"}`, `{"instance_uuid":"i","workspace_uuid":"w","placement_generation":0}`, `[]`} {
		_, _, err := ParseContext(json.RawMessage(bad))
		require.Error(t, err, bad)
		assert.Contains(t, err.Error(), "ValidationError: ", bad)
	}
}

func TestFence(t *testing.T) {
	f := NewFence(1)
	a1 := Context{"i", "a", 1}
	require.NoError(t, f.Observe(a1))
	changed := f.Changed()
	require.NoError(t, f.Observe(Context{"i", "a", 2}))
	<-changed // closed by the advance
	assert.False(t, f.Current(a1))
	assert.EqualError(t, f.Observe(a1), "PermissionError: Stale Box placement generation")
	assert.ErrorContains(t, f.Observe(Context{"i", "b", 1}), "fence capacity reached")
}

func TestRewrite(t *testing.T) {
	ctx := Context{"instance-a", "workspace-a", 1}
	v := map[string]any{"session_id": "ws-695136eeae1cb9b6af4a8226-g1-x", "managed_processes": map[string]any{"p": map[string]any{"session_id": "ws-695136eeae1cb9b6af4a8226-g1-x"}}}
	ctx.RewriteSessionIDs(v)
	assert.Equal(t, "x", v["session_id"])
	assert.Equal(t, "x", v["managed_processes"].(map[string]any)["p"].(map[string]any)["session_id"])
}
