//go:build integration

package conformance

import (
	"encoding/json"
	"regexp"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// callRaw sends one request and returns the response's raw JSON text, as LangBot's client
// receives it.
func (c *conn) callRaw(action string, data any, context map[string]any) string {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	seq := c.seq.Add(1)
	require.NoError(c.t, c.ws.WriteJSON(map[string]any{"seq_id": seq, "action": action, "data": data, "context": context}))
	for {
		require.NoError(c.t, c.ws.SetReadDeadline(time.Now().Add(2*time.Minute)))
		_, msg, err := c.ws.ReadMessage()
		require.NoError(c.t, err)
		var r response
		require.NoError(c.t, json.Unmarshal(msg, &r))
		if r.SeqID == seq {
			require.Equal(c.t, 0, r.Code, "%s failed: %s", action, r.Message)
			return string(msg)
		}
	}
}

// cpus is a float in BoxSessionInfo: the reference (pydantic, json.dumps) sends 1.0 and 0.5,
// never 1, in every result carrying session info.
func TestCPUsKeepThePythonFloatForm(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, nil)
	for _, tc := range []struct {
		name string
		cpus any // nil: the default
		want string
	}{
		{"default", nil, "1.0"},
		{"integer given", 2, "2.0"},
		{"fraction", 0.5, "0.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sid := uniq("cpus")
			extra := map[string]any{}
			if tc.cpus != nil {
				extra["cpus"] = tc.cpus
			}
			form := regexp.MustCompile(`"cpus":\s*` + regexp.QuoteMeta(tc.want) + `[,}]`)
			for _, call := range []struct {
				action string
				data   any
			}{
				{"box_create_session", spec(sid, extra)},
				{"box_get_session", map[string]any{"session_id": sid}},
				{"box_get_sessions", map[string]any{}},
			} {
				raw := c.callRaw(call.action, call.data, ctx1)
				assert.Regexp(t, form, raw, "%s carries cpus as %s", call.action, tc.want)
			}
			c.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
		})
	}
}

// LangBot's MCP loader (provider/tools/loaders/mcp_stdio.py) reads a relay that closes during
// the handshake as "maybe a slow start" unless box_get_managed_process, asked right then,
// reports the process exited; the reference answers exited with the exit code, and the
// stderr the server printed is in stderr_preview.
func TestCrashedMCPServerIsExitedWhenTheRelayCloses(t *testing.T) {
	b := startBoxd(t)
	c := dial(t, b)
	c.init(t, nil)
	sid := uniq("mcp-crash")
	c.ok("box_create_session", spec(sid, map[string]any{"persistent": true, "read_only_rootfs": false}), ctx1)
	h := headers()
	h.Set("X-LangBot-Workspace-Id", workspace)
	h.Set("X-LangBot-Placement-Generation", "1")
	d := websocket.Dialer{Subprotocols: []string{"mcp"}}
	for _, tc := range []struct {
		name, script string
		send         bool // send one message first: the server exits once it reads it
	}{
		// Attached before it exits, for sure: the exit happens while the relay is open.
		{"exits on its first message", "read l; echo boom >&2; exit 7", true},
		// LangBot's case as is: the relay may attach just before or just after the exit.
		{"exits at once", "echo boom >&2; exit 7", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pid := uniq("srv")
			c.ok("box_start_managed_process", map[string]any{"session_id": sid, "spec": map[string]any{
				"process_id": pid, "command": "sh", "args": []any{"-c", tc.script}}}, ctx1)
			ws, resp, err := d.Dial("ws://"+b.addr+"/v1/sessions/"+physicalID(sid)+"/managed-process/"+pid+"/ws", h)
			if err == nil {
				if tc.send {
					require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize"}`)))
				}
				require.NoError(t, ws.SetReadDeadline(time.Now().Add(time.Minute)))
				_, _, err = ws.ReadMessage()
				require.Error(t, err, "the server prints nothing on stdout: the relay only closes")
				ws.Close()
			} else {
				require.False(t, tc.send, "the relay attaches to a process waiting for its input: %v", err)
				require.NotNil(t, resp, "dial: %v", err)
				assert.Equal(t, 400, resp.StatusCode, "refused only because the exit is already recorded")
			}
			// Right away, as LangBot does: no retry, no wait.
			got := c.ok("box_get_managed_process", map[string]any{"session_id": sid, "process_id": pid}, ctx1)
			assert.Equal(t, "exited", got["status"])
			assert.Equal(t, float64(7), got["exit_code"])
			assert.NotNil(t, got["exited_at"])
			assert.Equal(t, "boom", got["stderr_preview"])
		})
	}
	c.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
}
