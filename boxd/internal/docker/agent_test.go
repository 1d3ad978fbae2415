package docker

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// agentBackend is a Backend with only what the agent installation needs (no engine).
func agentBackend(binary, root string) (*Backend, *bytes.Buffer) {
	var logs bytes.Buffer
	return &Backend{opts: Options{AgentBinary: binary, HostRoot: func() string { return root }, ExecAgent: func() bool { return true }},
		log: slog.New(slog.NewTextHandler(&logs, nil)), ag: newAgents()}, &logs
}

func writeBinary(t *testing.T, content string) (path, installed string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "boxagent")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o755))
	sum := sha256.Sum256([]byte(content))
	return path, "agent-" + hex.EncodeToString(sum[:8])
}

func TestAgentMountIsContentAddressedAndReadOnly(t *testing.T) {
	bin, name := writeBinary(t, "agent v1")
	root := t.TempDir()
	b, _ := agentBackend(bin, root)
	m, ok := b.agentMount()
	require.True(t, ok)
	want := filepath.Join(root, ".boxd", name)
	assert.Equal(t, want, m.Source)
	assert.Equal(t, AgentPath, m.Target)
	assert.True(t, m.ReadOnly)
	data, err := os.ReadFile(want)
	require.NoError(t, err)
	assert.Equal(t, "agent v1", string(data))
	st, err := os.Stat(want)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o555), st.Mode().Perm())
	entries, err := os.ReadDir(filepath.Join(root, ".boxd"))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left behind")

	before, err := statID(want)
	require.NoError(t, err)
	m2, ok := b.agentMount()
	require.True(t, ok)
	assert.Equal(t, m, m2)
	after, err := statID(want)
	require.NoError(t, err)
	assert.Equal(t, before, after, "an unchanged file is not written again")

	// Another boxd process (a restart) finds the right file in place and keeps it.
	b2, _ := agentBackend(bin, root)
	m3, ok := b2.agentMount()
	require.True(t, ok)
	assert.Equal(t, m, m3)
	again, err := statID(want)
	require.NoError(t, err)
	assert.Equal(t, before, again)
}

func TestAgentFileIsReinstalled(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, path string)
		warned bool
	}{
		{"changed in place after install", func(t *testing.T, path string) {
			require.NoError(t, os.Chmod(path, 0o755))
			require.NoError(t, os.WriteFile(path, []byte("evil!!!!"), 0o755))
		}, true},
		{"replaced by another file", func(t *testing.T, path string) {
			require.NoError(t, os.Remove(path))
			require.NoError(t, os.WriteFile(path, []byte("agent v1"), 0o555))
		}, true},
		{"removed", func(t *testing.T, path string) { require.NoError(t, os.Remove(path)) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin, name := writeBinary(t, "agent v1")
			root := t.TempDir()
			b, logs := agentBackend(bin, root)
			m, ok := b.agentMount()
			require.True(t, ok)
			tc.tamper(t, m.Source)
			m2, ok := b.agentMount()
			require.True(t, ok)
			assert.Equal(t, filepath.Join(root, ".boxd", name), m2.Source)
			data, err := os.ReadFile(m2.Source)
			require.NoError(t, err)
			assert.Equal(t, "agent v1", string(data))
			st, err := os.Stat(m2.Source)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o555), st.Mode().Perm())
			assert.Equal(t, tc.warned, strings.Contains(logs.String(), "exec agent file changed on disk"), logs.String())
		})
	}
}

func TestAgentFileWithWrongContentIsReplaced(t *testing.T) {
	bin, name := writeBinary(t, "agent v1")
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, ".boxd"), 0o755))
	stale := filepath.Join(root, ".boxd", name)
	require.NoError(t, os.WriteFile(stale, []byte("planted"), 0o755))
	b, _ := agentBackend(bin, root)
	m, ok := b.agentMount()
	require.True(t, ok)
	data, err := os.ReadFile(m.Source)
	require.NoError(t, err)
	assert.Equal(t, "agent v1", string(data))
}

func TestNoAgentMountWithoutRootOrBinary(t *testing.T) {
	bin, _ := writeBinary(t, "agent v1")
	cases := []struct {
		name, binary, root, log string
	}{
		{"host_root unset", bin, "", "box.local.host_root is not set"},
		{"no binary", "", "ROOT", "no boxagent binary"},
		{"binary missing", filepath.Join(t.TempDir(), "nope"), "ROOT", "read boxagent binary"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := tc.root
			if root == "ROOT" {
				root = t.TempDir()
			}
			b, logs := agentBackend(tc.binary, root)
			for range 3 {
				_, ok := b.agentMount()
				assert.False(t, ok)
			}
			assert.Equal(t, 1, strings.Count(logs.String(), tc.log), "logged once: %s", logs.String())
		})
	}
}

func TestDefaultAgentBinary(t *testing.T) {
	named := filepath.Join(t.TempDir(), "agent")
	cases := []struct {
		name, env, want string
	}{
		{"named by the environment", named, named},
		// The test binary has no boxagent next to it.
		{"nothing next to the executable", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(AgentBinaryEnv, tc.env)
			assert.Equal(t, tc.want, DefaultAgentBinary())
		})
	}
}
