package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/transfer"
)

var timeZero time.Time

// ConnContext gives a control connection its own file-transfer store (§3.7), sized by the
// max_rpc_file_bytes in force when the connection opens, as the reference does.
func (s *Server) ConnContext(ctx context.Context) context.Context {
	st, err := transfer.NewStore(transfer.DefaultDir(), s.Limits().MaxRPCFileBytes)
	if err != nil {
		s.log.Error("File transfer (__file_chunk) unavailable on this connection: " + err.Error())
		return ctx
	}
	return transfer.WithStore(ctx, st)
}

// CloseConn deletes the files a closed connection still owned.
func (s *Server) CloseConn(ctx context.Context) {
	if st := transfer.FromContext(ctx); st != nil {
		st.Close()
	}
}

// rpcWS serves /rpc/ws (§2.5): authenticate and take a connection slot before upgrading,
// then one goroutine per request, at most rpc.MaxInFlight at a time (Requests); responses
// go through the connection's bounded outbox and are written by one writer.
func (s *Server) rpcWS(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(r, true); !ok {
		unauthorized(w)
		return
	}
	release, ok := s.admitConn(w, r, "rpc")
	if !ok {
		return
	}
	defer release()
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer s.track(conn)()
	defer conn.Close()
	p := s.newPeer(conn, r.URL.Path)
	ctx, cancel := context.WithCancel(s.ConnContext(context.WithoutCancel(r.Context())))
	defer cancel()
	defer s.CloseConn(ctx)
	out := newOutbox(p)
	go out.run(ctx)
	go p.keepalive(ctx, nil, nil)
	reqs := s.NewRequests(ctx, func(resp rpc.Response) {
		if ctx.Err() != nil {
			return
		}
		b, err := json.Marshal(resp)
		if err != nil {
			return
		}
		if len(b) > maxMessage {
			b, _ = json.Marshal(rpc.Failure(resp.SeqID, rpc.Errorf(rpc.ValueError, "Runtime message exceeds %d byte limit", maxMessage)))
		}
		out.push(b)
	})
	defer reqs.Wait()
	defer cancel()
	for {
		// A buffer of its own for each message: the request's goroutine keeps it. The
		// reservation ends with the reading (requests being run are bounded by the in-flight cap).
		m := s.newInbound()
		kind, err := p.read(m)
		if err != nil {
			return
		}
		if kind == websocket.BinaryMessage {
			m.free()
			return
		}
		reqs.Handle(m.buf)
		m.free()
	}
}
