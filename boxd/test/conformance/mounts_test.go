//go:build integration

package conformance

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
)

// errClass is the class of a failed response's message ("BoxValidationError", ...).
func errClass(msg string) string {
	class, _, _ := strings.Cut(msg, ":")
	return class
}

// TestMountSwapRace is the bind-mount race of issue #10 item 2, as LangBot's own mounts allow
// it: a sandbox that has the legacy <default_workspace> mounted rw swaps, in a loop
// (renameat2 RENAME_EXCHANGE), a path component of another session's host_path and of its
// extra_mounts source with a symlink to the host's `/`, and a parent of a workspace that does
// not exist yet with a symlink to a directory outside the allowed roots, while sessions are
// created over the wire. No created sandbox may see the host's `/` (a marker file placed
// outside the roots), every create either mounts the validated directories or fails with an
// error (and leaves no container), and no directory is ever created outside the roots.
func TestMountSwapRace(t *testing.T) {
	b := startBoxd(t)
	attacker, victim := dial(t, b), dial(t, b)
	root := attacker.init(t, nil)
	tenants := filepath.Join(root, "default", "tenants")
	for dir, id := range map[string]string{"victim": "victim", "skillv": "skill", "mk": ""} {
		require.NoError(t, os.MkdirAll(filepath.Join(tenants, dir), 0o755))
		if id != "" {
			require.NoError(t, os.WriteFile(filepath.Join(tenants, dir, id+".id"), []byte(id+"\n"), 0o644))
		}
	}
	bin := buildRacer(t, root)
	markerDir, err := os.MkdirTemp("", "boxd-mountrace-marker-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(markerDir) })
	marker := filepath.Join(markerDir, "MARKER")
	require.NoError(t, os.WriteFile(marker, []byte("host\n"), 0o644))
	outside := t.TempDir() // outside the roots: nothing may ever be created in it
	require.False(t, strings.HasPrefix(outside, root+"/"))

	// The attacker: <default_workspace> rw (legacy callers), the racer read-only.
	attackerSpec := spec(uniq("attacker"), map[string]any{
		"host_path": filepath.Join(root, "default"), "host_path_mode": "rw", "mount_path": "/workspace",
		"extra_mounts": []any{map[string]any{"host_path": bin, "mount_path": "/opt/racer", "mode": "ro"}},
		"workdir":      "/workspace/tenants", "timeout_sec": 600,
		"cmd": "/opt/racer/racer dir victim / skillv / mk " + outside,
	})
	var wg sync.WaitGroup
	var raced response
	wg.Add(1)
	go func() {
		defer wg.Done()
		raced = attacker.call("box_exec", attackerSpec, ctx1)
	}()
	ready := filepath.Join(tenants, "READY")
	stop := func() { _ = os.WriteFile(filepath.Join(tenants, "STOP"), nil, 0o644) }
	t.Cleanup(stop) // also when a require below ends the test early

	// Creates made while the racer runs: the mount race is given 30 chances, the mkdir race
	// 120 (it is refused quickly most of the time, and its window is shorter).
	const mountAttempts, mkAttempts = 30, 120
	var mounted, mkCreated int
	refused := map[string]int{}
	for i, n := 0, 0; n < mountAttempts+mkAttempts; i++ {
		require.Less(t, i, 4*(mountAttempts+mkAttempts), "the racer never got ready: %+v", raced)
		racing := fileExists(ready)
		mount := i%5 == 0 && mounted+refused["mount"] < mountAttempts || mkCreated+refused["mk"] >= mkAttempts
		sid := uniq(fmt.Sprintf("victim-%d", i))
		// A deep missing workspace: base boxd resolved the path, then ran MkdirAll on it, which
		// follows a symlink swapped in meanwhile (the more levels, the wider the window).
		deep := filepath.Join(tenants, "mk", fmt.Sprintf("new-%d", i), strings.Repeat("d/", 20))
		kind, s := "mk", spec(sid, map[string]any{"host_path": deep, "host_path_mode": "rw", "mount_path": "/workspace", "cmd": "true"})
		if mount {
			kind, s = "mount", spec(sid, map[string]any{
				"host_path": filepath.Join(tenants, "victim"), "host_path_mode": "rw", "mount_path": "/workspace",
				"extra_mounts": []any{map[string]any{"host_path": filepath.Join(tenants, "skillv"), "mount_path": "/skill", "mode": "rw"}},
				"cmd":          fmt.Sprintf("test -e /workspace%[1]s && echo ESCAPED workspace; test -e /skill%[1]s && echo ESCAPED skill; cat /workspace/victim.id /skill/skill.id", marker),
			})
		}
		r := victim.call("box_exec", s, ctx1)
		if r.Code == 0 {
			if mount {
				assert.Equal(t, "victim\nskill", r.Data["stdout"], "the sandbox sees the validated directories, not the host's /")
			}
			victim.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
		} else {
			assert.Contains(t, []string{"BoxValidationError", "BoxError"}, errClass(r.Message), "a refused create fails cleanly: %s", r.Message)
		}
		if !racing {
			continue
		}
		n++
		switch {
		case r.Code != 0:
			refused[kind]++
			refused[reason(r.Message)]++
		case mount:
			mounted++
		default:
			mkCreated++
		}
	}
	stop()
	wg.Wait()
	require.Equal(t, 0, raced.Code, "the racer ran: %s", raced.Message)
	swaps := regexp.MustCompile(`(?m)^(victim|skillv|mk) swaps=([1-9][0-9]*)$`).FindAllString(fmt.Sprint(raced.Data["stdout"]), -1)
	assert.Len(t, swaps, 3, "every pair was swapped: %v", raced.Data)
	t.Logf("creates while racing: %d of %d mounted, %d of %d created; refused: %v; racer: %v", mounted, mountAttempts, mkCreated, mkAttempts, refused, swaps)

	entries, err := os.ReadDir(outside)
	require.NoError(t, err)
	assert.Empty(t, entries, "no directory is created outside the allowed roots")
	list, err := dockerClient(t).ContainerList(t.Context(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", docker.LabelScope+"=conformance-"+t.Name()))})
	require.NoError(t, err)
	assert.Len(t, list, 1, "only the attacker's sandbox is left: refused creates leave no container")
}

// reason shortens a refusal to its kind, for the log.
func reason(msg string) string {
	if errClass(msg) != "BoxValidationError" {
		return msg
	}
	msg = regexp.MustCompile(`/[^ :]*`).ReplaceAllString(msg, "<path>")
	return msg[:min(len(msg), 90)]
}

func fileExists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestEngineSocketNotMountable is issue #10 item 3: with the engine's socket under an allowed
// root (LangBot's shipped roots include /tmp; hack/docker.sh puts the socket there), neither
// the socket's directory nor any of its ancestors may be mounted.
func TestEngineSocketNotMountable(t *testing.T) {
	u, err := url.Parse(os.Getenv("DOCKER_HOST"))
	require.NoError(t, err)
	require.Equal(t, "unix", u.Scheme, "the private engine listens on a unix socket")
	sock, err := filepath.EvalSymlinks(u.Path)
	require.NoError(t, err)
	b := startBoxd(t)
	c := dial(t, b)
	root := t.TempDir()
	c.ok("__ping", map[string]any{}, nil)
	c.ok("box_init", map[string]any{"local": map[string]any{"host_root": root, "allowed_mount_roots": []string{root, "/tmp"}}}, nil)
	require.True(t, strings.HasPrefix(sock, "/tmp/"), "the socket %s is under the allowed root /tmp", sock)
	for _, p := range []string{filepath.Dir(sock), filepath.Dir(filepath.Dir(sock)), "/tmp"} {
		for _, where := range []string{"host_path", "extra_mounts"} {
			t.Run(where+" "+p, func(t *testing.T) {
				extra := map[string]any{"host_path": p, "host_path_mode": "ro", "mount_path": "/workspace"}
				if where == "extra_mounts" {
					extra = map[string]any{"extra_mounts": []any{map[string]any{"host_path": p, "mount_path": "/engine", "mode": "ro"}}}
				}
				r := c.call("box_exec", spec(uniq("sock"), extra), ctx1)
				assert.Equal(t, fmt.Sprintf("BoxValidationError: host_path %s is blocked for security (it contains the container engine socket %s)", p, sock), r.Message)
			})
		}
	}
}

// TestSandboxActionsNeedBoxInit is issue #10 item 4: before box_init a fresh boxd has no
// allowed roots, so it refuses to start sandboxes (with the class LangBot reports a mount
// without roots with); host_root itself, or a directory containing it, is never mounted rw
// (a sandbox could replace the exec agent under <host_root>/.boxd).
func TestSandboxActionsNeedBoxInit(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.ok("__ping", map[string]any{}, nil)
	const notInit = "BoxValidationError: Box runtime is not initialised: send box_init with box.local (host_root or allowed_mount_roots) before sandbox actions"
	for _, action := range []string{"box_create_session", "box_exec"} {
		r := c.call(action, spec(uniq("early"), map[string]any{"host_path": "/usr", "mount_path": "/workspace", "host_path_mode": "ro"}), ctx1)
		assert.Equal(t, notInit, r.Message, action)
	}
	r := c.call("box_start_managed_process", map[string]any{"session_id": "early", "spec": map[string]any{"command": "cat"}}, ctx1)
	assert.Equal(t, notInit, r.Message)

	parent := t.TempDir()
	hostRoot := filepath.Join(parent, "box")
	require.NoError(t, os.MkdirAll(hostRoot, 0o755))
	c.ok("box_init", map[string]any{"local": map[string]any{"host_root": hostRoot, "allowed_mount_roots": []string{parent}}}, nil)
	cases := []struct {
		name, path, mode, want string
	}{
		{"host_root rw", hostRoot, "rw", "BoxValidationError: host_path " + hostRoot + " must not be mounted read-write: it contains boxd's own directory " + filepath.Join(hostRoot, ".boxd") + " (mount a directory below box.local.host_root, or mount it ro)"},
		{"a parent of host_root rw", parent, "rw", "BoxValidationError: host_path " + parent + " must not be mounted read-write: it contains boxd's own directory " + filepath.Join(hostRoot, ".boxd") + " (mount a directory below box.local.host_root, or mount it ro)"},
		{"host_root ro", hostRoot, "ro", ""},
		{"the default workspace rw", filepath.Join(hostRoot, "default"), "rw", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.call("box_exec", spec(uniq("root"), map[string]any{"host_path": tc.path, "host_path_mode": tc.mode, "mount_path": "/workspace", "cmd": "ls / >/dev/null"}), ctx1)
			if tc.want == "" {
				assert.Equal(t, 0, r.Code, r.Message)
				return
			}
			assert.Equal(t, tc.want, r.Message)
		})
	}
	r = c.call("box_exec", spec(uniq("late"), map[string]any{"host_path": "/usr", "mount_path": "/workspace", "host_path_mode": "ro"}), ctx1)
	assert.Equal(t, "BoxValidationError: host_path /usr is outside allowed_mount_roots: "+parent, r.Message)
}

// TestSandboxUser: `docker.user` runs sandboxes (and every command in them) as that user.
func TestSandboxUser(t *testing.T) {
	for _, p := range execPaths() {
		t.Run(p.name, func(t *testing.T) {
			b := startBoxd(t)
			c := dial(t, b)
			root := t.TempDir()
			r := c.call("box_init", map[string]any{"docker": map[string]any{"user": "nobody"}}, nil)
			assert.Equal(t, `ValueError: box.docker.user must be "<uid>" or "<uid>:<gid>" in numbers (e.g. "1000:1000"), or empty for the image's user`, r.Message)
			c.ok("box_init", map[string]any{"local": map[string]any{"host_root": root},
				"docker": map[string]any{"user": "1000:1001", "exec_agent": p.agent}}, nil)
			ws := filepath.Join(root, "default", "tenants", "u")
			out := c.ok("box_exec", spec(uniq("user"), map[string]any{"host_path": ws, "host_path_mode": "rw", "mount_path": "/workspace",
				"cmd": "id -u; id -g; " + parentCmdline}), ctx1)
			stdout, _ := out["stdout"].(string)
			assert.True(t, strings.HasPrefix(stdout, "1000\n1001\n"), "the sandbox's commands run as 1000:1001: %q", stdout)
			p.assertRanThrough(t, strings.TrimPrefix(stdout, "1000\n1001\n"))
		})
	}
}
