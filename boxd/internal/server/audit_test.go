package server

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/skills"
)

func TestAuditDetails(t *testing.T) {
	cases := []struct {
		action    string
		req, resp map[string]any
		want      map[string]any
	}{
		{"box_exec", map[string]any{"cmd": "echo hi", "env": map[string]any{"K": "secret"}, "timeout_sec": 5},
			map[string]any{"status": "timed_out", "exit_code": nil, "duration_ms": 5000, "stdout": "x"},
			map[string]any{"cmd_sha256": sha256Hex("echo hi"), "env_count": 1, "timeout_sec": 5,
				"status": "timed_out", "exit_code": nil, "duration_ms": 5000, "timed_out": true}},
		{"box_exec", map[string]any{"cmd": "false"}, nil, map[string]any{"cmd_sha256": sha256Hex("false"), "env_count": 0}},
		{"box_start_managed_process", map[string]any{"session_id": "s", "spec": map[string]any{"command": "npx", "args": []any{"-y", "srv"}, "env": map[string]any{"TOKEN": "v"}}},
			map[string]any{"status": "running"},
			map[string]any{"process_id": "default", "command_sha256": sha256Hex("npx\x00-y\x00srv"), "env_count": 1, "status": "running"}},
		{"box_stop_managed_process", map[string]any{"session_id": "s", "process_id": "p1"}, nil, map[string]any{"process_id": "p1"}},
		{"box_create_skill", map[string]any{"skill": map[string]any{"name": "pdf", "instructions": "secret"}}, map[string]any{"skill": map[string]any{"instructions": "secret"}},
			map[string]any{"skill": "pdf"}},
		{"box_update_skill", map[string]any{"name": "pdf", "skill": map[string]any{"instructions": "secret"}}, nil, map[string]any{"skill": "pdf"}},
		{"box_write_skill_file", map[string]any{"name": "pdf", "path": "a/b.md", "content": "secret"}, map[string]any{"bytes_written": 6},
			map[string]any{"skill": "pdf", "path": "a/b.md", "bytes_written": 6}},
		{"box_install_skill_zip", map[string]any{"file_key": "k", "filename": "demo.zip"}, map[string]any{"skills": []any{map[string]any{"name": "demo", "instructions": "secret"}}},
			map[string]any{"filename": "demo.zip", "installed": []any{"demo"}}},
		{"box_upsert_sandbox_admission_grant", map[string]any{"instance_uuid": "i", "workspace_uuid": "w", "execution_generation": 1, "entitlement_revision": 2,
			"expires_at": "2026-08-21T10:05:00+00:00", "max_sessions": 1, "max_managed_processes": 0, "extra": "x"}, nil,
			map[string]any{"execution_generation": 1, "entitlement_revision": 2, "expires_at": "2026-08-21T10:05:00+00:00", "max_sessions": 1, "max_managed_processes": 0}},
		{"box_revoke_sandbox_admission_grant", map[string]any{"entitlement_revision": 3}, nil, map[string]any{"entitlement_revision": 3}},
	}
	for _, tc := range cases {
		fn := auditedActions[tc.action]
		if !assert.NotNil(t, fn, tc.action) {
			continue
		}
		assert.Equal(t, tc.want, fn(tc.req, tc.resp), tc.action)
	}
	for _, name := range []string{"box_init", "box_shutdown", "box_create_session", "box_delete_session", "box_delete_skill"} {
		_, ok := auditedActions[name]
		assert.True(t, ok, name)
	}
	for _, name := range []string{"box_get_session", "box_list_skills", "box_read_skill_file", "__ping", "box_status"} {
		_, ok := auditedActions[name]
		assert.False(t, ok, "%s changes nothing", name)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestPlainResult(t *testing.T) {
	exec := map[string]any{"status": "completed", "exit_code": 0, "stdout": "x"}
	assert.Equal(t, exec, plainResult(exec), "plain maps are used as they are")
	installed := plainResult(map[string]any{"skills": []skills.Skill{{Name: "demo", Instructions: "secret"}}})
	list, ok := installed["skills"].([]any)
	if assert.True(t, ok, "typed values are decoded as JSON") && assert.Len(t, list, 1) {
		assert.Equal(t, "demo", list[0].(map[string]any)["name"])
	}
	assert.Equal(t, float64(6), plainResult(&skills.WriteResult{BytesWritten: 6})["bytes_written"])
	assert.Equal(t, []any{"demo"}, skillDetails(map[string]any{"filename": "d.zip"}, installed)["installed"])
}
