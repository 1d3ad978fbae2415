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
		res, file, skill, err := roundTrip(ctx, cfg)
		if err == nil {
			out.set(func(o *outcomeData) {
				o.Box = boxOutcome{State: "ok", Detail: "cat ran in a sandbox and printed the file; a skill ran from its read-only mount",
					Exec: res, File: file, Skill: skill, Attempts: attempt}
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

func roundTrip(ctx context.Context, cfg config) (map[string]any, string, map[string]any, error) {
	rpc, err := boxRPCURL(cfg.boxEndpoint)
	if err != nil {
		return nil, "", nil, err
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
		return nil, "", nil, fmt.Errorf("connect %s: %w", rpc, err)
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
		return nil, "", nil, err
	}
	roots := strings.Split(os.Getenv("BOX__LOCAL__ALLOWED_MOUNT_ROOTS"), ",")
	local := map[string]any{"host_root": os.Getenv("BOX__LOCAL__HOST_ROOT"), "default_workspace": os.Getenv("BOX__LOCAL__DEFAULT_WORKSPACE"),
		"skills_root": os.Getenv("BOX__LOCAL__SKILLS_ROOT"), "allowed_mount_roots": roots}
	if _, err := call("box_init", map[string]any{"enabled": true, "backend": "local", "local": local,
		"docker": map[string]any{"cpu_limit_enabled": os.Getenv("BOX__DOCKER__CPU_LIMIT_ENABLED") != "false"}}, false); err != nil {
		return nil, "", nil, err
	}
	dir := filepath.Join(os.Getenv("BOX__LOCAL__DEFAULT_WORKSPACE"), "tenants", namespace())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", nil, fmt.Errorf("create tenant workspace: %w", err)
	}
	file := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(file, []byte(content+"\n"), 0o644); err != nil {
		return nil, "", nil, fmt.Errorf("write %s: %w", file, err)
	}
	image := os.Getenv("STANDIN_SANDBOX_IMAGE")
	if image == "" {
		image = "langbot-k8s/sandbox:local"
	}
	spec := map[string]any{"session_id": "standin", "image": image, "host_path": dir, "host_path_mode": "rw",
		"mount_path": "/workspace", "workdir": "/workspace", "timeout_sec": 60}
	if _, err := call("box_create_session", spec, true); err != nil {
		return nil, "", nil, err
	}
	spec["cmd"] = "cat /workspace/hello.txt"
	res, err := call("box_exec", spec, true)
	if err != nil {
		return nil, "", nil, err
	}
	if res["stdout"] != content {
		return nil, "", nil, fmt.Errorf("cat printed %q, want %q (exit %v, stderr %q)", res["stdout"], content, res["exit_code"], res["stderr"])
	}
	skill, err := runSkill(call, spec)
	if err != nil {
		return nil, "", nil, err
	}
	return res, file, skill, nil
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
