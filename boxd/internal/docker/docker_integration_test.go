//go:build integration

// Integration tests of the Docker backend against the project's private Docker Engine
// (`bash hack/docker.sh up`, then `eval "$(bash hack/docker.sh env)"`; ci/30-boxd.sh does
// both) with the local busybox sandbox image. They fail, never skip, when the engine does
// not answer. Every test works in its own scope (langbot.box.scope), so its Recover never
// touches containers of other tests or of other runtimes sharing the engine.
package docker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

const sandboxImage = "langbot-k8s/sandbox:local"

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type env struct {
	t     testing.TB
	ctx   context.Context
	cli   *client.Client
	scope string
	// podman is true when DOCKER_HOST is a Podman API socket (hack/podman.sh): a few
	// engine-reported details differ, see the assertions that check it.
	podman bool
}

// newEnv checks the engine answers and registers removal of every container of the test's
// scope when the test ends.
func newEnv(t testing.TB) *env {
	t.Helper()
	require.NotEmpty(t, os.Getenv("DOCKER_HOST"), "DOCKER_HOST is empty: run `bash hack/docker.sh up` and `eval \"$(bash hack/docker.sh env)\"` (ci/30-boxd.sh does)")
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	ctx := context.Background()
	_, err = cli.Ping(ctx)
	require.NoError(t, err, "the Docker Engine at DOCKER_HOST does not answer")
	_, err = cli.ImageInspect(ctx, sandboxImage)
	require.NoError(t, err, "sandbox image missing: `bash hack/docker.sh up` builds it")
	v, err := cli.ServerVersion(ctx)
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, cli: cli, scope: "it-" + randHex(6)}
	for _, c := range v.Components {
		e.podman = e.podman || strings.Contains(c.Name, "Podman")
	}
	t.Cleanup(func() {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelScope+"="+e.scope))})
		if err == nil {
			for _, c := range list {
				_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
		}
		_ = cli.Close()
	})
	return e
}

// backend returns a Backend of the test's scope with a fresh instance id.
func (e *env) backend(mod ...func(*Options)) *Backend {
	e.t.Helper()
	// As boxd runs after box_init: allowed roots (the tests' directories are under the temporary
	// directory), a host root of the test's own and the agent, which verifies bind mounts.
	hostRoot := e.t.TempDir()
	o := Options{InstanceID: randHex(6), CPULimitEnabled: true, Hardening: true, Scope: e.scope,
		AllowedMountRoots: func() []string { return []string{os.TempDir()} }, HostRoot: func() string { return hostRoot }, AgentBinary: agentBinary,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&o)
	}
	b, err := New(e.ctx, o)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = b.Close() })
	return b
}

func spec(id string, mod ...func(*backend.SessionSpec)) backend.SessionSpec {
	s := backend.SessionSpec{PhysicalID: "ws-" + randHex(12) + "-g1-" + id, Image: sandboxImage, MountPath: "/workspace",
		HostPathMode: backend.MountRW, CPUs: 1, MemoryMB: 256, PidsLimit: 64, ReadOnlyRootfs: true}
	for _, m := range mod {
		m(&s)
	}
	return s
}

func (e *env) start(b *Backend, s backend.SessionSpec) backend.Handle {
	e.t.Helper()
	h, err := b.Start(e.ctx, s)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = b.Stop(context.Background(), h) })
	return h
}

type out struct {
	code           int
	stdout, stderr string
}

func (e *env) run(b *Backend, h backend.Handle, script string, vars ...backend.EnvVar) out {
	e.t.Helper()
	var so, se bytes.Buffer
	res, err := b.Exec(e.ctx, h, backend.ExecRequest{Argv: []string{"sh", "-lc", script}, Env: vars, Stdout: &so, Stderr: &se})
	require.NoError(e.t, err, "exec %q", script)
	return out{res.ExitCode, so.String(), se.String()}
}

func (e *env) inspect(h backend.Handle) container.InspectResponse {
	e.t.Helper()
	ins, err := e.cli.ContainerInspect(e.ctx, h.ID)
	require.NoError(e.t, err)
	return ins
}

// waitFor blocks until the engine reports cond for the container (ContainerWait follows
// the engine's events: no polling). Call it before causing the change.
func (e *env) waitFor(id string, cond container.WaitCondition) func() {
	e.t.Helper()
	okC, errC := e.cli.ContainerWait(e.ctx, id, cond)
	return func() {
		e.t.Helper()
		select {
		case <-okC:
		case err := <-errC:
			require.NoError(e.t, err, "wait for %s of %s", cond, id)
		}
	}
}

func TestSessionWithHostWorkspace(t *testing.T) {
	for _, p := range execPaths {
		t.Run(p.name, func(t *testing.T) { testSessionWithHostWorkspace(t, p) })
	}
}

func testSessionWithHostWorkspace(t *testing.T, p execPath) {
	e := newEnv(t)
	b := e.backend(p.opts(t))
	ws := filepath.Join(t.TempDir(), "default", "tenants", "ws-1") // does not exist yet: mkdir -p
	h := e.start(b, spec("p", func(s *backend.SessionSpec) { s.HostPath = ws }))
	assert.Regexp(t, `^langbot-box-ws-[0-9a-f]{24}-g1-p-[0-9a-f]{8}$`, h.ID)
	assert.True(t, b.Alive(e.ctx, h))
	// The process the engine (docker exec path: the PID-recording wrapper, whose shell then
	// rebuilds the environment of its children from its variable table, sorted) or the agent
	// (the command itself) started with the environment in insertion order.
	started := "$PPID"
	// A command that dies of a signal: the wrapper's shell reports it on stderr; the agent,
	// like the reference's `docker exec sh -lc`, reports only the status.
	killed := "Killed\n"
	if p.agent {
		started, killed = "$$", ""
	}

	cases := []struct {
		name   string
		script string
		env    []backend.EnvVar
		want   out
	}{
		{"stdout and stderr are separate", "echo out; echo err >&2", nil, out{0, "out\n", "err\n"}},
		{"exit code", "exit 7", nil, out{7, "", ""}},
		{"command not found", "no-such-command", nil, out{127, "", "sh: no-such-command: not found\n"}},
		// A shell rebuilds the environment of its children from its variable table (sorted), so
		// the order the engine received is read from the wrapper's /proc/<pid>/environ.
		{"env keeps insertion order and values verbatim",
			`tr '\0' '\n' < /proc/` + started + `/environ | grep -E '^(ZZ|AA|MM)='`,
			[]backend.EnvVar{{Key: "ZZ", Value: "1"}, {Key: "AA", Value: "two words 'q'"}, {Key: "MM", Value: "$HOME"}},
			out{0, "ZZ=1\nAA=two words 'q'\nMM=$HOME\n", ""}},
		{"write through the bind mount", "printf data > /workspace/f.txt && mkdir -p /workspace/sub && printf x > /workspace/sub/y", nil, out{0, "", ""}},
		{"runs as root without capabilities", `grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\t' ' '`, nil,
			out{0, "CapEff: 0000000000000000\nNoNewPrivs: 1\n", ""}},
		{"network none", "ls /sys/class/net", nil, out{0, "lo\n", ""}},
		{"read-only root", "touch /etc/x", nil, out{1, "", "touch: /etc/x: Read-only file system\n"}},
		{"writable /tmp tmpfs", "echo t > /tmp/t && cat /tmp/t && grep ' /tmp ' /proc/mounts | cut -d' ' -f3", nil, out{0, "t\ntmpfs\n", ""}},
		{"killed by a signal: 128+n", "echo before; kill -KILL $$", nil, out{137, "before\n", killed}},
		{"stdin is empty", "cat; echo eof", nil, out{0, "eof\n", ""}},
		{"working directory is the image's", "pwd", nil, out{0, "/workspace\n", ""}},
		{"large output, both streams, in order", "head -c 1500000 /dev/zero | tr '\\0' a; seq 1 3 >&2", nil, out{0, strings.Repeat("a", 1500000), "1\n2\n3\n"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, got := tc.want, e.run(b, h, tc.script, tc.env...)
			if e.podman && tc.env != nil && !p.agent {
				// Podman hands the exec environment over as a Go map: values intact, order
				// random. The agent builds each command's environment itself, in insertion order.
				want.stdout, got.stdout = sortedLines(want.stdout), sortedLines(got.stdout)
			}
			assert.Equal(t, want, got)
		})
	}
	data, err := os.ReadFile(filepath.Join(ws, "f.txt"))
	require.NoError(t, err)
	assert.Equal(t, "data", string(data), "a file written in the sandbox is on the host")
	_, err = os.Stat(filepath.Join(ws, "sub", "y"))
	assert.NoError(t, err)
	p.assertRanThrough(t, e.run(b, h, `tr '\0' ' ' < /proc/$PPID/cmdline`).stdout)
}

func TestContainerSettingsVisibleInInspect(t *testing.T) {
	e := newEnv(t)
	skill := filepath.Join(t.TempDir(), "skills", "pdf")
	require.NoError(t, os.MkdirAll(skill, 0o755))
	cases := []struct {
		name  string
		opts  func(*Options)
		spec  func(*backend.SessionSpec)
		check func(t *testing.T, ins container.InspectResponse)
	}{
		{"boxd defaults", func(*Options) {}, func(s *backend.SessionSpec) {
			s.CPUs, s.MemoryMB, s.PidsLimit = 0.5, 128, 32
			s.ExtraMounts = []backend.Mount{{HostPath: skill, MountPath: "/workspace/.skills/pdf", Mode: backend.MountRO}}
		}, func(t *testing.T, ins container.InspectResponse) {
			hc := ins.HostConfig
			assert.Equal(t, int64(5e8), hc.NanoCPUs)
			assert.Equal(t, int64(128<<20), hc.Memory)
			require.NotNil(t, hc.PidsLimit)
			assert.Equal(t, int64(32), *hc.PidsLimit)
			assert.Equal(t, container.NetworkMode("none"), hc.NetworkMode)
			assert.True(t, hc.ReadonlyRootfs)
			// Podman lists its own mount options after ours, and adds /run and /var/tmp.
			assert.True(t, strings.HasPrefix(hc.Tmpfs["/tmp"], "size=64m"), "tmpfs /tmp: %v", hc.Tmpfs)
			assert.True(t, hc.AutoRemove)
			if e.podman {
				// Podman reports the capabilities it dropped one by one.
				assert.Contains(t, []string(hc.CapDrop), "CHOWN")
				assert.Contains(t, []string(hc.CapDrop), "DAC_OVERRIDE")
			} else {
				assert.Equal(t, []string{"ALL"}, []string(hc.CapDrop))
			}
			assert.Contains(t, hc.SecurityOpt, "no-new-privileges")
			for _, o := range hc.SecurityOpt {
				assert.NotContains(t, o, "seccomp=unconfined", "the default seccomp profile stays on")
			}
			assert.Equal(t, []string{"sh", "-lc", KeepAlive}, []string(ins.Config.Cmd))
			require.Len(t, ins.Mounts, 2, "the skill and the agent that verified it")
			i := slices.IndexFunc(ins.Mounts, func(m container.MountPoint) bool { return m.Destination != AgentPath })
			assert.Equal(t, skill, ins.Mounts[i].Source)
			assert.Equal(t, "/workspace/.skills/pdf", ins.Mounts[i].Destination)
			assert.False(t, ins.Mounts[i].RW)
		}},
		{"cpu limit off and hardening off", func(o *Options) { o.CPULimitEnabled, o.Hardening = false, false }, func(s *backend.SessionSpec) {
			s.ReadOnlyRootfs, s.Persistent = false, true
		}, func(t *testing.T, ins container.InspectResponse) {
			hc := ins.HostConfig
			assert.Zero(t, hc.NanoCPUs)
			assert.Empty(t, hc.CapDrop)
			assert.NotContains(t, hc.SecurityOpt, "no-new-privileges")
			assert.False(t, hc.ReadonlyRootfs)
			assert.Empty(t, hc.Tmpfs)
			assert.False(t, hc.AutoRemove, "persistent sandboxes are not auto-removed")
			assert.Equal(t, "true", ins.Config.Labels[LabelPersistent])
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := e.backend(tc.opts)
			s := spec("inspect", tc.spec)
			h := e.start(b, s)
			ins := e.inspect(h)
			assert.Equal(t, "/"+h.ID, ins.Name)
			assert.Equal(t, "true", ins.Config.Labels[LabelBox])
			assert.Equal(t, s.PhysicalID, ins.Config.Labels[LabelSession])
			assert.Equal(t, b.opts.InstanceID, ins.Config.Labels[LabelInstance])
			assert.Equal(t, e.scope, ins.Config.Labels[LabelScope])
			tc.check(t, ins)
		})
	}
}

func TestHardeningOffGivesCapabilities(t *testing.T) {
	for _, p := range execPaths {
		t.Run(p.name, func(t *testing.T) { testHardeningOffGivesCapabilities(t, p) })
	}
}

func testHardeningOffGivesCapabilities(t *testing.T, p execPath) {
	e := newEnv(t)
	b := e.backend(p.opts(t), func(o *Options) { o.Hardening = false })
	h := e.start(b, spec("caps"))
	r := e.run(b, h, `grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\t' ' '`)
	assert.NotContains(t, r.stdout, "CapEff: 0000000000000000")
	assert.Contains(t, r.stdout, "NoNewPrivs: 0")
	b.Configure(true, true)
	h2 := e.start(b, spec("caps2"))
	r = e.run(b, h2, `grep -E '^CapEff' /proc/self/status | tr -s '\t' ' '`)
	assert.Equal(t, "CapEff: 0000000000000000\n", r.stdout, "Configure turns hardening back on for new sandboxes")
}

// lineWriter reports its first write on started.
type lineWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	once    sync.Once
	started chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.started) })
	return w.buf.Write(p)
}

// sleepers lists the test's `sleep NNN` processes in the sandbox (the keep-alive loop's
// `sleep 3600` has four digits and is not listed).
func (e *env) sleepers(b *Backend, h backend.Handle) string {
	e.t.Helper()
	return e.run(b, h, `ps -o args | grep -E '^sleep [0-9]{3}$' | sort`).stdout
}

// pidFiles lists boxd's PID files in the sandbox's /tmp, except the one of the exec that
// lists them (its wrapper is the script's parent).
func (e *env) pidFiles(b *Backend, h backend.Handle) string {
	e.t.Helper()
	return e.run(b, h, `for f in /tmp/.boxd-*.pid; do [ -e "$f" ] && [ "$(cat "$f")" != "$PPID" ] && echo "$f"; done; true`).stdout
}

func TestExecCancelKillsTheCommandAndItsChildren(t *testing.T) {
	for _, p := range execPaths {
		t.Run(p.name, func(t *testing.T) { testExecCancelKillsTheCommandAndItsChildren(t, p) })
	}
}

func testExecCancelKillsTheCommandAndItsChildren(t *testing.T, p execPath) {
	e := newEnv(t)
	b := e.backend(p.opts(t))
	h := e.start(b, spec("cancel"))
	w := &lineWriter{started: make(chan struct{})}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// "started" only once both sleeps show in ps: the agent path's next exec comes within a
		// millisecond or two, before a background child has necessarily exec'd.
		_, err := b.Exec(ctx, h, backend.ExecRequest{Argv: []string{"sh", "-lc",
			`sleep 300 & sleep 301 & until [ "$(ps -o args | grep -cE '^sleep 30[01]$')" = 2 ]; do :; done; echo started; wait`},
			Stdout: w, Stderr: io.Discard})
		done <- err
	}()
	select {
	case <-w.started:
	case err := <-done:
		t.Fatalf("exec ended before it started: %v", err)
	}
	assert.Equal(t, "sleep 300\nsleep 301\n", e.sleepers(b, h), "the command runs")
	cancel()
	assert.ErrorIs(t, <-done, context.Canceled)
	assert.Empty(t, e.sleepers(b, h), "the command and its background child are killed")
	assert.Empty(t, e.pidFiles(b, h), "the PID file is removed")
	assert.True(t, b.Alive(e.ctx, h), "the sandbox survives: dropping it is the session layer's decision")
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	return line
}

func TestManagedProcess(t *testing.T) {
	e := newEnv(t)
	b := e.backend()
	h := e.start(b, spec("mcp", func(s *backend.SessionSpec) { s.Persistent = true }))

	t.Run("stdin stdout round trip, exit on stdin close", func(t *testing.T) {
		p, err := b.StartProcess(e.ctx, h, backend.ProcessRequest{
			Argv: []string{"sh", "-lc", `echo "boot $GREETING" >&2; while read -r l; do echo "got:$l"; done; exit 3`},
			Env:  []backend.EnvVar{{Key: "GREETING", Value: "hi"}}})
		require.NoError(t, err)
		errs := bufio.NewReader(p.Stderr())
		assert.Equal(t, "boot hi\n", readLine(t, errs))
		out := bufio.NewReader(p.Stdout())
		for _, msg := range []string{`{"jsonrpc":"2.0","id":1}`, "second line"} {
			_, err = io.WriteString(p.Stdin(), msg+"\n")
			require.NoError(t, err)
			assert.Equal(t, "got:"+msg+"\n", readLine(t, out))
		}
		require.NoError(t, p.Stdin().Close())
		code, err := p.Wait(e.ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, code)
		_, err = p.Stdin().Write([]byte("late\n"))
		assert.ErrorIs(t, err, io.ErrClosedPipe)
	})

	cases := []struct {
		name   string
		script string
		stop   func(backend.Process) error
		want   int
	}{
		{"terminate", "echo ready; exec sleep 300", func(p backend.Process) error { return p.Terminate(e.ctx) }, -15},
		{"kill", "echo ready; exec sleep 300", func(p backend.Process) error { return p.Kill(e.ctx) }, -9},
		{"kill reaches children", "sleep 299 & echo ready; exec sleep 300", func(p backend.Process) error { return p.Kill(e.ctx) }, -9},
		{"kill after a TERM trap", `trap 'echo ignored' TERM; echo ready; while true; do sleep 298; done`, func(p backend.Process) error {
			require.NoError(t, p.Terminate(e.ctx))
			return p.Kill(e.ctx)
		}, -9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.StartProcess(e.ctx, h, backend.ProcessRequest{Argv: []string{"sh", "-lc", tc.script}})
			require.NoError(t, err)
			go func() { _, _ = io.Copy(io.Discard, p.Stderr()) }()
			stdout := bufio.NewReader(p.Stdout())
			require.Equal(t, "ready\n", readLine(t, stdout))
			require.NotEmpty(t, e.sleepers(b, h), "the process runs")
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			require.NoError(t, tc.stop(p))
			code, err := p.Wait(e.ctx)
			require.NoError(t, err)
			assert.Equal(t, tc.want, code)
			assert.Empty(t, e.sleepers(b, h), "nothing of the process is left")
			assert.Empty(t, e.pidFiles(b, h), "the PID file is removed")
		})
	}

	t.Run("session removal ends a process", func(t *testing.T) {
		h2 := e.start(b, spec("gone"))
		p, err := b.StartProcess(e.ctx, h2, backend.ProcessRequest{Argv: []string{"sh", "-lc", "echo ready; exec sleep 300"}})
		require.NoError(t, err)
		go func() { _, _ = io.Copy(io.Discard, p.Stderr()) }()
		require.Equal(t, "ready\n", readLine(t, bufio.NewReader(p.Stdout())))
		require.NoError(t, b.Stop(e.ctx, h2))
		_, _ = io.Copy(io.Discard, p.Stdout())
		code, err := p.Wait(e.ctx)
		require.NoError(t, err)
		assert.Negative(t, code, "killed with its sandbox")
	})
}

func TestStopAliveAndAutoRemove(t *testing.T) {
	e := newEnv(t)
	b := e.backend()
	gone := func(h backend.Handle) bool {
		_, err := e.cli.ContainerInspect(e.ctx, h.ID)
		return client.IsErrNotFound(err)
	}

	h := e.start(b, spec("stop"))
	require.NoError(t, b.Stop(e.ctx, h))
	require.NoError(t, b.Stop(e.ctx, h), "Stop is idempotent")
	assert.False(t, b.Alive(e.ctx, h))
	_, err := b.Exec(e.ctx, h, backend.ExecRequest{Argv: []string{"true"}})
	assert.ErrorIs(t, err, backend.ErrNotFound)
	assert.NoError(t, b.Stop(e.ctx, backend.Handle{ID: "langbot-box-never-existed-00000000"}))

	// The sandbox's main process dies: a non-persistent container removes itself (--rm), a
	// persistent one stays, stopped, and is reported dead.
	eph := e.start(b, spec("eph"))
	removed := e.waitFor(eph.ID, container.WaitConditionRemoved)
	require.NoError(t, e.cli.ContainerKill(e.ctx, eph.ID, "KILL"))
	removed()
	assert.True(t, gone(eph), "the non-persistent container is auto-removed")

	per := e.start(b, spec("per", func(s *backend.SessionSpec) { s.Persistent = true }))
	stopped := e.waitFor(per.ID, container.WaitConditionNotRunning)
	require.NoError(t, e.cli.ContainerKill(e.ctx, per.ID, "KILL"))
	stopped()
	assert.False(t, b.Alive(e.ctx, per))
	ins := e.inspect(per)
	assert.Equal(t, "exited", ins.State.Status, "a persistent container is kept")
	require.NoError(t, b.Stop(e.ctx, per))
	assert.True(t, gone(per))
}

func TestRecoverAdoptsRunningPersistentAndRemovesOrphans(t *testing.T) {
	e := newEnv(t)
	first := e.backend()
	keep := spec("keep", func(s *backend.SessionSpec) { s.Persistent = true; s.HostPath = t.TempDir() })
	kh := e.start(first, keep)
	// A managed process of the previous runtime (its pipes would die with that runtime).
	stale, err := first.StartProcess(e.ctx, kh, backend.ProcessRequest{Argv: []string{"sh", "-lc", "sleep 297 & echo ready; exec sleep 296"}})
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, stale.Stderr()) }()
	require.Equal(t, "ready\n", readLine(t, bufio.NewReader(stale.Stdout())))
	require.Equal(t, "sleep 296\nsleep 297\n", e.sleepers(first, kh))
	nh := e.start(first, spec("drop"))
	dead := e.start(first, spec("dead", func(s *backend.SessionSpec) { s.Persistent = true }))
	stopped := e.waitFor(dead.ID, container.WaitConditionNotRunning)
	require.NoError(t, e.cli.ContainerKill(e.ctx, dead.ID, "KILL"))
	stopped()

	mk := func(labels map[string]string) string {
		c, err := e.cli.ContainerCreate(e.ctx, &container.Config{Image: sandboxImage, Cmd: []string{"sh", "-c", KeepAlive}, Labels: labels},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, "lbk-it-"+randHex(6))
		require.NoError(t, err)
		require.NoError(t, e.cli.ContainerStart(e.ctx, c.ID, container.StartOptions{}))
		return c.ID
	}
	// What the Python runtime leaves behind: labels without boxd's spec.
	python := mk(map[string]string{LabelBox: "true", LabelSession: "x", LabelInstance: "0123456789ab", LabelScope: e.scope})
	unlabelled := mk(map[string]string{LabelScope: e.scope, "app": "other"})
	otherScope := mk(map[string]string{LabelBox: "true", LabelInstance: "0123456789ab", LabelScope: e.scope + "-other"})
	t.Cleanup(func() { _ = e.cli.ContainerRemove(e.ctx, otherScope, container.RemoveOptions{Force: true}) })

	// A restart: a new runtime (new instance id) on the same engine.
	second := e.backend()
	adopted, removed, err := second.Recover(e.ctx, second.opts.InstanceID)
	require.NoError(t, err)
	require.Len(t, adopted, 1)
	_, _ = io.Copy(io.Discard, stale.Stdout())
	code, err := stale.Wait(e.ctx)
	require.NoError(t, err)
	assert.Equal(t, 137, code, "killed by the new runtime (a signal the old one did not send: raw status)")
	assert.Equal(t, kh, adopted[0].Handle, "same container")
	assert.Equal(t, keep, adopted[0].Spec, "the spec is rebuilt from the labels")
	assert.WithinDuration(t, time.Now(), adopted[0].Created, 5*time.Minute)
	assert.Equal(t, 3, removed, "non-persistent, dead persistent and the Python runtime's container")

	for _, id := range []string{nh.ID, dead.ID, python} {
		_, err := e.cli.ContainerInspect(e.ctx, id)
		assert.True(t, client.IsErrNotFound(err), "%s is removed", id)
	}
	for _, id := range []string{unlabelled, otherScope} {
		_, err := e.cli.ContainerInspect(e.ctx, id)
		assert.NoError(t, err, "%s is not this runtime's and survives", id)
	}
	assert.Equal(t, "again\n", e.run(second, adopted[0].Handle, "echo again").stdout, "the adopted sandbox is usable")
	assert.Empty(t, e.sleepers(second, kh), "the previous runtime's managed process and its children are killed")
	assert.Empty(t, e.pidFiles(second, kh))

	// The runtime's own containers are never touched by its own Recover.
	own := e.start(second, spec("own"))
	adopted, removed, err = second.Recover(e.ctx, second.opts.InstanceID)
	require.NoError(t, err)
	assert.Len(t, adopted, 1, "still adoptable by a later restart: the engine cannot relabel it")
	assert.Zero(t, removed)
	assert.True(t, second.Alive(e.ctx, own))
}

func TestStartRejectsMounts(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	ws := filepath.Join(root, "default", "tenants", "ws-1")
	skill := filepath.Join(root, "skills", "tenants", "ws-1", "pdf")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	require.NoError(t, os.MkdirAll(skill, 0o755))
	require.NoError(t, os.Symlink("/etc", filepath.Join(ws, "etc-link")))
	outside := t.TempDir()
	b := e.backend(func(o *Options) { o.AllowedMountRoots = func() []string { return []string{root} } })

	cases := []struct {
		name string
		spec func(*backend.SessionSpec)
		want string
	}{
		{"host_path /etc", func(s *backend.SessionSpec) { s.HostPath = "/etc" }, "host_path /etc is blocked for security"},
		{"host_path / even in mode none", func(s *backend.SessionSpec) { s.HostPath, s.HostPathMode = "/", backend.MountNone }, "host_path / is blocked for security"},
		{"extra mount of the docker socket", func(s *backend.SessionSpec) {
			s.ExtraMounts = []backend.Mount{{HostPath: "/var/run/docker.sock", MountPath: "/d.sock", Mode: backend.MountRW}}
		}, "host_path /var/run/docker.sock is blocked for security"},
		{"extra mount through a symlink to /etc", func(s *backend.SessionSpec) {
			s.ExtraMounts = []backend.Mount{{HostPath: filepath.Join(ws, "etc-link"), MountPath: "/x", Mode: backend.MountRO}}
		}, "is blocked for security"},
		{"extra mount outside allowed roots", func(s *backend.SessionSpec) {
			s.ExtraMounts = []backend.Mount{{HostPath: outside, MountPath: "/x", Mode: backend.MountRO}}
		}, "is outside allowed_mount_roots"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.Start(e.ctx, spec("bad", tc.spec))
			var ve *backend.ValidationError
			require.ErrorAs(t, err, &ve)
			assert.Contains(t, ve.Message, tc.want)
		})
	}
	list, err := e.cli.ContainerList(e.ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelScope+"="+e.scope))})
	require.NoError(t, err)
	assert.Empty(t, list, "nothing was created for a rejected spec")

	// What LangBot legitimately sends passes: tenant workspace rw + skill package rw.
	h := e.start(b, spec("ok", func(s *backend.SessionSpec) {
		s.HostPath = ws
		s.ExtraMounts = []backend.Mount{{HostPath: skill, MountPath: "/workspace/.skills/pdf", Mode: backend.MountRW}}
	}))
	assert.Equal(t, out{0, "", ""}, e.run(b, h, "touch /workspace/.skills/pdf/ok"))
	_, err = os.Stat(filepath.Join(skill, "ok"))
	assert.NoError(t, err)
}

func TestMissingImageFailsCleanly(t *testing.T) {
	e := newEnv(t)
	b := e.backend()
	// Nothing listens on port 1: the pull fails at once instead of waiting for a registry.
	_, err := b.Start(e.ctx, spec("img", func(s *backend.SessionSpec) { s.Image = "127.0.0.1:1/langbot-k8s/missing:0" }))
	var be *backend.Error
	require.ErrorAs(t, err, &be)
	assert.True(t, strings.HasPrefix(be.Message, "docker backend error: image 127.0.0.1:1/langbot-k8s/missing:0 is not present and could not be pulled"), be.Message)
	assert.LessOrEqual(t, len([]rune(be.Message)), len("docker backend error: ")+300)
	assert.NotContains(t, be.Message, "\n")
	assert.False(t, errors.Is(err, backend.ErrNotFound))
}

func TestAvailable(t *testing.T) {
	e := newEnv(t)
	require.NoError(t, e.backend().Available(e.ctx))
	t.Setenv("DOCKER_HOST", "unix://"+filepath.Join(t.TempDir(), "nothing.sock"))
	b, err := New(e.ctx, Options{InstanceID: "x"})
	require.NoError(t, err, "boxd starts even when the engine is down")
	err = b.Available(e.ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ping docker engine")
}

// sortedLines sorts the lines of a newline-terminated text.
func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// The engine runs on this machine (the private dockerd, or Podman): its cgroup version is the
// host's, which has cgroup.controllers at the root of /sys/fs/cgroup exactly under cgroup v2.
func TestCgroupV2MatchesTheHost(t *testing.T) {
	e := newEnv(t)
	_, statErr := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	v2, err := e.backend().CgroupV2(e.ctx)
	require.NoError(t, err)
	assert.Equal(t, statErr == nil, v2)
}
