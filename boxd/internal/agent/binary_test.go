package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent/agenttest"
)

// agentBinary is boxagent, built once for the package by TestMain (the binary tests run the
// real daemon and relay, as a sandbox Pod does).
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

// daemonProc is `boxagent daemon` running as a process of its own, reached through
// `boxagent connect` relays, as in a sandbox Pod (where each relay is a Kubernetes exec).
type daemonProc struct {
	cmd  *exec.Cmd
	name string
	dir  string

	mu     sync.Mutex
	relays []*exec.Cmd
}

func startDaemonBinary(t *testing.T, env []string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{name: abstractName(), dir: t.TempDir()}
	d.cmd = exec.Command(agentBinary, append([]string{"daemon", "--socket", d.name}, args...)...)
	d.cmd.Env, d.cmd.Dir = env, d.dir
	var stderr syncBuffer
	d.cmd.Stderr = &stderr
	require.NoError(t, d.cmd.Start())
	exited := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-exited
		if s := stderr.String(); s != "" {
			t.Logf("daemon stderr: %s", s)
		}
	})
	return d
}

// dialer starts a relay per connection. The daemon listens once it runs: a relay that comes
// too early fails to connect and the dial is tried again by the caller.
func (d *daemonProc) dialer() Dialer {
	return func(ctx context.Context) (Conn, error) {
		cmd := exec.Command(agentBinary, "connect", "--socket", d.name)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return Conn{}, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return Conn{}, err
		}
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return Conn{}, err
		}
		waited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(waited) }()
		d.mu.Lock()
		d.relays = append(d.relays, cmd)
		d.mu.Unlock()
		return Conn{R: stdout, W: stdin, Close: func() { _ = stdin.Close(); _ = cmd.Process.Kill(); <-waited },
			Describe: func() string { return strings.TrimSpace(stderr.String()) }}, nil
	}
}

// killRelay kills the newest relay, as a dropped exec stream ends its process.
func (d *daemonProc) killRelay(t *testing.T) {
	t.Helper()
	d.mu.Lock()
	r := d.relays[len(d.relays)-1]
	d.mu.Unlock()
	require.NoError(t, r.Process.Signal(syscall.SIGKILL))
}

func (d *daemonProc) connect(t *testing.T) *Client {
	t.Helper()
	var c *Client
	require.Eventually(t, func() bool {
		var err error
		c, err = Connect(context.Background(), d.dialer())
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the daemon listens")
	t.Cleanup(c.Close)
	return c
}

func runOut(t *testing.T, c *Client, cmd Command) string {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := c.Run(context.Background(), cmd, &out, &errb)
	require.NoError(t, err)
	require.Equal(t, 0, code, errb.String())
	return out.String()
}

// sigIgn is the SigIgn mask of /proc/self/status as a command sees it.
func sigIgn(t *testing.T, c *Client) uint64 {
	t.Helper()
	out := runOut(t, c, sh("grep '^SigIgn:' /proc/self/status"))
	v, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(out, "SigIgn:")), 16, 64)
	require.NoError(t, err, out)
	return v
}

// pending reports whether s is pending for the process (not yet handled).
func pending(pid int, s syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"SigPnd:", "ShdPnd:"} {
			if v, ok := strings.CutPrefix(l, k); ok {
				if m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && m&bit(s) != 0 {
					return true
				}
			}
		}
	}
	return false
}

func bit(s syscall.Signal) uint64 { return 1 << (uint(s) - 1) }

// guarded are the signals the daemon catches so that no sandbox process ends it.
var guarded = []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
	syscall.SIGUSR2, syscall.SIGABRT, syscall.SIGSEGV, syscall.SIGALRM, syscall.SIGSYS}

func TestDaemonBinary(t *testing.T) {
	env := []string{"PATH=/usr/bin:/bin", "KEEP=base", "HOME=/home/image"}
	d := startDaemonBinary(t, env)
	c := d.connect(t)

	t.Run("environment and working directory are the container's", func(t *testing.T) {
		assert.Equal(t, "PATH=/usr/bin:/bin\x00KEEP=over\x00HOME=/home/image\x00ZZ=1\x00",
			runOut(t, c, Command{Argv: []string{"cat", "/proc/self/environ"}, Env: []string{"KEEP=over", "ZZ=1"}}))
		assert.Equal(t, d.dir+"\n", runOut(t, c, sh("pwd")))
	})

	t.Run("commands inherit no ignored signal", func(t *testing.T) {
		mask := bit(syscall.SIGPIPE)
		for _, s := range guarded {
			mask |= bit(s)
		}
		assert.Zero(t, sigIgn(t, c)&mask, "SIGPIPE and the guarded signals have their default action in commands")
	})

	t.Run("a sandbox command cannot drive the daemon", func(t *testing.T) {
		out := runOut(t, c, Command{Argv: []string{agentBinary, "connect", "--socket", d.name}})
		assert.Contains(t, out, "runs under the agent (a sandbox command or its descendant): only boxd's `boxagent connect` may connect")
	})

	t.Run("orphans are reaped", func(t *testing.T) {
		orphan := strings.TrimSpace(runOut(t, c, sh("sh -c 'exec sleep 0.01' & echo $!")))
		require.NotEmpty(t, orphan)
		assert.Eventually(t, func() bool { return state(orphan) == "" }, 10*time.Second, 5*time.Millisecond,
			"the orphan, re-parented to the daemon, does not stay a zombie")
	})

	for _, s := range guarded {
		t.Run("survives "+s.String(), func(t *testing.T) {
			require.NoError(t, d.cmd.Process.Signal(s))
			assert.Eventually(t, func() bool { return !pending(d.cmd.Process.Pid, s) }, 10*time.Second, time.Millisecond,
				"the signal was delivered")
			assert.Equal(t, "alive\n", runOut(t, c, sh("echo alive")))
		})
	}

	t.Run("an MCP-style echo process survives a killed relay", func(t *testing.T) {
		ctx := context.Background()
		p, err := c.Start(ctx, sh(`echo "pid $$"; while read -r line; do echo "echo: $line"; done; echo bye`))
		require.NoError(t, err)
		out := bufio.NewReader(p.Stdout())
		pid := readLine(t, out)
		_, err = io.WriteString(p.Stdin(), `{"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n")
		require.NoError(t, err)
		assert.Equal(t, `echo: {"jsonrpc":"2.0","id":1,"method":"ping"}`+"\n", readLine(t, out))
		relays := len(d.relays)
		d.killRelay(t)
		_, err = io.WriteString(p.Stdin(), `{"jsonrpc":"2.0","id":2,"method":"ping"}`+"\n")
		require.NoError(t, err)
		assert.Equal(t, `echo: {"jsonrpc":"2.0","id":2,"method":"ping"}`+"\n", readLine(t, out), "the same process answers after the re-attach")
		d.mu.Lock()
		assert.Greater(t, len(d.relays), relays, "a new relay was started")
		d.mu.Unlock()
		assert.NotEmpty(t, state(strings.TrimPrefix(strings.TrimSpace(pid), "pid ")), "the process started first still runs")
		require.NoError(t, p.Stdin().Close())
		assert.Equal(t, "bye\n", readLine(t, out))
		code, err := p.Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, 0, code)
	})
}

// TestDaemonBinaryDetachTimeout: commands nobody re-attaches are killed by the daemon.
func TestDaemonBinaryDetachTimeout(t *testing.T) {
	d := startDaemonBinary(t, []string{"PATH=/usr/bin:/bin"}, "--detach-timeout", "50ms")
	c := d.connect(t)
	p, err := c.Start(context.Background(), sh("sleep 1004 & echo $!; wait"))
	require.NoError(t, err)
	child := strings.TrimSpace(readLine(t, bufio.NewReader(p.Stdout())))
	c.Close() // boxd goes away for good
	assert.Eventually(t, func() bool { return gone(child) }, 10*time.Second, 5*time.Millisecond)
}

// TestDirectBinary: the docker backend's way (the agent on one exec's stdin/stdout) works
// as before, and its commands do not inherit an ignored SIGPIPE.
func TestDirectBinary(t *testing.T) {
	cmd := exec.Command(agentBinary)
	cmd.Env = []string{"PATH=/usr/bin:/bin", EnvMark, "HOME=/runtime-home"}
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c, err := Dial(context.Background(), stdout, stdin)
	require.NoError(t, err)
	assert.Equal(t, "PATH=/usr/bin:/bin\x00HOME=/runtime-home\x00", runOut(t, c, Command{Argv: []string{"cat", "/proc/self/environ"}}))
	assert.Zero(t, sigIgn(t, c)&bit(syscall.SIGPIPE))
	require.NoError(t, stdin.Close())
	<-c.Done()
	require.NoError(t, cmd.Wait(), "end of input is a clean end")
}

func TestBinaryRefusesBadArguments(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve"}, `boxagent: unknown mode "serve"`},
		{[]string{"daemon"}, "boxagent daemon takes --socket NAME"},
		{[]string{"connect", "--socket", "@x", "extra"}, "boxagent connect takes --socket NAME (and no other arguments)"},
		{[]string{"daemon", "--socket", "@x", "--detach-timeout", "0s"}, "--detach-timeout must be positive, got 0s"},
		{[]string{"connect", "--socket", "@boxd-agent-test-nobody-listens"}, "connect to the agent daemon at @boxd-agent-test-nobody-listens"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := exec.Command(agentBinary, tc.args...).CombinedOutput()
			require.Error(t, err)
			assert.Contains(t, string(out), tc.want)
		})
	}
}
