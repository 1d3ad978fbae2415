package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func payload(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&m))
	return m
}

func TestApplyLimits(t *testing.T) {
	c := Default()
	next, err := c.Apply(payload(t, `{"limits":{"max_sessions":3,"max_workspace_entries":"ignored"},"unknown":1}`), "/")
	require.NoError(t, err)
	assert.Equal(t, 3, next.Limits.MaxSessions)
	assert.Equal(t, 64, next.Limits.MaxManagedProcesses)

	cases := map[string]string{
		`{"limits":{"max_sessions":"5"}}`:                      "ValueError: box.limits.max_sessions must be an integer",
		`{"limits":{"max_sessions":true}}`:                     "ValueError: box.limits.max_sessions must be an integer",
		`{"limits":{"max_sessions":1.5}}`:                      "ValueError: box.limits.max_sessions must be an integer",
		`{"limits":{"max_sessions":6000}}`:                     "ValueError: box.limits.max_sessions must be between 0 and 5000",
		`{"limits":{"max_sessions":2,"max_rpc_file_bytes":0}}`: "ValueError: box.limits.max_rpc_file_bytes must be between 1 and 104857600",
		`{"limits":[]}`:                                        "ValueError: box.limits must be an object",
	}
	for in, want := range cases {
		got, err := next.Apply(payload(t, in), "/")
		assert.EqualError(t, err, want, in)
		assert.Equal(t, 3, got.Limits.MaxSessions, "nothing applied on failure: %s", in)
	}
}

func TestPathsAndDefaultWorkspace(t *testing.T) {
	dir := t.TempDir()
	c, err := Default().Apply(payload(t, `{"local":{"host_root":"box","allowed_mount_roots":"box, /tmp"},"docker":{"cpu_limit_enabled":"False"}}`), dir)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(dir, "box"), c.Paths.HostRoot)
	assert.Equal(t, filepath.Join(dir, "box", "default"), c.Paths.DefaultWorkspace)
	assert.Equal(t, filepath.Join(dir, "box", "skills"), c.Paths.SkillsRoot)
	assert.False(t, c.CPULimitEnabled)
	assert.True(t, c.Hardening)
	// Without host_root the skill store still has its §11.1 root (./data/box/skills); an
	// absolute skills_root is kept.
	assert.Equal(t, filepath.Join(dir, "data", "box", "skills"), ResolvePaths(nil, dir).SkillsRoot)
	assert.Equal(t, "/srv/skills", ResolvePaths(map[string]any{"skills_root": "/srv/skills"}, dir).SkillsRoot)
	assert.Empty(t, ResolvePaths(nil, dir).HostRoot)
	require.NoError(t, c.EnsureDefaultWorkspace())
	st, err := os.Stat(c.Paths.DefaultWorkspace)
	require.NoError(t, err)
	assert.True(t, st.IsDir())

	outside, err := Default().Apply(payload(t, `{"local":{"host_root":"box","default_workspace":"/elsewhere/ws","allowed_mount_roots":["box"]}}`), dir)
	require.NoError(t, err)
	assert.ErrorContains(t, outside.EnsureDefaultWorkspace(), "BoxValidationError: box.local.default_workspace is outside allowed_mount_roots")
}

func TestSandboxUserAndInitialized(t *testing.T) {
	assert.False(t, Default().Initialized, "no configuration before box_init")
	cases := []struct {
		in, want, err string
	}{
		{`{}`, "", ""},
		{`{"docker":{"user":"1000"}}`, "1000", ""},
		{`{"docker":{"user":" 1000:1000 "}}`, "1000:1000", ""},
		{`{"docker":{"user":1000}}`, "1000", ""},
		{`{"docker":{"user":""}}`, "", ""},
		{`{"docker":{"user":"nobody"}}`, "", "box.docker.user must be"},
		{`{"docker":{"user":"1000:"}}`, "", "box.docker.user must be"},
		{`{"docker":{"user":true}}`, "", "box.docker.user must be"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			c, err := Default().Apply(payload(t, tc.in), "/")
			if tc.err != "" {
				assert.ErrorContains(t, err, "ValueError: "+tc.err)
				assert.False(t, c.Initialized, "nothing applied on failure")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.SandboxUser)
			assert.True(t, c.Initialized)
		})
	}
}
