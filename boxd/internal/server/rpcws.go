package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
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
		s.log.Warn("file transfer unavailable: " + err.Error())
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

// rpcWS serves /rpc/ws (§2.5): authenticate before upgrading, then one goroutine per request,
// at most maxInFlight at a time, responses written one at a time.
func (s *Server) rpcWS(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.authenticate(r, true); !ok {
		unauthorized(w)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer s.track(conn)()
	defer conn.Close()
	conn.SetReadLimit(maxMessage)
	ctx, cancel := context.WithCancel(s.ConnContext(context.WithoutCancel(r.Context())))
	defer cancel()
	defer s.CloseConn(ctx)
	var wmu sync.Mutex
	send := func(resp rpc.Response) {
		b, err := json.Marshal(resp)
		if err != nil {
			return
		}
		if len(b) > maxMessage {
			b, _ = json.Marshal(rpc.Failure(resp.SeqID, rpc.Errorf(rpc.ValueError, "Runtime message exceeds %d byte limit", maxMessage)))
		}
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.WriteMessage(websocket.TextMessage, b)
	}
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for {
		kind, msg, err := conn.ReadMessage()
		if err != nil || kind == websocket.BinaryMessage {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			var req rpc.Request
			if json.Unmarshal(msg, &req) == nil && len(req.Action) > 0 {
				send(rpc.Failure(req.SeqID, &rpc.Error{Bare: true, Text: "Runtime connection is busy (max 128 concurrent actions)"}))
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if resp := s.Dispatch(ctx, msg); resp != nil && ctx.Err() == nil {
				send(*resp)
			}
		}()
	}
}
