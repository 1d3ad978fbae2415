package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// KillWait bounds how long Run waits for a killed command's Exit before it returns anyway.
const KillWait = 5 * time.Second

// HelloTimeout bounds the wait for the agent's Hello on a new connection.
const HelloTimeout = 10 * time.Second

// ReattachTimeout bounds how long a Client with a Dialer keeps trying to open a new connection
// for the commands of one that dropped (below DefaultDetachTimeout, so that the agent still
// holds them); then those commands fail with ErrLost.
const ReattachTimeout = 2 * time.Minute

var (
	// ErrClosed is returned (wrapped) when the connection to the agent ended for good.
	ErrClosed = errors.New("exec agent connection closed")
	// ErrLost is returned (wrapped) for a command whose connection dropped and that could not
	// be re-attached: it may still run until the agent's detach timeout kills it.
	ErrLost = errors.New("exec agent command lost with its connection")
	// ErrGone is what a Dialer wraps when the sandbox itself is gone: re-attaching stops.
	ErrGone = errors.New("sandbox gone")
)

// Conn is one connection to an agent: R is what the agent sends, W what it reads. Close ends
// the connection and makes R fail; Describe (optional) says how it ended, for errors; Check
// (optional) is given the error of a connection that failed before the agent's hello and
// returns what to report (wrapping ErrGone when the sandbox is gone).
type Conn struct {
	R        io.Reader
	W        io.Writer
	Close    func()
	Describe func() string
	Check    func(error) error
}

// Dialer opens a new connection to the agent (for the kubernetes backend: a new exec stream
// running `boxagent connect`).
type Dialer func(ctx context.Context) (Conn, error)

// Client is boxd's end of an agent. Run and Start may be called concurrently; each call is one
// command, multiplexed by request id. With a Dialer (Connect) a connection that drops is
// replaced and its running commands re-attached, without losing or repeating output; without
// one (Dial) the end of the connection ends the client. Everything the agent sends is treated
// as untrusted: frames and windows are bounded, and an unknown or misdirected frame ends the
// connection.
type Client struct {
	dial            Dialer
	reattachTimeout time.Duration

	mu          sync.Mutex
	cur         *cconn
	dialing     chan struct{} // closed when the dial in progress ends
	reattaching bool
	lastEnd     string // how the last connection ended
	calls       map[uint32]*call
	next        uint32
	err         error // set (before done is closed) once the client is finished
	done        chan struct{}
}

// cconn is one connection of a Client.
type cconn struct {
	c    *Client
	r    *bufio.Reader
	w    io.Writer
	wmu  sync.Mutex
	conn Conn
	// acks and releases are flushed by one goroutine, so that the read loop never writes
	// (the agent may be blocked writing to us).
	acks     map[*call]bool
	releases []uint32
	kick     chan struct{}
	dead     chan struct{}
	deadOnce sync.Once
}

func (cc *cconn) send(f Frame) error {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	return WriteFrame(cc.w, f)
}

func (cc *cconn) end() {
	cc.deadOnce.Do(func() {
		close(cc.dead)
		if cc.conn.Close != nil {
			cc.conn.Close()
		}
	})
}

// call is one command. Its fields are guarded by Client.mu, except the sinks (their own).
type call struct {
	id        uint32
	conn      *cconn // the connection it is attached to; nil while detached
	attaching bool   // Attach sent on conn, Attached not seen yet
	sinks     [2]sink
	received  [2]uint64
	consumed  [2]uint64
	acked     [2]uint64 // consumed offsets sent in Ack or Attach
	stdin     *stdinState
	finished  chan struct{} // closed with code/err set
	code      int
	err       error
}

func (cl *call) finish(code int, err error) {
	select {
	case <-cl.finished:
		return
	default:
	}
	cl.code, cl.err = code, err
	close(cl.finished)
	end := io.EOF
	if err != nil {
		end = err
	}
	for _, s := range cl.sinks {
		s.end(end)
	}
	if cl.stdin != nil {
		cl.stdin.cond.Broadcast()
	}
}

// sink is where one output stream of a call goes.
type sink interface {
	// write takes data; it must not block.
	write(p []byte)
	// pending is what was written and not consumed yet.
	pending() int
	end(err error)
}

// writerSink writes into a caller's writer while the call is open (Run), consumed at once.
type writerSink struct {
	mu   sync.Mutex
	w    io.Writer
	open bool
}

func (s *writerSink) write(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open && s.w != nil {
		_, _ = s.w.Write(p)
	}
}
func (s *writerSink) pending() int { return 0 }
func (s *writerSink) end(error) {
	s.mu.Lock()
	s.open = false
	s.mu.Unlock()
}

// streamBuf holds one output stream of a Process for its reader; the reader's progress is
// acknowledged to the agent, which holds back the rest (back-pressure).
type streamBuf struct {
	mu       sync.Mutex
	cond     *sync.Cond
	data     []byte
	err      error // io.EOF or why the process was lost, once it ended
	consumed func(n int)
}

func newStreamBuf(consumed func(int)) *streamBuf {
	b := &streamBuf{consumed: consumed}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *streamBuf) write(p []byte) {
	b.mu.Lock()
	b.data = append(b.data, p...)
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *streamBuf) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.data)
}

func (b *streamBuf) end(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// Read returns buffered output, waiting for some; after the end io.EOF (or why it was lost).
func (b *streamBuf) Read(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.data) == 0 && b.err == nil {
		b.cond.Wait()
	}
	if len(b.data) == 0 {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	if len(b.data) == 0 {
		b.data = nil
	}
	b.mu.Unlock()
	b.consumed(n)
	return n, nil
}

// stdinState is what boxd holds of a Process's stdin: bytes [acked, end) in buf, sent on the
// current connection up to pos.
type stdinState struct {
	cond      *sync.Cond // on Client.mu
	buf       []byte
	acked     uint64 // written by the agent
	end       uint64 // accepted from the writer
	pos       uint64 // sent on the current connection
	closeReq  bool
	closeSent bool // StdinClose sent on the current connection, or seen by the agent
}

func newClient(dial Dialer) *Client {
	var r [4]byte
	_, _ = rand.Read(r[:])
	// A random first id: an agent that still holds the commands of a previous boxd (until its
	// detach timeout) does not see their ids again.
	return &Client{dial: dial, reattachTimeout: ReattachTimeout, calls: map[uint32]*call{},
		next: binary.BigEndian.Uint32(r[:]), done: make(chan struct{})}
}

// handshake waits for the agent's Hello (bounded by ctx).
func handshake(ctx context.Context, r io.Reader) (*bufio.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	hello := make(chan error, 1)
	go func() {
		f, err := ReadFrame(br, len(Version))
		switch {
		case err != nil:
			hello <- fmt.Errorf("read hello: %w", err)
		case f.Type != Hello || string(f.Payload) != Version:
			hello <- fmt.Errorf("expected hello %q, got %s frame %q", Version, f.Type, f.Payload)
		default:
			hello <- nil
		}
	}()
	select {
	case err := <-hello:
		if err != nil {
			return nil, fmt.Errorf("exec agent handshake: %w", err)
		}
		return br, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("exec agent handshake: %w", ctx.Err())
	}
}

// Dial waits for the agent's Hello on r (bounded by ctx) and returns a Client of that one
// connection, whose read loop runs until r ends; then the client is finished (Done, Err) and
// its commands fail with ErrClosed. The caller closes the underlying connection to stop it;
// when Dial fails it must close it too (that also ends the wait for Hello).
func Dial(ctx context.Context, r io.Reader, w io.Writer) (*Client, error) {
	br, err := handshake(ctx, r)
	if err != nil {
		return nil, err
	}
	c := newClient(nil)
	cc := c.newConn(br, Conn{R: r, W: w})
	c.cur = cc
	cc.startLoops()
	return c, nil
}

// Connect opens a first connection through dial and returns a Client that opens another one
// whenever it needs one: for the next command, or at once to re-attach running commands after
// a drop (for up to ReattachTimeout, or until dial reports ErrGone).
func Connect(ctx context.Context, dial Dialer) (*Client, error) {
	c := newClient(dial)
	if _, err := c.connection(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) newConn(br *bufio.Reader, conn Conn) *cconn {
	return &cconn{c: c, r: br, w: conn.W, conn: conn, acks: map[*call]bool{}, kick: make(chan struct{}, 1), dead: make(chan struct{})}
}

func (cc *cconn) startLoops() {
	go cc.readLoop()
	go cc.flushLoop()
}

// Done is closed when the client is finished (Dial: its connection ended; Connect: Close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the client is finished (nil while it is usable).
func (c *Client) Err() error {
	select {
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	default:
		return nil
	}
}

// Connected reports whether a connection is up now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil && c.err == nil
}

// LastEnd says how the last connection ended ("" when none has).
func (c *Client) LastEnd() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastEnd
}

// Close ends the client: its connection is closed and every command fails with ErrClosed
// (the agent detaches them; a daemon kills them after its detach timeout).
func (c *Client) Close() {
	c.mu.Lock()
	c.finishLocked(fmt.Errorf("%w: closed by boxd", ErrClosed))
	cc := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cc != nil {
		cc.end()
	}
}

// finishLocked ends the client and fails every call. Guarded by c.mu.
func (c *Client) finishLocked(err error) {
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	for id, cl := range c.calls {
		delete(c.calls, id)
		cl.finish(0, err)
	}
}

// connection returns the current connection, opening one (Connect) when there is none. A new
// connection re-attaches every detached call.
func (c *Client) connection(ctx context.Context) (*cconn, error) {
	for {
		c.mu.Lock()
		switch {
		case c.err != nil:
			err := c.err
			c.mu.Unlock()
			return nil, err
		case c.cur != nil:
			cc := c.cur
			frames := c.attachDetachedLocked(cc)
			c.mu.Unlock()
			cc.sendAll(frames)
			return cc, nil
		case c.dialing != nil:
			w := c.dialing
			c.mu.Unlock()
			select {
			case <-w:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		w := make(chan struct{})
		c.dialing = w
		c.mu.Unlock()
		cc, err := c.open(ctx)
		c.mu.Lock()
		c.dialing = nil
		close(w)
		if err == nil && c.err != nil {
			cc.end()
			err = c.err
		}
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.cur = cc
		frames := c.attachDetachedLocked(cc)
		c.mu.Unlock()
		cc.startLoops()
		cc.sendAll(frames)
		return cc, nil
	}
}

// attachDetachedLocked attaches every detached call to cc and returns their Attach frames.
// Guarded by c.mu.
func (c *Client) attachDetachedLocked(cc *cconn) []Frame {
	var frames []Frame
	for _, cl := range c.calls {
		if cl.conn == nil {
			cl.conn, cl.attaching = cc, true
			cl.acked = cl.consumed
			frames = append(frames, Frame{Type: Attach, ID: cl.id,
				Payload: u64s(cl.consumed[0], cl.received[0], cl.consumed[1], cl.received[1])})
		}
	}
	return frames
}

// sendAll sends frames in order; a failure ends cc (its read loop then detaches its calls).
func (cc *cconn) sendAll(frames []Frame) {
	for _, f := range frames {
		if cc.send(f) != nil {
			cc.end()
			return
		}
	}
}

func (c *Client) open(ctx context.Context) (*cconn, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithTimeout(ctx, HelloTimeout)
	defer cancel()
	br, err := handshake(hctx, conn.R)
	if err != nil {
		conn.Close()
		if conn.Describe != nil {
			if d := conn.Describe(); d != "" {
				err = fmt.Errorf("%w (%s)", err, d)
			}
		}
		if conn.Check != nil {
			err = conn.Check(err)
		}
		return nil, err
	}
	return c.newConn(br, conn), nil
}

// lost handles the end of cc: its calls are detached and re-attached on a new connection
// (Connect), or the client is finished (Dial).
func (c *Client) lost(cc *cconn, why error) {
	cc.end()
	msg := why.Error()
	if cc.conn.Describe != nil {
		if d := cc.conn.Describe(); d != "" {
			msg += " (" + d + ")"
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == cc {
		c.cur = nil
		c.lastEnd = msg
	}
	if c.dial == nil {
		c.finishLocked(fmt.Errorf("%w: %s", ErrClosed, msg))
		return
	}
	detached := 0
	for _, cl := range c.calls {
		if cl.conn == cc {
			cl.conn, cl.attaching = nil, false
			if cl.stdin != nil {
				cl.stdin.cond.Broadcast()
			}
		}
		if cl.conn == nil {
			detached++
		}
	}
	if detached > 0 && !c.reattaching && c.err == nil {
		c.reattaching = true
		go c.reattach()
	}
}

// reattach opens connections until every detached call is attached again, for up to
// reattachTimeout; then the calls still detached fail with ErrLost.
func (c *Client) reattach() {
	ctx, cancel := context.WithTimeout(context.Background(), c.reattachTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	backoff := 50 * time.Millisecond
	for {
		_, err := c.connection(ctx)
		c.mu.Lock()
		if err == nil {
			pending := false
			for _, cl := range c.calls {
				pending = pending || cl.conn == nil
			}
			if !pending || c.err != nil {
				c.reattaching = false
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			continue // that connection dropped too
		}
		if errors.Is(err, ErrGone) || ctx.Err() != nil || c.err != nil {
			c.reattaching = false
			for id, cl := range c.calls {
				if cl.conn == nil {
					delete(c.calls, id)
					cl.finish(0, fmt.Errorf("%w: re-attaching failed: %v (the connection ended: %s)", ErrLost, err, c.lastEnd))
				}
			}
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// readLoop dispatches frames until the stream ends or misbehaves.
func (cc *cconn) readLoop() {
	err := cc.serve()
	cc.c.lost(cc, err)
}

func (cc *cconn) serve() error {
	c := cc.c
	for {
		f, err := ReadFrame(cc.r, MaxPayload)
		if err != nil {
			return err
		}
		switch f.Type {
		case Stdout, Stderr:
			if err := cc.output(f); err != nil {
				return err
			}
		case Exit:
			if len(f.Payload) != 4 {
				return fmt.Errorf("exit frame with a %d-byte payload", len(f.Payload))
			}
			c.mu.Lock()
			cl := c.calls[f.ID]
			if cl == nil || cl.conn == cc {
				if cl != nil {
					delete(c.calls, f.ID)
					cl.finish(int(int32(binary.BigEndian.Uint32(f.Payload))), nil)
				}
				// Collected (also an Exit sent again for a call that is already done).
				cc.releases = append(cc.releases, f.ID)
			}
			c.mu.Unlock()
			cc.wake()
		case Error:
			if f.ID == 0 {
				return fmt.Errorf("agent refused the connection: %s", f.Payload)
			}
			c.mu.Lock()
			if cl := c.calls[f.ID]; cl != nil && cl.conn == cc {
				delete(c.calls, f.ID)
				err := fmt.Errorf("exec agent refused the command: %s", f.Payload)
				if cl.attaching {
					err = fmt.Errorf("%w: the agent refused to re-attach it: %s", ErrLost, f.Payload)
				}
				cl.finish(0, err)
			}
			c.mu.Unlock()
		case Attached:
			if len(f.Payload) != 17 {
				return fmt.Errorf("attached frame with a %d-byte payload", len(f.Payload))
			}
			if f.Payload[16] > 1 {
				return fmt.Errorf("attached frame with unknown flags %#x", f.Payload[16])
			}
			written, received := binary.BigEndian.Uint64(f.Payload), binary.BigEndian.Uint64(f.Payload[8:])
			if err := cc.attached(f.ID, written, received, f.Payload[16] == 1); err != nil {
				return err
			}
		case StdinAck:
			if len(f.Payload) != 8 {
				return fmt.Errorf("stdin-ack frame with a %d-byte payload", len(f.Payload))
			}
			if err := cc.stdinAck(f.ID, binary.BigEndian.Uint64(f.Payload)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected %s frame from the agent", f.Type)
		}
	}
}

// output passes a chunk to its call's sink; a Process's buffer may not exceed the window.
func (cc *cconn) output(f Frame) error {
	c := cc.c
	s := int(f.Type - Stdout)
	c.mu.Lock()
	cl := c.calls[f.ID]
	if cl == nil || cl.conn != cc {
		c.mu.Unlock()
		return nil
	}
	sk := cl.sinks[s]
	_, direct := sk.(*writerSink)
	if !direct && cl.received[s]+uint64(len(f.Payload))-cl.consumed[s] > 2*OutputWindow {
		c.mu.Unlock()
		return fmt.Errorf("the agent sent command %d more %s than its window", f.ID, f.Type)
	}
	cl.received[s] += uint64(len(f.Payload))
	if direct {
		cl.consumed[s] = cl.received[s]
		c.ackDueLocked(cl)
	}
	c.mu.Unlock()
	// Only this loop writes into sinks, in order; a Run that returned closed its sinks.
	sk.write(f.Payload)
	return nil
}

// ackDueLocked queues an Ack when the call consumed AckEvery bytes since the last one.
// Guarded by c.mu.
func (c *Client) ackDueLocked(cl *call) {
	cc := cl.conn
	if cc == nil || cl.attaching {
		return
	}
	if cl.consumed[0]-cl.acked[0] >= AckEvery || cl.consumed[1]-cl.acked[1] >= AckEvery {
		cc.acks[cl] = true
		cc.wake()
	}
}

func (cc *cconn) wake() {
	select {
	case cc.kick <- struct{}{}:
	default:
	}
}

// flushLoop sends the queued Acks and Releases.
func (cc *cconn) flushLoop() {
	c := cc.c
	for {
		select {
		case <-cc.kick:
		case <-cc.dead:
			return
		}
		c.mu.Lock()
		var frames []Frame
		for cl := range cc.acks {
			if cl.conn == cc && !cl.attaching {
				frames = append(frames, Frame{Type: Ack, ID: cl.id, Payload: u64s(cl.consumed[0], cl.consumed[1])})
				cl.acked = cl.consumed
			}
		}
		clear(cc.acks)
		for _, id := range cc.releases {
			frames = append(frames, Frame{Type: Release, ID: id})
		}
		cc.releases = nil
		c.mu.Unlock()
		for _, f := range frames {
			if cc.send(f) != nil {
				cc.end()
				return
			}
		}
	}
}

func (cc *cconn) attached(id uint32, written, received uint64, closed bool) error {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[id]
	if cl == nil || cl.conn != cc || !cl.attaching {
		return nil
	}
	cl.attaching = false
	if st := cl.stdin; st != nil {
		if written > received || received > st.pos || written < st.acked {
			return fmt.Errorf("attached frame for command %d with stdin offsets %d/%d outside %d..%d", id, written, received, st.acked, st.pos)
		}
		st.advance(written)
		st.pos = received
		st.closeSent = closed
		st.cond.Broadcast()
	}
	c.ackDueLocked(cl)
	return nil
}

func (cc *cconn) stdinAck(id uint32, off uint64) error {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.calls[id]
	if cl == nil || cl.conn != cc || cl.stdin == nil {
		return nil
	}
	st := cl.stdin
	if off > st.pos {
		return fmt.Errorf("stdin-ack of command %d at %d beyond the %d bytes sent to it", id, off, st.pos)
	}
	if off > st.acked {
		st.advance(off)
		st.cond.Broadcast()
	}
	return nil
}

// advance frees stdin up to off.
func (st *stdinState) advance(off uint64) {
	if off <= st.acked {
		return
	}
	st.buf = st.buf[off-st.acked:]
	st.acked = off
	if len(st.buf) == 0 {
		st.buf = nil
	}
}

// register adds a call attached to cc under a fresh id; ok is false when cc is no longer
// the current connection.
func (c *Client) register(cc *cconn, cl *call) (ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return false, c.err
	}
	if c.cur != cc {
		return false, nil
	}
	for {
		c.next++
		if c.next != 0 && c.calls[c.next] == nil {
			break
		}
	}
	cl.id, cl.conn = c.next, cc
	c.calls[cl.id] = cl
	return true, nil
}

func (c *Client) forget(cl *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls[cl.id] == cl {
		delete(c.calls, cl.id)
	}
}

// retire makes cc no longer the current connection (a write on it failed): the next
// command opens another one while cc's read loop winds down.
func (c *Client) retire(cc *cconn) {
	cc.end()
	c.mu.Lock()
	if c.cur == cc && c.dial != nil {
		c.cur = nil
	}
	c.mu.Unlock()
}

// sendAttempts bounds how often a frame that failed to go out is tried on a new connection.
const sendAttempts = 3

// start sends the Start frame of a new call. A Start that could not be written was not
// received whole, so the command did not start: with a Dialer it is sent again on a new
// connection.
func (c *Client) start(ctx context.Context, cmd Command, cl *call) error {
	payload, err := EncodeCommand(cmd)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		var cc *cconn
		for {
			if cc, err = c.connection(ctx); err != nil {
				return err
			}
			ok, err := c.register(cc, cl)
			if err != nil {
				return err
			}
			if ok {
				break
			}
		}
		err := cc.send(Frame{Type: Start, ID: cl.id, Payload: payload})
		if err == nil {
			return nil
		}
		c.forget(cl)
		c.retire(cc)
		if c.dial == nil || attempt == sendAttempts {
			return fmt.Errorf("start command through the exec agent: %w", err)
		}
	}
}

// signal sends sig to the call's process group, on the current connection (opening one when
// needed).
func (c *Client) signal(ctx context.Context, cl *call, sig syscall.Signal) error {
	for attempt := 1; ; attempt++ {
		select {
		case <-cl.finished:
			return nil
		default:
		}
		cc, err := c.connection(ctx)
		if err != nil {
			return fmt.Errorf("signal command through the exec agent: %w", err)
		}
		err = cc.send(Frame{Type: Kill, ID: cl.id, Payload: binary.BigEndian.AppendUint32(nil, uint32(sig))})
		if err == nil {
			return nil
		}
		c.retire(cc)
		if c.dial == nil || attempt == sendAttempts {
			return fmt.Errorf("signal command through the exec agent: %w", err)
		}
	}
}

// Run runs cmd to completion and returns its exit code, streaming its output into stdout and
// stderr (nil discards; the writers must not block). Cancelling ctx kills the command's whole
// process group and returns ctx's error once the agent reported the exit (or after KillWait).
// A command too large for a frame fails with ErrFrameTooLarge before anything is sent. After
// Run returns nothing more is written to stdout or stderr.
func (c *Client) Run(ctx context.Context, cmd Command, stdout, stderr io.Writer) (int, error) {
	cmd.Stdin = false
	cl := &call{finished: make(chan struct{}),
		sinks: [2]sink{&writerSink{w: stdout, open: true}, &writerSink{w: stderr, open: true}}}
	if err := c.start(ctx, cmd, cl); err != nil {
		return 0, err
	}
	defer func() {
		for _, s := range cl.sinks {
			s.end(nil)
		}
	}()
	select {
	case <-cl.finished:
		return cl.code, cl.err
	case <-ctx.Done():
	}
	if err := c.signal(context.WithoutCancel(ctx), cl, syscall.SIGKILL); err != nil {
		c.forget(cl)
		return 0, fmt.Errorf("%w (and killing the command failed: %v)", ctx.Err(), err)
	}
	t := time.NewTimer(KillWait)
	defer t.Stop()
	select {
	case <-cl.finished:
	case <-t.C:
		c.forget(cl)
		return 0, fmt.Errorf("%w (the agent did not report the killed command's exit within %s)", ctx.Err(), KillWait)
	}
	return 0, ctx.Err()
}

// Process is a command started with Start: stdin, stdout and stderr are streams, its exit is
// reported by Wait. Over a Client with a Dialer it survives dropped connections.
type Process struct {
	c  *Client
	cl *call
}

// Start starts cmd with a stdin pipe (Command.Stdin is set) and returns at once.
func (c *Client) Start(ctx context.Context, cmd Command) (*Process, error) {
	cmd.Stdin = true
	cl := &call{finished: make(chan struct{}), stdin: &stdinState{cond: sync.NewCond(&c.mu)}}
	p := &Process{c: c, cl: cl}
	for s := range cl.sinks {
		cl.sinks[s] = newStreamBuf(func(n int) { c.consume(cl, s, n) })
	}
	if err := c.start(ctx, cmd, cl); err != nil {
		return nil, err
	}
	go c.pushStdin(cl)
	return p, nil
}

func (c *Client) consume(cl *call, s, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl.consumed[s] += uint64(n)
	c.ackDueLocked(cl)
}

// pushStdin sends what was written to the process's stdin on the connection it is attached
// to, from where the agent's count says (after a re-attach), and StdinClose after it.
func (c *Client) pushStdin(cl *call) {
	st := cl.stdin
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		select {
		case <-cl.finished:
			return
		default:
		}
		cc := cl.conn
		if cc == nil || cl.attaching || (st.pos >= st.end && (!st.closeReq || st.closeSent)) {
			st.cond.Wait()
			continue
		}
		var f Frame
		if st.pos < st.end {
			off := int(st.pos - st.acked)
			n := min(ChunkSize, len(st.buf)-off)
			f = Frame{Type: Stdin, ID: cl.id, Payload: append([]byte(nil), st.buf[off:off+n]...)}
			st.pos += uint64(n)
		} else {
			f = Frame{Type: StdinClose, ID: cl.id}
			st.closeSent = true
		}
		c.mu.Unlock()
		err := cc.send(f)
		c.mu.Lock()
		if err != nil {
			c.mu.Unlock()
			cc.end() // the read loop notices; a re-attach resends from the agent's count
			c.mu.Lock()
		}
	}
}

// Stdin is the process's stdin. Write returns once the data is queued (at most StdinWindow
// bytes are held); Close sends end of input after it.
func (p *Process) Stdin() io.WriteCloser { return stdinWriter{p} }

// Stdout and Stderr are the process's output streams; they end with io.EOF after its exit
// (or with the error that lost it).
func (p *Process) Stdout() io.Reader { return p.cl.sinks[0].(*streamBuf) }
func (p *Process) Stderr() io.Reader { return p.cl.sinks[1].(*streamBuf) }

// Signal sends sig to the process group (nothing once it has exited).
func (p *Process) Signal(ctx context.Context, sig syscall.Signal) error {
	return p.c.signal(ctx, p.cl, sig)
}

// Done is closed once the exit is known (or the process was lost).
func (p *Process) Done() <-chan struct{} { return p.cl.finished }

// Wait returns the exit code as the agent reports it (128+n for a signal n), or an error
// wrapping ErrLost or ErrClosed when it cannot be known.
func (p *Process) Wait(ctx context.Context) (int, error) {
	select {
	case <-p.cl.finished:
		return p.cl.code, p.cl.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type stdinWriter struct{ p *Process }

func (w stdinWriter) Write(b []byte) (int, error) {
	c, cl := w.p.c, w.p.cl
	st := cl.stdin
	c.mu.Lock()
	defer c.mu.Unlock()
	written := 0
	for len(b) > 0 {
		for {
			select {
			case <-cl.finished:
				return written, io.ErrClosedPipe
			default:
			}
			if st.closeReq {
				return written, io.ErrClosedPipe
			}
			if st.end-st.acked < StdinWindow {
				break
			}
			st.cond.Wait()
		}
		n := min(len(b), int(StdinWindow-(st.end-st.acked)))
		st.buf = append(st.buf, b[:n]...)
		st.end += uint64(n)
		b = b[n:]
		written += n
		st.cond.Broadcast()
	}
	return written, nil
}

func (w stdinWriter) Close() error {
	c, cl := w.p.c, w.p.cl
	c.mu.Lock()
	defer c.mu.Unlock()
	if !cl.stdin.closeReq {
		cl.stdin.closeReq = true
		cl.stdin.cond.Broadcast()
	}
	return nil
}
