//go:build integration

package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent/agenttest"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// agentBinary is boxagent, built once for the package by TestMain.
var agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "boxagent-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "create a directory for boxagent:", err)
		os.Exit(1)
	}
	agentBinary, err = agenttest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// execPath is one way Exec reaches a sandbox. Every exec test runs on both.
type execPath struct {
	name  string
	agent bool
}

var execPaths = []execPath{{"docker exec", false}, {"exec agent", true}}

// opts turns box.docker.exec_agent on for the agent path, with a host root of the test's own.
func (p execPath) opts(t testing.TB) func(*Options) {
	root := t.TempDir()
	return func(o *Options) {
		if p.agent {
			o.ExecAgent = func() bool { return true }
			o.HostRoot = func() string { return root }
			o.AgentBinary = agentBinary
		}
	}
}

// assertRanThrough checks the command line of a command's parent: the agent on the agent
// path, the PID-recording wrapper on the docker exec path (so a silent fallback fails).
func (p execPath) assertRanThrough(t *testing.T, parentCmdline string) {
	t.Helper()
	if p.agent {
		assert.Equal(t, AgentPath+" ", parentCmdline, "the command's parent is the agent")
		return
	}
	assert.True(t, strings.HasPrefix(parentCmdline, "sh -c "+execWrapper), "the command's parent is the wrapper: %q", parentCmdline)
}

const parentCmdline = `tr '\0' ' ' < /proc/$PPID/cmdline`

func TestConcurrentExecsOnOneSandbox(t *testing.T) {
	for _, p := range execPaths {
		t.Run(p.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.backend(p.opts(t))
			h := e.start(b, spec("conc"))
			// Pairs of commands meet on a FIFO: a reader blocks until its writer runs, so each
			// pair only finishes when both run at the same time.
			const pairs = 4
			var wg sync.WaitGroup
			got := make([]out, 2*pairs)
			errs := make([]error, 2*pairs)
			run := func(i int, script string) {
				defer wg.Done()
				var so, se bytes.Buffer
				res, err := b.Exec(e.ctx, h, backend.ExecRequest{Argv: []string{"sh", "-lc", script}, Stdout: &so, Stderr: &se})
				got[i], errs[i] = out{res.ExitCode, so.String(), se.String()}, err
			}
			for i := range pairs {
				fifo := fmt.Sprintf("/tmp/fifo-%d", i)
				require.Equal(t, out{0, "", ""}, e.run(b, h, "mkfifo "+fifo))
				wg.Add(2)
				go run(2*i, "cat "+fifo+"; exit "+fmt.Sprint(i))
				go run(2*i+1, fmt.Sprintf("echo pair %d > %s; echo wrote >&2", i, fifo))
			}
			wg.Wait()
			for i := range pairs {
				require.NoError(t, errs[2*i])
				require.NoError(t, errs[2*i+1])
				assert.Equal(t, out{i, fmt.Sprintf("pair %d\n", i), ""}, got[2*i])
				assert.Equal(t, out{0, "", "wrote\n"}, got[2*i+1])
			}
			p.assertRanThrough(t, e.run(b, h, parentCmdline).stdout)
		})
	}
}

func TestExecAgentIsMountedReadOnlyAndRunsAsTheContainersUser(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	b := e.backend(func(o *Options) {
		o.ExecAgent = func() bool { return true }
		o.HostRoot = func() string { return root }
		o.AgentBinary = agentBinary
	})
	h := e.start(b, spec("mount"))
	want, err := os.ReadFile(agentBinary)
	require.NoError(t, err)
	sum := sha256.Sum256(want)
	file := filepath.Join(root, ".boxd", "agent-"+hex.EncodeToString(sum[:8]))
	got, err := os.ReadFile(file)
	require.NoError(t, err, "the agent is installed content-addressed under host_root")
	assert.True(t, bytes.Equal(want, got))
	st, err := os.Stat(file)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o555), st.Mode().Perm())

	var agentMount *container.MountPoint
	for _, m := range e.inspect(h).Mounts {
		if m.Destination == AgentPath {
			agentMount = &m
		}
	}
	require.NotNil(t, agentMount, "the agent is bind-mounted")
	assert.Equal(t, file, agentMount.Source)
	assert.False(t, agentMount.RW, "read-only")

	cases := []struct {
		name   string
		script string
		want   out
	}{
		{"the command runs under the agent", parentCmdline, out{0, AgentPath + " ", ""}},
		{"the agent file cannot be written", "echo x > " + AgentPath, out{1, "", "sh: can't create " + AgentPath + ": Read-only file system\n"}},
		{"the agent runs as the container's user, without capabilities", `grep -E '^(Uid|CapEff|NoNewPrivs)' /proc/$PPID/status | tr -s '\t' ' '`,
			out{0, "Uid: 0 0 0 0\nCapEff: 0000000000000000\nNoNewPrivs: 1\n", ""}},
		{"the agent's pipes cannot be reached by the sandbox's processes (non-dumpable)", `{ echo x > /proc/$PPID/fd/1; } 2>&1 | grep -c 'Permission denied'; cat /proc/$PPID/environ 2>&1 | grep -c 'Permission denied'`,
			out{0, "1\n1\n", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, e.run(b, h, tc.script))
		})
	}
	// A second sandbox reuses the installed file.
	h2 := e.start(b, spec("mount2"))
	assert.Equal(t, out{0, AgentPath + " ", ""}, e.run(b, h2, parentCmdline))
}

func TestExecAgentFallsBackToDockerExec(t *testing.T) {
	e := newEnv(t)
	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not an executable"), 0o755))
	cases := []struct {
		name  string
		opts  func(*Options, *bool)
		after func(on *bool) // between Start and Exec
		log   string         // logged once
	}{
		{"host_root unset", func(o *Options, _ *bool) { o.HostRoot = nil }, nil,
			"exec agent unavailable, sandboxes use docker exec: box.local.host_root is not set"},
		{"no agent binary", func(o *Options, _ *bool) { o.AgentBinary = "" }, nil,
			"exec agent unavailable, sandboxes use docker exec: no boxagent binary"},
		{"the agent does not start", func(o *Options, _ *bool) {
			root := t.TempDir()
			o.HostRoot = func() string { return root }
			o.AgentBinary = junk
		}, nil, "exec agent unavailable, using docker exec for this sandbox"},
		{"setting turned on after the sandbox started", func(o *Options, on *bool) {
			*on = false
			root := t.TempDir()
			o.HostRoot = func() string { return root }
			o.AgentBinary = agentBinary
		}, func(on *bool) { *on = true }, "exec agent not in this sandbox (started while box.docker.exec_agent was off), using docker exec"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			on := true
			logs := &syncBuffer{}
			b := e.backend(func(o *Options) {
				o.ExecAgent = func() bool { mu.Lock(); defer mu.Unlock(); return on }
				o.Logger = slog.New(slog.NewTextHandler(logs, nil))
				tc.opts(o, &on)
			})
			h := e.start(b, spec("fallback"))
			if tc.after != nil {
				mu.Lock()
				tc.after(&on)
				mu.Unlock()
			}
			for range 2 {
				r := e.run(b, h, "echo ok; "+parentCmdline)
				assert.Equal(t, 0, r.code)
				assert.True(t, strings.HasPrefix(r.stdout, "ok\nsh -c "+execWrapper), "ran through docker exec: %q", r.stdout)
			}
			assert.Equal(t, 1, strings.Count(logs.String(), tc.log), "logged once: %s", logs.String())
		})
	}
}

func TestExecAgentIsRestartedWhenItDies(t *testing.T) {
	e := newEnv(t)
	b := e.backend(execPath{agent: true}.opts(t))
	h := e.start(b, spec("restart"))
	first := e.run(b, h, "echo $PPID")
	require.Equal(t, 0, first.code)
	b.ag.mu.Lock()
	conn := b.ag.sessions[h.ID].conn
	b.ag.mu.Unlock()
	require.NotNil(t, conn)
	// Killed from outside boxd (its own exec): the connection ends, the next Exec starts
	// another agent.
	created, err := e.cli.ContainerExecCreate(e.ctx, h.ID, container.ExecOptions{Cmd: []string{"kill", "-KILL", strings.TrimSpace(first.stdout)}, AttachStdout: true, AttachStderr: true})
	require.NoError(t, err)
	att, err := e.cli.ContainerExecAttach(e.ctx, created.ID, container.ExecAttachOptions{})
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, att.Reader)
	att.Close()
	<-conn.client.Done()
	second := e.run(b, h, "echo $PPID; "+parentCmdline)
	require.Equal(t, 0, second.code)
	lines := strings.Split(second.stdout, "\n")
	assert.NotEqual(t, strings.TrimSpace(first.stdout), lines[0], "another agent")
	assert.Equal(t, AgentPath+" ", lines[1])
}

func TestExecAgentInAReadoptedSandbox(t *testing.T) {
	e := newEnv(t)
	p := execPath{agent: true}
	first := e.backend(p.opts(t))
	kh := e.start(first, spec("keep", func(s *backend.SessionSpec) { s.Persistent = true }))
	assert.Equal(t, out{0, AgentPath + " ", ""}, e.run(first, kh, parentCmdline))
	require.NoError(t, first.Close(), "the agent connection ends with its runtime")

	second := e.backend(p.opts(t))
	adopted, _, err := second.Recover(context.Background(), second.opts.InstanceID)
	require.NoError(t, err)
	require.Len(t, adopted, 1)
	assert.Equal(t, out{0, AgentPath + " ", ""}, e.run(second, adopted[0].Handle, parentCmdline), "the mounted agent is started again")
	assert.Eventually(t, func() bool {
		return e.run(second, adopted[0].Handle, `ps -o args | grep -c '^/.boxd-agent'`) == out{0, "1\n", ""}
	}, 10*time.Second, 20*time.Millisecond, "the previous runtime's agent exits when its connection ends")
}
