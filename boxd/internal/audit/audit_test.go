package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

func lines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		out = append(out, m)
	}
	return out
}

func TestSessionEvents(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, func() string { return "instance-a" }, 10)
	l.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	tctx := tenancy.Context{Instance: "instance-a", Workspace: "workspace-a", Generation: 1}
	phys, err := tctx.Physical("person_1")
	require.NoError(t, err)
	ev := l.SessionEvents()
	ctx := WithScope(context.Background(), Scope{Action: "box_exec", Instance: "instance-a", Workspace: "workspace-a"})
	ev.SessionCreated(ctx, phys, session.Spec{Image: "img", Network: "off", Persistent: true}, "langbot-box-x", nil)
	ev.SessionCreated(ctx, phys, session.Spec{Image: "img"}, "", rpc.Errorf(rpc.BoxCapacityExceededError, "Box session capacity reached (1)"))
	// Without a request scope (TTL reaper), the workspace comes from what was learned.
	l.Learn(tctx)
	ev.SessionDropped(context.Background(), phys, "langbot-box-x", "ttl")
	ev.ProcessExited(phys, "srv1", -15, true)
	ev.SessionDropped(context.Background(), "not-namespaced", "c", "delete")

	got := lines(t, buf.Bytes())
	require.Len(t, got, 5)
	want := []map[string]any{
		{"time": "2026-01-02T03:04:05Z", "event": "session.create", "action": "box_exec", "outcome": "ok", "instance": "instance-a",
			"workspace": "workspace-a", "namespace": "ws-695136eeae1cb9b6af4a8226", "session_id": "person_1", "physical_id": phys,
			"details": map[string]any{"image": "img", "network": "off", "persistent": true, "read_only_rootfs": false, "cpus": 0.0,
				"memory_mb": 0.0, "pids_limit": 0.0, "extra_mounts": 0.0, "backend_session_id": "langbot-box-x", "generation": 1.0}},
		{"time": "2026-01-02T03:04:05Z", "event": "session.create", "action": "box_exec", "outcome": "BoxCapacityExceededError", "instance": "instance-a",
			"workspace": "workspace-a", "namespace": "ws-695136eeae1cb9b6af4a8226", "session_id": "person_1", "physical_id": phys,
			"details": map[string]any{"image": "img", "network": "", "persistent": false, "read_only_rootfs": false, "cpus": 0.0,
				"memory_mb": 0.0, "pids_limit": 0.0, "extra_mounts": 0.0, "generation": 1.0}},
		{"time": "2026-01-02T03:04:05Z", "event": "session.delete", "outcome": "ok", "instance": "instance-a",
			"workspace": "workspace-a", "namespace": "ws-695136eeae1cb9b6af4a8226", "session_id": "person_1", "physical_id": phys,
			"details": map[string]any{"reason": "ttl", "backend_session_id": "langbot-box-x", "generation": 1.0}},
		{"time": "2026-01-02T03:04:05Z", "event": "process.exit", "outcome": "ok", "instance": "instance-a",
			"workspace": "workspace-a", "namespace": "ws-695136eeae1cb9b6af4a8226", "session_id": "person_1", "physical_id": phys,
			"details": map[string]any{"process_id": "srv1", "exit_code": -15.0, "stopped": true, "generation": 1.0}},
		{"time": "2026-01-02T03:04:05Z", "event": "session.delete", "outcome": "ok", "instance": "instance-a",
			"session_id": "not-namespaced", "physical_id": "not-namespaced",
			"details": map[string]any{"reason": "delete", "backend_session_id": "c"}},
	}
	assert.Equal(t, want, got)
}

func TestLearnIsBounded(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, nil, 1)
	l.Learn(tenancy.Context{Instance: "i", Workspace: "a", Generation: 1})
	l.Learn(tenancy.Context{Instance: "i", Workspace: "b", Generation: 1})
	assert.Len(t, l.workspaces, 1)
	l.Log(Record{Event: "x", Outcome: "ok", Namespace: tenancy.Namespace("i", "b")})
	got := lines(t, buf.Bytes())
	require.Len(t, got, 1)
	assert.NotContains(t, got[0], "workspace")
}

func TestNilLoggerAndHelpers(t *testing.T) {
	var l *Logger
	l.Log(Record{Event: "x"})
	l.Learn(tenancy.Context{})
	assert.Equal(t, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Hash(""))
	assert.Equal(t, "ok", Outcome(""))
	assert.Equal(t, "BoxError", Outcome("BoxError"))
}

func TestOpenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	require.NoError(t, os.WriteFile(path, []byte("{\"event\":\"earlier\"}\n"), 0o600))
	f, err := OpenFile(path)
	require.NoError(t, err)
	New(f, nil, 1).Log(Record{Event: "later", Outcome: "ok"})
	require.NoError(t, f.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	got := lines(t, b)
	require.Len(t, got, 2, "appended, not truncated")
	assert.Equal(t, "later", got[1]["event"])

	fresh := filepath.Join(t.TempDir(), "new.log")
	f, err = OpenFile(fresh)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	st, err := os.Stat(fresh)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	_, err = OpenFile(filepath.Join(t.TempDir(), "missing", "x.log"))
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist))
	assert.Contains(t, err.Error(), "open audit log")
}
