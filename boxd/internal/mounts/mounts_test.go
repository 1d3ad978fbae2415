package mounts

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

func TestValidate(t *testing.T) {
	root := t.TempDir()
	ws := filepath.Join(root, "default", "tenants", "ws-1")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	require.NoError(t, os.Symlink("/etc", filepath.Join(ws, "escape")))
	outside := t.TempDir()

	cases := []struct {
		name string
		path string
		want string
	}{
		{"tenant workspace", ws, ""},
		{"not yet existing skill dir", filepath.Join(root, "skills", "tenants", "ws-1", "pdf"), ""},
		{"root itself", "/", "is blocked for security"},
		{"etc", "/etc/ssl", "is blocked for security"},
		{"docker socket", "/var/run/docker.sock", "is blocked for security"},
		{"symlink to etc", filepath.Join(ws, "escape"), "is blocked for security"},
		{"outside allowed roots", outside, "is outside allowed_mount_roots"},
		{"dotdot escape", filepath.Join(ws, "..", "..", "..", ".."), "is outside allowed_mount_roots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate([]backend.Mount{{HostPath: tc.path, MountPath: "/x", Mode: backend.MountRO}}, []string{root})
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	assert.EqualError(t, CheckBlocked("/proc/1"), "host_path /proc/1 is blocked for security")
	assert.NoError(t, CheckBlocked("/home/user"))
}
