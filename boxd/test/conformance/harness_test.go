//go:build integration

// Package conformance speaks the Box protocol to a real boxd, as LangBot does (headers,
// envelope, context), against the project's private Docker Engine (hack/docker.sh up; the
// test fails when DOCKER_HOST does not answer).
package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
)

const (
	token     = "conformance-token-0123456789abcdefghijklmnop"
	instance  = "instance_conformance"
	workspace = "workspace-a"
	image     = "langbot-k8s/sandbox:local"
)

// boxd is one running runtime.
type boxd struct {
	addr string
	stop func()
}

// startBoxd starts boxd in a label scope of the top-level test's own (BOXD_SCOPE), so the
// start-up recovery of one test's runtime never removes another test's sandboxes, even when
// suites run concurrently against one engine; restarts within a test keep the scope.
func startBoxd(t *testing.T) *boxd { return startBoxdWith(t, nil) }

// startBoxdWith is startBoxd with options changed by mut (nil: none).
func startBoxdWith(t *testing.T, mut func(o *runtime.Options)) *boxd {
	t.Helper()
	if !onKube() {
		require.NotEmpty(t, os.Getenv("DOCKER_HOST"), "run `eval \"$(bash hack/docker.sh env)\"` (ci/30-boxd.sh does)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	top, _, _ := strings.Cut(t.Name(), "/")
	o := runtime.Options{Host: "127.0.0.1", Port: 0, Token: token, Scope: "conformance-" + top,
		Logger: testLogger(), Ready: func(a string) { ready <- a },
		ConfigJSON: os.Getenv(kubeConfigEnv)}
	if mut != nil {
		mut(&o)
	}
	go func() { done <- runtime.Run(ctx, o) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("boxd did not start: %v", err)
	}
	var once sync.Once
	b := &boxd{addr: addr, stop: func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}}
	t.Cleanup(b.stop)
	return b
}

// testLogger discards boxd's log unless BOXD_TEST_LOG=1 (then it goes to stderr).
func testLogger() *slog.Logger {
	if os.Getenv("BOXD_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// conn is a LangBot-like RPC client.
type conn struct {
	t   *testing.T
	ws  *websocket.Conn
	seq atomic.Int64
	mu  sync.Mutex
}

func headers() http.Header {
	h := http.Header{}
	h.Set("X-LangBot-Box-Control-Token", token)
	h.Set("X-LangBot-Instance-Id", instance)
	return h
}

func dial(t *testing.T, b *boxd) *conn {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
	require.NoError(t, err)
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return &conn{t: t, ws: ws}
}

type response struct {
	SeqID   int64          `json:"seq_id"`
	Code    int            `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data"`
}

var ctx1 = map[string]any{"instance_uuid": instance, "workspace_uuid": workspace, "placement_generation": 1}

// call sends one request and waits for its response (requests are sequential per conn).
func (c *conn) call(action string, data any, context map[string]any) response {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.seq.Add(1)
	req := map[string]any{"seq_id": seq, "action": action, "data": data}
	if context != nil {
		req["context"] = context
	}
	require.NoError(c.t, c.ws.WriteJSON(req))
	for {
		require.NoError(c.t, c.ws.SetReadDeadline(time.Now().Add(2*time.Minute)))
		var r response
		require.NoError(c.t, c.ws.ReadJSON(&r))
		if r.SeqID == seq {
			return r
		}
	}
}

func (c *conn) ok(action string, data any, context map[string]any) map[string]any {
	c.t.Helper()
	r := c.call(action, data, context)
	require.Equal(c.t, 0, r.Code, "%s failed: %s", action, r.Message)
	return r.Data
}

func (c *conn) init(t *testing.T, extra map[string]any) string {
	root := t.TempDir()
	// LangBot sends its box.backend: "local" (its default) with Docker, "kubernetes" as the
	// chart sets it for that backend (boxd refuses "local" there: it is no local runtime).
	be := "local"
	if onKube() {
		be = backendName()
	}
	cfg := map[string]any{"backend": be, "local": map[string]any{"host_root": root, "allowed_mount_roots": []string{root}}}
	for k, v := range extra {
		cfg[k] = v
	}
	defaultExecPath(cfg)
	c.ok("__ping", map[string]any{}, nil)
	c.ok("box_init", cfg, nil)
	return root
}

func spec(session string, extra map[string]any) map[string]any {
	s := map[string]any{"session_id": session, "image": image, "cmd": "true", "timeout_sec": 30}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func dockerClient(t *testing.T) *client.Client {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	return cli
}

func uniq(prefix string) string { return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()) }

func asJSON(v any) string { b, _ := json.Marshal(v); return string(b) }
