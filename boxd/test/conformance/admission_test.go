//go:build integration

package conformance

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// grantData is a SandboxAdmissionGrant for workspace ws (expiring in ttl).
func grantData(ws string, gen, rev int, ttl time.Duration, mut func(m map[string]any)) map[string]any {
	m := map[string]any{"instance_uuid": instance, "workspace_uuid": ws, "execution_generation": gen,
		"entitlement_revision": rev, "expires_at": time.Now().UTC().Add(ttl).Format(time.RFC3339Nano),
		"max_sessions": 1, "max_managed_processes": 0}
	if mut != nil {
		mut(m)
	}
	return m
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

func TestAdmissionStandardMode(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, nil)
	cases := []struct {
		name   string
		action string
		data   map[string]any
		want   string
	}{
		{"valid grant", "box_upsert_sandbox_admission_grant", grantData(workspace, 1, 1, time.Minute, nil),
			"BoxAdmissionError: Sandbox admission enforcement is not enabled"},
		{"grant for another instance", "box_upsert_sandbox_admission_grant",
			grantData(workspace, 1, 1, time.Minute, func(m map[string]any) { m["instance_uuid"] = "instance_other" }),
			"PermissionError: Sandbox admission grant does not match the trusted instance"},
		{"invalid grant", "box_upsert_sandbox_admission_grant",
			grantData(workspace, 1, 1, time.Minute, func(m map[string]any) { m["plan"] = "pro" }),
			"BoxValidationError: 1 validation error for SandboxAdmissionGrant\nplan\n  Extra inputs are not permitted"},
		{"naive expiry", "box_upsert_sandbox_admission_grant",
			grantData(workspace, 1, 1, time.Minute, func(m map[string]any) { m["expires_at"] = "2026-08-21T10:05:00" }),
			"BoxValidationError: 1 validation error for SandboxAdmissionGrant\nexpires_at\n  Value error, expires_at must include a timezone"},
		{"valid revocation", "box_revoke_sandbox_admission_grant",
			map[string]any{"instance_uuid": instance, "workspace_uuid": workspace, "entitlement_revision": 1},
			"BoxAdmissionError: Sandbox admission enforcement is not enabled"},
		{"revocation for another instance", "box_revoke_sandbox_admission_grant",
			map[string]any{"instance_uuid": "instance_other", "workspace_uuid": workspace, "entitlement_revision": 1},
			"PermissionError: Sandbox admission revocation does not match the trusted instance"},
		{"boolean revision", "box_revoke_sandbox_admission_grant",
			map[string]any{"instance_uuid": instance, "workspace_uuid": workspace, "entitlement_revision": true},
			"BoxValidationError: 1 validation error for SandboxAdmissionRevocation\nentitlement_revision\n  Value error, entitlement_revision must be an integer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.call(tc.action, tc.data, nil)
			assert.Equal(t, 1, r.Code)
			assert.Equal(t, tc.want, r.Message)
		})
	}
	// Standard readiness and backend info are unchanged.
	code, ready := getJSON(t, "http://"+b.addr+"/readyz")
	assert.Equal(t, 200, code)
	assert.Equal(t, "standard", ready["mode"])
	assert.Equal(t, map[string]any{"name": backendName(), "available": true}, c.ok("box_health", map[string]any{}, nil))
}

func TestAdmissionGrantEnforced(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, nil)
	// A session made before enforcement is switched on; the first grant drops it.
	sid := uniq("before")
	container := c.ok("box_create_session", spec(sid, nil), ctx1)["backend_session_id"].(string)
	c.ok("box_init", map[string]any{"admission": map[string]any{"required": true}, "local": map[string]any{"host_root": root, "allowed_mount_roots": []string{root}}}, nil)

	// Readiness in the grant-enforced shape: Docker is not the required backend and boxd
	// proves no isolation, so not ready (503); what boxd can check is reported truly.
	code, ready := getJSON(t, "http://"+b.addr+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "grant_enforced", ready["mode"])
	assert.Equal(t, false, ready["ready"])
	assert.Equal(t, false, ready["unsafe_soft_storage_limits"])
	assert.Contains(t, ready, "resources")
	backend := ready["backend"].(map[string]any)
	assert.Equal(t, backendName(), backend["name"])
	assert.Equal(t, true, backend["available"])
	checks := ready["checks"].(map[string]any)
	require.Len(t, checks, 14)
	for name, want := range map[string]bool{"configuration": true, "required_backend": false, "workspace_mount": true,
		"backend_available": true, "namespace_isolation": false, "mount_isolation": false, "network_isolation": false,
		"hard_workspace_quota": false, "hard_skill_storage_quota": false, "bounded_ephemeral_storage": false,
		"inode_quota": false, "session_cap": true, "managed_process_cap": true} {
		assert.Equal(t, want, checks[name], name)
	}
	assert.IsType(t, true, checks["cgroup_v2"])
	assert.Contains(t, ready["error"], "requires the nsjail backend")

	info := c.ok("box_get_backend_info", map[string]any{}, nil)
	assert.Equal(t, backendName(), info["name"])
	assert.Equal(t, false, info["available"])
	assert.Equal(t, "grant_enforced", info["readiness"].(map[string]any)["mode"])
	h := c.call("box_health", map[string]any{}, nil)
	assert.Equal(t, "BoxReadinessError: managed sandbox isolation is not ready", h.Message)
	st := c.ok("box_status", map[string]any{}, ctx1)
	assert.Equal(t, false, st["backend"].(map[string]any)["available"])

	// Sandbox actions are refused before anything else (readiness first).
	for _, action := range []string{"box_exec", "box_create_session", "box_get_sessions", "box_delete_session"} {
		r := c.call(action, spec("global", nil), ctx1)
		assert.True(t, strings.HasPrefix(r.Message, "BoxReadinessError: Managed sandbox isolation is not ready (failed checks: required_backend, "), "%s: %s", action, r.Message)
	}

	// Grants and revocations, rule by rule.
	ws := "workspace-grants"
	steps := []struct {
		name string
		act  string
		data map[string]any
		want string // "" = success
	}{
		{"expired", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 1, -time.Second, nil), "BoxAdmissionError: Cannot install an expired sandbox admission grant"},
		{"too long", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 1, time.Hour, nil), "BoxAdmissionError: Sandbox admission grant lifetime exceeds the configured maximum"},
		{"session cap", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 1, time.Minute, func(m map[string]any) { m["max_sessions"] = 2 }), "BoxAdmissionError: Sandbox admission grant exceeds the session cap"},
		{"process cap", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 1, time.Minute, func(m map[string]any) { m["max_managed_processes"] = 1 }), "BoxAdmissionError: Sandbox admission grant exceeds the managed-process cap"},
		{"install", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 5, time.Minute, nil), ""},
		{"stale revision", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 4, time.Minute, nil), "BoxAdmissionError: Sandbox admission grant revision is stale"},
		{"limits changed", "box_upsert_sandbox_admission_grant", grantData(ws, 1, 5, time.Minute, func(m map[string]any) { m["max_sessions"] = 0 }), "BoxAdmissionError: Sandbox admission limits changed without a new entitlement revision"},
		{"new generation", "box_upsert_sandbox_admission_grant", grantData(ws, 3, 6, time.Minute, nil), ""},
		{"stale generation", "box_upsert_sandbox_admission_grant", grantData(ws, 2, 7, time.Minute, nil), "BoxAdmissionError: Sandbox admission execution generation is stale"},
		{"stale revocation", "box_revoke_sandbox_admission_grant", map[string]any{"instance_uuid": instance, "workspace_uuid": ws, "entitlement_revision": 5}, "BoxAdmissionError: Sandbox admission revocation is stale"},
		{"revoke", "box_revoke_sandbox_admission_grant", map[string]any{"instance_uuid": instance, "workspace_uuid": ws, "entitlement_revision": 8}, ""},
		{"revoked revision", "box_upsert_sandbox_admission_grant", grantData(ws, 3, 8, time.Minute, nil), "BoxAdmissionError: Sandbox admission grant revision was revoked"},
		{"after revocation", "box_upsert_sandbox_admission_grant", grantData(ws, 3, 9, time.Minute, nil), ""},
	}
	for _, s := range steps {
		r := c.call(s.act, s.data, nil)
		if s.want != "" {
			assert.Equal(t, s.want, r.Message, s.name)
			continue
		}
		require.Equal(t, 0, r.Code, "%s: %s", s.name, r.Message)
	}
	// The receipt echoes the grant in force, expires_at in isoformat (+00:00).
	exp := time.Now().UTC().Add(time.Minute).Truncate(time.Second)
	g := grantData(ws, 3, 10, 0, func(m map[string]any) { m["expires_at"] = exp.Format(time.RFC3339) })
	receipt := c.ok("box_upsert_sandbox_admission_grant", g, nil)
	assert.Equal(t, map[string]any{"installed": true, "workspace_uuid": ws, "execution_generation": float64(3), "entitlement_revision": float64(10),
		"max_sessions": float64(1), "max_managed_processes": float64(0), "expires_at": exp.Format("2006-01-02T15:04:05") + "+00:00"}, receipt)
	// A shorter duplicate renewal keeps the grant in force.
	shorter := grantData(ws, 3, 10, 30*time.Second, nil)
	assert.Equal(t, receipt["expires_at"], c.ok("box_upsert_sandbox_admission_grant", shorter, nil)["expires_at"])
	rv := c.ok("box_revoke_sandbox_admission_grant", map[string]any{"instance_uuid": instance, "workspace_uuid": ws, "entitlement_revision": 11}, nil)
	assert.Equal(t, map[string]any{"revoked": true, "workspace_uuid": ws, "entitlement_revision": float64(11)}, rv)

	// The upsert observed the generation fence: generation 1 of that workspace is stale now.
	r := c.call("box_status", map[string]any{}, map[string]any{"instance_uuid": instance, "workspace_uuid": ws, "placement_generation": 1})
	assert.Equal(t, "PermissionError: Stale Box placement generation", r.Message)

	// The first grant of workspace-a drops the session created before enforcement.
	c.ok("box_upsert_sandbox_admission_grant", grantData(workspace, 1, 1, time.Minute, nil), nil)
	_, health := getJSON(t, "http://"+b.addr+"/healthz")
	assert.Equal(t, float64(0), health["resources"].(map[string]any)["sessions"])
	_, err := dockerClient(t).ContainerInspect(t.Context(), container)
	assert.Error(t, err, "the container is gone")

	// Relays are refused with the readiness error (handshake step 5).
	hdr := headers()
	hdr.Set("X-LangBot-Workspace-Id", workspace)
	hdr.Set("X-LangBot-Placement-Generation", "1")
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/v1/sessions/"+physicalID("global")+"/managed-process/p/ws", hdr)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	resp.Body.Close()
	assert.Equal(t, "BoxReadinessError", body.Error.Code)
	assert.True(t, strings.HasPrefix(body.Error.Message, "Managed sandbox isolation is not ready (failed checks: "), body.Error.Message)

	// Record capacity (limits.max_admission_records) bounds new workspaces.
	c.ok("box_init", map[string]any{"limits": map[string]any{"max_admission_records": 2}}, nil)
	r = c.call("box_upsert_sandbox_admission_grant", grantData("workspace-third", 1, 1, time.Minute, nil), nil)
	assert.Equal(t, "BoxAdmissionError: Sandbox admission record capacity reached; refusing an unbounded Workspace fence allocation", r.Message)

	// Once required, enforcement cannot be switched off: the attempt is a configuration error.
	c.ok("box_init", map[string]any{"admission": map[string]any{"required": false}}, nil)
	code, ready = getJSON(t, "http://"+b.addr+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "grant_enforced", ready["mode"])
	assert.Equal(t, false, ready["checks"].(map[string]any)["configuration"])
	assert.Equal(t, "Sandbox admission enforcement cannot be disabled without restarting the Box Runtime", ready["error"])
	r = c.call("box_upsert_sandbox_admission_grant", grantData(workspace, 1, 2, time.Minute, nil), nil)
	assert.Equal(t, "BoxReadinessError: Invalid sandbox admission configuration: Sandbox admission enforcement cannot be disabled without restarting the Box Runtime", r.Message)
}

func TestAdmissionFailClosed(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, map[string]any{"admission": map[string]any{"required": false, "tier": "free"}})
	code, ready := getJSON(t, "http://"+b.addr+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "grant_enforced", ready["mode"])
	assert.Equal(t, false, ready["checks"].(map[string]any)["configuration"])
	want := "1 validation error for SandboxAdmissionPolicy\ntier\n  Extra inputs are not permitted"
	assert.Equal(t, want, ready["error"])
	r := c.call("box_upsert_sandbox_admission_grant", grantData(workspace, 1, 1, time.Minute, nil), nil)
	assert.Equal(t, "BoxReadinessError: Invalid sandbox admission configuration: "+want, r.Message)
	r = c.call("box_exec", spec("global", nil), ctx1)
	assert.True(t, strings.HasPrefix(r.Message, "BoxReadinessError: Managed sandbox isolation is not ready (failed checks: configuration, required_backend"), r.Message)
}
