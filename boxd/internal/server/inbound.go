package server

import (
	"fmt"
	"io"
	"sync"

	"github.com/gorilla/websocket"
)

// inboundBudget is the process-wide allowance for incoming WebSocket messages being
// assembled (-ws-max-inbound-bytes), shared by /rpc/ws and the relays. A reservation never
// waits: one that does not fit fails, and the connection that asked is closed, so a
// connection never blocks another one and nothing can deadlock on the budget.
type inboundBudget struct {
	max int

	mu   sync.Mutex
	used int
}

// reserve takes n bytes, or reports how many all connections hold when n does not fit.
func (b *inboundBudget) reserve(n int) (used int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.max {
		return b.used, false
	}
	b.used += n
	return b.used, true
}

func (b *inboundBudget) release(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// InboundBytes is what incoming WebSocket messages being assembled hold now.
func (s *Server) InboundBytes() int {
	s.inbound.mu.Lock()
	defer s.inbound.mu.Unlock()
	return s.inbound.used
}

// inboundMin is the first buffer of a message; it doubles from there up to maxMessage when
// more bytes come than it holds.
const inboundMin = 4 << 10

// errInboundBudget ends a read whose message could not get the bytes it needed.
type errInboundBudget struct {
	want, used, max int
}

func (e *errInboundBudget) Error() string {
	return fmt.Sprintf("incoming messages of all connections hold %d bytes and this one needs %d more, which would pass the limit of %d (-ws-max-inbound-bytes)",
		e.used, e.want, e.max)
}

// inbound is the buffer one connection assembles its incoming messages in. Its whole
// capacity, the memory it actually holds, is reserved from the budget before it is
// allocated and given back by keep or free.
type inbound struct {
	budget *inboundBudget
	buf    []byte
}

func (s *Server) newInbound() *inbound { return &inbound{budget: s.inbound} }

// readFrom reads r to its end into the buffer (emptied first). r must stop at maxMessage
// (gorilla's read limit): the buffer never grows past it.
func (m *inbound) readFrom(r io.Reader) error {
	m.buf = m.buf[:0]
	if cap(m.buf) == 0 {
		if err := m.grow(inboundMin); err != nil {
			return err
		}
	}
	for {
		if len(m.buf) == cap(m.buf) {
			// Full: read one byte before growing, so that a message that fits exactly ends here.
			var one [1]byte
			n, err := r.Read(one[:])
			if n > 0 {
				if cap(m.buf) >= maxMessage { // gorilla refuses such a frame first; the same error if it did not
					return websocket.ErrReadLimit
				}
				if err := m.grow(min(2*cap(m.buf), maxMessage)); err != nil {
					return err
				}
				m.buf = append(m.buf, one[0])
			}
			if done, err := ended(err); done {
				return err
			}
			continue
		}
		n, err := r.Read(m.buf[len(m.buf):cap(m.buf)])
		m.buf = m.buf[:len(m.buf)+n]
		if done, err := ended(err); done {
			return err
		}
	}
}

// ended tells whether a read's error ends the message, and with which error (nil at its end).
func ended(err error) (bool, error) {
	if err == io.EOF {
		return true, nil
	}
	return err != nil, err
}

// grow moves the content to a buffer of capacity c, reserving the difference first.
func (m *inbound) grow(c int) error {
	want := c - cap(m.buf)
	if used, ok := m.budget.reserve(want); !ok {
		return &errInboundBudget{want: want, used: used, max: m.budget.max}
	}
	b := make([]byte, len(m.buf), c)
	copy(b, m.buf)
	m.buf = b
	return nil
}

// keep empties the buffer for the next message: kept (still reserved) up to limit bytes of
// capacity, given back above.
func (m *inbound) keep(limit int) {
	if cap(m.buf) > limit {
		m.free()
		return
	}
	m.buf = m.buf[:0]
}

// free gives the buffer and its reservation back; the bytes read stay valid for whoever
// still holds them (they are no longer counted).
func (m *inbound) free() {
	m.budget.release(cap(m.buf))
	m.buf = nil
}
