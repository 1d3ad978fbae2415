// Command langbot is the offline stand-in for the LangBot image in end-to-end tests. It serves
// the web port for probes and, using only the environment the chart gives LangBot, does what
// LangBot does at start: connects to the Box through BOX__RUNTIME__ENDPOINT with LangBot's
// headers, sends box_init with the config LangBot derives from BOX__LOCAL__*, writes a file into
// its tenant workspace under the shared root, creates a session on it and runs `cat` on the file
// in the sandbox; then, as LangBot's skills page and `activate` tool do, creates a skill in the
// Box's skill store, writes a script into it and runs that script in the session with the skill
// mounted read-only at /workspace/.skills/<name>. GET /status reports the outcome as JSON (also
// logged).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

type outcome struct {
	mu       sync.Mutex
	Box      string         `json:"box"` // disabled | pending | ok | failed
	Detail   string         `json:"detail"`
	Exec     map[string]any `json:"exec,omitempty"`
	File     string         `json:"file,omitempty"`
	Skill    map[string]any `json:"skill,omitempty"`
	Attempts int            `json:"attempts"`
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	out := &outcome{Box: "disabled"}
	if os.Getenv("BOX__ENABLED") == "true" && os.Getenv("BOX__BACKEND") != "e2b" {
		out.Box = "pending"
		go exerciseBox(log, out)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		out.mu.Lock()
		defer out.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("langbot stand-in\n")) })
	log.Info("langbot stand-in listening on :5300")
	if err := http.ListenAndServe(":5300", mux); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

func namespace() string {
	sum := sha256.Sum256([]byte(instance + "\x00" + workspace))
	return "ws-" + hex.EncodeToString(sum[:])[:24]
}

// exerciseBox retries (the box may become ready after langbot) until one full round succeeds.
func exerciseBox(log *slog.Logger, out *outcome) {
	for {
		out.mu.Lock()
		out.Attempts++
		out.mu.Unlock()
		res, file, skill, err := roundTrip()
		out.mu.Lock()
		if err == nil {
			out.Box, out.Detail, out.Exec, out.File, out.Skill = "ok", "cat ran in a sandbox and printed the file; a skill ran from its read-only mount", res, file, skill
			out.mu.Unlock()
			log.Info("box round trip ok", "stdout", res["stdout"], "file", file)
			return
		}
		out.Box, out.Detail = "failed", err.Error()
		out.mu.Unlock()
		log.Warn("box round trip failed, retrying", "err", err)
		time.Sleep(2 * time.Second)
	}
}

func roundTrip() (map[string]any, string, map[string]any, error) {
	endpoint := strings.TrimSuffix(os.Getenv("BOX__RUNTIME__ENDPOINT"), "/")
	h := http.Header{}
	h.Set("X-LangBot-Instance-Id", instance)
	if tok := os.Getenv("LANGBOT_BOX_CONTROL_TOKEN"); tok != "" {
		h.Set("X-LangBot-Box-Control-Token", tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, resp, err := websocket.DefaultDialer.DialContext(ctx, endpoint+"/rpc/ws", h)
	if err != nil {
		return nil, "", nil, fmt.Errorf("connect %s/rpc/ws: %w", endpoint, err)
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
