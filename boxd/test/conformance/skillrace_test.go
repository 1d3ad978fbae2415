//go:build integration

package conformance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// raceAttempts is how many times each skill action is given the chance to lose the race
// against the sandbox's swaps (boxd before the fd-relative store lost within a few dozen).
const raceAttempts = 300

// buildRacer builds boxd/test/racer as a static binary into a new directory under root and
// returns that directory (the test bind-mounts it read-only into the sandbox).
func buildRacer(t *testing.T, root string) string {
	t.Helper()
	dir := filepath.Join(root, "tools")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "racer"), "github.com/langbot-k8s/langbot-k8s/boxd/test/racer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build the racer: %s", out)
	return dir
}

// callCtx is call for use off the test goroutine: errors are returned, and the response must
// arrive before ctx's deadline (which only turns a hang into a failure).
func (c *conn) callCtx(ctx context.Context, action string, data any, context map[string]any) (response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.seq.Add(1)
	req := map[string]any{"seq_id": seq, "action": action, "data": data, "context": context}
	if err := c.ws.WriteJSON(req); err != nil {
		return response{}, fmt.Errorf("send %s: %w", action, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Minute)
	}
	for {
		if err := c.ws.SetReadDeadline(deadline); err != nil {
			return response{}, err
		}
		var r response
		if err := c.ws.ReadJSON(&r); err != nil {
			return response{}, fmt.Errorf("%s did not answer before the deadline: %w", action, err)
		}
		if r.SeqID == seq {
			return r, nil
		}
	}
}

// waitForFile waits, with inotify, until dir/name exists or ctx ends.
func waitForFile(ctx context.Context, dir, name string) error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = f.SetReadDeadline(deadline)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return nil
		}
		if _, err := f.Read(buf); err != nil {
			return fmt.Errorf("wait for %s in %s: %w", name, dir, err)
		}
	}
}

// racerSession is a sandbox running the racer in a skill package mounted rw, as LangBot
// mounts skills (extra_mounts of the package at /workspace/.skills/<name>, mode rw).
type racerSession struct {
	pkg  string
	done chan response
	err  chan error
}

// startRacer runs `racer args...` in a sandbox session of the calling tenant (context ctx) and
// returns once the racer has set up its swaps. The session's exec runs on its own connection.
func startRacer(t *testing.T, b *boxd, root, tools, session, skill, pkg string, ctx map[string]any, args ...string) *racerSession {
	t.Helper()
	ws := filepath.Join(root, "default", "tenants", tenancy.Namespace(instance, ctx["workspace_uuid"].(string)))
	require.NoError(t, os.MkdirAll(ws, 0o755))
	for _, f := range []string{"READY", "STOP"} {
		require.NoError(t, os.RemoveAll(filepath.Join(pkg, f)))
	}
	mountAt := "/workspace/.skills/" + skill
	mounts := []any{
		map[string]any{"host_path": pkg, "mount_path": mountAt, "mode": "rw"},
		map[string]any{"host_path": tools, "mount_path": "/opt/racer", "mode": "ro"},
	}
	cmd := "/opt/racer/racer " + strings.Join(args, " ")
	execConn := dial(t, b)
	rs := &racerSession{pkg: pkg, done: make(chan response, 1), err: make(chan error, 1)}
	go func() {
		r, err := execConn.callCtx(context.Background(), "box_exec", spec(session, map[string]any{"cmd": cmd, "timeout_sec": 900,
			"host_path": ws, "host_path_mode": "rw", "extra_mounts": mounts, "skill_name": skill, "workdir": mountAt}), ctx)
		if err != nil {
			rs.err <- err
			return
		}
		rs.done <- r
	}()
	waitCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- waitForFile(waitCtx, pkg, "READY") }()
	select {
	case err := <-ready:
		require.NoError(t, err, "the racer did not start")
	case r := <-rs.done:
		t.Fatalf("the racer ended before it was ready: %s", asJSON(r))
	case err := <-rs.err:
		t.Fatalf("box_exec of the racer: %v", err)
	}
	t.Cleanup(func() { _ = os.WriteFile(filepath.Join(pkg, "STOP"), nil, 0o644) })
	return rs
}

// stop tells the racer to stop (unless stopFile is false: it ends by itself) and returns its
// output once box_exec has answered.
func (rs *racerSession) stop(t *testing.T, stopFile bool) string {
	t.Helper()
	if stopFile {
		require.NoError(t, os.WriteFile(filepath.Join(rs.pkg, "STOP"), nil, 0o644))
	}
	select {
	case r := <-rs.done:
		require.Equal(t, 0, r.Code, "box_exec of the racer: %s", r.Message)
		require.Equal(t, float64(0), r.Data["exit_code"], "racer: %s", asJSON(r.Data))
		return r.Data["stdout"].(string)
	case err := <-rs.err:
		t.Fatalf("box_exec of the racer: %v", err)
	}
	return ""
}

// isCleanRefusal reports whether a failed skill action was refused with a validation error.
func isCleanRefusal(r response) bool {
	return r.Code != 0 && strings.HasPrefix(r.Message, "BoxValidationError: ")
}

// Item 1 of issue #10: code in a sandbox that has its skill package mounted rw swaps
// directories of the package with symlinks (to /etc, to /proc/self, to a directory outside
// the store) while boxd serves skill file actions on them. boxd must only ever read, list and
// write the package's own files, and otherwise refuse cleanly.
func TestSkillFileActionsRaceSymlinkSwaps(t *testing.T) {
	t.Setenv("LANGBOT_BOX_CONTROL_TOKEN", token) // as in a deployed boxd: its environ holds the token
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	tools := buildRacer(t, root)
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "sentinel"), []byte("outside"), 0o644))
	hostHostname, err := os.ReadFile("/etc/hostname")
	require.NoError(t, err)

	sk := c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": "racy", "instructions": "race me"}}, ctx1)["skill"].(map[string]any)
	pkg := sk["package_root"].(string)
	real := map[string]string{"etc/hostname": "REAL hostname", "proc/environ": "REAL environ", "out/keep.txt": "REAL keep"}
	for p, body := range real {
		require.NoError(t, os.MkdirAll(filepath.Join(pkg, filepath.Dir(p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(pkg, p), []byte(body), 0o644))
	}
	rs := startRacer(t, b, root, tools, "racy", "racy", pkg, ctx1, "dir", "etc", "/etc", "proc", "/proc/self", "out", outside)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var written []string
	counts := map[string]int{}
	for i := 0; i < raceAttempts; i++ {
		for _, p := range []string{"etc/hostname", "proc/environ"} {
			r, err := c.callCtx(ctx, "box_read_skill_file", map[string]any{"name": "racy", "path": p}, ctx1)
			require.NoError(t, err)
			if r.Code == 0 {
				counts["read ok"]++
				require.Equal(t, real[p], r.Data["content"], "box_read_skill_file %s returned a file outside the package", p)
				continue
			}
			counts["read refused"]++
			require.True(t, isCleanRefusal(r), "box_read_skill_file %s: %s", p, r.Message)
			require.NotContains(t, r.Message, token)
		}
		for dir, allowed := range map[string][]string{"etc": {"hostname"}, "proc": {"environ"}} {
			r, err := c.callCtx(ctx, "box_list_skill_files", map[string]any{"name": "racy", "path": dir, "include_hidden": true}, ctx1)
			require.NoError(t, err)
			if r.Code != 0 {
				counts["list refused"]++
				require.True(t, isCleanRefusal(r), "box_list_skill_files %s: %s", dir, r.Message)
				continue
			}
			counts["list ok"]++
			for _, e := range r.Data["entries"].([]any) {
				require.Contains(t, allowed, e.(map[string]any)["name"], "box_list_skill_files %s listed a directory outside the package", dir)
			}
		}
		name := fmt.Sprintf("out/w-%d.txt", i)
		r, err := c.callCtx(ctx, "box_write_skill_file", map[string]any{"name": "racy", "path": name, "content": "written"}, ctx1)
		require.NoError(t, err)
		if r.Code == 0 {
			counts["write ok"]++
			written = append(written, name)
		} else {
			counts["write refused"]++
			require.True(t, isCleanRefusal(r), "box_write_skill_file %s: %s", name, r.Message)
		}
	}
	out := rs.stop(t, true)
	t.Logf("racer: %s; results: %v", strings.TrimSpace(out), counts)
	for _, p := range []string{"etc", "proc", "out"} {
		assert.Regexp(t, `(?m)^`+p+` swaps=[1-9]`, out, "the racer swapped %s while the actions ran", p)
	}

	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	require.Len(t, entries, 1, "boxd created files outside the package: %v", entries)
	assert.Equal(t, "sentinel", entries[0].Name())
	got, err := os.ReadFile("/etc/hostname")
	require.NoError(t, err)
	assert.Equal(t, hostHostname, got)
	for _, name := range written {
		body, err := os.ReadFile(filepath.Join(pkg, name))
		if assert.NoError(t, err, "a successful write landed in the package: %s", name) {
			assert.Equal(t, "written", string(body))
		}
	}
	leftovers, err := filepath.Glob(filepath.Join(pkg, "out", ".*.tmp-*"))
	require.NoError(t, err)
	assert.Empty(t, leftovers, "no temporary files are left behind")

	// Deleting the skill while its directories are being swapped removes the package and
	// nothing the symlinks point to.
	rs = startRacer(t, b, root, tools, "racy", "racy", pkg, ctx1, "dir", "etc", "/etc", "out", outside)
	assert.Equal(t, map[string]any{"deleted": "racy"}, c.ok("box_delete_skill", map[string]any{"name": "racy"}, ctx1))
	rs.stop(t, false) // the racer ends when its package is gone
	assert.NoDirExists(t, pkg)
	assert.FileExists(t, filepath.Join(outside, "sentinel"))
	assert.FileExists(t, "/etc/hostname")
}

// Item 6 of issue #10: the sandbox exchanges a package's SKILL.md with a FIFO in a loop.
// Opening the FIFO must never block: the tenant's own actions answer (a listing, or a clean
// refusal) and another tenant's skill actions are never held up behind it.
func TestSkillEntryFileFIFODoesNotBlock(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	tools := buildRacer(t, root)
	sk := c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": "fifo-skill", "instructions": "real"}}, ctx1)["skill"].(map[string]any)
	pkg := sk["package_root"].(string)
	other := map[string]any{"instance_uuid": instance, "workspace_uuid": "workspace-b", "placement_generation": 1}
	c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": "calm", "instructions": "calm"}}, other)

	rs := startRacer(t, b, root, tools, "fifo", "fifo-skill", pkg, ctx1, "fifo", "SKILL.md")
	t.Cleanup(func() {
		// Only needed when an open blocked (boxd before the fix): open the FIFO's other end,
		// under either name, so the blocked open returns and boxd can stop.
		for _, n := range []string{"SKILL.md", "SKILL.md.fifo"} {
			if fd, err := unix.Open(filepath.Join(pkg, n), unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
				unix.Close(fd)
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tenantA := dial(t, b)
	aDone := make(chan error, 1)
	go func() {
		for i := 0; i < raceAttempts; i++ {
			for _, a := range []struct {
				action string
				data   map[string]any
			}{
				{"box_list_skills", map[string]any{}},
				{"box_read_skill_file", map[string]any{"name": "fifo-skill", "path": "SKILL.md"}},
			} {
				r, err := tenantA.callCtx(ctx, a.action, a.data, ctx1)
				if err != nil {
					aDone <- err
					return
				}
				if r.Code != 0 && !strings.HasPrefix(r.Message, "BoxValidationError: ") && !strings.HasPrefix(r.Message, "ValueError: ") {
					aDone <- fmt.Errorf("%s: unexpected error %s", a.action, r.Message)
					return
				}
			}
		}
		aDone <- nil
	}()
	for i := 0; i < raceAttempts; i++ {
		r, err := c.callCtx(ctx, "box_list_skills", map[string]any{}, other)
		require.NoError(t, err, "another tenant's skill action was held up by the FIFO")
		require.Equal(t, 0, r.Code, r.Message)
		require.Len(t, r.Data["skills"], 1)
	}
	require.NoError(t, <-aDone, "the tenant's own actions on the FIFO answer")
	out := rs.stop(t, true)
	assert.Regexp(t, `SKILL.md swaps=[1-9]`, out)
	t.Logf("racer: %s", strings.TrimSpace(out))

	// Deterministically: a FIFO in place of a skill file is refused at once.
	require.NoError(t, unix.Mkfifo(filepath.Join(pkg, "pipe.txt"), 0o644))
	r, err := c.callCtx(ctx, "box_read_skill_file", map[string]any{"name": "fifo-skill", "path": "pipe.txt"}, ctx1)
	require.NoError(t, err)
	assert.Equal(t, "BoxValidationError: Skill file not found: pipe.txt", r.Message)
}

// Item 9 of issue #10 (skills): instructions that would make SKILL.md larger than the 1 MiB
// a skill entry file may have are refused before anything is written, and a skill whose
// SKILL.md on disk is already too large can still be deleted.
func TestSkillInstructionsSizeLimit(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": "big", "instructions": "small"}}, ctx1)
	huge := strings.Repeat("x", 1<<20)
	msg := c.fails("box_update_skill", map[string]any{"name": "big", "skill": map[string]any{"instructions": huge}}, ctx1)
	assert.True(t, strings.HasPrefix(msg, "BoxValidationError: Skill entry file SKILL.md exceeds the 1048576-byte limit"), msg)
	assert.Contains(t, msg, "skill.instructions")
	msg = c.fails("box_create_skill", map[string]any{"skill": map[string]any{"name": "big2", "instructions": huge}}, ctx1)
	assert.Contains(t, msg, "skill.instructions")
	got, ok := c.ok("box_get_skill", map[string]any{"name": "big"}, ctx1)["skill"].(map[string]any)
	require.True(t, ok, "the skill still loads after the refused update")
	assert.Equal(t, "small", got["instructions"], "the refused update wrote nothing")
	tenantRoot := filepath.Join(root, "skills", "tenants", tenancy.Namespace(instance, workspace))
	assert.NoDirExists(t, filepath.Join(tenantRoot, "big2"), "the refused create left no directory")

	// A SKILL.md over the limit that is already on disk (written by a sandbox, or by an
	// older boxd): the skill does not list, but it can be deleted by its name.
	pkg := filepath.Join(tenantRoot, "big")
	require.NoError(t, os.WriteFile(filepath.Join(pkg, "SKILL.md"), []byte("---\nname: big\n---\n"+huge), 0o644))
	assert.Equal(t, map[string]any{"skill": nil}, c.ok("box_get_skill", map[string]any{"name": "big"}, ctx1))
	assert.Equal(t, map[string]any{"deleted": "big"}, c.ok("box_delete_skill", map[string]any{"name": "big"}, ctx1))
	assert.NoDirExists(t, pkg)
}
