package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Keepalive of every WebSocket endpoint: the reference's relay heartbeat (aiohttp
// heartbeat=30: a ping every 30 s, the pong awaited for half of it). LangBot's websockets
// client answers pings on its own, and pings its side too.
const (
	pingPeriod = 30 * time.Second
	pongWait   = 15 * time.Second
)

// admitConn takes one of the -max-connections slots for a WebSocket about to be upgraded,
// or answers 503 (logged and counted) when none is free.
func (s *Server) admitConn(w http.ResponseWriter, r *http.Request, endpoint string) (release func(), ok bool) {
	max := s.connLimits.MaxConnections
	s.mu.Lock()
	if s.openConns >= max {
		s.mu.Unlock()
		s.log.Warn(fmt.Sprintf("WebSocket connection to %s from %s refused: %d connections open (limit %d, -max-connections)",
			r.URL.Path, r.RemoteAddr, max, max))
		s.opts.Metrics.ConnRefused(endpoint)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "Box runtime has too many WebSocket connections (limit %d)\n", max)
		return nil, false
	}
	s.openConns++
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		s.openConns--
		s.mu.Unlock()
	}, true
}

// peer is one upgraded WebSocket with boxd's bounds: the 16 MiB message cap, the message
// timeout (an unfinished message cannot be held longer), the keepalive's pong deadline and
// the write timeout. When boxd ends a connection it logs and counts why.
type peer struct {
	srv      *Server
	conn     *websocket.Conn
	lim      ConnLimits
	endpoint string

	mu     sync.Mutex
	msgBy  time.Time // while a message is being read: when it must be complete
	pongBy time.Time // while a ping is unanswered: when the pong must have come
	reason string    // why boxd closed the connection ("" while open, or when the peer closed it)
}

func (s *Server) newPeer(conn *websocket.Conn, endpoint string) *peer {
	p := &peer{srv: s, conn: conn, lim: s.connLimits, endpoint: endpoint}
	conn.SetReadLimit(maxMessage)
	conn.SetPongHandler(func(string) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.pongBy = time.Time{}
		p.armLocked()
		return nil
	})
	return p
}

// armLocked sets the read deadline to the earlier of the two that apply (none when idle and
// not waiting for a pong).
func (p *peer) armLocked() {
	d := p.msgBy
	if d.IsZero() || (!p.pongBy.IsZero() && p.pongBy.Before(d)) {
		d = p.pongBy
	}
	_ = p.conn.SetReadDeadline(d)
}

// read reads one whole message into m (emptied first). On an error m is freed.
func (p *peer) read(m *inbound) (int, error) {
	kind, r, err := p.conn.NextReader()
	if err != nil {
		m.free()
		p.readFailed(err, time.Time{})
		return 0, err
	}
	p.mu.Lock()
	p.msgBy = time.Now().Add(p.lim.MessageTimeout)
	p.armLocked()
	p.mu.Unlock()
	err = m.readFrom(r)
	p.mu.Lock()
	msgBy := p.msgBy
	p.msgBy = time.Time{}
	p.armLocked()
	p.mu.Unlock()
	if err != nil {
		m.free()
		p.readFailed(err, msgBy)
		return 0, err
	}
	return kind, nil
}

// readFailed records why a read ended when boxd's own bound ended it.
func (p *peer) readFailed(err error, msgBy time.Time) {
	var ne net.Error
	var budget *errInboundBudget
	switch {
	case errors.As(err, &budget):
		p.drop("inbound_budget", budget.Error())
	case errors.Is(err, websocket.ErrReadLimit):
		p.closed("message_too_big", fmt.Sprintf("a message exceeds the %d byte limit", maxMessage))
	case errors.As(err, &ne) && ne.Timeout() && !msgBy.IsZero() && !time.Now().Before(msgBy):
		p.closed("message_timeout", fmt.Sprintf("a message was not completed within %s (-ws-message-timeout)", p.lim.MessageTimeout))
	case errors.As(err, &ne) && ne.Timeout():
		p.closed("pong_timeout", fmt.Sprintf("no pong within %s of a ping", pongWait))
	}
}

// drop closes the connection because of reason (logged once, counted once).
func (p *peer) drop(reason, detail string) {
	p.closed(reason, detail)
	_ = p.conn.Close()
}

func (p *peer) closed(reason, detail string) {
	p.mu.Lock()
	first := p.reason == ""
	if first {
		p.reason = reason
	}
	p.mu.Unlock()
	if !first {
		return
	}
	p.srv.log.Warn(fmt.Sprintf("Closing WebSocket connection %s from %s: %s", p.endpoint, p.conn.RemoteAddr(), detail))
	p.srv.opts.Metrics.Disconnected(reason)
}

// ping sends a keepalive ping and starts waiting for its pong.
func (p *peer) ping() error {
	p.mu.Lock()
	if p.pongBy.IsZero() {
		p.pongBy = time.Now().Add(pongWait)
		p.armLocked()
	}
	p.mu.Unlock()
	return p.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(pongWait))
}

// keepalive pings every pingPeriod until ctx ends or a ping cannot be sent; with changed
// set, also when a signal on changed() finds gone() true (the relay's generation fence).
func (p *peer) keepalive(ctx context.Context, changed func() <-chan struct{}, gone func() bool) {
	t := time.NewTicker(pingPeriod)
	defer t.Stop()
	for {
		var ch <-chan struct{} // nil: never ready
		if changed != nil {
			ch = changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if gone() {
				return
			}
		case <-t.C:
			if p.ping() != nil {
				return
			}
		}
	}
}

// write writes one text message within the write timeout.
func (p *peer) write(b []byte) error {
	_ = p.conn.SetWriteDeadline(time.Now().Add(p.lim.WriteTimeout))
	err := p.conn.WriteMessage(websocket.TextMessage, b)
	p.writeFailed(err)
	return err
}

// writeFailed ends the connection after a failed write, saying why when it timed out.
func (p *peer) writeFailed(err error) {
	var ne net.Error
	switch {
	case err == nil:
	case errors.As(err, &ne) && ne.Timeout():
		p.drop("write_timeout", fmt.Sprintf("a message could not be written within %s (-ws-write-timeout)", p.lim.WriteTimeout))
	default:
		_ = p.conn.Close()
	}
}

// outbox queues one connection's outbound messages for a single writer, so that a response
// never waits for another connection, nor for the peer: a peer that lets more than
// MaxOutboundBytes pile up is disconnected.
type outbox struct {
	p      *peer
	mu     sync.Mutex
	queue  [][]byte
	queued int // bytes in queue plus the message being written
	done   bool
	wake   chan struct{}
}

func newOutbox(p *peer) *outbox { return &outbox{p: p, wake: make(chan struct{}, 1)} }

// push queues b, or drops the connection when that would pass the bound.
func (o *outbox) push(b []byte) {
	o.mu.Lock()
	if o.done {
		o.mu.Unlock()
		return
	}
	if o.queued+len(b) > o.p.lim.MaxOutboundBytes {
		queued := o.queued
		o.done, o.queue = true, nil
		o.mu.Unlock()
		o.p.drop("outbound_limit", fmt.Sprintf("it does not read its responses: %d bytes are waiting and %d more would pass the limit of %d (-ws-max-outbound-bytes)",
			queued, len(b), o.p.lim.MaxOutboundBytes))
		return
	}
	o.queue = append(o.queue, b)
	o.queued += len(b)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// run writes queued messages in order until ctx ends or a write fails.
func (o *outbox) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		}
		for {
			o.mu.Lock()
			if o.done || len(o.queue) == 0 {
				o.mu.Unlock()
				break
			}
			b := o.queue[0]
			o.queue[0] = nil
			o.queue = o.queue[1:]
			o.mu.Unlock()
			err := o.p.write(b)
			o.mu.Lock()
			o.queued -= len(b)
			if err != nil {
				o.done, o.queue = true, nil
			}
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}
