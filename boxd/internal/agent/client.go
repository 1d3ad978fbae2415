package agent

import (
	"bufio"
	"context"
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

// ErrClosed is returned (wrapped) by Run when the connection to the agent ended.
var ErrClosed = errors.New("exec agent connection closed")

// Client is boxd's end of one agent connection. Run may be called concurrently; each call is
// one command, multiplexed over the connection by request id. Everything the agent sends is
// treated as untrusted: frames are bounded, and an unknown or misdirected frame ends the
// connection.
type Client struct {
	w   io.Writer
	wmu sync.Mutex

	mu    sync.Mutex
	calls map[uint32]*call
	next  uint32
	done  chan struct{}
	err   error // why the connection ended, set before done is closed
}

// call is one running command. Output is written to the caller's writers under mu and only
// while open, so nothing is written once Run has returned.
type call struct {
	mu             sync.Mutex
	open           bool
	stdout, stderr io.Writer
	exit           chan int   // buffered 1
	refused        chan error // buffered 1
}

func (c *call) write(w io.Writer, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open && w != nil {
		_, _ = w.Write(p)
	}
}

func (c *call) close() {
	c.mu.Lock()
	c.open = false
	c.mu.Unlock()
}

// Dial waits for the agent's Hello on r (bounded by ctx) and returns a Client whose read loop
// runs until r ends. The caller closes the underlying connection to stop it; when Dial fails
// it must close it too (that also ends the wait for Hello).
func Dial(ctx context.Context, r io.Reader, w io.Writer) (*Client, error) {
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
	case <-ctx.Done():
		return nil, fmt.Errorf("exec agent handshake: %w", ctx.Err())
	}
	c := &Client{w: w, calls: map[uint32]*call{}, done: make(chan struct{})}
	go c.readLoop(br)
	return c, nil
}

// Done is closed when the connection has ended; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is the reason the connection ended (nil while it is up).
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *Client) readLoop(r io.Reader) {
	err := c.serve(r)
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %v", ErrClosed, err)
	c.mu.Unlock()
	close(c.done)
}

func (c *Client) lookup(id uint32) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// serve dispatches frames until the stream ends or misbehaves.
func (c *Client) serve(r io.Reader) error {
	for {
		f, err := ReadFrame(r, MaxPayload)
		if err != nil {
			return err
		}
		switch f.Type {
		case Stdout, Stderr:
			if cl := c.lookup(f.ID); cl != nil {
				if f.Type == Stdout {
					cl.write(cl.stdout, f.Payload)
				} else {
					cl.write(cl.stderr, f.Payload)
				}
			}
		case Exit:
			if len(f.Payload) != 4 {
				return fmt.Errorf("exit frame with a %d-byte payload", len(f.Payload))
			}
			c.mu.Lock()
			cl := c.calls[f.ID]
			delete(c.calls, f.ID)
			c.mu.Unlock()
			if cl != nil {
				cl.exit <- int(int32(binary.BigEndian.Uint32(f.Payload)))
			}
		case Error:
			if f.ID == 0 {
				return fmt.Errorf("agent refused the connection: %s", f.Payload)
			}
			c.mu.Lock()
			cl := c.calls[f.ID]
			delete(c.calls, f.ID)
			c.mu.Unlock()
			if cl != nil {
				cl.refused <- fmt.Errorf("exec agent refused the command: %s", f.Payload)
			}
		default:
			return fmt.Errorf("unexpected %s frame from the agent", f.Type)
		}
	}
}

func (c *Client) send(f Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return WriteFrame(c.w, f)
}

// Run runs cmd to completion and returns its exit code, streaming its output into stdout and
// stderr (nil discards). Cancelling ctx kills the command's whole process group and returns
// ctx's error once the agent reported the exit (or after KillWait). A command too large for a
// frame fails with ErrFrameTooLarge before anything is sent. After Run returns nothing more is
// written to stdout or stderr.
func (c *Client) Run(ctx context.Context, cmd Command, stdout, stderr io.Writer) (int, error) {
	payload, err := EncodeCommand(cmd)
	if err != nil {
		return 0, err
	}
	cl := &call{open: true, stdout: stdout, stderr: stderr, exit: make(chan int, 1), refused: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return 0, c.err
	}
	c.next++
	if c.next == 0 {
		c.next = 1
	}
	id := c.next
	c.calls[id] = cl
	c.mu.Unlock()
	defer cl.close()
	forget := func() {
		c.mu.Lock()
		delete(c.calls, id)
		c.mu.Unlock()
	}
	if err := c.send(Frame{Type: Start, ID: id, Payload: payload}); err != nil {
		forget()
		return 0, fmt.Errorf("start command through the exec agent: %w", err)
	}
	select {
	case code := <-cl.exit:
		return code, nil
	case err := <-cl.refused:
		return 0, err
	case <-c.done:
		forget()
		return 0, c.Err()
	case <-ctx.Done():
	}
	var sig [4]byte
	binary.BigEndian.PutUint32(sig[:], uint32(syscall.SIGKILL))
	if err := c.send(Frame{Type: Kill, ID: id, Payload: sig[:]}); err != nil {
		forget()
		return 0, fmt.Errorf("%w (and killing the command failed: %v)", ctx.Err(), err)
	}
	t := time.NewTimer(KillWait)
	defer t.Stop()
	select {
	case <-cl.exit:
	case <-cl.refused:
	case <-c.done:
	case <-t.C:
		forget()
		return 0, fmt.Errorf("%w (the agent did not report the killed command's exit within %s)", ctx.Err(), KillWait)
	}
	return 0, ctx.Err()
}
