package server

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

func relayError(w http.ResponseWriter, class, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": class, "message": msg}})
}

// relay serves the managed-process stdio relay (§2.6, §8.7): stdout one line per text
// message, each text message to stdin followed by "\n". Detaching never stops the process.
func (s *Server) relay(w http.ResponseWriter, r *http.Request) {
	inst, ok := s.authenticate(r, false)
	if !ok {
		unauthorized(w)
		return
	}
	ws := strings.TrimSpace(r.Header.Get(HeaderWorkspace))
	genText := strings.TrimSpace(r.Header.Get(HeaderGeneration))
	gen, err := strconv.Atoi(genText)
	if ws == "" || len(ws) > 256 || err != nil || strconv.Itoa(gen) != genText || gen < 1 {
		unauthorized(w)
		return
	}
	tctx := tenancy.Context{Instance: inst, Workspace: ws, Generation: gen}
	if !s.fence.Current(tctx) {
		unauthorized(w)
		return
	}
	if s.adm.Required() { // §2.6 step 5
		g, err := s.adm.Check(r.Context(), tctx)
		if err == nil && g.MaxManagedProcesses <= 0 {
			err = rpc.Errorf(rpc.BoxAdmissionError, "%s", admission.MsgNoRelay)
		}
		if err != nil {
			e := err.(*rpc.Error)
			relayError(w, e.Class, e.Text)
			return
		}
	}
	phys := r.PathValue("session")
	pid := r.PathValue("process")
	if pid == "" {
		pid = "default"
	}
	if !strings.HasPrefix(phys, tctx.PlacementPrefix()) || len(phys) <= len(tctx.PlacementPrefix()) {
		unauthorized(w)
		return
	}
	sess, p, err := s.mgr.GetProcess(phys, pid)
	if err != nil {
		e := err.(*rpc.Error)
		relayError(w, e.Class, e.Text)
		return
	}
	select {
	case <-p.Done():
		relayError(w, rpc.BoxManagedProcessConflict, "managed process "+pid+" in session "+phys+" is not running")
		return
	default:
	}
	release, ok := s.admitConn(w, r, "relay")
	if !ok {
		return
	}
	defer release()
	conn, err := s.upgrader.Upgrade(w, r, http.Header{"Sec-WebSocket-Protocol": {"mcp"}})
	if err != nil {
		return
	}
	defer s.track(conn)()
	defer conn.Close()
	peer := s.newPeer(conn, r.URL.Path)
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()

	// Wait (already upgraded, silent) for the attach lock.
	select {
	case p.Attach <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-p.Attach }()

	done := make(chan struct{}, 3)
	var wmu = make(chan struct{}, 1)
	// writeLine sends a stdout line as one text frame without copying it into a []byte first.
	writeLine := func(line string) error {
		wmu <- struct{}{}
		defer func() { <-wmu }()
		_ = conn.SetWriteDeadline(time.Now().Add(s.connLimits.WriteTimeout))
		w, err := conn.NextWriter(websocket.TextMessage)
		if err == nil {
			if _, err = io.WriteString(w, line); err == nil {
				err = w.Close()
			}
		}
		peer.writeFailed(err)
		return err
	}
	// stdout -> WS
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case line, ok := <-p.Lines:
				if !ok {
					return
				}
				if !s.fence.Current(tctx) || writeLine(line) != nil {
					return
				}
				s.opts.Metrics.Relay("out", len(line))
				s.mgr.Touch(sess)
			case <-ctx.Done():
				return
			}
		}
	}()
	// WS -> stdin
	go func() {
		defer func() { done <- struct{}{} }()
		// One buffer for the inbound messages (kept between them up to relayKeep bytes), and
		// when it has room the message and its "\n" reach the process's stdin in a single write.
		m := s.newInbound()
		defer m.free()
		for {
			kind, err := peer.read(m)
			if err != nil {
				return
			}
			if kind != websocket.TextMessage {
				m.keep(relayKeep)
				continue
			}
			if !s.fence.Current(tctx) {
				return
			}
			if err := writeLineTo(p.Stdin(), m.buf); err != nil {
				return
			}
			s.opts.Metrics.Relay("in", len(m.buf)+1)
			s.mgr.Touch(sess)
			m.keep(relayKeep)
		}
	}()
	// heartbeat and fence
	go func() {
		defer func() { done <- struct{}{} }()
		peer.keepalive(ctx, s.fence.Changed, func() bool { return !s.fence.Current(tctx) })
	}()
	<-done
	cancel()
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
}

// relayKeep is the capacity of the inbound buffer a relay keeps (reserved) between messages:
// MCP messages are small, and a large one's buffer goes back to the budget at once.
const relayKeep = 64 << 10

// writeLineTo writes b and a "\n": in one write when b has room for it (the usual case),
// else in two.
func writeLineTo(w io.Writer, b []byte) error {
	if len(b) < cap(b) {
		_, err := w.Write(append(b, '\n'))
		return err
	}
	if _, err := w.Write(b); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
