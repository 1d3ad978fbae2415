package mounts

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// layout builds a host root as LangBot's chart lays it out (host_root with default/ and
// skills/) plus a few symlink traps, and returns the real paths.
type layout struct {
	root, realRoot, ws, skill, outside, linkRoot string
}

func newLayout(t *testing.T) layout {
	t.Helper()
	base := t.TempDir()
	real := filepath.Join(base, "disk", "box")
	ws := filepath.Join(real, "default", "tenants", "ws-1")
	skill := filepath.Join(real, "skills", "tenants", "ws-1", "pdf")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{ws, skill, outside} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	// host_root reached through a symlink (e.g. /app/data/box -> /mnt/disk/box).
	linkRoot := filepath.Join(base, "app-data-box")
	require.NoError(t, os.Symlink(real, linkRoot))
	require.NoError(t, os.Symlink("/etc", filepath.Join(ws, "etc")))
	require.NoError(t, os.Symlink("/", filepath.Join(ws, "slash")))
	require.NoError(t, os.Symlink(outside, filepath.Join(ws, "out")))
	require.NoError(t, os.Symlink("../../../../outside", filepath.Join(ws, "rel-out")))
	require.NoError(t, os.Symlink("/var/run", filepath.Join(ws, "varrun")))
	return layout{root: linkRoot, realRoot: real, ws: ws, skill: skill, outside: outside, linkRoot: linkRoot}
}

func TestValidate(t *testing.T) {
	l := newLayout(t)
	viaLink := func(p string) string { rel, _ := filepath.Rel(l.realRoot, p); return filepath.Join(l.linkRoot, rel) }
	cases := []struct {
		name     string
		path     string
		roots    []string
		want     string // error substring, "" = accepted
		resolved string // expected mounted path when accepted
	}{
		{"tenant workspace", l.ws, []string{l.root}, "", l.ws},
		{"tenant workspace through the host_root symlink", viaLink(l.ws), []string{l.root}, "", l.ws},
		{"default workspace itself (legacy callers)", filepath.Join(l.realRoot, "default"), []string{l.root}, "", filepath.Join(l.realRoot, "default")},
		{"skill package", l.skill, []string{l.root}, "", l.skill},
		{"skill dir not created yet", filepath.Join(l.realRoot, "skills", "tenants", "ws-1", "new"), []string{l.root}, "", filepath.Join(l.realRoot, "skills", "tenants", "ws-1", "new")},
		{"allowed root given in its real form", viaLink(l.ws), []string{l.realRoot}, "", l.ws},
		{"anything without allowed roots", l.outside, nil, "", l.outside},
		{"blank allowed roots are ignored", l.outside, []string{" "}, "", l.outside},
		{"root itself", "/", nil, "host_path / is blocked for security", ""},
		{"etc", "/etc/ssl", nil, "is blocked for security", ""},
		{"proc", "/proc/1/root", nil, "is blocked for security", ""},
		{"docker socket", "/var/run/docker.sock", nil, "is blocked for security", ""},
		{"parent of the docker socket", "/var", nil, "host_path /var is blocked for security", ""},
		{"dotdot to etc", l.ws + "/../../../../../../../../etc", nil, "is blocked for security", ""},
		{"symlink to etc", filepath.Join(l.ws, "etc"), []string{l.root}, "is blocked for security", ""},
		{"symlink to /", filepath.Join(l.ws, "slash"), []string{l.root}, "is blocked for security", ""},
		{"symlink to /var/run", filepath.Join(l.ws, "varrun"), []string{l.root}, "is blocked for security", ""},
		{"path under a symlink to etc, not existing", filepath.Join(l.ws, "etc", "nope", "x"), []string{l.root}, "is blocked for security", ""},
		{"absolute symlink out of the root", filepath.Join(l.ws, "out"), []string{l.root}, "is outside allowed_mount_roots", ""},
		{"relative symlink out of the root", filepath.Join(l.ws, "rel-out"), []string{l.root}, "is outside allowed_mount_roots", ""},
		{"dotdot out of the root", filepath.Join(l.ws, "..", "..", "..", ".."), []string{l.root}, "is outside allowed_mount_roots", ""},
		{"sibling with the root as prefix", l.realRoot + "-other", []string{l.root}, "is outside allowed_mount_roots", ""},
		{"relative path", "data/box", nil, "must be an absolute host path", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Validate([]backend.Mount{{HostPath: tc.path, MountPath: "/x", Mode: backend.MountRO}}, tc.roots)
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, []backend.Mount{{HostPath: tc.resolved, MountPath: "/x", Mode: backend.MountRO}}, got)
				return
			}
			var ve *backend.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Message, tc.want)
			assert.Nil(t, got)
		})
	}
}

func TestValidateChecksEveryMount(t *testing.T) {
	l := newLayout(t)
	ms := []backend.Mount{
		{HostPath: l.ws, MountPath: "/workspace", Mode: backend.MountRW},
		{HostPath: l.skill, MountPath: "/workspace/.skills/pdf", Mode: backend.MountRW},
		{HostPath: filepath.Join(l.ws, "etc"), MountPath: "/workspace/etc", Mode: backend.MountRO},
	}
	_, err := Validate(ms, nil)
	require.EqualError(t, err, "host_path "+filepath.Join(l.ws, "etc")+" is blocked for security", "the third mount is checked too")
	got, err := Validate(ms[:2], []string{l.root})
	require.NoError(t, err)
	assert.Len(t, got, 2)
}

func TestCheckBlocked(t *testing.T) {
	cases := []struct {
		path string
		ok   bool
	}{
		{"/proc/1", false},
		{"/", false},
		{"/run", false},
		{"/var", false},
		{"/home/user", true},
		{"/var/lib/docker", true},
		{"/app/data/box/default", true},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			err := CheckBlocked(tc.path)
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, "host_path "+tc.path+" is blocked for security")
		})
	}
}

func TestResolve(t *testing.T) {
	l := newLayout(t)
	assert.Equal(t, l.ws, Resolve(l.ws+"/./"))
	assert.Equal(t, filepath.Join(l.outside, "a", "b"), Resolve(filepath.Join(l.ws, "out", "a", "b")), "a missing tail under a symlink")
	assert.Equal(t, "/no/such/dir", Resolve("/no/such/../such/dir"))
	dangling := filepath.Join(l.ws, "rel-out", "x")
	assert.Equal(t, filepath.Join(filepath.Dir(l.realRoot), "outside", "x"), Resolve(dangling), "a dangling symlink is followed")
	loop := filepath.Join(l.ws, "loop")
	require.NoError(t, os.Symlink(loop, loop))
	assert.Equal(t, loop, Resolve(loop), "a symlink loop ends")
}
