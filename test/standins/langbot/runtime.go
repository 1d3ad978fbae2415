package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/gorilla/websocket"
)

// The plugin runtime's control token header and secret rule (langbot_plugin/runtime/security.py,
// used by pkg/plugin/connector.py _control_headers).
const runtimeTokenHeader = "X-LangBot-Plugin-Runtime-Token"

var runtimeSecret = regexp.MustCompile(`^\S{32,}$`)

// connectPluginRuntime is pkg/plugin/connector.py initialize for the docker platform: dial
// plugin.runtime_ws_url with the token header (none when the token is unset), ping, keep the
// connection; reconnect when it fails or closes.
func connectPluginRuntime(ctx context.Context, log *slog.Logger, cfg config, out *outcome) {
	for attempt := 1; ; attempt++ {
		err := pingRuntime(ctx, cfg, func() {
			out.set(func(o *outcomeData) {
				o.PluginRuntime = map[string]any{"state": "ok", "url": cfg.runtimeWSURL, "attempts": attempt, "pong": true}
			})
			log.Info("Connected to instance-scoped plugin runtime.", "url", cfg.runtimeWSURL)
		})
		out.set(func(o *outcomeData) {
			o.PluginRuntime = map[string]any{"state": "failed", "url": cfg.runtimeWSURL, "attempts": attempt, "error": err.Error()}
		})
		log.Warn("Plugin runtime connection failed, retrying", "url", cfg.runtimeWSURL, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// pingRuntime connects, sends __ping, calls connected on the pong, and holds the connection
// until it closes; it returns why it ended.
func pingRuntime(ctx context.Context, cfg config, connected func()) error {
	h := http.Header{}
	if cfg.runtimeToken != "" {
		if !runtimeSecret.MatchString(cfg.runtimeToken) {
			return fmt.Errorf("LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN must be configured with a strong shared secret (32 or more non-whitespace characters)")
		}
		h.Set(runtimeTokenHeader, cfg.runtimeToken)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ws, resp, err := websocket.DefaultDialer.DialContext(dctx, cfg.runtimeWSURL, h)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("connect %s: %w (HTTP %d)", cfg.runtimeWSURL, err, resp.StatusCode)
		}
		return fmt.Errorf("connect %s: %w", cfg.runtimeWSURL, err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]any{"seq_id": 1, "action": "__ping", "data": map[string]any{}}); err != nil {
		return fmt.Errorf("send __ping: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	var r struct {
		Code    int            `json:"code"`
		Message string         `json:"message"`
		Data    map[string]any `json:"data"`
	}
	if err := ws.ReadJSON(&r); err != nil {
		return fmt.Errorf("read the __ping response: %w", err)
	}
	if r.Code != 0 || r.Data["message"] != "pong" {
		return fmt.Errorf("__ping answered code %d %q %v", r.Code, r.Message, r.Data)
	}
	connected()
	_ = ws.SetReadDeadline(time.Time{})
	go func() {
		<-ctx.Done()
		_ = ws.Close()
	}()
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return fmt.Errorf("control connection closed: %w", err)
		}
	}
}
