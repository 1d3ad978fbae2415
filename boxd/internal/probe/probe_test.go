package probe

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
)

func TestVerify(t *testing.T) {
	root := t.TempDir()
	ws := filepath.Join(root, "default")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	paths := config.Paths{HostRoot: root, DefaultWorkspace: ws, AllowedMountRoots: []string{root}}
	name := ".langbot-box-volume-probe-" + strings.Repeat("ab", 16)
	content := []byte(strings.Repeat("x", 64))
	require.NoError(t, os.WriteFile(filepath.Join(ws, name), content, 0o600))

	got, err := Verify(paths, " "+name+" ")
	require.NoError(t, err)
	sum := sha256.Sum256(content)
	assert.Equal(t, map[string]any{"marker_name": name, "sha256": hex.EncodeToString(sum[:]), "size": 64}, got)

	link := ".langbot-box-volume-probe-" + strings.Repeat("cd", 16)
	require.NoError(t, os.Symlink(filepath.Join(ws, name), filepath.Join(ws, link)))
	big := ".langbot-box-volume-probe-" + strings.Repeat("ef", 16)
	require.NoError(t, os.WriteFile(filepath.Join(ws, big), make([]byte, 2000), 0o600))
	dir := ".langbot-box-volume-probe-" + strings.Repeat("01", 16)
	require.NoError(t, os.Mkdir(filepath.Join(ws, dir), 0o755))

	cases := []struct {
		name   string
		paths  config.Paths
		marker string
		want   string
	}{
		{"a path is never accepted", paths, "../" + name, "BoxReadinessError: Invalid Box shared Workspace probe basename"},
		{"upper-case hex", paths, strings.ToUpper(name), "Invalid Box shared Workspace probe basename"},
		{"symlink", paths, link, "BoxReadinessError: Box Runtime cannot read the Core shared Workspace probe"},
		{"missing", paths, ".langbot-box-volume-probe-" + strings.Repeat("99", 16), "cannot read the Core shared Workspace probe"},
		{"too big", paths, big, "Box shared Workspace probe has an invalid size"},
		{"directory", paths, dir, "Box shared Workspace probe is not a regular file"},
		{"no workspace", config.Paths{}, name, "Managed sandbox admission requires box.local.default_workspace"},
		{"outside roots", config.Paths{DefaultWorkspace: ws, AllowedMountRoots: []string{"/srv"}}, name, "Managed sandbox workspace is outside box.local.allowed_mount_roots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(tc.paths, tc.marker)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
