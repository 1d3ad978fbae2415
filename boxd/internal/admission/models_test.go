package admission

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
)

func grantJSON(t *testing.T, mut func(m map[string]any)) json.RawMessage {
	t.Helper()
	m := map[string]any{"instance_uuid": "instance-a", "workspace_uuid": "workspace-a", "execution_generation": 1,
		"entitlement_revision": 3, "expires_at": "2026-08-21T10:05:00+00:00", "max_sessions": 1, "max_managed_processes": 0}
	if mut != nil {
		mut(m)
	}
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func TestParseGrant(t *testing.T) {
	cases := []struct {
		name string
		mut  func(m map[string]any)
		raw  string
		want string // "" = valid
	}{
		{name: "valid"},
		{name: "ids trimmed", mut: func(m map[string]any) { m["workspace_uuid"] = "  workspace-a " }},
		{name: "missing instance", mut: func(m map[string]any) { delete(m, "instance_uuid") },
			want: "1 validation error for SandboxAdmissionGrant\ninstance_uuid\n  Field required"},
		{name: "blank workspace", mut: func(m map[string]any) { m["workspace_uuid"] = "  " },
			want: "1 validation error for SandboxAdmissionGrant\nworkspace_uuid\n  Value error, must not be empty"},
		{name: "numeric instance", mut: func(m map[string]any) { m["instance_uuid"] = 7 },
			want: "1 validation error for SandboxAdmissionGrant\ninstance_uuid\n  Input should be a valid string"},
		{name: "bool generation", mut: func(m map[string]any) { m["execution_generation"] = true },
			want: "1 validation error for SandboxAdmissionGrant\nexecution_generation\n  Value error, must be an integer"},
		{name: "float revision", raw: `{"instance_uuid":"i","workspace_uuid":"w","execution_generation":1,"entitlement_revision":3.0,"expires_at":"2026-08-21T10:05:00Z","max_sessions":1,"max_managed_processes":0}`,
			want: "1 validation error for SandboxAdmissionGrant\nentitlement_revision\n  Value error, must be an integer"},
		{name: "string limit", mut: func(m map[string]any) { m["max_sessions"] = "1" },
			want: "1 validation error for SandboxAdmissionGrant\nmax_sessions\n  Value error, must be an integer"},
		{name: "generation zero", mut: func(m map[string]any) { m["execution_generation"] = 0 },
			want: "1 validation error for SandboxAdmissionGrant\nexecution_generation\n  Value error, must be greater than or equal to 1"},
		{name: "negative processes", mut: func(m map[string]any) { m["max_managed_processes"] = -1 },
			want: "1 validation error for SandboxAdmissionGrant\nmax_managed_processes\n  Value error, must be greater than or equal to 0"},
		{name: "naive expiry", mut: func(m map[string]any) { m["expires_at"] = "2026-08-21T10:05:00" },
			want: "1 validation error for SandboxAdmissionGrant\nexpires_at\n  Value error, expires_at must include a timezone"},
		{name: "garbage expiry", mut: func(m map[string]any) { m["expires_at"] = "soon" },
			want: "1 validation error for SandboxAdmissionGrant\nexpires_at\n  Input should be a valid datetime, invalid datetime format"},
		{name: "extra key", mut: func(m map[string]any) { m["plan"] = "pro" },
			want: "1 validation error for SandboxAdmissionGrant\nplan\n  Extra inputs are not permitted"},
		{name: "two errors", mut: func(m map[string]any) { m["max_sessions"] = -1; m["execution_generation"] = 0 },
			want: "2 validation errors for SandboxAdmissionGrant\nexecution_generation\n  Value error, must be greater than or equal to 1\nmax_sessions\n  Value error, must be greater than or equal to 0"},
		{name: "not an object", raw: `[1]`,
			want: "1 validation error for SandboxAdmissionGrant\n  Input should be a valid dictionary or instance of SandboxAdmissionGrant"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := json.RawMessage(tc.raw)
			if tc.raw == "" {
				raw = grantJSON(t, tc.mut)
			}
			g, err := ParseGrant(raw)
			if tc.want != "" {
				require.Error(t, err)
				assert.Equal(t, tc.want, err.Error())
				_, rpcErr := ParseGrantRPC(raw)
				assert.Equal(t, "BoxValidationError: "+tc.want, rpcErr.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "workspace-a", g.Workspace)
			assert.Equal(t, Key{"instance-a", "workspace-a"}, g.Key())
			assert.Equal(t, time.Date(2026, 8, 21, 10, 5, 0, 0, time.UTC), g.ExpiresAt)
		})
	}
}

func TestParseDatetime(t *testing.T) {
	want := time.Date(2026, 8, 21, 10, 5, 0, 123456000, time.UTC)
	cases := []struct {
		in   any
		want time.Time
	}{
		{"2026-08-21T10:05:00.123456+00:00", want},
		{"2026-08-21T10:05:00.123456Z", want},
		{"2026-08-21 12:05:00.123456+02:00", want},
		{"2026-08-21T10:05:00.1234569Z", want},
		{json.Number("1787306700"), time.Date(2026, 8, 21, 10, 5, 0, 0, time.UTC)},
		{json.Number("1787306700000"), time.Date(2026, 8, 21, 10, 5, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		got, msg := parseDatetime(tc.in)
		assert.Empty(t, msg, "%v", tc.in)
		assert.True(t, tc.want.Equal(got), "%v: got %v", tc.in, got)
	}
}

func TestParseRevocation(t *testing.T) {
	cases := []struct {
		raw, want string
	}{
		{`{"instance_uuid":"i","workspace_uuid":"w","entitlement_revision":4}`, ""},
		{`{"instance_uuid":"i","workspace_uuid":"w","entitlement_revision":true}`,
			"1 validation error for SandboxAdmissionRevocation\nentitlement_revision\n  Value error, entitlement_revision must be an integer"},
		{`{"instance_uuid":"i","workspace_uuid":"w","entitlement_revision":0}`,
			"1 validation error for SandboxAdmissionRevocation\nentitlement_revision\n  Value error, entitlement_revision must be greater than or equal to 1"},
		{`{"instance_uuid":"i","workspace_uuid":"w","entitlement_revision":1,"x":1}`,
			"1 validation error for SandboxAdmissionRevocation\nx\n  Extra inputs are not permitted"},
		{`{"workspace_uuid":"w","entitlement_revision":1}`,
			"1 validation error for SandboxAdmissionRevocation\ninstance_uuid\n  Field required"},
	}
	for _, tc := range cases {
		r, err := ParseRevocationRPC(json.RawMessage(tc.raw))
		if tc.want == "" {
			require.NoError(t, err, tc.raw)
			assert.Equal(t, Revocation{Instance: "i", Workspace: "w", EntitlementRevision: 4}, r)
			continue
		}
		require.Error(t, err, tc.raw)
		assert.Equal(t, "BoxValidationError: "+tc.want, err.Error())
	}
}

func TestIsoFormatAndReceipt(t *testing.T) {
	assert.Equal(t, "2026-01-02T03:04:05+00:00", pyval.IsoFormat(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
	assert.Equal(t, "2026-01-02T03:04:05.123456+00:00", pyval.IsoFormat(time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)))
	g := Grant{Instance: "i", Workspace: "w", ExecutionGeneration: 2, EntitlementRevision: 3, ExpiresAt: time.Date(2026, 8, 21, 10, 5, 0, 0, time.UTC), MaxSessions: 1}
	assert.Equal(t, map[string]any{"installed": true, "workspace_uuid": "w", "execution_generation": 2, "entitlement_revision": 3,
		"max_sessions": 1, "max_managed_processes": 0, "expires_at": "2026-08-21T10:05:00+00:00"}, g.Receipt())
}

func TestParsePolicy(t *testing.T) {
	decode := func(t *testing.T, s string) any {
		var v any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&v))
		return v
	}
	cases := []struct {
		name, raw, want string
		check           func(t *testing.T, p Policy)
	}{
		{name: "empty is default", raw: `{}`, check: func(t *testing.T, p Policy) { assert.Equal(t, DefaultPolicy(), p) }},
		{name: "langbot template", raw: `{"required": false, "logical_session_id": "global", "required_backend": "nsjail", "max_sessions": 1, "max_managed_processes": 0, "max_grant_ttl_sec": 300, "max_timeout_sec": 120, "cpus": 1.0, "memory_mb": 512, "pids_limit": 128, "read_only_rootfs": true, "workspace_quota_mb": 0, "readiness_cache_sec": 15}`,
			check: func(t *testing.T, p Policy) { assert.Equal(t, DefaultPolicy(), p) }},
		{name: "required lax string", raw: `{"required": "yes", "cpus": 2, "max_timeout_sec": 60}`, check: func(t *testing.T, p Policy) {
			assert.True(t, p.Required)
			assert.Equal(t, 2.0, p.CPUs)
			assert.Equal(t, 60, p.MaxTimeoutSec)
		}},
		{name: "unknown key", raw: `{"required": true, "tier": "pro"}`, want: "1 validation error for SandboxAdmissionPolicy\ntier\n  Extra inputs are not permitted"},
		{name: "not an object", raw: `"on"`, want: "1 validation error for SandboxAdmissionPolicy\n  Input should be a valid dictionary or instance of SandboxAdmissionPolicy"},
		{name: "required not bool", raw: `{"required": "maybe"}`, want: "1 validation error for SandboxAdmissionPolicy\nrequired\n  Input should be a valid boolean"},
		{name: "session id literal", raw: `{"logical_session_id": "main"}`, want: "1 validation error for SandboxAdmissionPolicy\nlogical_session_id\n  Input should be 'global'"},
		{name: "backend literal", raw: `{"required_backend": "docker"}`, want: "1 validation error for SandboxAdmissionPolicy\nrequired_backend\n  Input should be 'nsjail'"},
		{name: "max sessions range", raw: `{"max_sessions": 2}`, want: "1 validation error for SandboxAdmissionPolicy\nmax_sessions\n  Value error, max_sessions must be between 0 and 1"},
		{name: "max sessions string", raw: `{"max_sessions": "1"}`, want: "1 validation error for SandboxAdmissionPolicy\nmax_sessions\n  Value error, must be an integer"},
		{name: "processes must be zero", raw: `{"max_managed_processes": 1}`, want: "1 validation error for SandboxAdmissionPolicy\nmax_managed_processes\n  Value error, max_managed_processes must be 0"},
		{name: "ttl positive", raw: `{"max_grant_ttl_sec": 0}`, want: "1 validation error for SandboxAdmissionPolicy\nmax_grant_ttl_sec\n  Value error, must be greater than 0"},
		{name: "timeout bool", raw: `{"max_timeout_sec": true}`, want: "1 validation error for SandboxAdmissionPolicy\nmax_timeout_sec\n  Value error, must be an integer"},
		{name: "cpus bool", raw: `{"cpus": true}`, want: "1 validation error for SandboxAdmissionPolicy\ncpus\n  Value error, cpus must be a number"},
		{name: "cpus string", raw: `{"cpus": "1.0"}`, want: "1 validation error for SandboxAdmissionPolicy\ncpus\n  Value error, cpus must be a number"},
		{name: "cpus zero", raw: `{"cpus": 0}`, want: "1 validation error for SandboxAdmissionPolicy\ncpus\n  Value error, cpus must be greater than 0"},
		{name: "memory", raw: `{"memory_mb": 16}`, want: "1 validation error for SandboxAdmissionPolicy\nmemory_mb\n  Value error, memory_mb must be at least 32"},
		{name: "pids", raw: `{"pids_limit": -1}`, want: "1 validation error for SandboxAdmissionPolicy\npids_limit\n  Value error, must be greater than 0"},
		{name: "quota", raw: `{"workspace_quota_mb": -1}`, want: "1 validation error for SandboxAdmissionPolicy\nworkspace_quota_mb\n  Value error, must be greater than or equal to 0"},
		{name: "cache float", raw: `{"readiness_cache_sec": 1.5}`, want: "1 validation error for SandboxAdmissionPolicy\nreadiness_cache_sec\n  Value error, must be an integer"},
		{name: "read only rootfs", raw: `{"read_only_rootfs": []}`, want: "1 validation error for SandboxAdmissionPolicy\nread_only_rootfs\n  Input should be a valid boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy(decode(t, tc.raw))
			if tc.want != "" {
				require.Error(t, err)
				assert.Equal(t, tc.want, err.Error())
				return
			}
			require.NoError(t, err)
			tc.check(t, p)
		})
	}
}
