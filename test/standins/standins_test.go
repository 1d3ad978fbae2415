package standins_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var rtArgs = []string{"run", "--no-sync", "-m", "langbot_plugin.cli.__init__", "rt"}

const testToken = "0123456789abcdef0123456789abcdef-test"

// wsKey is a valid Sec-WebSocket-Key (16 bytes, base64).
const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

func get(path string, headers ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + strings.Join(headers, "") + "\r\n"
}

func upgradeHeaders(extra ...string) []string {
	return append([]string{"Connection: Upgrade\r\n", "Upgrade: websocket\r\n", "Sec-WebSocket-Key: " + wsKey + "\r\n", "Sec-WebSocket-Version: 13\r\n"}, extra...)
}

// The plugin runtime (langbot-plugin 0.5.5 runtime/io/controllers/ws/server.py on websockets
// 15.0.1) serves exactly one plain-HTTP endpoint, /healthz, on both its ports; every other
// request is a WebSocket handshake, which a plain GET fails.
func TestPluginRuntimeAnswersAsTheRealRuntime(t *testing.T) {
	_, rt := standinBinaries(t)
	p := start(t, rt, podIP(), append(rtArgs, "--ws-control-port", "5400", "--ws-debug-port=5401"), []string{"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN=" + testToken})
	p.waitListening(t, 5400)
	p.waitListening(t, 5401)

	// The endpoints it serves over plain HTTP: /healthz on both listeners.
	for _, port := range []int{5400, 5401} {
		r := raw(t, p.addr(port), get("/healthz"))
		require.NotNil(t, r)
		assert.Equal(t, http.StatusOK, r.StatusCode)
		assert.Equal(t, "text/plain; charset=utf-8", r.Header.Get("Content-Type"))
		var h map[string]any
		require.NoError(t, json.Unmarshal([]byte(body(t, r)), &h))
		assert.Equal(t, true, h["live"])
	}

	tok := "X-LangBot-Plugin-Runtime-Token: " + testToken + "\r\n"
	cases := []struct {
		name    string
		port    int
		request string
		status  int // 0: the connection is closed without a response
		upgrade bool
	}{
		// The probe that hid defect 1: the kubelet's GET /readyz (Connection: close) is a
		// handshake without a token (401), and with the token a failed upgrade (426).
		{"readyz as the kubelet sends it", 5400, get("/readyz", "Connection: close\r\n"), 401, false},
		{"readyz with the token", 5400, get("/readyz", "Connection: close\r\n", tok), 426, true},
		{"root", 5400, get("/", tok), 426, true},
		{"control path without upgrade", 5400, get("/control/ws", tok), 426, true},
		{"healthz with a query is not healthz", 5400, get("/healthz?full=1", tok), 426, true},
		{"upgrade header not websocket", 5400, get("/control/ws", tok, "Connection: Upgrade\r\n", "Upgrade: h2c\r\n"), 426, true},
		{"bad key", 5400, get("/control/ws", append(upgradeHeaders(tok)[:2], "Sec-WebSocket-Key: short\r\n", "Sec-WebSocket-Version: 13\r\n", tok)...), 400, false},
		{"wrong token", 5400, get("/control/ws", upgradeHeaders("X-LangBot-Plugin-Runtime-Token: nope\r\n")...), 401, false},
		{"two tokens", 5400, get("/control/ws", upgradeHeaders(tok, tok)...), 500, false},
		{"debug port refuses a handshake without a debug key", 5401, get("/plugin/debug/ws", upgradeHeaders()...), 401, false},
		{"debug port readyz", 5401, get("/readyz", "Connection: close\r\n"), 401, false},
		{"POST is no HTTP request to websockets", 5400, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0, false},
		{"HEAD neither", 5400, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0, false},
		{"nor HTTP/1.0 (helm test's nc)", 5400, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := raw(t, p.addr(tc.port), tc.request)
			if tc.status == 0 {
				assert.Nil(t, r, "websockets closes the connection without a response")
				return
			}
			require.NotNil(t, r)
			assert.Equal(t, tc.status, r.StatusCode)
			assert.True(t, r.Close, "Connection: close")
			assert.Equal(t, "text/plain; charset=utf-8", r.Header.Get("Content-Type"))
			assert.Contains(t, r.Header.Get("Server"), "websockets/15.0.1")
			if tc.upgrade {
				assert.Equal(t, "websocket", r.Header.Get("Upgrade"))
			}
		})
	}

	// The control WebSocket: any path upgrades with the token; __ping answers pong.
	for _, path := range []string{"/control/ws", "/anything"} {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+p.addr(5400)+path, http.Header{"X-LangBot-Plugin-Runtime-Token": {testToken}})
		require.NoError(t, err, path)
		assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		require.NoError(t, ws.WriteJSON(map[string]any{"seq_id": 7, "action": "__ping", "data": map[string]any{}}))
		var pong map[string]any
		require.NoError(t, ws.ReadJSON(&pong))
		assert.Equal(t, float64(7), pong["seq_id"])
		assert.Equal(t, float64(0), pong["code"])
		assert.Equal(t, map[string]any{"message": "pong"}, pong["data"])
		_ = ws.Close()
	}
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+p.addr(5400)+"/control/ws", nil)
	require.Error(t, err, "no token, no connection")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestPluginRuntimeCommandLineAndEnvironment(t *testing.T) {
	_, rt := standinBinaries(t)
	t.Run("defaults 5400 and 5401, no token: handshake without auth", func(t *testing.T) {
		p := start(t, rt, podIP(), rtArgs, nil)
		p.waitListening(t, 5400)
		p.waitListening(t, 5401)
		r := raw(t, p.addr(5400), get("/readyz", "Connection: close\r\n"))
		require.NotNil(t, r)
		assert.Equal(t, http.StatusUpgradeRequired, r.StatusCode)
	})
	t.Run("--ws-control-port moves the control listener", func(t *testing.T) {
		p := start(t, rt, podIP(), append(rtArgs, "--ws-control-port=5500"), nil)
		p.waitListening(t, 5500)
		_, err := net.DialTimeout("tcp", p.addr(5400), time.Second)
		assert.Error(t, err, "nothing on 5400 any more")
	})
	refused := []struct {
		name string
		args []string
		env  []string
	}{
		{"short control token", rtArgs, []string{"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN=short"}},
		{"token with whitespace", rtArgs, []string{"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN=0123456789abcdef 0123456789abcdef"}},
		{"unknown option", append(rtArgs, "--ws-port", "1"), nil},
		{"port not an int", append(rtArgs, "--ws-control-port", "x"), nil},
		{"not the rt subcommand", []string{"run", "--no-sync", "main.py"}, nil},
		{"bad blocking executor", rtArgs, []string{"LANGBOT_BLOCKING_EXECUTOR_MAX_WORKERS=0"}},
		{"inflight above half the workers", rtArgs, []string{"LANGBOT_BLOCKING_EXECUTOR_MAX_WORKERS=4", "LANGBOT_BLOCKING_EXECUTOR_MAX_INFLIGHT_PER_SCOPE=3"}},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			p := start(t, rt, podIP(), tc.args, tc.env)
			assert.Error(t, p.exited(t), "the runtime does not start")
		})
	}
}

// LangBot 4.10.8 (pkg/api/http/controller/main.py, groups/webhooks.py, mcp/mount.py) on
// api.port: /healthz, the web UI with its SPA fallback for every other GET, 404 under /api/,
// /bots/<uuid> webhooks, /mcp behind an API key; no webhook port listens without a bot.
func TestLangBotAnswersAsTheRealLangBot(t *testing.T) {
	lb, _ := standinBinaries(t)
	data := t.TempDir()
	p := start(t, lb, podIP(), []string{"run", "--no-sync", "main.py"},
		[]string{"LANGBOT_DATA_ROOT=" + data, "BOX__ENABLED=false", "PLUGIN__ENABLE=false"})
	p.waitListening(t, 5300)

	r := raw(t, p.addr(5300), get("/healthz"))
	require.NotNil(t, r)
	assert.Equal(t, http.StatusOK, r.StatusCode)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	var h map[string]any
	require.NoError(t, json.Unmarshal([]byte(body(t, r)), &h))
	assert.Equal(t, float64(0), h["code"])
	assert.Equal(t, "ok", h["msg"])

	cases := []struct {
		method, path string
		status       int
		contentType  string
	}{
		{"GET", "/", 200, "text/html; charset=utf-8"},
		// The SPA fallback: any other GET outside /api/ is index.html, 200 - including the
		// /status the old stand-in served and /readyz, so a LangBot probe there passes by accident.
		{"GET", "/status", 200, "text/html; charset=utf-8"},
		{"GET", "/readyz", 200, "text/html; charset=utf-8"},
		{"GET", "/home/pipelines", 200, "text/html; charset=utf-8"},
		{"GET", "/api/v1/nothing", 404, "text/html; charset=utf-8"},
		{"GET", "/bots/0b5d-unknown", 404, "application/json"},
		{"POST", "/bots/0b5d-unknown/callback", 404, "application/json"},
		{"PUT", "/bots/0b5d-unknown", 405, "text/html; charset=utf-8"},
		{"POST", "/healthz", 405, "text/html; charset=utf-8"},
		{"POST", "/", 405, "text/html; charset=utf-8"},
		{"GET", "/mcp", 401, "application/json"},
		{"POST", "/mcp/messages", 401, "application/json"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			r := raw(t, p.addr(5300), tc.method+" "+tc.path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
			require.NotNil(t, r)
			assert.Equal(t, tc.status, r.StatusCode)
			assert.Equal(t, tc.contentType, r.Header.Get("Content-Type"))
		})
	}
	// helm test's `nc` sends HTTP/1.0; Hypercorn answers it.
	r = raw(t, p.addr(5300), "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	require.NotNil(t, r)
	assert.Equal(t, http.StatusOK, r.StatusCode)

	for _, port := range []int{2280, 2285, 2290, 5400, 5410} {
		_, err := net.DialTimeout("tcp", p.addr(port), time.Second)
		assert.Error(t, err, "LangBot listens on %d only when a bot or component is configured there", port)
	}
	out := readOutcome(t, data)
	assert.Equal(t, "sqlite", out.Database["use"])
	assert.Equal(t, "disabled", out.PluginRuntime["state"])
	assert.Equal(t, "disabled", out.Box.State)
}

func TestLangBotSettings(t *testing.T) {
	lb, rt := standinBinaries(t)
	t.Run("api.port and the plugin runtime URL with its token", func(t *testing.T) {
		r := start(t, rt, podIP(), append(rtArgs, "--ws-control-port", "5544"), []string{"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN=" + testToken})
		r.waitListening(t, 5544)
		data := t.TempDir()
		p := start(t, lb, podIP(), []string{"run", "--no-sync", "main.py"}, []string{"LANGBOT_DATA_ROOT=" + data, "API__PORT=5333",
			"BOX__ENABLED=false", "PLUGIN__RUNTIME_WS_URL=ws://" + r.addr(5544) + "/control/ws", "LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN=" + testToken})
		p.waitListening(t, 5333)
		waitOutcome(t, data, func(o outcome) bool { return o.PluginRuntime["state"] == "ok" })
	})
	refused := []struct {
		name string
		env  []string
	}{
		{"unsupported database", []string{"DATABASE__USE=mysql"}},
		{"unreachable postgresql", []string{"DATABASE__USE=postgresql", "DATABASE__POSTGRESQL__HOST=127.0.0.1", "DATABASE__POSTGRESQL__PORT=1"}},
		{"pool size out of range", []string{"DATABASE__USE=postgresql", "DATABASE__POSTGRESQL__POOL_SIZE=0"}},
		{"pool over 100", []string{"DATABASE__USE=postgresql", "DATABASE__POSTGRESQL__POOL_SIZE=90", "DATABASE__POSTGRESQL__MAX_OVERFLOW=20"}},
		{"url of another driver", []string{"DATABASE__USE=postgresql", "DATABASE__POSTGRESQL__URL=mysql://x@y/z"}},
		{"blocking executor", []string{"SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS=65"}},
		{"api.port not an int", []string{"API__PORT=web"}},
	}
	for _, tc := range refused {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			data := t.TempDir()
			p := start(t, lb, podIP(), []string{"run", "--no-sync", "main.py"}, append([]string{"LANGBOT_DATA_ROOT=" + data, "BOX__ENABLED=false", "PLUGIN__ENABLE=false"}, tc.env...))
			assert.Error(t, p.exited(t), "LangBot does not start")
			assert.Contains(t, p.log(), "failed to start")
		})
	}
}

type outcome struct {
	Database      map[string]any `json:"database"`
	PluginRuntime map[string]any `json:"plugin_runtime"`
	Box           struct {
		State string `json:"state"`
	} `json:"box"`
}

func readOutcome(t *testing.T, data string) outcome {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, "standin-outcome.json"))
	require.NoError(t, err)
	var o outcome
	require.NoError(t, json.Unmarshal(b, &o))
	return o
}

func waitOutcome(t *testing.T, data string, cond func(outcome) bool) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		b, err := os.ReadFile(filepath.Join(data, "standin-outcome.json"))
		var o outcome
		if err == nil && json.Unmarshal(b, &o) == nil && cond(o) {
			return o
		}
		select {
		case <-ctx.Done():
			require.FailNow(t, "the stand-in's outcome never matched", "last: %s", b)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
