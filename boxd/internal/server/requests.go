package server

import (
	"context"
	"sync"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// Requests runs the requests of one control channel (/rpc/ws or stdio): each in a goroutine
// of its own, at most rpc.MaxInFlight at a time; one more is answered with rpc.Busy at once.
type Requests struct {
	srv  *Server
	ctx  context.Context
	send func(rpc.Response)
	gate *rpc.Gate
	wg   sync.WaitGroup
}

// NewRequests serves requests in ctx (the connection's context, see ConnContext) and hands
// every response to send, which may be called concurrently and must not block for long.
func (s *Server) NewRequests(ctx context.Context, send func(rpc.Response)) *Requests {
	return &Requests{srv: s, ctx: ctx, send: send, gate: rpc.NewGate()}
}

// Handle starts one raw message (a request; anything else is ignored).
func (r *Requests) Handle(msg []byte) {
	ok, refusal := r.gate.Enter(msg)
	if !ok {
		if refusal != nil {
			r.send(*refusal)
		}
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer r.gate.Leave()
		if resp := r.srv.Dispatch(r.ctx, msg); resp != nil {
			r.send(*resp)
		}
	}()
}

// Wait returns once every started request has finished.
func (r *Requests) Wait() { r.wg.Wait() }
