//go:build integration

package conformance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestAuditLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	// Its own scope: another suite's boxd starting on the same engine (orphan cleanup)
	// must not remove this test's sandbox and add records the test does not expect.
	b := startBoxdWith(t, func(o *runtime.Options) { o.AuditLog = path })
	c := dial(t, b)
	c.init(t, nil)

	sid := uniq("audited")
	envSecret, procSecret := uniq("env-secret-value"), uniq("proc-secret-value")
	cmd := "printf %s " + uniq("cmd-marker")
	procArg := uniq("proc-marker")
	env := map[string]any{"API_KEY": envSecret}
	info := c.ok("box_create_session", spec(sid, map[string]any{"env": env, "read_only_rootfs": false}), ctx1)
	r := c.ok("box_exec", spec(sid, map[string]any{"env": env, "read_only_rootfs": false, "cmd": cmd + " \"$API_KEY\""}), ctx1)
	require.Equal(t, float64(0), r["exit_code"], "%v", r)
	p := c.ok("box_start_managed_process", map[string]any{"session_id": sid, "spec": map[string]any{
		"process_id": "srv1", "command": "sh", "args": []any{"-c", "cat # " + procArg}, "env": map[string]any{"PROC_SECRET": procSecret}}}, ctx1)
	require.Equal(t, "running", p["status"])
	// While the session and its process run, box_status, /healthz and /metrics agree.
	status := c.ok("box_status", map[string]any{}, ctx1)
	assert.Equal(t, float64(1), status["active_sessions"])
	assert.Equal(t, float64(1), status["managed_processes"])
	_, health := getJSON(t, "http://"+b.addr+"/healthz")
	res := health["resources"].(map[string]any)
	assert.Equal(t, float64(1), res["sessions"])
	assert.Equal(t, float64(1), res["managed_processes"])
	live, err := http.Get("http://" + b.addr + "/metrics")
	require.NoError(t, err)
	liveText, err := io.ReadAll(live.Body)
	live.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(liveText), `boxd_sessions{backend="`+backendName()+`"} 1`)
	assert.Contains(t, string(liveText), `boxd_managed_processes{status="running"} 1`)
	c.ok("box_stop_managed_process", map[string]any{"session_id": sid, "process_id": "srv1"}, ctx1)
	c.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
	miss := c.call("box_delete_session", map[string]any{"session_id": sid}, ctx1)
	require.Equal(t, 1, miss.Code)
	c.ok("box_shutdown", map[string]any{}, nil)

	// Skill changes: the name and outcome are recorded, never instructions or contents.
	instructions, content := uniq("skill-instructions-secret"), uniq("skill-file-content-secret")
	skill := uniq("auditskill")
	c.ok("box_create_skill", map[string]any{"skill": map[string]any{"name": skill, "description": "d", "instructions": instructions}}, ctx1)
	c.ok("box_write_skill_file", map[string]any{"name": skill, "path": "notes.txt", "content": content}, ctx1)
	bad := c.call("box_create_skill", map[string]any{"skill": map[string]any{"name": skill}}, ctx1)
	require.Equal(t, 1, bad.Code)
	c.ok("box_delete_skill", map[string]any{"name": skill}, ctx1)
	zipped := skill + "z"
	key := c.upload(t, "0123456789abcdef-audit.zip", zipOf(t, map[string]string{"SKILL.md": "---\nname: " + zipped + "\n---\n" + instructions}))
	c.ok("box_install_skill_zip", map[string]any{"file_key": key, "filename": "audit.zip"}, ctx1)

	// /metrics agrees with the audit log on what was executed.
	resp, err := http.Get("http://" + b.addr + "/metrics")
	require.NoError(t, err)
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(metrics), `boxd_rpc_requests_total{action="box_exec",error_class=""} 1`)
	b.stop()

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	for _, secret := range []string{token, envSecret, procSecret, cmd, procArg, instructions, content} {
		assert.NotContains(t, string(raw), secret, "the audit log must not contain %q", secret)
	}

	var records []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		records = append(records, m)
	}
	find := func(event string, match func(m map[string]any) bool) map[string]any {
		t.Helper()
		var found []map[string]any
		for _, m := range records {
			if m["event"] == event && (match == nil || match(m)) {
				found = append(found, m)
			}
		}
		require.Len(t, found, 1, "one %s record in\n%s", event, raw)
		return found[0]
	}
	details := func(m map[string]any) map[string]any { d, _ := m["details"].(map[string]any); return d }
	ns := tenancy.Namespace(instance, workspace)
	phys := physicalID(sid)
	tenant := func(m map[string]any, outcome string) {
		t.Helper()
		assert.NotEmpty(t, m["time"])
		assert.Equal(t, instance, m["instance"], m["event"])
		assert.Equal(t, workspace, m["workspace"], m["event"])
		assert.Equal(t, ns, m["namespace"], m["event"])
		assert.Equal(t, sid, m["session_id"], m["event"])
		assert.Equal(t, phys, m["physical_id"], m["event"])
		assert.Equal(t, outcome, m["outcome"], m["event"])
	}

	init := find("box_init", nil)
	assert.Equal(t, "ok", init["outcome"])
	assert.Equal(t, instance, init["instance"])
	assert.Contains(t, details(init)["sections"], "local")

	tenant(find("box_create_session", nil), "ok")
	created := find("session.create", nil)
	tenant(created, "ok")
	assert.Equal(t, "box_create_session", created["action"])
	assert.Equal(t, info["backend_session_id"], details(created)["backend_session_id"])

	exec := find("box_exec", nil)
	tenant(exec, "ok")
	d := details(exec)
	assert.Equal(t, sha(cmd+" \"$API_KEY\""), d["cmd_sha256"])
	assert.Equal(t, float64(0), d["exit_code"])
	assert.Equal(t, false, d["timed_out"])
	assert.Equal(t, "completed", d["status"])
	assert.Equal(t, r["duration_ms"], d["duration_ms"])
	assert.Equal(t, float64(1), d["env_count"])

	start := find("box_start_managed_process", nil)
	tenant(start, "ok")
	assert.Equal(t, "srv1", details(start)["process_id"])
	assert.Equal(t, sha("sh\x00-c\x00cat # "+procArg), details(start)["command_sha256"])
	assert.Equal(t, "running", details(start)["status"])
	stop := find("box_stop_managed_process", nil)
	tenant(stop, "ok")
	assert.Equal(t, "srv1", details(stop)["process_id"])
	exit := find("process.exit", nil)
	tenant(exit, "ok")
	assert.Equal(t, "srv1", details(exit)["process_id"])
	assert.Equal(t, true, details(exit)["stopped"])

	tenant(find("box_delete_session", func(m map[string]any) bool { return m["outcome"] == "ok" }), "ok")
	tenant(find("box_delete_session", func(m map[string]any) bool { return m["outcome"] != "ok" }), "BoxSessionNotFoundError")
	deleted := find("session.delete", nil)
	tenant(deleted, "ok")
	assert.Equal(t, "delete", details(deleted)["reason"])
	assert.Equal(t, "box_delete_session", deleted["action"])

	shutdown := find("box_shutdown", nil)
	assert.Equal(t, "ok", shutdown["outcome"])
	assert.Equal(t, instance, shutdown["instance"])
	assert.Equal(t, 1, countEvents(records, "box_exec"), "one exec, as /metrics says")

	skillRecord := func(event, outcome string) map[string]any {
		m := find(event, func(m map[string]any) bool { return m["outcome"] == outcome })
		assert.Equal(t, instance, m["instance"])
		assert.Equal(t, workspace, m["workspace"])
		assert.Equal(t, ns, m["namespace"])
		assert.Equal(t, skill, details(m)["skill"], event)
		return m
	}
	skillRecord("box_create_skill", "ok")
	skillRecord("box_create_skill", "BoxValidationError")
	w := skillRecord("box_write_skill_file", "ok")
	assert.Equal(t, "notes.txt", details(w)["path"])
	assert.Equal(t, float64(len(content)), details(w)["bytes_written"])
	skillRecord("box_delete_skill", "ok")
	inst := find("box_install_skill_zip", func(m map[string]any) bool { return m["outcome"] == "ok" })
	assert.Equal(t, "audit.zip", details(inst)["filename"])
	assert.Equal(t, []any{zipped}, details(inst)["installed"], "the installed skills are named")
}

func countEvents(records []map[string]any, event string) int {
	n := 0
	for _, m := range records {
		if m["event"] == event {
			n++
		}
	}
	return n
}
