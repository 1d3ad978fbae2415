package wsync

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// The first push mirrors every tree into the sandbox (files, directories, symlinks, modes,
// mtimes); nested trees land at their own mount paths and not in the workspace's copy.
func TestFirstPushMirrorsEveryTree(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "README.md"), "hello\n", 0o644)
	write(t, e.h("ws", "bin/run.sh"), "#!/bin/sh\necho hi\n", 0o755)
	write(t, e.h("ws", "secret.txt"), "s3cret", 0o600)
	write(t, e.h("ws", "docs/deep/er/file.txt"), "deep", 0o444)
	require.NoError(t, os.Chmod(e.h("ws", "docs"), 0o750))
	require.NoError(t, os.Symlink("README.md", e.h("ws", "link")))
	require.NoError(t, os.MkdirAll(e.h("ws", "empty"), 0o755))
	write(t, e.h("skill", "SKILL.md"), "---\nname: demo\n---\n", 0o644)
	write(t, e.h("roskill", "SKILL.md"), "---\nname: ro\n---\n", 0o644)
	mtime := time.Date(2025, 5, 6, 7, 8, 9, 123456789, time.UTC)
	require.NoError(t, os.Chtimes(e.h("ws", "README.md"), mtime, mtime))

	rep := e.push()
	assert.True(t, rep.Exchanged)
	assert.Equal(t, snapshot(t, e.h("ws", "")), without(snapshot(t, e.s("/workspace")), ".skills"))
	assert.Equal(t, snapshot(t, e.h("skill", "")), snapshot(t, e.s("/workspace/.skills/demo")))
	assert.Equal(t, snapshot(t, e.h("roskill", "")), snapshot(t, e.s("/workspace/.skills/ro")))
	st, err := os.Stat(e.s("/workspace/README.md"))
	require.NoError(t, err)
	assert.True(t, st.ModTime().Equal(mtime), "mtime carried to the nanosecond: %v", st.ModTime())
	assert.Equal(t, 4, rep.Trees[0].Files) // README, run.sh, secret, file.txt
	assert.Equal(t, 1, rep.Trees[0].Symlinks)
	assert.Equal(t, 1, rep.Trees[1].Files)
	assert.Empty(t, stagingLeft(t, e.sandbox))
	assert.NotContains(t, snapshot(t, e.h("ws", "")), ".skills", "the host's workspace is not given the nested mounts")
}

// Incremental: only what changed moves, counted in files and in bytes on the stream; a push
// with nothing changed does not contact the sandbox; a pull brings back only the
// sandbox's changes.
func TestIncrementalMovesOnlyChanges(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	big := strings.Repeat("x", 64<<10)
	for i := range 50 {
		write(t, e.h("ws", filepath.Join("src", "f"+string(rune('a'+i%26))+strings.Repeat("1", i/26)+".txt")), big, 0o644)
	}
	e.push()
	_, full, _ := e.counters()
	require.Greater(t, full, int64(50*64<<10))

	e.resetCounters()
	rep := e.push()
	dials, _, _ := e.counters()
	assert.False(t, rep.Exchanged)
	assert.Equal(t, 0, dials, "nothing changed: no exchange at all")

	write(t, e.h("ws", "src/fa.txt"), "changed", 0o644)
	e.resetCounters()
	rep = e.push()
	_, reqBytes, _ := e.counters()
	entries, bytes := rep.Moved()
	assert.Equal(t, 1, entries)
	assert.Equal(t, int64(len("changed")), bytes)
	assert.Less(t, reqBytes, int64(8<<10), "the request carries the one changed file, not the tree")
	assert.Equal(t, "changed", read(t, e.s("/workspace/src/fa.txt")))

	// The first pull after a push learns the sandbox's stat keys of what was written (one
	// hash each, in the sandbox) and sends them, no content; later pulls send almost nothing.
	e.resetCounters()
	rep = e.pull()
	_, _, rspBytes := e.counters()
	entries, _ = rep.Moved()
	assert.Equal(t, 0, entries)
	assert.Less(t, rspBytes, int64(16<<10))
	e.resetCounters()
	rep = e.pull()
	_, _, rspBytes = e.counters()
	entries, _ = rep.Moved()
	assert.Equal(t, 0, entries)
	assert.Less(t, rspBytes, int64(1<<10))

	write(t, e.s("/workspace/src/fb.txt"), "from the sandbox", 0o644)
	write(t, e.s("/workspace/out/new.txt"), "new", 0o640)
	e.resetCounters()
	rep = e.pull()
	_, _, rspBytes = e.counters()
	assert.Equal(t, 2, rep.Trees[0].Files)
	assert.Equal(t, 1, rep.Trees[0].Dirs)
	assert.Equal(t, int64(len("from the sandbox")+len("new")), rep.Trees[0].Bytes)
	assert.Less(t, rspBytes, int64(8<<10))
	assert.Equal(t, "from the sandbox", read(t, e.h("ws", "src/fb.txt")))
	assert.Equal(t, "new", read(t, e.h("ws", "out/new.txt")))

	// What came back is not sent again.
	e.resetCounters()
	rep = e.push()
	assert.False(t, rep.Exchanged)
}

// Deletions travel both ways, files, symlinks and whole directories.
func TestDeletionsBothWays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remove func(e *env)
		sync   func(e *env) *Report
	}{
		{"on the host, pushed", func(e *env) {
			require.NoError(t, os.Remove(e.h("ws", "a.txt")))
			require.NoError(t, os.Remove(e.h("ws", "link")))
			require.NoError(t, os.RemoveAll(e.h("ws", "dir")))
		}, (*env).push},
		{"in the sandbox, pulled", func(e *env) {
			require.NoError(t, os.Remove(e.s("/workspace/a.txt")))
			require.NoError(t, os.Remove(e.s("/workspace/link")))
			require.NoError(t, os.RemoveAll(e.s("/workspace/dir")))
		}, (*env).pull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, stdMounts, Options{})
			write(t, e.h("ws", "a.txt"), "a", 0o644)
			write(t, e.h("ws", "keep.txt"), "k", 0o644)
			write(t, e.h("ws", "dir/sub/b.txt"), "b", 0o644)
			require.NoError(t, os.Symlink("a.txt", e.h("ws", "link")))
			e.push()
			tc.remove(e)
			rep := tc.sync(e)
			assert.Equal(t, 5, rep.Trees[0].Deleted) // a.txt, link, dir, dir/sub, dir/sub/b.txt
			want := map[string]string{"keep.txt": snapshot(t, e.h("ws", ""))["keep.txt"]}
			assert.Equal(t, want, snapshot(t, e.h("ws", "")))
			assert.Equal(t, want, without(snapshot(t, e.s("/workspace")), ".skills"))
			assert.Empty(t, rep.Conflicts())
		})
	}
}

// Directories on the skip list are neither sent nor brought back nor counted, on both sides.
func TestSkipList(t *testing.T) {
	e := newEnv(t, stdMounts, Options{Limits: Limits{PushMaxFiles: 2, PullMaxEntries: 4}})
	write(t, e.h("ws", "main.py"), "print(1)", 0o644)
	for _, d := range DefaultSkip {
		for i := range 5 {
			write(t, e.h("ws", filepath.Join("pkg", d, "f"+string(rune('0'+i)))), "x", 0o644)
		}
	}
	rep := e.push() // 1 file + the skill trees' none: within the limit of 2 because skipped dirs are not counted
	assert.Equal(t, 1, rep.Trees[0].Files)
	for _, d := range DefaultSkip {
		assert.NoDirExists(t, e.s("/workspace/pkg/"+d))
	}
	for _, d := range DefaultSkip {
		write(t, e.s("/workspace/"+d+"/junk"), "junk", 0o644)
	}
	rep = e.pull() // main.py, pkg: 2 entries, within 4
	entries, _ := rep.Moved()
	assert.Equal(t, 0, entries)
	for _, d := range DefaultSkip {
		assert.NoDirExists(t, e.h("ws", d))
	}
}

// Push limits: each is refused before anything moves (the sandbox keeps what it had), with
// a BoxError naming the limit, what was seen and what to do.
func TestPushLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
		grow   func(e *env)
		limit  string
		texts  []string
	}{
		{"files", Limits{PushMaxFiles: 3}, func(e *env) {
			for _, n := range []string{"b", "c", "d"} {
				write(t, e.h("ws", n), n, 0o644)
			}
		}, "push_max_files", []string{"more than 3 files", "push_max_files", ".git"}},
		{"file size", Limits{PushMaxFileBytes: 10}, func(e *env) {
			write(t, e.h("ws", "big.bin"), strings.Repeat("b", 11), 0o644)
		}, "push_max_file_bytes", []string{"big.bin is 11 bytes", "limit of 10 bytes", "push_max_file_bytes"}},
		{"total size", Limits{PushMaxTotalBytes: 20}, func(e *env) {
			write(t, e.h("ws", "b"), strings.Repeat("b", 10), 0o644)
			write(t, e.h("skill", "c"), strings.Repeat("c", 10), 0o644)
		}, "push_max_total_bytes", []string{"limit of 20 bytes", "push_max_total_bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, stdMounts, Options{Limits: tc.limits})
			write(t, e.h("ws", "a"), "a", 0o644)
			e.push()
			before := snapshot(t, e.sandbox)
			tc.grow(e)
			write(t, e.h("ws", "a"), "A", 0o644)
			e.resetCounters()
			_, err := e.sess.Push(t.Context(), e.dial)
			require.Error(t, err)
			var be interface{ Error() string }
			require.ErrorAs(t, err, &be)
			var le *LimitError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, tc.limit, le.Limit)
			assert.Equal(t, "push", le.Direction)
			for _, s := range tc.texts {
				assert.Contains(t, err.Error(), s)
			}
			assert.Contains(t, err.Error(), "nothing was copied")
			dials, _, _ := e.counters()
			assert.Equal(t, 0, dials, "refused before the sandbox was contacted")
			assert.Equal(t, before, snapshot(t, e.sandbox), "the sandbox is unchanged")
		})
	}
}

// Pull limits: refused in the sandbox before anything is sent; boxd's side is unchanged
// and the sandbox keeps its files (nothing is lost: the next pull, within limits, brings
// them).
func TestPullLimits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limits Limits
		grow   func(e *env)
		limit  string
		texts  []string
	}{
		{"entries", Limits{PullMaxEntries: 4}, func(e *env) {
			for _, n := range []string{"b", "c", "d", "e"} {
				write(t, e.s("/workspace/"+n), n, 0o644)
			}
		}, "pull_max_entries", []string{"more than 4 entries", "pull_max_entries"}},
		{"file size", Limits{PullMaxFileBytes: 10}, func(e *env) {
			write(t, e.s("/workspace/out/huge.bin"), strings.Repeat("h", 11), 0o644)
		}, "pull_max_file_bytes", []string{"/workspace/out/huge.bin is 11 bytes", "pull_max_file_bytes"}},
		{"total size", Limits{PullMaxTotalBytes: 15}, func(e *env) {
			write(t, e.s("/workspace/b"), strings.Repeat("b", 8), 0o644)
			write(t, e.s("/workspace/.skills/demo/c"), strings.Repeat("c", 8), 0o644)
		}, "pull_max_total_bytes", []string{"limit of 15 bytes", "pull_max_total_bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, stdMounts, Options{Limits: tc.limits})
			write(t, e.h("ws", "a"), "a", 0o644)
			e.push()
			write(t, e.s("/workspace/a"), "A", 0o644)
			tc.grow(e)
			hostBefore, sandboxBefore := snapshot(t, e.host), snapshot(t, e.sandbox)
			_, err := e.sess.Pull(t.Context(), e.dial)
			require.Error(t, err)
			var le *LimitError
			require.ErrorAs(t, err, &le)
			assert.Equal(t, tc.limit, le.Limit)
			assert.Equal(t, "pull", le.Direction)
			for _, s := range tc.texts {
				assert.Contains(t, err.Error(), s)
			}
			assert.Contains(t, err.Error(), "nothing was copied back")
			assert.Equal(t, hostBefore, snapshot(t, e.host))
			assert.Equal(t, sandboxBefore, snapshot(t, e.sandbox))
			assert.Empty(t, stagingLeft(t, e.host))
		})
	}
}

// A file whose size and mtime are unchanged but whose content changed is still seen (the
// stat key includes ctime, so it is hashed again), both ways; a touched file whose content
// did not change moves nothing.
func TestSameSizeSameMtimeNewContent(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "f.txt"), "aaaa", 0o644)
	mtime := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, os.Chtimes(e.h("ws", "f.txt"), mtime, mtime))
	e.push()

	write(t, e.h("ws", "f.txt"), "bbbb", 0o644)
	require.NoError(t, os.Chtimes(e.h("ws", "f.txt"), mtime, mtime))
	rep := e.push()
	assert.Equal(t, 1, rep.Trees[0].Files)
	assert.Equal(t, "bbbb", read(t, e.s("/workspace/f.txt")))

	write(t, e.s("/workspace/f.txt"), "cccc", 0o644)
	require.NoError(t, os.Chtimes(e.s("/workspace/f.txt"), mtime, mtime))
	rep = e.pull()
	assert.Equal(t, 1, rep.Trees[0].Files)
	assert.Equal(t, "cccc", read(t, e.h("ws", "f.txt")))

	later := mtime.Add(time.Hour)
	require.NoError(t, os.Chtimes(e.h("ws", "f.txt"), later, later))
	rep = e.push()
	assert.False(t, rep.Exchanged, "only the mtime changed: nothing to send")
	require.NoError(t, os.Chtimes(e.s("/workspace/f.txt"), later, later))
	rep = e.pull()
	entries, _ := rep.Moved()
	assert.Equal(t, 0, entries)
}

// Permission bits travel both ways; setuid/setgid/sticky never do.
func TestPermissionsCarried(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	for name, mode := range map[string]os.FileMode{"x.sh": 0o755, "secret": 0o600, "ro": 0o444, "g": 0o664} {
		write(t, e.h("ws", name), name, mode)
	}
	require.NoError(t, os.MkdirAll(e.h("ws", "private"), 0o700))
	require.NoError(t, os.Chmod(e.h("ws", "private"), 0o750))
	write(t, e.h("ws", "suid"), "s", 0o755)
	require.NoError(t, os.Chmod(e.h("ws", "suid"), 0o755|os.ModeSetuid))
	e.push()
	for name, mode := range map[string]os.FileMode{"x.sh": 0o755, "secret": 0o600, "ro": 0o444, "g": 0o664, "private": 0o750, "suid": 0o755} {
		st, err := os.Lstat(e.s("/workspace/" + name))
		require.NoError(t, err)
		assert.Equal(t, mode, st.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky), name)
	}
	require.NoError(t, os.Chmod(e.s("/workspace/secret"), 0o755))
	rep := e.pull()
	assert.Equal(t, 1, rep.Trees[0].Files)
	st, err := os.Stat(e.h("ws", "secret"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), st.Mode().Perm())
}

// Nested mounts: the rw skill's files go back to the skill's host directory, never into the
// workspace's; the ro skill is never pulled back (sandbox edits stay in the sandbox).
func TestNestedAndReadOnlyTrees(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("skill", "SKILL.md"), "v1", 0o644)
	write(t, e.h("roskill", "SKILL.md"), "ro v1", 0o644)
	e.push()
	write(t, e.s("/workspace/.skills/demo/SKILL.md"), "v2 from the sandbox", 0o644)
	write(t, e.s("/workspace/.skills/demo/notes.txt"), "n", 0o644)
	write(t, e.s("/workspace/.skills/ro/SKILL.md"), "edited in the sandbox", 0o644)
	write(t, e.s("/workspace/.skills/other.txt"), "beside the skills", 0o644)
	rep := e.pull()
	assert.Len(t, rep.Trees, 2, "only the rw trees")
	assert.Equal(t, "v2 from the sandbox", read(t, e.h("skill", "SKILL.md")))
	assert.Equal(t, "n", read(t, e.h("skill", "notes.txt")))
	assert.Equal(t, "ro v1", read(t, e.h("roskill", "SKILL.md")))
	assert.Equal(t, "beside the skills", read(t, e.h("ws", ".skills/other.txt")), "the workspace's own files under .skills come back to it")
	assert.NoFileExists(t, e.h("ws", ".skills/demo/SKILL.md"))
	assert.NoDirExists(t, e.h("ws", ".skills/demo"))

	// A ro tree changed on the host: pushed over whatever the sandbox did to it, no copies.
	write(t, e.h("roskill", "SKILL.md"), "ro v2", 0o644)
	rep = e.push()
	assert.Empty(t, rep.Conflicts())
	assert.Equal(t, "ro v2", read(t, e.s("/workspace/.skills/ro/SKILL.md")))
	entries, err := os.ReadDir(e.s("/workspace/.skills/ro"))
	require.NoError(t, err)
	assert.Len(t, entries, 2, "SKILL.md and the marker only")
}

// A sandbox that does not hold this session's copy (replaced, emptied) is detected by its
// marker: the push is redone in full instead of sending only the changes.
func TestReplacedSandboxGetsEverything(t *testing.T) {
	e := newEnv(t, stdMounts, Options{})
	write(t, e.h("ws", "a"), "a", 0o644)
	write(t, e.h("ws", "b"), "b", 0o644)
	e.push()
	require.NoError(t, os.RemoveAll(e.s("/workspace")))
	write(t, e.h("ws", "b"), "B", 0o644)
	rep := e.push()
	assert.True(t, rep.Trees[0].Reset)
	assert.Equal(t, snapshot(t, e.h("ws", "")), without(snapshot(t, e.s("/workspace")), ".skills"))

	// And a pull from a replaced sandbox deletes nothing on boxd's side.
	require.NoError(t, os.RemoveAll(e.s("/workspace")))
	rep = e.pull()
	assert.True(t, rep.Trees[0].Reset)
	assert.Equal(t, "a", read(t, e.h("ws", "a")))
	assert.Equal(t, "B", read(t, e.h("ws", "b")))
}

// The integration's path: the spec's mounts validated and opened by internal/mounts (the
// workspace created), then synced; a host_path outside the allowed roots never gets here.
func TestTreesFromPreparedMounts(t *testing.T) {
	root := t.TempDir()
	skill := filepath.Join(root, "skills", "tenants", "ns", "demo")
	write(t, filepath.Join(skill, "SKILL.md"), "s", 0o644)
	spec := backend.SessionSpec{HostPath: filepath.Join(root, "default", "tenants", "ns"), HostPathMode: backend.MountRW, MountPath: "/workspace",
		ExtraMounts: []backend.Mount{{HostPath: skill, MountPath: "/workspace/.skills/demo", Mode: backend.MountRW}}}
	srcs, err := mounts.Prepare(mounts.SpecWants(spec), mounts.Policy{Roots: []string{root}, HostRoot: root})
	require.NoError(t, err)
	defer srcs.Close()
	trees, done, err := TreesOf(srcs)
	require.NoError(t, err)
	s, err := NewSession(trees, Options{NoFsync: true})
	done()
	require.NoError(t, err)
	defer s.Close()
	e := &env{t: t, sandbox: t.TempDir(), sess: s}
	write(t, filepath.Join(spec.HostPath, "a.txt"), "a", 0o644)
	e.push()
	assert.Equal(t, "a", read(t, e.s("/workspace/a.txt")))
	assert.Equal(t, "s", read(t, e.s("/workspace/.skills/demo/SKILL.md")))
	write(t, e.s("/workspace/.skills/demo/out.txt"), "o", 0o644)
	e.pull()
	assert.Equal(t, "o", read(t, filepath.Join(skill, "out.txt")))

	_, err = mounts.Prepare(mounts.SpecWants(backend.SessionSpec{HostPath: "/etc", HostPathMode: backend.MountRW, MountPath: "/workspace"}), mounts.Policy{Roots: []string{root}})
	require.Error(t, err)
}

// A file that grows past the per-file limit after the scan (while the push is being sent)
// abandons the push: the trailer tells the sandbox, which applies nothing of it.
func TestFileGrowingDuringThePushChangesNothing(t *testing.T) {
	e := newEnv(t, stdMounts, Options{Limits: Limits{PushMaxFileBytes: 10}})
	write(t, e.h("ws", "a"), "a", 0o644)
	e.push()
	write(t, e.h("ws", "a"), "A", 0o644)
	write(t, e.h("ws", "b"), "small", 0o644)
	before := snapshot(t, e.sandbox)
	_, err := e.sess.Push(t.Context(), func(ctx context.Context) (*Conn, error) {
		write(t, e.h("ws", "b"), strings.Repeat("big", 10), 0o644) // after the scan, before the send
		return e.dial(ctx)
	})
	var le *LimitError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "push_max_file_bytes", le.Limit)
	assert.Contains(t, err.Error(), "/b is 30 bytes")
	assert.Equal(t, before, snapshot(t, e.sandbox))
	assert.Empty(t, stagingLeft(t, e.sandbox))
	write(t, e.h("ws", "b"), "small", 0o644)
	e.push()
	assert.Equal(t, "A", read(t, e.s("/workspace/a")))
	assert.Equal(t, "small", read(t, e.s("/workspace/b")))
}
