// Command pluginruntime is the offline stand-in for the LangBot plugin runtime (langbot-plugin
// 0.5.5, `uv run --no-sync -m langbot_plugin.cli.__init__ rt` in the rockchin/langbot image) in
// end-to-end tests. It answers exactly what the real runtime answers on its two ports and
// nothing else; each behaviour names the upstream file it follows (paths under
// src/langbot_plugin/ of langbot-plugin-sdk at tag 0.5.5, and websockets 15.0.1, the version
// LangBot 4.10.8's uv.lock installs). What it does not do: run plugins. On the control
// WebSocket it answers `__ping` as the runtime does and refuses every other action.
package main

import (
	"context"
	"crypto/hmac"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/gorilla/websocket"
	"github.com/langbot-k8s/langbot-k8s/test/standins/internal/standin"
)

const (
	// runtime/security.py PLUGIN_RUNTIME_CONTROL_TOKEN_ENV / _HEADER.
	tokenEnv    = "LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN"
	tokenHeader = "X-LangBot-Plugin-Runtime-Token"
	// websockets/http11.py SERVER: "Python/<x.y> websockets/<version>"; the image is
	// python:3.12.7-slim (LangBot Dockerfile).
	serverHeader = "Python/3.12 websockets/15.0.1"
	// runtime/io/connection.py MAX_MESSAGE_BYTES, the server's max_size.
	maxMessageBytes = 16 * 1024 * 1024
)

// runtime/security.py _SECRET_PATTERN: a non-whitespace secret of at least 32 characters.
var secretPattern = regexp.MustCompile(`^\S{32,}$`)

// args are the `rt` options of cli/__init__.py (argparse, same names and defaults).
type args struct {
	stdioControl  bool
	controlPort   int // --ws-control-port, default 5400
	debugPort     int // --ws-debug-port, default 5401
	debugOnly     bool
	skipDepsCheck bool
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	a, err := parseArgs(os.Args[1:])
	if err != nil {
		// argparse prints usage and exits 2 on a bad command line.
		fmt.Fprintln(os.Stderr, "lbp:", err)
		os.Exit(2)
	}
	token, err := controlToken()
	if err != nil {
		log.Error("plugin runtime refuses to start", "err", err)
		os.Exit(1)
	}
	// app.py _run_with_shutdown: configure_bounded_default_executor_from_env.
	if err := standin.BlockingExecutorLimits("LANGBOT_BLOCKING_EXECUTOR_"); err != nil {
		log.Error("plugin runtime refuses to start", "err", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errs := make(chan error, 2)
	host := standin.BindHost()
	// runtime/app.py: the control server exists only without --stdio-control; the debug server
	// always. The stand-in has no stdio control channel (the chart never uses -s).
	if !a.stdioControl {
		go func() {
			errs <- standin.Serve(ctx, log.With("server", "control"), net.JoinHostPort(host, strconv.Itoa(a.controlPort)), &handler{log: log, kind: "control", token: token})
		}()
	}
	go func() {
		errs <- standin.Serve(ctx, log.With("server", "debug"), net.JoinHostPort(host, strconv.Itoa(a.debugPort)), &handler{log: log, kind: "debug"})
	}()
	select {
	case <-ctx.Done():
		log.Info("plugin runtime stand-in stopping")
	case err := <-errs:
		log.Error("plugin runtime stand-in", "err", err)
		os.Exit(1)
	}
}

func parseArgs(argv []string) (args, error) {
	target, err := standin.UVRun(argv)
	if err != nil {
		return args{}, err
	}
	if len(target) < 3 || target[0] != "-m" || target[1] != "langbot_plugin.cli.__init__" || target[2] != "rt" {
		return args{}, fmt.Errorf("this is the plugin runtime stand-in: it runs `-m langbot_plugin.cli.__init__ rt`, got %q", target)
	}
	a := args{controlPort: 5400, debugPort: 5401}
	rest := target[3:]
	for i := 0; i < len(rest); i++ {
		name, value, hasValue := strings.Cut(rest[i], "=")
		intFlag := func(dst *int) error {
			if !hasValue {
				if i+1 >= len(rest) {
					return fmt.Errorf("argument %s: expected one argument", name)
				}
				i++
				value = rest[i]
			}
			n, err := strconv.Atoi(value)
			if err != nil {
				return fmt.Errorf("argument %s: invalid int value: %q", name, value)
			}
			*dst = n
			return nil
		}
		strFlag := func() error { // --pypi-index-url / --pypi-trusted-host: read, unused here
			if !hasValue {
				if i+1 >= len(rest) {
					return fmt.Errorf("argument %s: expected one argument", name)
				}
				i++
			}
			return nil
		}
		var err error
		switch name {
		case "-s", "--stdio-control":
			a.stdioControl = true
		case "--ws-control-port":
			err = intFlag(&a.controlPort)
		case "--ws-debug-port":
			err = intFlag(&a.debugPort)
		case "--debug-only":
			a.debugOnly = true
		case "--skip-deps-check":
			a.skipDepsCheck = true
		case "--pypi-index-url", "--pypi-trusted-host":
			err = strFlag()
		default:
			err = fmt.Errorf("unrecognized arguments: %s", rest[i])
		}
		if err != nil {
			return args{}, err
		}
	}
	return a, nil
}

// controlToken follows runtime/app.py: an empty token means no header check; a set one must
// pass security.py validate_runtime_secret or the runtime does not start.
func controlToken() (string, error) {
	tok := strings.TrimSpace(os.Getenv(tokenEnv))
	if tok != "" && !secretPattern.MatchString(tok) {
		return "", fmt.Errorf("%s must be a secret of 32 or more non-whitespace characters", tokenEnv)
	}
	return tok, nil
}

// handler is one of the runtime's two WebSocketServerController listeners
// (runtime/io/controllers/ws/server.py): "control" (--ws-control-port, checks the control
// token header) or "debug" (--ws-debug-port, admits only issued debug keys or pending plugin
// registrations, of which a runtime without plugins has none).
type handler struct {
	log   *slog.Logger
	kind  string
	token string
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// websockets/http11.py Request.parse accepts only `GET <path> HTTP/1.1` without a body;
	// anything else (another method, HTTP/1.0, a Content-Length or Transfer-Encoding) fails the
	// parse, and websockets/server.py ServerProtocol.parse closes the connection without any
	// response.
	if r.Method != http.MethodGet || r.Proto != "HTTP/1.1" || r.ContentLength > 0 ||
		r.Header.Get("Content-Length") != "" || len(r.TransferEncoding) > 0 {
		closeSilently(w)
		return
	}
	// ws/server.py process_http_request: only the request path "/healthz" (websockets' path
	// includes the query string, so "/healthz?x" is not it) is answered over plain HTTP, 200
	// with the aggregate health JSON (compact, sorted keys, newline) as text.
	if r.RequestURI == "/healthz" {
		reject(w, http.StatusOK, `{"live":true,"resources":{}}`+"\n")
		return
	}
	// ws/server.py authenticate_request: the expected headers (control: the token, when
	// configured), then the request authenticator (debug), both before the handshake.
	if !h.authorized(w, r) {
		return
	}
	// websockets/server.py ServerProtocol.process_request, in its order.
	if !hasToken(r.Header.Values("Connection"), "upgrade") {
		w.Header().Set("Upgrade", "websocket")
		reject(w, http.StatusUpgradeRequired, fmt.Sprintf("Failed to open a WebSocket connection: %s.\n", headerProblem("Connection", r.Header.Values("Connection"))))
		return
	}
	if up := tokens(r.Header.Values("Upgrade")); len(up) != 1 || !strings.EqualFold(up[0], "websocket") {
		w.Header().Set("Upgrade", "websocket")
		reject(w, http.StatusUpgradeRequired, fmt.Sprintf("Failed to open a WebSocket connection: %s.\n", headerProblem("Upgrade", r.Header.Values("Upgrade"))))
		return
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if raw, err := base64.StdEncoding.Strict().DecodeString(first(keys)); len(keys) != 1 || err != nil || len(raw) != 16 {
		reject(w, http.StatusBadRequest, fmt.Sprintf("Failed to open a WebSocket connection: %s.\n", headerProblem("Sec-WebSocket-Key", keys)))
		return
	}
	if v := r.Header.Values("Sec-WebSocket-Version"); len(v) != 1 || v[0] != "13" {
		reject(w, http.StatusBadRequest, fmt.Sprintf("Failed to open a WebSocket connection: %s.\n", headerProblem("Sec-WebSocket-Version", v)))
		return
	}
	// Any path upgrades: websockets.serve has one handler and never looks at the path (LangBot
	// dials /control/ws by convention). permessage-deflate is websockets' default extension.
	up := websocket.Upgrader{EnableCompression: true, CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, http.Header{"Server": {serverHeader}})
	if err != nil {
		h.log.Warn("handshake failed", "server", h.kind, "err", err)
		return
	}
	ws.SetReadLimit(maxMessageBytes)
	h.log.Info("New connection", "server", h.kind, "remote", r.RemoteAddr, "path", r.RequestURI)
	h.converse(ws)
}

func (h *handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	if h.kind == "debug" {
		// app.py _authenticate_plugin_request: a debug key issued to a workspace or a pending
		// registration capability; this runtime has issued none.
		reject(w, http.StatusUnauthorized, "Unauthorized")
		return false
	}
	if h.token == "" {
		return true
	}
	got := r.Header.Values(tokenHeader)
	if len(got) > 1 {
		// websockets' Headers.get raises MultipleValuesError, which authenticate_request does
		// not catch: asyncio/server.py answers 500 for an exception in process_request.
		reject(w, http.StatusInternalServerError, "Failed to open a WebSocket connection.\nSee server log for more information.\n")
		return false
	}
	if first(got) == "" || !hmac.Equal([]byte(first(got)), []byte(h.token)) {
		reject(w, http.StatusUnauthorized, "Unauthorized")
		return false
	}
	return true
}

// converse answers the control protocol of runtime/io/handler.py on one connection: text JSON
// messages; a request has "action" and "seq_id", the answer ActionResponse (entities/io/resp.py).
func (h *handler) converse(ws *websocket.Conn) {
	defer ws.Close()
	for {
		var msg map[string]any
		if err := ws.ReadJSON(&msg); err != nil {
			h.log.Info("connection closed", "server", h.kind, "err", err)
			return
		}
		if _, isResponse := msg["code"]; isResponse {
			continue
		}
		action, _ := msg["action"].(string)
		if action == "" {
			continue
		}
		resp := map[string]any{"seq_id": msg["seq_id"], "chunk_status": "continue"}
		if action == "__ping" && h.kind == "control" { // handlers/control.py ping
			resp["code"], resp["message"], resp["data"] = 0, "success", map[string]any{"message": "pong"}
		} else {
			resp["code"], resp["message"], resp["data"] = 1, "the plugin runtime stand-in implements only __ping, not "+action, map[string]any{}
		}
		if err := ws.WriteJSON(resp); err != nil {
			h.log.Info("connection closed", "server", h.kind, "err", err)
			return
		}
	}
}

// reject writes a response as websockets/server.py ServerProtocol.reject builds it (plain text,
// Connection: close) with the Server header asyncio/server.py adds to every response.
func reject(w http.ResponseWriter, status int, text string) {
	hd := w.Header()
	hd.Set("Connection", "close")
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(text)))
	hd.Set("Server", serverHeader)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}

func closeSilently(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			_ = c.Close()
		}
	}
}

// tokens splits comma-separated header values (websockets/headers.py parse_connection /
// parse_upgrade).
func tokens(values []string) []string {
	var out []string
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

func hasToken(values []string, want string) bool {
	for _, t := range tokens(values) {
		if strings.EqualFold(t, want) {
			return true
		}
	}
	return false
}

func headerProblem(name string, values []string) string {
	switch {
	case len(values) == 0:
		return "missing " + name + " header"
	case len(values) > 1:
		return "invalid " + name + " header: more than one value"
	default:
		return "invalid " + name + " header: " + values[0]
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
