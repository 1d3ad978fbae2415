//go:build integration

package conformance

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
)

func TestHTTPSurfaceAndAuth(t *testing.T) {
	b := startBoxd(t)
	resp, err := http.Get("http://" + b.addr + "/healthz")
	require.NoError(t, err)
	var health map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&health))
	resp.Body.Close()
	assert.Equal(t, true, health["live"])
	assert.Contains(t, health["resources"], "sessions")

	resp, err = http.Get("http://" + b.addr + "/readyz")
	require.NoError(t, err)
	var ready map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ready))
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, map[string]any{"name": backendName(), "available": true}, ready["backend"])

	cases := []struct {
		name string
		mut  func(h http.Header)
	}{
		{"no token", func(h http.Header) { h.Del("X-LangBot-Box-Control-Token") }},
		{"wrong token", func(h http.Header) { h.Set("X-LangBot-Box-Control-Token", strings.Repeat("x", 40)) }},
		{"no instance", func(h http.Header) { h.Del("X-LangBot-Instance-Id") }},
		{"bad instance", func(h http.Header) { h.Set("X-LangBot-Instance-Id", "-bad id") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := headers()
			tc.mut(h)
			_, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", h)
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		})
	}
	// The first authenticated connection pins the instance; another instance is refused.
	dial(t, b).ok("__ping", map[string]any{}, nil)
	h := headers()
	h.Set("X-LangBot-Instance-Id", "instance_other")
	_, resp, err = websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", h)
	require.Error(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
}

func TestEnvelopeAndErrors(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, nil)
	cases := []struct {
		action string
		data   any
		ctx    map[string]any
		prefix string
	}{
		{"box_nope", map[string]any{}, nil, "ValueError: Action box_nope not found"},
		{"__heartbeat", map[string]any{}, nil, "ValueError: Action __heartbeat not found"},
		{"box_exec", spec("s", nil), nil, "PermissionError: Box tenant action requires a trusted Workspace context"},
		{"box_exec", spec("s", nil), map[string]any{"instance_uuid": "instance_x", "workspace_uuid": "w"}, "PermissionError: Box action context does not match the trusted instance"},
		{"box_exec", spec("s", nil), map[string]any{"instance_uuid": instance, "workspace_uuid": "w", "bogus": 1}, "ValidationError: "},
		{"box_exec", spec("s", map[string]any{"cmd": "  "}), ctx1, "BoxValidationError: cmd must not be empty"},
		{"box_exec", spec("s", map[string]any{"workdir": "rel"}), ctx1, "BoxValidationError: "},
		{"box_exec", spec("s", map[string]any{"memory_mb": 8}), ctx1, "BoxValidationError: "},
		{"box_exec", spec("!!!", nil), ctx1, "ValueError: Box session_id must contain a valid character"},
		{"box_get_session", map[string]any{}, ctx1, "KeyError: 'session_id'"},
		{"box_get_session", map[string]any{"session_id": "missing"}, ctx1, "BoxSessionNotFoundError: session ws-"},
		{"box_delete_session", map[string]any{"session_id": "missing"}, ctx1, "BoxSessionNotFoundError: session ws-"},
		{"box_init", map[string]any{"limits": map[string]any{"max_sessions": "5"}}, nil, "ValueError: box.limits.max_sessions must be an integer"},
		{"box_upsert_sandbox_admission_grant", map[string]any{}, nil, "BoxValidationError: 7 validation errors for SandboxAdmissionGrant\ninstance_uuid\n  Field required"},
		{"box_upsert_sandbox_admission_grant", grantData(workspace, 1, 1, time.Minute, nil), nil, "BoxAdmissionError: Sandbox admission enforcement is not enabled"},
		{"box_start_managed_process", map[string]any{"session_id": "missing", "spec": map[string]any{"command": "cat"}}, ctx1, "BoxSessionNotFoundError: "},
		{"__file_chunk", map[string]any{"file_key": "../x", "chunk_base64": "", "chunk_index": 0, "chunk_amount": 1}, nil, "ValueError: Invalid file transfer key"},
		{"__file_chunk", map[string]any{"file_key": "k", "chunk_base64": "aGk=", "chunk_index": 2, "chunk_amount": 1}, nil, "ValueError: Invalid file chunk position"},
		{"box_verify_shared_workspace", map[string]any{"marker_name": "x"}, nil, "BoxReadinessError: Invalid Box shared Workspace probe basename"},
	}
	for _, tc := range cases {
		r := c.call(tc.action, tc.data, tc.ctx)
		assert.Equal(t, 1, r.Code, "%s %s", tc.action, asJSON(tc.data))
		assert.True(t, strings.HasPrefix(r.Message, tc.prefix), "%s: got %q want prefix %q", tc.action, r.Message, tc.prefix)
		assert.Equal(t, map[string]any{}, r.Data)
	}
	c.ok("__file_chunk", map[string]any{"file_key": "abc.zip", "chunk_base64": "aGk=", "chunk_index": 0, "chunk_amount": 1, "file_length": 2, "chunk_size": 2}, nil)
	info := c.ok("box_get_backend_info", map[string]any{}, nil)
	assert.Equal(t, map[string]any{"name": backendName(), "available": true}, info)
	st := c.ok("box_status", map[string]any{}, ctx1)
	assert.Equal(t, float64(300), st["session_ttl_sec"])
}

func TestExecThroughWorkspace(t *testing.T) {
	for _, p := range execPaths() {
		t.Run(p.name, func(t *testing.T) { testExecThroughWorkspace(t, p) })
	}
}

func testExecThroughWorkspace(t *testing.T, p execPath) {
	b := startBoxd(t)
	c := dial(t, b)
	root := c.init(t, p.boxInit(nil))
	ws := filepath.Join(root, "default", "tenants", "t1")
	sid := uniq("person")
	base := map[string]any{"host_path": ws, "host_path_mode": "rw", "mount_path": "/workspace"}
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return spec(sid, m)
	}
	r := c.ok("box_exec", with(map[string]any{"cmd": "echo hello > note.txt && cat note.txt && echo err >&2"}), ctx1)
	assert.Equal(t, sid, r["session_id"], "the logical id comes back")
	assert.Equal(t, backendName(), r["backend_name"])
	assert.Equal(t, "completed", r["status"])
	assert.Equal(t, float64(0), r["exit_code"])
	assert.Equal(t, "hello", r["stdout"])
	assert.Equal(t, "err", r["stderr"])
	b2, err := os.ReadFile(filepath.Join(ws, "note.txt"))
	require.NoError(t, err, "the file written in the sandbox is on the host")
	assert.Equal(t, "hello\n", string(b2))

	r = c.ok("box_exec", with(map[string]any{"cmd": "exit 7"}), ctx1)
	assert.Equal(t, float64(7), r["exit_code"])

	r = c.ok("box_exec", with(map[string]any{"cmd": `printf '%s|%s' "$A" "$B"; pwd`, "env": map[string]any{"A": "x y", "B": "it's"}, "workdir": "/workspace/sub dir"}), ctx1)
	assert.Equal(t, "x y|it's/workspace/sub dir", r["stdout"])
	// A workdir that exists as a file fails in mkdir, with its status and message.
	c.ok("box_exec", with(map[string]any{"cmd": "touch /workspace/afile"}), ctx1)
	r = c.ok("box_exec", with(map[string]any{"cmd": "echo never", "workdir": "/workspace/afile"}), ctx1)
	assert.Equal(t, float64(1), r["exit_code"])
	assert.Equal(t, "", r["stdout"])
	assert.Contains(t, r["stderr"], "/workspace/afile")

	r = c.ok("box_exec", with(map[string]any{"cmd": "head -c 1100000 /dev/zero | tr '\\0' a"}), ctx1)
	out := r["stdout"].(string)
	assert.True(t, strings.HasSuffix(out, "\n... [raw output clipped at 1048576 bytes, 51424 bytes discarded]"), out[len(out)-80:])

	r = c.ok("box_exec", with(map[string]any{"cmd": "touch /etc/x"}), ctx1)
	assert.NotEqual(t, float64(0), r["exit_code"], "the root file system is read-only")

	r = c.ok("box_exec", with(map[string]any{"cmd": parentCmdline}), ctx1)
	p.assertRanThrough(t, r["stdout"])

	info := c.ok("box_get_session", map[string]any{"session_id": sid}, ctx1)
	assert.Equal(t, sid, info["session_id"])
	name := info["backend_session_id"].(string)
	assert.True(t, strings.HasPrefix(name, "langbot-box-ws-"), name)
	ins, ok := inspectSandbox(t, name)
	require.True(t, ok, "sandbox %s exists", name)
	assert.Equal(t, "true", ins.Labels["langbot.box"])
	assert.True(t, ins.NetworkOff, "network off")
	assert.True(t, ins.CapDropAll, "every capability dropped")
	assert.Equal(t, int64(512)<<20, ins.MemoryBytes)
	assert.True(t, ins.ReadOnlyRoot)

	// The same id with another memory size conflicts (§8.1), naming the existing value.
	r2 := c.call("box_create_session", with(map[string]any{"memory_mb": 256}), ctx1)
	assert.Contains(t, r2.Message, "BoxSessionConflictError: Box session ws-")
	assert.Contains(t, r2.Message, "already exists with memory_mb=512")

	// A timeout is a result, and drops the session.
	r = c.ok("box_exec", with(map[string]any{"cmd": "echo started; sleep 30", "timeout_sec": 1}), ctx1)
	assert.Equal(t, "timed_out", r["status"])
	assert.Nil(t, r["exit_code"])
	assert.Equal(t, "started", r["stdout"])
	assert.Equal(t, "Command timed out after 1 seconds.", r["stderr"])
	gone := c.call("box_get_session", map[string]any{"session_id": sid}, ctx1)
	assert.True(t, strings.HasPrefix(gone.Message, "BoxSessionNotFoundError: "), gone.Message)

	c.ok("box_exec", with(nil), ctx1)
	del := c.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
	assert.Equal(t, sid, del["deleted"])
	_, exists := inspectSandbox(t, name)
	assert.False(t, exists, "the sandbox is removed")
}

func TestBlockedMountAndCapacity(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, map[string]any{"limits": map[string]any{"max_sessions": 1}})
	r := c.call("box_exec", spec(uniq("a"), map[string]any{"host_path": "/etc", "mount_path": "/workspace"}), ctx1)
	assert.Equal(t, "BoxValidationError: host_path /etc is blocked for security", r.Message)
	r = c.call("box_exec", spec(uniq("b"), map[string]any{"extra_mounts": []any{map[string]any{"host_path": "/", "mount_path": "/host"}}}), ctx1)
	assert.Contains(t, r.Message, "BoxValidationError: host_path / is blocked for security")

	c.ok("box_create_session", spec(uniq("one"), nil), ctx1)
	r = c.call("box_create_session", spec(uniq("two"), nil), ctx1)
	assert.Equal(t, "BoxCapacityExceededError: Box session capacity reached (1)", r.Message)
	c.ok("box_shutdown", map[string]any{}, nil)
	c.ok("box_create_session", spec(uniq("three"), nil), ctx1)
	list := c.ok("box_get_sessions", map[string]any{}, ctx1)
	assert.Len(t, list["sessions"], 1)

	// /metrics, /healthz and box_status agree after this workload.
	resp, err := http.Get("http://" + b.addr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	text := string(body)
	assert.Contains(t, text, `boxd_sessions{backend="`+backendName()+`"} 1`)
	assert.Contains(t, text, `boxd_capacity_rejections_total{kind="sessions"} 1`)
	assert.Contains(t, text, `boxd_rpc_requests_total{action="box_exec",error_class="BoxValidationError"} 2`)
	assert.Contains(t, text, `boxd_rpc_requests_total{action="box_create_session",error_class="BoxCapacityExceededError"} 1`)
	resp, err = http.Get("http://" + b.addr + "/healthz")
	require.NoError(t, err)
	var health struct {
		Resources struct {
			Sessions int `json:"sessions"`
		} `json:"resources"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&health))
	resp.Body.Close()
	assert.Equal(t, 1, health.Resources.Sessions)
	st := c.ok("box_status", map[string]any{}, ctx1)
	assert.Equal(t, float64(1), st["active_sessions"])
}

func TestManagedProcessRelay(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, nil)
	sid := uniq("mcp-shared")
	c.ok("box_create_session", spec(sid, map[string]any{"persistent": true, "read_only_rootfs": false}), ctx1)
	p := c.ok("box_start_managed_process", map[string]any{"session_id": sid, "spec": map[string]any{
		"process_id": "srv1", "command": "sh", "args": []any{"-c", "echo ready >&2; cat"}, "env": map[string]any{"Z": "1", "A": "2"}}}, ctx1)
	assert.Equal(t, "running", p["status"])
	assert.Equal(t, []any{"A", "Z"}, p["env_keys"])
	assert.Equal(t, sid, p["session_id"])

	sessions := c.ok("box_get_session", map[string]any{"session_id": sid}, ctx1)
	assert.Contains(t, sessions["managed_processes"], "srv1")
	physical := physicalID(sid) // relay paths carry the physical id

	h := headers()
	h.Set("X-LangBot-Workspace-Id", workspace)
	h.Set("X-LangBot-Placement-Generation", "1")
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	ws, resp, err := d.Dial("ws://"+b.addr+"/v1/sessions/"+physical+"/managed-process/srv1/ws", h)
	require.NoError(t, err)
	assert.Equal(t, "mcp", resp.Header.Get("Sec-WebSocket-Protocol"))
	defer ws.Close()
	// Two JSON-RPC messages in; each comes back as exactly one text message (one line each).
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1}`)))
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":2}`)))
	for _, want := range []string{`{"jsonrpc":"2.0","id":1}`, `{"jsonrpc":"2.0","id":2}`} {
		require.NoError(t, ws.SetReadDeadline(time.Now().Add(30*time.Second)))
		kind, msg, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, websocket.TextMessage, kind)
		assert.Equal(t, want, string(msg))
	}
	// Wrong placement headers are refused before the upgrade.
	bad := headers()
	bad.Set("X-LangBot-Workspace-Id", workspace)
	bad.Set("X-LangBot-Placement-Generation", "01")
	_, resp, err = d.Dial("ws://"+b.addr+"/v1/sessions/"+physical+"/managed-process/srv1/ws", bad)
	require.Error(t, err)
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	ws.Close() // detaching never stops the process
	got := c.ok("box_get_managed_process", map[string]any{"session_id": sid, "process_id": "srv1"}, ctx1)
	assert.Equal(t, "running", got["status"])
	assert.Contains(t, got["stderr_preview"], "ready")

	c.ok("box_stop_managed_process", map[string]any{"session_id": sid, "process_id": "srv1"}, ctx1)
	r := c.call("box_get_managed_process", map[string]any{"session_id": sid, "process_id": "srv1"}, ctx1)
	assert.True(t, strings.HasPrefix(r.Message, "BoxManagedProcessNotFoundError: session ws-"), r.Message)
	c.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
}

func TestRestartKeepsPersistentAndRemovesOrphans(t *testing.T) {
	for _, p := range execPaths() {
		t.Run(p.name, func(t *testing.T) { testRestartKeepsPersistentAndRemovesOrphans(t, p) })
	}
}

func testRestartKeepsPersistentAndRemovesOrphans(t *testing.T, p execPath) {
	cli := dockerClient(t)
	ctx := context.Background()
	// An orphan of another runtime instance, and an unrelated container that must survive.
	mk := func(name string, labels map[string]string) string {
		c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"sleep", "600"}, Labels: labels},
			&container.HostConfig{NetworkMode: "none"}, nil, nil, name)
		require.NoError(t, err)
		require.NoError(t, cli.ContainerStart(ctx, c.ID, container.StartOptions{}))
		t.Cleanup(func() { _ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}) })
		return c.ID
	}
	orphan := mk(uniq("orphan"), map[string]string{"langbot.box": "true", "langbot.box.instance_id": "000000000000"})
	bystander := mk(uniq("bystander"), map[string]string{"app": "other"})

	// Unscoped, as the reference: the runtime owns every unscoped langbot.box container.
	first := startBoxdWith(t, func(o *runtime.Options) { o.Scope = "" })
	c := dial(t, first)
	c.init(t, p.boxInit(nil))
	_, err := cli.ContainerInspect(ctx, orphan)
	assert.Error(t, err, "the orphan is removed at start-up")
	_, err = cli.ContainerInspect(ctx, bystander)
	assert.NoError(t, err, "containers without the langbot.box label are left alone")

	keep, drop := uniq("keep"), uniq("drop")
	kinfo := c.ok("box_create_session", spec(keep, map[string]any{"persistent": true}), ctx1)
	dinfo := c.ok("box_create_session", spec(drop, nil), ctx1)
	first.stop()

	second := startBoxdWith(t, func(o *runtime.Options) { o.Scope = "" })
	c2 := dial(t, second)
	c2.init(t, p.boxInit(nil))
	got := c2.ok("box_get_session", map[string]any{"session_id": keep}, ctx1)
	assert.Equal(t, kinfo["backend_session_id"], got["backend_session_id"], "the persistent session is re-adopted")
	r := c2.ok("box_exec", spec(keep, map[string]any{"persistent": true, "cmd": "echo again"}), ctx1)
	assert.Equal(t, "again", r["stdout"])
	r = c2.ok("box_exec", spec(keep, map[string]any{"persistent": true, "cmd": parentCmdline}), ctx1)
	p.assertRanThrough(t, r["stdout"])
	miss := c2.call("box_get_session", map[string]any{"session_id": drop}, ctx1)
	assert.True(t, strings.HasPrefix(miss.Message, "BoxSessionNotFoundError"), miss.Message)
	list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", dinfo["backend_session_id"].(string)))})
	require.NoError(t, err)
	assert.Empty(t, list, "the non-persistent container was removed")
	c2.ok("box_delete_session", map[string]any{"session_id": keep}, ctx1)
}

// A sandbox removed or stopped behind boxd's back is recreated by the next box_exec, which
// then runs in the new one (§8.1 step 5). On the docker exec path boxd does not probe the
// container before each exec: the exec itself finds it gone before the command starts.
func TestExecRecreatesAGoneSandbox(t *testing.T) {
	cli := dockerClient(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		persistent bool
		gone       func(t *testing.T, id string)
	}{
		{"removed", false, func(t *testing.T, id string) {
			require.NoError(t, cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}))
		}},
		{"stopped", true, func(t *testing.T, id string) {
			waitC, errC := cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
			require.NoError(t, cli.ContainerKill(ctx, id, "KILL"))
			select {
			case <-waitC:
			case err := <-errC:
				require.NoError(t, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBoxd(t)
			c := dial(t, b)
			c.init(t, execPaths()[0].boxInit(nil))
			id := uniq("gone")
			run := func(cmd string) map[string]any {
				return c.ok("box_exec", spec(id, map[string]any{"cmd": cmd, "persistent": tc.persistent}), ctx1)
			}
			assert.Equal(t, "one", run("echo one")["stdout"])
			before := c.ok("box_get_session", map[string]any{"session_id": id}, ctx1)["backend_session_id"].(string)
			tc.gone(t, before)
			out := run("echo two")
			assert.Equal(t, float64(0), out["exit_code"], out)
			assert.Equal(t, "two", out["stdout"])
			after := c.ok("box_get_session", map[string]any{"session_id": id}, ctx1)["backend_session_id"].(string)
			assert.NotEqual(t, before, after, "a new sandbox ran the command")
			c.ok("box_delete_session", map[string]any{"session_id": id}, ctx1)
		})
	}
}
