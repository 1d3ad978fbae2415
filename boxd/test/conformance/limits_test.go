//go:build integration

package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/runtime"
)

// metric reads one sample of boxd's /metrics (0 when the series does not exist yet).
func metric(t *testing.T, b *boxd, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + b.addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	require.NoError(t, sc.Err())
	return 0
}

// awaitMetric reads series until done accepts its value; the deadline only bounds how long
// boxd is given.
func awaitMetric(t *testing.T, b *boxd, series string, done func(float64) bool, why string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for v := metric(t, b, series); !done(v); v = metric(t, b, series) {
		require.True(t, time.Now().Before(deadline), "%s (%s = %v)", why, series, v)
	}
}

// writeFill writes n bytes c to w, 1 MiB at a time (n a multiple of 1 MiB).
func writeFill(w io.Writer, c byte, n int) error {
	part := bytes.Repeat([]byte{c}, 1<<20)
	for sent := 0; sent < n; sent += len(part) {
		if _, err := w.Write(part); err != nil {
			return err
		}
	}
	return nil
}

// requireClosedByBoxd reads ws until boxd ends the connection: the read must fail with
// something other than the client's own deadline (which only bounds how long boxd is given).
func requireClosedByBoxd(t *testing.T, ws *websocket.Conn, why string) {
	t.Helper()
	require.NoError(t, ws.SetReadDeadline(time.Now().Add(3*time.Minute)))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue // responses boxd had written before it closed
		}
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: boxd did not close the connection: %v", why, err)
		return
	}
}

// Item 5: a transfer uploaded by one connection cannot be taken by another one; it stays
// there for the connection that uploaded it.
func TestFileTransferBelongsToItsConnection(t *testing.T) {
	b := startBoxd(t)
	owner := dial(t, b)
	owner.init(t, nil)
	thief := dial(t, b)
	thief.ok("__ping", map[string]any{}, nil)
	archive := zipOf(t, map[string]string{"SKILL.md": "---\nname: owned\n---\nDo it\n"})
	key := owner.upload(t, "0123456789abcdef-owned.zip", archive)

	assert.Equal(t, "BoxValidationError: File transfer "+key+" not found",
		thief.fails("box_install_skill_zip", map[string]any{"file_key": key, "filename": "owned.zip"}, ctx1))
	inst := owner.ok("box_install_skill_zip", map[string]any{"file_key": key, "filename": "owned.zip"}, ctx1)["skills"].([]any)
	require.Len(t, inst, 1)
	assert.Equal(t, "owned", inst[0].(map[string]any)["name"])
}

// Item 8: a peer that starts a message and never finishes it is disconnected after the
// message timeout, or as soon as the message passes the 16 MiB cap; other clients keep working.
func TestUnfinishedFragmentedMessage(t *testing.T) {
	cases := []struct {
		name    string
		bytes   int
		timeout time.Duration // -ws-message-timeout
		reason  string
	}{
		{"stalled under the cap", 15 << 20, 2 * time.Second, "message_timeout"},
		{"over the cap", 18 << 20, 0, "message_too_big"}, // the last MiB stays in the client's buffer
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := startBoxdWith(t, func(o *runtime.Options) { o.Conn.MessageTimeout = tc.timeout })
			dialer := websocket.Dialer{WriteBufferSize: 1 << 20}
			ws, resp, err := dialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
			require.NoError(t, err)
			resp.Body.Close()
			defer ws.Close()
			go func() {
				// Fragments of one text message that is never finished (no final frame).
				w, err := ws.NextWriter(websocket.TextMessage)
				if err != nil {
					return
				}
				_ = writeFill(w, ' ', tc.bytes)
			}()
			requireClosedByBoxd(t, ws, tc.name)
			// Counted once the read has failed, which may come after gorilla's close frame
			// (sent when the frame over the cap is refused).
			awaitMetric(t, b, `boxd_ws_disconnects_total{reason="`+tc.reason+`"}`, func(v float64) bool { return v == 1 },
				"the close is counted under "+tc.reason)
			dial(t, b).ok("__ping", map[string]any{}, nil)
		})
	}
}

// Item 8: what unfinished incoming messages hold is bounded for the whole process
// (-ws-max-inbound-bytes), not per connection. Each 15 MiB message is assembled in a 16 MiB
// buffer (its capacity is what is reserved), so a budget of 40 MiB holds two of them but not a
// third: whichever connection's reservation does not fit is closed (reason inbound_budget),
// the other two finish their messages and get their answers, and the 8 MiB left serve a fresh
// client while the two unfinished messages are still held.
func TestInboundBudgetIsShared(t *testing.T) {
	b := startBoxdWith(t, func(o *runtime.Options) {
		o.Conn.MaxInboundBytes = 40 << 20
		o.Conn.MessageTimeout = 10 * time.Minute // only the budget may end these messages
	})
	type answer struct {
		r   response
		err error
	}
	type holder struct {
		w       io.WriteCloser
		sendErr chan error
		answer  chan answer
	}
	holders := make([]*holder, 3)
	for i := range holders {
		dialer := websocket.Dialer{WriteBufferSize: 1 << 20}
		ws, resp, err := dialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
		require.NoError(t, err)
		resp.Body.Close()
		t.Cleanup(func() { ws.Close() })
		w, err := ws.NextWriter(websocket.TextMessage)
		require.NoError(t, err)
		h := &holder{w: w, sendErr: make(chan error, 1), answer: make(chan answer, 1)}
		holders[i] = h
		go func() { // reads all along, so boxd's keepalive pings are answered
			var a answer
			a.err = ws.ReadJSON(&a.r)
			h.answer <- a
		}()
		go func() {
			// A __ping whose padding arrives as fragments of one text message, left unfinished
			// (its last fragment is sent, with the final flag, only when the test closes w).
			if _, err := fmt.Fprintf(w, `{"seq_id":%d,"action":"__ping","data":{},"pad":"`, i+1); err != nil {
				h.sendErr <- err
				return
			}
			if err := writeFill(w, 'x', 15<<20); err != nil {
				h.sendErr <- err
				return
			}
			_, err := io.WriteString(w, `"}`)
			h.sendErr <- err
		}()
	}
	awaitMetric(t, b, `boxd_ws_disconnects_total{reason="inbound_budget"}`, func(v float64) bool { return v > 0 },
		"boxd never closed a connection on the shared inbound budget")
	// Two unfinished messages (32 MiB) are held now: a fresh client still gets its answers.
	dial(t, b).ok("__ping", map[string]any{}, nil)

	var closed, served int
	for i, h := range holders {
		if err := <-h.sendErr; err == nil {
			_ = h.w.Close() // the final fragment; a failure shows in the answer
		}
		select {
		case a := <-h.answer:
			if a.err != nil {
				closed++
				continue
			}
			assert.Equal(t, int64(i+1), a.r.SeqID)
			assert.Equal(t, 0, a.r.Code, a.r.Message)
			served++
		case <-time.After(2 * time.Minute):
			require.FailNow(t, "no answer and no close", "connection %d", i+1)
		}
	}
	assert.Equal(t, 1, closed, "exactly the connection that crossed the budget is closed")
	assert.Equal(t, 2, served, "the two messages that fit are answered")
	assert.Equal(t, 1.0, metric(t, b, `boxd_ws_disconnects_total{reason="inbound_budget"}`))
	assert.Equal(t, 0.0, metric(t, b, `boxd_ws_disconnects_total{reason="message_too_big"}`))
	dial(t, b).ok("__ping", map[string]any{}, nil)
}

// Item 8: a managed-process relay draws on the same inbound budget as /rpc/ws. With the
// smallest budget (one 16 MiB message), a relay holding an unfinished 15 MiB message leaves
// nothing for a control connection's next message: that connection is closed (inbound_budget),
// while the relay finishes its message, which reaches the process whole, and its buffer goes
// back, so a fresh client gets its answers.
func TestRelaySharesTheInboundBudget(t *testing.T) {
	b := startBoxdWith(t, func(o *runtime.Options) {
		o.Conn.MaxInboundBytes = 16 << 20
		o.Conn.MessageTimeout = 10 * time.Minute
	})
	c := dial(t, b)
	c.init(t, nil)
	sid := uniq("inbound-relay")
	c.ok("box_create_session", spec(sid, nil), ctx1)
	c.ok("box_start_managed_process", map[string]any{"session_id": sid, "spec": map[string]any{
		"process_id": "len", "command": "awk", "args": []any{"{ print length($0); fflush() }"}}}, ctx1)
	h := headers()
	h.Set("X-LangBot-Workspace-Id", workspace)
	h.Set("X-LangBot-Placement-Generation", "1")
	d := websocket.Dialer{Subprotocols: []string{"mcp"}, WriteBufferSize: 1 << 20}
	relay, resp, err := d.Dial("ws://"+b.addr+"/v1/sessions/"+physicalID(sid)+"/managed-process/len/ws", h)
	require.NoError(t, err)
	resp.Body.Close()
	t.Cleanup(func() { relay.Close() })
	lines := make(chan string, 1)
	go func() { // reads all along, so boxd's keepalive pings are answered
		_, msg, err := relay.ReadMessage()
		if err == nil {
			lines <- string(msg)
		}
		close(lines)
	}()
	w, err := relay.NextWriter(websocket.TextMessage)
	require.NoError(t, err)
	const size = 15 << 20
	require.NoError(t, writeFill(w, 'x', size))
	awaitMetric(t, b, "boxd_ws_inbound_bytes", func(v float64) bool { return v == 16<<20 },
		"boxd never held the relay's unfinished message in its inbound budget")

	require.NoError(t, c.ws.WriteJSON(map[string]any{"seq_id": 1000, "action": "__ping", "data": map[string]any{}}))
	requireClosedByBoxd(t, c.ws, "control connection over the budget")
	assert.Equal(t, 1.0, metric(t, b, `boxd_ws_disconnects_total{reason="inbound_budget"}`))

	require.NoError(t, w.Close()) // the final fragment
	select {
	case line, ok := <-lines:
		require.True(t, ok, "the relay was closed")
		assert.Equal(t, strconv.Itoa(size), line, "the whole message reached the process as one line")
	case <-time.After(2 * time.Minute):
		require.FailNow(t, "no line back from the process")
	}
	// Given back right after the write to stdin, which the line back may overtake.
	awaitMetric(t, b, "boxd_ws_inbound_bytes", func(v float64) bool { return v == 0 }, "the relay kept its large buffer")
	fresh := dial(t, b)
	fresh.ok("__ping", map[string]any{}, nil)
	fresh.ok("box_delete_session", map[string]any{"session_id": sid}, ctx1)
	assert.Equal(t, 1.0, metric(t, b, `boxd_ws_disconnects_total{reason="inbound_budget"}`), "only the control connection was closed")
}

// Item 8: a peer that keeps sending requests and never reads the answers is disconnected once
// its queued responses pass the per-connection bound; a well-behaved connection keeps getting
// its answers all along.
func TestPeerThatNeverReads(t *testing.T) {
	b := startBoxd(t)
	good := dial(t, b)
	good.init(t, nil)
	session := uniq("noread")
	good.ok("box_create_session", spec(session, nil), ctx1)
	bad := dial(t, b)
	// Each answer carries ~2 MiB (the 1 MiB capture of stdout and of stderr).
	cmd := "head -c 1048576 /dev/zero | tr '\\0' o; head -c 1048576 /dev/zero | tr '\\0' e >&2"
	for i := 1; i <= 100; i++ {
		require.NoError(t, bad.ws.SetWriteDeadline(time.Now().Add(time.Minute)))
		require.NoError(t, bad.ws.WriteJSON(map[string]any{"seq_id": i, "action": "box_exec", "context": ctx1,
			"data": spec(session, map[string]any{"cmd": cmd})}))
	}
	deadline := time.Now().Add(5 * time.Minute)
	for metric(t, b, `boxd_ws_disconnects_total{reason="outbound_limit"}`) == 0 {
		require.True(t, time.Now().Before(deadline), "boxd never dropped the connection that does not read")
		good.ok("__ping", map[string]any{}, nil)
	}
	requireClosedByBoxd(t, bad.ws, "non-reading peer")
	r := good.ok("box_exec", spec(session, map[string]any{"cmd": "echo still-served"}), ctx1)
	assert.Equal(t, "still-served", r["stdout"])
}

// Item 8: the connection cap refuses one more WebSocket with HTTP 503 before the upgrade,
// counts it, and frees the slot when a connection ends.
func TestConnectionCap(t *testing.T) {
	b := startBoxdWith(t, func(o *runtime.Options) { o.Conn.MaxConnections = 2 })
	first := dial(t, b)
	first.ok("__ping", map[string]any{}, nil)
	dial(t, b).ok("__ping", map[string]any{}, nil)

	_, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.NotNil(t, resp)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Contains(t, string(body), "too many WebSocket connections (limit 2)")
	assert.Equal(t, 1.0, metric(t, b, `boxd_ws_connections_refused_total{endpoint="rpc"}`))

	hresp, err := http.Get("http://" + b.addr + "/healthz")
	require.NoError(t, err)
	hresp.Body.Close()
	assert.Equal(t, http.StatusOK, hresp.StatusCode, "plain HTTP is not counted")

	require.NoError(t, first.ws.Close())
	var again *websocket.Conn
	for i := 0; i < 10000 && again == nil; i++ { // boxd frees the slot once it sees the close
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+b.addr+"/rpc/ws", headers())
		if err == nil {
			again = ws
			resp.Body.Close()
		}
	}
	require.NotNil(t, again, "the slot of a closed connection is given back")
	again.Close()
}

// rpcClient is one transport of the control channel as a test drives it.
type rpcClient struct {
	send      func(req map[string]any)
	responses chan map[string]any
}

func wsClient(t *testing.T, b *boxd) rpcClient {
	c := dial(t, b)
	out := make(chan map[string]any, 256)
	go func() {
		for {
			var m map[string]any
			if c.ws.ReadJSON(&m) != nil {
				close(out)
				return
			}
			out <- m
		}
	}()
	return rpcClient{send: func(req map[string]any) { require.NoError(t, c.ws.WriteJSON(req)) }, responses: out}
}

// Item 9: both control channels, the WebSocket and stdio (-s), run at most 128 requests at a
// time and refuse the rest at once with the same message.
func TestInFlightCapOnBothChannels(t *testing.T) {
	stdinR, stdinW, err := os.Pipe()
	require.NoError(t, err)
	stdoutR, stdoutW, err := os.Pipe()
	require.NoError(t, err)
	b := startBoxdWith(t, func(o *runtime.Options) {
		o.Stdio, o.TrustedInstance, o.Stdin, o.Stdout = true, instance, stdinR, stdoutW
	})
	t.Cleanup(func() { stdinW.Close() }) // ends the stdio channel before boxd is stopped
	stdioOut := make(chan map[string]any, 256)
	go func() {
		sc := bufio.NewScanner(stdoutR)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				stdioOut <- m
			}
		}
		close(stdioOut)
	}()
	stdio := rpcClient{responses: stdioOut, send: func(req map[string]any) {
		line, _ := json.Marshal(req)
		_, err := stdinW.Write(append(line, '\n'))
		require.NoError(t, err)
	}}

	setup := dial(t, b)
	// The exec agent keeps the 2 x 128 gated commands cheap (the session runs them one by one).
	root := setup.init(t, map[string]any{"docker": map[string]any{"exec_agent": true}})
	ws := filepath.Join(root, "gate")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	session := uniq("inflight")
	setup.ok("box_create_session", spec(session, map[string]any{"host_path": ws, "host_path_mode": "rw", "timeout_sec": 600}), ctx1)

	busy := make(map[string]string)
	for _, tc := range []struct {
		name   string
		client rpcClient
	}{{"stdio", stdio}, {"websocket", wsClient(t, b)}} {
		t.Run(tc.name, func(t *testing.T) {
			// Every command waits for the gate file, so no request ends before all are read.
			gate := "go-" + tc.name
			cmd := fmt.Sprintf("until [ -e /workspace/%s ]; do sleep 0.2; done; echo passed", gate)
			for i := 1; i <= 200; i++ {
				tc.client.send(map[string]any{"seq_id": i, "action": "box_exec", "context": ctx1,
					"data": spec(session, map[string]any{"cmd": cmd, "timeout_sec": 600, "host_path": ws, "host_path_mode": "rw"})})
			}
			next := func() map[string]any {
				select {
				case m, ok := <-tc.client.responses:
					require.True(t, ok, "the channel closed")
					return m
				case <-time.After(3 * time.Minute):
					require.FailNow(t, "no response within 3 minutes")
					return nil
				}
			}
			var refused []int
			for len(refused) < 72 {
				m := next()
				require.Contains(t, m["message"], "busy", "request %v ended before the gate opened", m["seq_id"])
				refused = append(refused, int(m["seq_id"].(float64)))
				busy[tc.name] = m["message"].(string)
			}
			for i, seq := range refused {
				assert.Equal(t, 129+i, seq, "only the requests over the first 128 are refused")
			}
			require.NoError(t, os.WriteFile(filepath.Join(ws, gate), nil, 0o644))
			for range 128 {
				m := next()
				require.Equal(t, float64(0), m["code"], m["message"])
				assert.LessOrEqual(t, m["seq_id"], float64(128))
				assert.Equal(t, "passed", m["data"].(map[string]any)["stdout"])
			}
		})
	}
	assert.Equal(t, "Runtime connection is busy (max 128 concurrent actions)", busy["stdio"])
	assert.Equal(t, busy["websocket"], busy["stdio"], "the same refusal on both channels")
}
