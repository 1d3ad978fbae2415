package mounts

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

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

func TestCheck(t *testing.T) {
	l := newLayout(t)
	viaLink := func(p string) string { rel, _ := filepath.Rel(l.realRoot, p); return filepath.Join(l.linkRoot, rel) }
	sock := filepath.Join(l.realRoot, "run", "engine", "docker.sock")
	cases := []struct {
		name     string
		path     string
		mode     backend.MountMode
		pol      Policy
		want     string // error substring, "" = accepted
		resolved string // expected mounted path when accepted
	}{
		{"tenant workspace", l.ws, backend.MountRW, Policy{Roots: []string{l.root}, HostRoot: l.root}, "", l.ws},
		{"tenant workspace through the host_root symlink", viaLink(l.ws), backend.MountRW, Policy{Roots: []string{l.root}}, "", l.ws},
		{"default workspace itself (legacy callers)", filepath.Join(l.realRoot, "default"), backend.MountRW, Policy{Roots: []string{l.root}, HostRoot: l.root}, "", filepath.Join(l.realRoot, "default")},
		{"skill package", l.skill, backend.MountRW, Policy{Roots: []string{l.root}, HostRoot: l.root}, "", l.skill},
		{"skill dir not created yet", filepath.Join(l.realRoot, "skills", "tenants", "ws-1", "new"), backend.MountRO, Policy{Roots: []string{l.root}}, "", filepath.Join(l.realRoot, "skills", "tenants", "ws-1", "new")},
		{"allowed root given in its real form", viaLink(l.ws), backend.MountRO, Policy{Roots: []string{l.realRoot}}, "", l.ws},
		{"host_root read-only", l.root, backend.MountRO, Policy{Roots: []string{l.root}, HostRoot: l.root}, "", l.realRoot},
		{"host_root read-write", l.root, backend.MountRW, Policy{Roots: []string{l.root}, HostRoot: l.root}, "must not be mounted read-write: it contains boxd's own directory " + filepath.Join(l.realRoot, ".boxd"), ""},
		{"a parent of host_root read-write", filepath.Dir(l.realRoot), backend.MountRW, Policy{Roots: []string{filepath.Dir(l.realRoot)}, HostRoot: l.linkRoot}, "must not be mounted read-write", ""},
		{"boxd's own directory read-write", filepath.Join(l.realRoot, ".boxd"), backend.MountRW, Policy{Roots: []string{l.root}, HostRoot: l.root}, "must not be mounted read-write", ""},
		{"no allowed roots: nothing is mounted", l.outside, backend.MountRO, Policy{}, "host_path mounting is disabled because no allowed_mount_roots are configured", ""},
		{"blank allowed roots are ignored", l.outside, backend.MountRO, Policy{Roots: []string{" "}}, "no allowed_mount_roots are configured", ""},
		{"the engine socket", sock, backend.MountRO, Policy{Roots: []string{l.root}, Sockets: []string{sock}}, "is blocked for security (it contains the container engine socket " + sock + ")", ""},
		{"the engine socket's directory", filepath.Dir(sock), backend.MountRO, Policy{Roots: []string{l.root}, Sockets: []string{sock}}, "blocked for security (it contains the container engine socket", ""},
		{"an ancestor of the engine socket", l.root, backend.MountRO, Policy{Roots: []string{l.root}, Sockets: []string{sock}}, "blocked for security (it contains the container engine socket", ""},
		{"the engine socket named through a symlink", filepath.Dir(sock), backend.MountRO, Policy{Roots: []string{l.root}, Sockets: []string{filepath.Join(l.linkRoot, "run", "engine", "docker.sock")}}, "blocked for security (it contains the container engine socket", ""},
		{"a sibling of the engine socket's directory", l.ws, backend.MountRO, Policy{Roots: []string{l.root}, Sockets: []string{sock}}, "", l.ws},
		{"root itself", "/", backend.MountRO, Policy{}, "host_path / is blocked for security", ""},
		{"etc", "/etc/ssl", backend.MountRO, Policy{}, "is blocked for security", ""},
		{"proc", "/proc/1/root", backend.MountRO, Policy{}, "is blocked for security", ""},
		{"docker socket", "/var/run/docker.sock", backend.MountRO, Policy{}, "is blocked for security", ""},
		{"parent of the docker socket", "/var", backend.MountRO, Policy{}, "host_path /var is blocked for security", ""},
		{"dotdot to etc", l.ws + "/../../../../../../../../etc", backend.MountRO, Policy{}, "is blocked for security", ""},
		{"symlink to etc", filepath.Join(l.ws, "etc"), backend.MountRO, Policy{Roots: []string{l.root}}, "is blocked for security", ""},
		{"symlink to /", filepath.Join(l.ws, "slash"), backend.MountRO, Policy{Roots: []string{l.root}}, "is blocked for security", ""},
		{"symlink to /var/run", filepath.Join(l.ws, "varrun"), backend.MountRO, Policy{Roots: []string{l.root}}, "is blocked for security", ""},
		{"path under a symlink to etc, not existing", filepath.Join(l.ws, "etc", "nope", "x"), backend.MountRO, Policy{Roots: []string{l.root}}, "is blocked for security", ""},
		{"absolute symlink out of the root", filepath.Join(l.ws, "out"), backend.MountRO, Policy{Roots: []string{l.root}}, "is outside allowed_mount_roots", ""},
		{"relative symlink out of the root", filepath.Join(l.ws, "rel-out"), backend.MountRO, Policy{Roots: []string{l.root}}, "is outside allowed_mount_roots", ""},
		{"dotdot out of the root", filepath.Join(l.ws, "..", "..", "..", ".."), backend.MountRO, Policy{Roots: []string{l.root}}, "is outside allowed_mount_roots", ""},
		{"sibling with the root as prefix", l.realRoot + "-other", backend.MountRO, Policy{Roots: []string{l.root}}, "is outside allowed_mount_roots", ""},
		{"relative path", "data/box", backend.MountRO, Policy{}, "must be an absolute host path", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.pol.Check(backend.Mount{HostPath: tc.path, MountPath: "/x", Mode: tc.mode})
			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.resolved, got)
				return
			}
			var ve *backend.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Message, tc.want)
			assert.Empty(t, got)
		})
	}
}

func TestPrepareChecksEveryMount(t *testing.T) {
	l := newLayout(t)
	ws := []Want{
		{Mount: backend.Mount{HostPath: l.ws, MountPath: "/workspace", Mode: backend.MountRW}},
		{Mount: backend.Mount{HostPath: l.skill, MountPath: "/workspace/.skills/pdf", Mode: backend.MountRW}},
		{Mount: backend.Mount{HostPath: filepath.Join(l.ws, "etc"), MountPath: "/workspace/etc", Mode: backend.MountRO}},
	}
	_, err := Prepare(ws, Policy{Roots: []string{l.root}})
	require.EqualError(t, err, "host_path "+filepath.Join(l.ws, "etc")+" is blocked for security", "the third mount is checked too")
	got, err := Prepare(ws[:2], Policy{Roots: []string{l.root}})
	require.NoError(t, err)
	defer got.Close()
	require.Len(t, got, 2)
	assert.Equal(t, []string{"/workspace", "/workspace/.skills/pdf"}, got.Targets())
	assert.Equal(t, []backend.Mount{ws[0].Mount, ws[1].Mount}, got.Mounts())
	assert.Equal(t, StatLine(l.ws)+"\n"+StatLine(l.skill)+"\n", got[0].ID.line()+"\n"+got[1].ID.line()+"\n", "the identities are those of the directories")
}

// line is the StatLine form of an identity.
func (id ID) line() string {
	return strconv.FormatUint(id.Dev, 10) + " " + strconv.FormatUint(id.Ino, 10)
}

// A component replaced by a symlink between the check and the walk is never followed, and a
// missing workspace is only created along the validated path.
func TestPrepareNeverFollowsASwappedComponent(t *testing.T) {
	l := newLayout(t)
	tenants := filepath.Dir(l.ws)
	victim := filepath.Join(tenants, "victim")
	require.NoError(t, os.MkdirAll(filepath.Join(victim, "sub"), 0o755))
	pol := Policy{Roots: []string{l.realRoot}}
	// What Check resolved stays what is opened: swap victim for a symlink after the check.
	r, err := pol.Check(backend.Mount{HostPath: filepath.Join(victim, "sub", "new"), Mode: backend.MountRW})
	require.NoError(t, err)
	require.NoError(t, os.Rename(victim, victim+".real"))
	require.NoError(t, os.Symlink(l.outside, victim))
	for _, create := range []bool{false, true} {
		fd, _, err := open(r, r, create)
		var ve *backend.ValidationError
		require.ErrorAs(t, err, &ve, "create=%v", create)
		assert.Equal(t, -1, fd)
		assert.Equal(t, "host_path "+r+" changed while it was validated: "+victim+" is no longer a directory (a symlink was swapped in?); nothing was mounted", ve.Message)
	}
	require.ErrorContains(t, MkdirAll(r), "is no longer a directory")
	entries, err := os.ReadDir(l.outside)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing was created through the symlink")

	// Back in place: the missing directories are created, under the root only.
	require.NoError(t, os.Remove(victim))
	require.NoError(t, os.Rename(victim+".real", victim))
	srcs, err := Prepare([]Want{{Mount: backend.Mount{HostPath: filepath.Join(victim, "sub", "new", "deeper"), MountPath: "/workspace", Mode: backend.MountRW}, Create: true}}, pol)
	require.NoError(t, err)
	defer srcs.Close()
	st, err := os.Stat(filepath.Join(victim, "sub", "new", "deeper"))
	require.NoError(t, err)
	assert.True(t, st.IsDir())
	assert.Equal(t, StatLine(filepath.Join(victim, "sub", "new", "deeper")), srcs[0].ID.line())

	// Extra mounts are not created; a file is a valid source, a FIFO is not.
	_, err = Prepare([]Want{{Mount: backend.Mount{HostPath: filepath.Join(victim, "missing"), MountPath: "/x", Mode: backend.MountRO}}}, pol)
	assert.EqualError(t, err, "host_path "+filepath.Join(victim, "missing")+" does not exist on the Box runtime host ("+filepath.Join(victim, "missing")+" is missing)")
	file := filepath.Join(victim, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	fsrcs, err := Prepare([]Want{{Mount: backend.Mount{HostPath: file, MountPath: "/x", Mode: backend.MountRO}}}, pol)
	require.NoError(t, err)
	fsrcs.Close()
	fifo := filepath.Join(victim, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o644))
	_, err = Prepare([]Want{{Mount: backend.Mount{HostPath: fifo, MountPath: "/x", Mode: backend.MountRO}}}, pol)
	assert.ErrorContains(t, err, "is no longer a directory")
}

func TestVerify(t *testing.T) {
	srcs := Sources{
		{Mount: backend.Mount{HostPath: "/r/ws", MountPath: "/workspace"}, ID: ID{Dev: 64, Ino: 12}},
		{Mount: backend.Mount{HostPath: "/r/skill", MountPath: "/skill"}, ID: ID{Dev: 64, Ino: 13}},
	}
	cases := []struct {
		name, out, want string
	}{
		{"the validated directories", "64 12\n64 13\n", ""},
		{"another directory was mounted", "64 12\n2 2\n", "host_path /r/skill changed while the sandbox was created: the engine mounted 2:2 at /skill, boxd validated 64:13 (a path component was swapped); the sandbox was removed"},
		{"a target is missing", "64 12\nerror no such file or directory\n", "the sandbox's mount /skill of host_path /r/skill could not be verified: no such file or directory"},
		{"too few answers", "64 12\n", "the sandbox's mounts could not be verified: 2 mount targets, 1 answers"},
		{"garbage", "64 12\nhello\n", "could not be verified: unexpected answer"},
		{"nothing", "", "could not be verified"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := srcs.Verify(tc.out)
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			var ve *backend.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Message, tc.want)
		})
	}
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
			err := Policy{}.CheckBlocked(tc.path)
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

func TestSpecWants(t *testing.T) {
	extra := []backend.Mount{{HostPath: "/r/a", MountPath: "/a", Mode: backend.MountRO}, {HostPath: "/r/b", MountPath: "/b", Mode: backend.MountNone}}
	ws := SpecWants(backend.SessionSpec{HostPath: "/r/ws", HostPathMode: backend.MountRW, MountPath: "/workspace", ExtraMounts: extra})
	assert.Equal(t, []Want{{Mount: backend.Mount{HostPath: "/r/ws", MountPath: "/workspace", Mode: backend.MountRW}, Create: true}, {Mount: extra[0]}}, ws,
		"the workspace first and created; extra mounts of mode none left out")
	assert.Equal(t, []Want{{Mount: extra[0]}}, SpecWants(backend.SessionSpec{HostPath: "/r/ws", HostPathMode: backend.MountNone, ExtraMounts: extra}))
}

// OpenDir reaches the directory Prepare validated through its handle: after the path is
// swapped for a symlink to elsewhere, what it lists is still the validated directory.
func TestSourceOpenDirUsesTheValidatedDirectory(t *testing.T) {
	l := newLayout(t)
	pol := Policy{Roots: []string{l.realRoot}}
	dir := filepath.Join(filepath.Dir(l.ws), "opendir")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "validated"), nil, 0o644))
	srcs, err := Prepare([]Want{{Mount: backend.Mount{HostPath: dir, MountPath: "/workspace", Mode: backend.MountRW}}}, pol)
	require.NoError(t, err)
	defer srcs.Close()
	require.NoError(t, os.Rename(dir, dir+".moved"))
	require.NoError(t, os.Symlink(l.outside, dir))
	d, err := srcs[0].OpenDir()
	require.NoError(t, err)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	require.NoError(t, err)
	assert.Equal(t, []string{"validated"}, names)

	file := filepath.Join(filepath.Dir(l.ws), "plain")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	fsrcs, err := Prepare([]Want{{Mount: backend.Mount{HostPath: file, MountPath: "/x", Mode: backend.MountRO}}}, pol)
	require.NoError(t, err)
	defer fsrcs.Close()
	_, err = fsrcs[0].OpenDir()
	assert.ErrorContains(t, err, "open host_path "+file)
}
