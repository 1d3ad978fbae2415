//go:build integration

package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
)

// engine is a private dockerd of one test, started as hack/docker.sh starts the shared one
// (own data root, exec root and socket, vfs, no bridge, no iptables), so the test can stop
// and restart it without disturbing the shared engine other suites are using.
type engine struct {
	t    *testing.T
	dir  string
	host string
	ns   string
	cmd  *exec.Cmd
	done chan error
}

func newEngine(t *testing.T) *engine {
	dir, err := os.MkdirTemp("/tmp", "bxe-") // short: unix socket paths are limited to 107 bytes
	require.NoError(t, err)
	var r [4]byte
	_, _ = rand.Read(r[:])
	e := &engine{t: t, dir: dir, host: "unix://" + filepath.Join(dir, "d.sock"), ns: "bxe-" + hex.EncodeToString(r[:])}
	t.Cleanup(func() {
		if e.cmd != nil {
			if cli, err := e.client(); err == nil {
				if list, err := cli.ContainerList(context.Background(), container.ListOptions{All: true}); err == nil {
					for _, c := range list {
						_ = cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true})
					}
				}
				cli.Close()
			}
			e.stop()
		}
		_ = os.RemoveAll(dir)
	})
	return e
}

// start runs dockerd and returns once it told systemd-style NOTIFY_SOCKET it is ready.
func (e *engine) start() {
	t := e.t
	notify := filepath.Join(e.dir, "n.sock")
	_ = os.Remove(notify)
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	require.NoError(t, err)
	defer ln.Close()
	e.cmd = exec.Command("dockerd", "--data-root", filepath.Join(e.dir, "data"), "--exec-root", filepath.Join(e.dir, "x"),
		"--pidfile", filepath.Join(e.dir, "pid"), "--host", e.host, "--storage-driver", "vfs",
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false",
		"--containerd-namespace", e.ns, "--containerd-plugins-namespace", e.ns+"-p")
	e.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	log, err := os.OpenFile(filepath.Join(e.dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	defer log.Close()
	e.cmd.Stdout, e.cmd.Stderr = log, log
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	require.NoError(t, e.cmd.Start())
	e.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(e.cmd, e.done)
	require.NoError(t, ln.SetReadDeadline(time.Now().Add(2*time.Minute)))
	buf := make([]byte, 512)
	for {
		n, err := ln.Read(buf)
		require.NoError(t, err, "dockerd did not report READY=1 (log: %s/dockerd.log)", e.dir)
		if strings.Contains(string(buf[:n]), "READY=1") {
			return
		}
	}
}

// stop ends dockerd with SIGTERM (it stops its containers first) and waits for it.
func (e *engine) stop() {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(2 * time.Minute):
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	e.cmd = nil
}

func (e *engine) client() (*client.Client, error) {
	return client.NewClientWithOpts(client.WithHost(e.host), client.WithAPIVersionNegotiation())
}

// logRecorder is a slog handler keeping every message, so a test can wait for one.
type logRecorder struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

func (l *logRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.msgs)
}

// await waits (bounded) for a message containing substr logged after the first from messages.
func (l *logRecorder) await(t *testing.T, from int, substr string) int {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		l.mu.Lock()
		for i := from; i < len(l.msgs); i++ {
			if strings.Contains(l.msgs[i], substr) {
				l.mu.Unlock()
				return i + 1
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			require.Failf(t, "boxd did not log it", "%q", substr)
		}
	}
}

// Issue #10 item 9: persistent sandboxes of an instance that died while the engine was down
// used to stay until boxd's next start. boxd notices the engine going away (its event stream
// breaks) and coming back, and runs the orphan cleanup then, without a restart.
func TestOrphansAreRemovedWhenTheEngineComesBack(t *testing.T) {
	ctx := context.Background()
	shared := dockerClient(t)
	e := newEngine(t)
	e.start()
	cli, err := e.client()
	require.NoError(t, err)
	defer cli.Close()
	img, err := shared.ImageSave(ctx, []string{image})
	require.NoError(t, err)
	loaded, err := cli.ImageLoad(ctx, img, client.ImageLoadWithQuiet(true))
	require.NoError(t, err)
	loaded.Body.Close()
	img.Close()
	t.Setenv("DOCKER_HOST", e.host) // boxd's Docker client reads it

	logs := newLogRecorder()
	b := startBoxdWith(t, func(o *runtime.Options) { o.Scope = ""; o.Logger = slog.New(logs) })
	c := dial(t, b)
	c.init(t, nil)

	// A persistent sandbox of another boxd instance, which dies while the engine is down.
	physical := physicalID("dead-instance-session")
	orphan, err := cli.ContainerCreate(ctx, &container.Config{Image: image,
		Cmd: []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"},
		Labels: map[string]string{"langbot.box": "true", "langbot.box.instance_id": "deadbeef0000", "langbot.session_id": physical,
			"langbot.box.persistent": "true", "langbot.box.spec": `{"PhysicalID":"` + physical + `","Image":"` + image + `","Persistent":true}`}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, uniq("langbot-box-dead-instance"))
	require.NoError(t, err)
	require.NoError(t, cli.ContainerStart(ctx, orphan.ID, container.StartOptions{}))

	mark := logs.count()
	e.stop()
	mark = logs.await(t, mark, "lost the Docker engine")
	e.start()
	logs.await(t, mark, "recovery after the engine came back")
	_, err = cli.ContainerInspect(ctx, orphan.ID)
	assert.True(t, errdefs.IsNotFound(err), "the dead instance's sandbox is removed: %v", err)

	// The same boxd serves on the engine that came back.
	r := c.ok("box_exec", spec(uniq("after"), map[string]any{"cmd": "echo back"}), ctx1)
	assert.Equal(t, "back", r["stdout"])
}
