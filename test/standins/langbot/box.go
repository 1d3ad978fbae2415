package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

const (
	instance  = "instance_standin"
	workspace = "standin-workspace"
	content   = "written by the langbot stand-in"
	skillName = "standin-skill"
	skillSays = "hello from a skill"
)

func namespace() string {
	sum := sha256.Sum256([]byte(instance + "\x00" + workspace))
	return "ws-" + hex.EncodeToString(sum[:])[:24]
}

// exerciseBox retries (the box may become ready after langbot) until one full round succeeds.
func exerciseBox(ctx context.Context, log *slog.Logger, cfg config, out *outcome) {
	for attempt := 1; ; attempt++ {
		r, err := roundTrip(ctx, cfg)
		if err == nil {
			out.set(func(o *outcomeData) {
				o.Box = boxOutcome{State: "ok", Detail: "cat ran in a sandbox and printed the file, the sandbox wrote one back, a skill ran from its read-only mount, a stdio MCP-style process echoed through the relay",
					Exec: r.exec, File: r.file, Skill: r.skill, WriteBack: r.writeBack, MCP: r.mcp, Attempts: attempt}
			})
			return
		}
		out.set(func(o *outcomeData) { o.Box = boxOutcome{State: "failed", Detail: err.Error(), Attempts: attempt} })
		log.Warn("box round trip failed, retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// boxRPCURL is pkg/box/connector.py _resolve_rpc_ws_url on the docker platform: scheme, host and
// port of box.runtime.endpoint (http(s) read as ws(s), port 5410 by default, any path dropped)
// plus /rpc/ws; without an endpoint the docker-compose service name.
func boxRPCURL(endpoint string) (string, error) {
	if endpoint == "" {
		return "ws://langbot_box:5410/rpc/ws", nil
	}
	u, err := url.Parse(strings.TrimRight(endpoint, "/"))
	if err != nil {
		return "", fmt.Errorf("box.runtime.endpoint %q: %w", endpoint, err)
	}
	scheme := u.Scheme
	switch scheme {
	case "":
		scheme = "ws"
	case "http":
		scheme = "ws"
	case "https":
		scheme = "wss"
	}
	host := u.Hostname()
	if host == "" {
		host = "127.0.0.1"
	}
	port := u.Port()
	if port == "" {
		port = "5410"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/rpc/ws", nil
}

// roundResult is what one full round saw.
type roundResult struct {
	exec      map[string]any
	file      string
	skill     map[string]any
	writeBack string
	mcp       map[string]any
}

// writtenBack is what the sandbox writes into the workspace for langbot to read on its disk.
const writtenBack = "written back by a sandbox command"

func roundTrip(ctx context.Context, cfg config) (roundResult, error) {
	var none roundResult
	rpc, err := boxRPCURL(cfg.boxEndpoint)
	if err != nil {
		return none, err
	}
	// pkg/box/connector.py: the instance header and, when set, the control token header.
	h := http.Header{}
	h.Set("X-LangBot-Instance-Id", instance)
	if cfg.boxToken != "" {
		h.Set("X-LangBot-Box-Control-Token", cfg.boxToken)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, rpc, h)
	if err != nil {
		return none, fmt.Errorf("connect %s: %w", rpc, err)
	}
	resp.Body.Close()
	defer ws.Close()
	seq := 0
	call := func(action string, data any, withCtx bool) (map[string]any, error) {
		seq++
		req := map[string]any{"seq_id": seq, "action": action, "data": data}
		if withCtx {
			req["context"] = map[string]any{"instance_uuid": instance, "workspace_uuid": workspace, "placement_generation": 1}
		}
		if err := ws.WriteJSON(req); err != nil {
			return nil, err
		}
		_ = ws.SetReadDeadline(time.Now().Add(90 * time.Second))
		var r struct {
			Code    int            `json:"code"`
			Message string         `json:"message"`
			Data    map[string]any `json:"data"`
		}
		if err := ws.ReadJSON(&r); err != nil {
			return nil, err
		}
		if r.Code != 0 {
			return nil, fmt.Errorf("%s: %s", action, r.Message)
		}
		return r.Data, nil
	}
	if _, err := call("__ping", map[string]any{}, false); err != nil {
		return none, err
	}
	roots := strings.Split(os.Getenv("BOX__LOCAL__ALLOWED_MOUNT_ROOTS"), ",")
	local := map[string]any{"host_root": os.Getenv("BOX__LOCAL__HOST_ROOT"), "default_workspace": os.Getenv("BOX__LOCAL__DEFAULT_WORKSPACE"),
		"skills_root": os.Getenv("BOX__LOCAL__SKILLS_ROOT"), "allowed_mount_roots": roots}
	// pkg/box/connector.py sends its whole box section (minus runtime) in box_init, backend
	// included: BOX__BACKEND as the chart sets it (LangBot's template default is "local").
	backend := os.Getenv("BOX__BACKEND")
	if backend == "" {
		backend = "local"
	}
	if _, err := call("box_init", map[string]any{"enabled": true, "backend": backend, "local": local,
		"docker": map[string]any{"cpu_limit_enabled": os.Getenv("BOX__DOCKER__CPU_LIMIT_ENABLED") != "false"}}, false); err != nil {
		return none, err
	}
	dir := filepath.Join(os.Getenv("BOX__LOCAL__DEFAULT_WORKSPACE"), "tenants", namespace())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return none, fmt.Errorf("create tenant workspace: %w", err)
	}
	file := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(file, []byte(content+"\n"), 0o644); err != nil {
		return none, fmt.Errorf("write %s: %w", file, err)
	}
	image := os.Getenv("STANDIN_SANDBOX_IMAGE")
	if image == "" {
		image = "langbot-k8s/sandbox:local"
	}
	spec := map[string]any{"session_id": "standin", "image": image, "host_path": dir, "host_path_mode": "rw",
		"mount_path": "/workspace", "workdir": "/workspace", "timeout_sec": 60}
	if _, err := call("box_create_session", spec, true); err != nil {
		return none, err
	}
	spec["cmd"] = "cat /workspace/hello.txt"
	res, err := call("box_exec", spec, true)
	if err != nil {
		return none, err
	}
	if res["stdout"] != content {
		return none, fmt.Errorf("cat printed %q, want %q (exit %v, stderr %q)", res["stdout"], content, res["exit_code"], res["stderr"])
	}
	skill, err := runSkill(call, spec)
	if err != nil {
		return none, err
	}
	// LangBot's native write/edit tools work on its own disk when the workspace is shared
	// (src/langbot/pkg/provider/tools/loaders/native.py); a command in the sandbox writes
	// through the same directory, which langbot then reads.
	back := map[string]any{}
	for k, v := range spec {
		back[k] = v
	}
	back["cmd"] = "echo " + writtenBack + " > /workspace/from-sandbox.txt"
	if r, err := call("box_exec", back, true); err != nil {
		return none, err
	} else if code, _ := r["exit_code"].(float64); code != 0 {
		return none, fmt.Errorf("the write-back command exited %v: %v", r["exit_code"], r["stderr"])
	}
	got, err := os.ReadFile(filepath.Join(dir, "from-sandbox.txt"))
	if err != nil {
		return none, fmt.Errorf("read what the sandbox wrote, on langbot's disk: %w", err)
	}
	if strings.TrimSpace(string(got)) != writtenBack {
		return none, fmt.Errorf("the sandbox wrote %q, langbot read %q", writtenBack, got)
	}
	mcp, err := mcpRoundTrip(ctx, cfg, call, dir)
	if err != nil {
		return none, err
	}
	return roundResult{exec: res, file: file, skill: skill, writeBack: filepath.Join(dir, "from-sandbox.txt"), mcp: mcp}, nil
}

// boxRelayBase is the managed-process relay base: pkg/box/connector.py resolve_box_ws_relay_url
// gives http(s)://host:port of box.runtime.endpoint (port 5410 by default), and the client's
// get_managed_process_websocket_url turns http(s) into ws(s).
func boxRelayBase(endpoint string) (string, error) {
	rpc, err := boxRPCURL(endpoint)
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(rpc, "/rpc/ws"), nil
}

// mcpServerID stands for the MCP server's uuid, LangBot's process id.
const mcpServerID = "standin-mcp-server"

// mcpRoundTrip is the stdio MCP server path of src/langbot/pkg/provider/tools/loaders/mcp_stdio.py
// (box-protocol.md §12.5): the persistent shared session `mcp-shared` with network on and the
// tenant workspace, box_get_managed_process then box_start_managed_process when not running,
// and the relay WebSocket (subprotocol mcp, LangBot's headers) to
// /v1/sessions/<physical id>/managed-process/<server id>/ws. The "server" is `cat`: the
// JSON-RPC initialize line LangBot sends first must come back as one text frame.
func mcpRoundTrip(ctx context.Context, cfg config, call func(string, any, bool) (map[string]any, error), dir string) (map[string]any, error) {
	image := os.Getenv("STANDIN_SANDBOX_IMAGE")
	if image == "" {
		image = "langbot-k8s/sandbox:local"
	}
	spec := map[string]any{"session_id": "mcp-shared", "image": image, "host_path": dir, "host_path_mode": "rw",
		"mount_path": "/workspace", "workdir": "/workspace", "persistent": true, "network": "on", "read_only_rootfs": false}
	if _, err := call("box_create_session", spec, true); err != nil {
		return nil, err
	}
	info, err := call("box_get_managed_process", map[string]any{"session_id": "mcp-shared", "process_id": mcpServerID}, true)
	if err != nil || info["status"] != "running" {
		if _, err := call("box_start_managed_process", map[string]any{"session_id": "mcp-shared", "spec": map[string]any{
			"command": "cat", "args": []any{}, "env": map[string]any{}, "cwd": "/workspace", "process_id": mcpServerID}}, true); err != nil {
			return nil, err
		}
	}
	base, err := boxRelayBase(cfg.boxEndpoint)
	if err != nil {
		return nil, err
	}
	url := base + "/v1/sessions/" + namespace() + "-g1-mcp-shared/managed-process/" + mcpServerID + "/ws"
	h := http.Header{}
	h.Set("X-LangBot-Instance-Id", instance)
	if cfg.boxToken != "" {
		h.Set("X-LangBot-Box-Control-Token", cfg.boxToken)
	}
	h.Set("X-LangBot-Workspace-Id", workspace)
	h.Set("X-LangBot-Placement-Generation", "1")
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err != nil {
		return nil, fmt.Errorf("connect the managed-process relay %s: %w", url, err)
	}
	resp.Body.Close()
	defer ws.Close()
	line := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"langbot-standin","version":"0"}}}`
	if err := ws.WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
		return nil, fmt.Errorf("write to the relay: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, echoed, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("read from the relay: %w", err)
	}
	if string(echoed) != line {
		return nil, fmt.Errorf("the relay returned %q, want the line sent, %q", echoed, line)
	}
	return map[string]any{"session_id": "mcp-shared", "process_id": mcpServerID, "echoed": string(echoed)}, nil
}

// runSkill creates the stand-in's skill (once), writes its script, and runs the script in the
// session with the skill mounted read-only where LangBot mounts skills.
func runSkill(call func(string, any, bool) (map[string]any, error), spec map[string]any) (map[string]any, error) {
	got, err := call("box_get_skill", map[string]any{"name": skillName}, true)
	if err != nil {
		return nil, err
	}
	if got["skill"] == nil {
		if _, err := call("box_create_skill", map[string]any{"skill": map[string]any{"name": skillName,
			"description": "the stand-in's skill", "instructions": "Run run.sh."}}, true); err != nil {
			return nil, err
		}
	}
	if _, err := call("box_write_skill_file", map[string]any{"name": skillName, "path": "run.sh", "content": "echo " + skillSays + "\n"}, true); err != nil {
		return nil, err
	}
	got, err = call("box_get_skill", map[string]any{"name": skillName}, true)
	if err != nil {
		return nil, err
	}
	sk, _ := got["skill"].(map[string]any)
	root, _ := sk["package_root"].(string)
	if root == "" {
		return nil, fmt.Errorf("box_get_skill %s: no package_root in %v", skillName, got)
	}
	mount := "/workspace/.skills/" + skillName
	run := map[string]any{}
	for k, v := range spec {
		run[k] = v
	}
	run["extra_mounts"] = []any{map[string]any{"host_path": root, "mount_path": mount, "mode": "ro"}}
	run["skill_name"] = skillName
	run["cmd"] = "sh " + mount + "/run.sh"
	res, err := call("box_exec", run, true)
	if err != nil {
		return nil, err
	}
	if res["stdout"] != skillSays {
		return nil, fmt.Errorf("the skill printed %q, want %q (exit %v, stderr %q)", res["stdout"], skillSays, res["exit_code"], res["stderr"])
	}
	return map[string]any{"name": skillName, "package_root": root, "mount": mount, "stdout": res["stdout"]}, nil
}
