package agent

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DrainDelay is how long the agent keeps reading a command's output after the command itself
// exited, for background children that still hold its stdout/stderr; then it takes what the
// pipes hold, closes them and sends Exit. The Docker Engine waits the same 2 s for an exec's
// streams.
const DrainDelay = 2 * time.Second

// DefaultDetachTimeout is how long a daemon keeps a command whose connection ended for a
// re-attach (boxd gives up re-attaching earlier, see ReattachTimeout).
const DefaultDetachTimeout = 5 * time.Minute

// Options configure an Agent.
type Options struct {
	// Environ is the agent's own environment (see EnvMark).
	Environ []string
	// DetachTimeout is how long a command whose connection ended is kept, running or exited,
	// for a connection to re-attach it; then its process group is killed and it is forgotten.
	// 0 kills a connection's commands as soon as that connection ends (Serve).
	DetachTimeout time.Duration
	// ReapAll makes the agent wait for every child (wait4(-1)), not only for its commands: set
	// it when the agent is PID 1 or a child subreaper, so that orphans do not stay zombies.
	ReapAll bool
	// Logf logs what a daemon does on its own (expiries); nil discards.
	Logf func(format string, args ...any)
}

// Agent runs commands for boxd. Commands belong to the agent, not to the connection that
// started them: with a DetachTimeout they survive it and can be re-attached (Attach).
type Agent struct {
	opts           Options
	base, appended []string
	waiter         waiter

	mu     sync.Mutex
	procs  map[uint32]*proc
	closed bool           // Shutdown was called: nothing is kept for a re-attach
	wg     sync.WaitGroup // running commands
}

// NewAgent returns an agent. With ReapAll it starts reaping children at once.
func NewAgent(opts Options) *Agent {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	a := &Agent{opts: opts, procs: map[uint32]*proc{}}
	a.base, a.appended = SplitEnv(opts.Environ)
	if opts.ReapAll {
		a.waiter = newReaper()
	} else {
		a.waiter = pidWaiter{}
	}
	return a
}

// Serve runs the agent directly on one connection (the docker backend's exec agent): it sends
// Hello, then runs every Start in its own session and process group (Setsid, as the runtime
// does for every `docker exec`) and streams its output, until in ends. environ is the agent's
// own environment (see EnvMark). On return — end of input, a refused frame or a broken output
// — every command still running has been killed with its whole process group (and, when the
// output still works, its Exit sent), so nothing outlives the connection that started it.
func Serve(in io.Reader, out io.Writer, environ []string) error {
	a := NewAgent(Options{Environ: environ})
	err := a.ServeConn(in, out)
	a.Shutdown()
	return err
}

// outBuf is what the agent holds of one output stream of a command: bytes [base,
// base+len(data)) read from the pipe and not yet acknowledged; sent is how far the attached
// connection has been sent.
type outBuf struct {
	data  []byte
	base  uint64
	sent  uint64
	eof   bool // the pipe is finished: nothing more will be read
	final bool // the command exited DrainDelay ago: take what the pipe holds and stop
}

func (o *outBuf) produced() uint64 { return o.base + uint64(len(o.data)) }

// trim frees everything before off (base <= off <= produced).
func (o *outBuf) trim(off uint64) {
	n := int(off - o.base)
	if n <= 0 {
		return
	}
	o.data = o.data[n:]
	o.base = off
	if len(o.data) == 0 {
		o.data = nil // let a large buffer go
	}
}

// inQueue is a command's stdin: data received from boxd and not yet written to the pipe.
type inQueue struct {
	f        *os.File
	data     []byte
	received uint64
	written  uint64 // written to the pipe or, once it broke, discarded
	closeReq bool   // StdinClose received
	broken   bool   // a write failed (the command closed its stdin): discard the rest
}

// proc is one command. Its fields are guarded by Agent.mu; cond (on Agent.mu) wakes its
// pipe readers, stdin writer and sender.
type proc struct {
	id       uint32
	cond     *sync.Cond
	pid      int            // 0 until started
	pending  syscall.Signal // a Kill that arrived before the start
	conn     *aconn         // the attached connection; nil while detached
	out      [2]outBuf      // stdout, stderr
	in       *inQueue       // nil: stdin is /dev/null
	exited   bool           // the command was reaped; code is set
	done     bool           // exited and both pipes finished: no more output
	code     int
	sentExit bool        // Exit sent on conn
	gone     bool        // released or expired: output is dropped, nothing is sent
	timer    *time.Timer // detach expiry
}

// aconn is the agent's end of one connection.
type aconn struct {
	w    io.Writer
	wmu  sync.Mutex
	dead bool // a write failed (guarded by Agent.mu)
}

func (c *aconn) send(f Frame) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return WriteFrame(c.w, f)
}

// ServeConn serves one connection: Hello, then frames until in ends or misbehaves. With a
// DetachTimeout the commands attached to it are detached when it ends (they keep running);
// without one they are killed, and ServeConn returns once their Exit was sent or the output
// broke.
func (a *Agent) ServeConn(in io.Reader, out io.Writer) error {
	c := &aconn{w: out}
	if err := c.send(Frame{Type: Hello, Payload: []byte(Version)}); err != nil {
		return err
	}
	err := a.readLoop(c, bufio.NewReaderSize(in, 64<<10))
	a.endConn(c)
	return err
}

func (a *Agent) readLoop(c *aconn, r io.Reader) error {
	refuse := func(format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		_ = c.send(Frame{Type: Error, Payload: []byte(msg)})
		return errors.New("refused: " + msg)
	}
	for {
		f, err := ReadFrame(r, MaxPayload)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			_ = c.send(Frame{Type: Error, Payload: []byte(err.Error())})
			return err
		}
		switch f.Type {
		case Start:
			if err := a.start(c, f); err != nil {
				return err
			}
		case Kill:
			if len(f.Payload) != 4 {
				return refuse("kill frame with a %d-byte payload", len(f.Payload))
			}
			sig := binary.BigEndian.Uint32(f.Payload)
			if sig == 0 || sig > 64 {
				return refuse("kill frame with signal %d", sig)
			}
			a.kill(f.ID, syscall.Signal(sig))
		case Stdin:
			if msg := a.stdin(c, f.ID, f.Payload); msg != "" {
				return refuse("%s", msg)
			}
		case StdinClose:
			if len(f.Payload) != 0 {
				return refuse("stdin-close frame with a %d-byte payload", len(f.Payload))
			}
			a.closeStdin(f.ID)
		case Attach:
			v, err := parseU64s(f.Type, f.Payload, 4)
			if err != nil {
				return refuse("%v", err)
			}
			if err := a.attach(c, f.ID, v); err != nil {
				return err
			}
		case Ack:
			v, err := parseU64s(f.Type, f.Payload, 2)
			if err != nil {
				return refuse("%v", err)
			}
			if msg := a.ack(f.ID, v[0], v[1]); msg != "" {
				return refuse("%s", msg)
			}
		case Release:
			if len(f.Payload) != 0 {
				return refuse("release frame with a %d-byte payload", len(f.Payload))
			}
			a.release(f.ID)
		default:
			return refuse("unexpected %s frame", f.Type)
		}
	}
}

// start registers and launches one command attached to c. A malformed command or an id in
// use is refused for that id only; the connection goes on.
func (a *Agent) start(c *aconn, f Frame) error {
	cmd, err := DecodeCommand(f.Payload)
	if err == nil && f.ID == 0 {
		err = errors.New("request id 0 is reserved")
	}
	var p *proc
	if err == nil {
		a.mu.Lock()
		if _, busy := a.procs[f.ID]; busy {
			err = fmt.Errorf("request id %d is already in use", f.ID)
		} else {
			p = &proc{id: f.ID, cond: sync.NewCond(&a.mu), conn: c}
			if cmd.Stdin {
				p.in = &inQueue{}
			}
			a.procs[f.ID] = p
		}
		a.mu.Unlock()
	}
	if err != nil {
		return c.send(Frame{Type: Error, ID: f.ID, Payload: []byte(err.Error())})
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.run(p, cmd)
	}()
	go a.sender(p, c)
	return nil
}

// kill signals the process group of command id (ignored when it has ended).
func (a *Agent) kill(id uint32, sig syscall.Signal) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.procs[id]; p != nil {
		a.signal(p, sig)
	}
}

// signal signals p's process group while it may still have members. Guarded by a.mu.
func (a *Agent) signal(p *proc, sig syscall.Signal) {
	switch {
	case p.done:
		// Once the leader is reaped and its pipes are finished the group id may be reused.
	case p.pid == 0:
		if p.pending == 0 || sig == syscall.SIGKILL {
			p.pending = sig
		}
	default:
		_ = syscall.Kill(-p.pid, sig)
	}
}

// stdin queues data for command id; a non-empty result is a protocol violation.
func (a *Agent) stdin(c *aconn, id uint32, data []byte) string {
	a.mu.Lock()
	p := a.procs[id]
	if p == nil || p.in == nil || p.gone {
		a.mu.Unlock()
		return "" // released, expired or without stdin: nothing to write to
	}
	q := p.in
	if q.closeReq {
		a.mu.Unlock()
		return fmt.Sprintf("stdin frame for command %d after its stdin-close", id)
	}
	if len(q.data)+len(data) > StdinWindow {
		a.mu.Unlock()
		return fmt.Sprintf("stdin of command %d exceeds the %d-byte window", id, StdinWindow)
	}
	q.received += uint64(len(data))
	if !q.broken {
		q.data = append(q.data, data...)
		p.cond.Broadcast()
		a.mu.Unlock()
		return ""
	}
	q.written = q.received
	ack := q.written
	a.mu.Unlock()
	a.sendTo(c, Frame{Type: StdinAck, ID: id, Payload: u64s(ack)})
	return ""
}

func (a *Agent) closeStdin(id uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.procs[id]; p != nil && p.in != nil {
		p.in.closeReq = true
		p.cond.Broadcast()
	}
}

// attach moves command id to connection c: v is stdout consumed, stdout received, stderr
// consumed, stderr received, as boxd counts them.
func (a *Agent) attach(c *aconn, id uint32, v []uint64) error {
	a.mu.Lock()
	p := a.procs[id]
	var msg string
	switch {
	case p == nil || p.gone:
		msg = fmt.Sprintf("no command with id %d: it was never started, was released, or nothing re-attached it within %s", id, a.opts.DetachTimeout)
	default:
		for s := range p.out {
			o := &p.out[s]
			consumed, received := v[2*s], v[2*s+1]
			if consumed < o.base || consumed > received || received > o.produced() {
				msg = fmt.Sprintf("attach of command %d with %s offsets %d/%d outside the buffered %d..%d", id, Type(Stdout+Type(s)), consumed, received, o.base, o.produced())
			}
		}
	}
	if msg != "" {
		a.mu.Unlock()
		return c.send(Frame{Type: Error, ID: id, Payload: []byte(msg)})
	}
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	for s := range p.out {
		p.out[s].trim(v[2*s])
		p.out[s].sent = v[2*s+1]
	}
	p.conn, p.sentExit = c, false // a previous connection's sender stops
	var written, received uint64
	var closed byte
	if q := p.in; q != nil {
		written, received = q.written, q.received
		if q.closeReq {
			closed = 1
		}
	}
	p.cond.Broadcast()
	a.mu.Unlock()
	if err := c.send(Frame{Type: Attached, ID: id, Payload: append(u64s(written, received), closed)}); err != nil {
		return err
	}
	go a.sender(p, c)
	return nil
}

// ack frees command id's output up to the offsets boxd consumed.
func (a *Agent) ack(id uint32, stdout, stderr uint64) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.procs[id]
	if p == nil || p.gone {
		return ""
	}
	for s, off := range []uint64{stdout, stderr} {
		o := &p.out[s]
		if off < o.base || off > o.sent {
			return fmt.Sprintf("ack of command %d's %s at %d outside the sent %d..%d", id, Type(Stdout+Type(s)), off, o.base, o.sent)
		}
		o.trim(off)
	}
	p.cond.Broadcast()
	return ""
}

// release forgets command id; one still running is killed.
func (a *Agent) release(id uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.procs[id]; p != nil {
		a.forget(p)
		a.signal(p, syscall.SIGKILL)
	}
}

// forget drops p: its output is discarded from now on and its stdin closed. Guarded by a.mu.
func (a *Agent) forget(p *proc) {
	if a.procs[p.id] == p {
		delete(a.procs, p.id)
	}
	p.gone = true
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if p.in != nil && p.in.f != nil {
		_ = p.in.f.Close() // unblocks a write the command does not read
	}
	p.cond.Broadcast()
}

// endConn handles the end of c (its input ended or it misbehaved): its commands are detached
// (DetachTimeout) or killed (no DetachTimeout; then it waits until their Exit was sent or the
// output broke, and forgets them).
func (a *Agent) endConn(c *aconn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var mine []*proc
	for _, p := range a.procs {
		if p.conn == c {
			mine = append(mine, p)
		}
	}
	if a.opts.DetachTimeout > 0 {
		for _, p := range mine {
			a.detach(p)
		}
		return
	}
	for _, p := range mine {
		a.signal(p, syscall.SIGKILL)
		for p.conn == c && !c.dead && !p.sentExit && !p.gone {
			p.cond.Wait()
		}
		a.forget(p)
	}
}

// detach leaves p running without a connection, for DetachTimeout. Guarded by a.mu.
func (a *Agent) detach(p *proc) {
	p.conn = nil
	p.cond.Broadcast()
	if a.opts.DetachTimeout == 0 || a.closed {
		a.signal(p, syscall.SIGKILL)
		a.forget(p)
		return
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(a.opts.DetachTimeout, func() { a.expire(p) })
	}
}

// expire kills and forgets a command nothing re-attached.
func (a *Agent) expire(p *proc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.conn != nil || p.gone {
		return
	}
	state := "exited, never collected"
	if !p.done {
		state = "running: its process group is killed"
	}
	a.opts.Logf("boxagent: command %d was not re-attached within %s (%s)", p.id, a.opts.DetachTimeout, state)
	a.signal(p, syscall.SIGKILL)
	a.forget(p)
}

// broken handles a failed write on c: every command attached to it is detached (or killed).
func (a *Agent) broken(c *aconn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.dead {
		return
	}
	c.dead = true
	for _, p := range a.procs {
		if p.conn == c {
			a.detach(p)
		}
	}
}

// sendTo sends f on c, treating a failure as the end of c.
func (a *Agent) sendTo(c *aconn, f Frame) {
	if c.send(f) != nil {
		a.broken(c)
	}
}

// sender sends p's output, then its Exit, on c while p is attached to c.
func (a *Agent) sender(p *proc, c *aconn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	turn := 0
	for {
		if p.conn != c || c.dead || p.gone {
			return
		}
		f, ok := Frame{}, false
		for i := range 2 {
			s := (turn + i) % 2
			o := &p.out[s]
			if o.sent < o.produced() {
				off := int(o.sent - o.base)
				n := min(ChunkSize, len(o.data)-off)
				f = Frame{Type: Stdout + Type(s), ID: p.id, Payload: append([]byte(nil), o.data[off:off+n]...)}
				o.sent += uint64(n)
				turn, ok = s+1, true
				break
			}
		}
		if !ok && p.done && !p.sentExit {
			f, ok = Frame{Type: Exit, ID: p.id, Payload: binary.BigEndian.AppendUint32(nil, uint32(int32(p.code)))}, true
			p.sentExit = true
		}
		if !ok {
			p.cond.Wait()
			continue
		}
		a.mu.Unlock()
		err := c.send(f)
		a.mu.Lock()
		if err != nil {
			a.mu.Unlock()
			a.broken(c)
			a.mu.Lock()
			return
		}
		if f.Type == Exit {
			p.cond.Broadcast() // endConn of a direct connection waits for it
		}
	}
}

// Shutdown kills every command's process group and waits until they have ended.
func (a *Agent) Shutdown() {
	a.mu.Lock()
	a.closed = true
	for _, p := range a.procs {
		a.signal(p, syscall.SIGKILL)
		a.forget(p)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// fail ends a command that could not start: msg goes to its stderr, code is its exit code.
func (a *Agent) fail(p *proc, code int, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !p.gone {
		p.out[1].data = append(p.out[1].data, err.Error()+"\n"...)
	}
	p.out[0].eof, p.out[1].eof = true, true
	p.exited, p.done, p.code = true, true, code
	p.cond.Broadcast()
}

// run executes cmd and records its exit code: the exit status, 128+n when a signal n ended it
// (what a shell and the engine report), 127 when the program is not found and 126 when it
// cannot be executed (with a message on stderr, like a shell).
func (a *Agent) run(p *proc, cmd Command) {
	env := MergeEnv(a.base, cmd.Env, a.appended)
	path, err := lookPath(cmd.Argv[0], env)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			a.fail(p, 127, err)
		} else {
			a.fail(p, 126, err)
		}
		return
	}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	var stdinR, stdinW *os.File
	if cmd.Stdin {
		stdinR, stdinW, err = os.Pipe()
	} else {
		stdinR, err = os.Open(os.DevNull)
	}
	if err != nil {
		a.fail(p, 126, fmt.Errorf("open stdin: %w", err))
		return
	}
	files = append(files, stdinR)
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll()
		if stdinW != nil {
			stdinW.Close()
		}
		a.fail(p, 126, fmt.Errorf("create stdout pipe: %w", err))
		return
	}
	files = append(files, outW)
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll()
		outR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		a.fail(p, 126, fmt.Errorf("create stderr pipe: %w", err))
		return
	}
	files = append(files, errW)
	pid, wait, err := a.waiter.start(func() (int, error) {
		return syscall.ForkExec(path, cmd.Argv, &syscall.ProcAttr{Dir: cmd.Dir, Env: env,
			Files: []uintptr{stdinR.Fd(), outW.Fd(), errW.Fd()}, Sys: &syscall.SysProcAttr{Setsid: true}})
	})
	closeAll()
	if err != nil {
		outR.Close()
		errR.Close()
		if stdinW != nil {
			stdinW.Close()
		}
		a.fail(p, 126, fmt.Errorf("%s: %w", cmd.Argv[0], err))
		return
	}
	a.mu.Lock()
	p.pid = pid
	if p.pending != 0 {
		_ = syscall.Kill(-pid, p.pending)
	}
	if p.in != nil {
		p.in.f = stdinW
		if p.gone {
			stdinW.Close()
		}
	}
	a.mu.Unlock()
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); a.pump(p, 0, outR) }()
	go func() { defer pumps.Done(); a.pump(p, 1, errR) }()
	if p.in != nil {
		go a.writeStdin(p, stdinW)
	}
	ws := <-wait
	code := ws.ExitStatus()
	if ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	a.mu.Lock()
	p.exited, p.code = true, code
	a.mu.Unlock()
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(DrainDelay):
		a.mu.Lock()
		for s, f := range []*os.File{outR, errR} {
			p.out[s].final = true
			_ = f.SetReadDeadline(time.Now()) // a blocked read returns; the pump takes what is left
		}
		p.cond.Broadcast()
		a.mu.Unlock()
		<-drained
	}
	a.mu.Lock()
	p.done = true
	p.cond.Broadcast()
	a.mu.Unlock()
}

// pump reads output stream s (0 stdout, 1 stderr) of p from f into its buffer, waiting while
// OutputWindow bytes are unacknowledged (back-pressure on the command).
func (a *Agent) pump(p *proc, s int, f *os.File) {
	defer f.Close()
	buf := make([]byte, ChunkSize)
	for {
		a.mu.Lock()
		o := &p.out[s]
		for !p.gone && !o.final && len(o.data) >= OutputWindow {
			p.cond.Wait()
		}
		final := o.final
		a.mu.Unlock()
		if final {
			a.drainRest(p, s, f, buf)
			return
		}
		n, err := f.Read(buf)
		a.mu.Lock()
		if n > 0 && !p.gone {
			o.data = append(o.data, buf[:n]...)
			p.cond.Broadcast()
		}
		a.mu.Unlock()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // DrainDelay passed: final is set
		}
		if err != nil {
			a.eof(p, s)
			return
		}
	}
}

// drainRest takes what the pipe holds without waiting for more (the window may be exceeded
// by at most the pipe's capacity), then ends the stream.
func (a *Agent) drainRest(p *proc, s int, f *os.File, buf []byte) {
	defer a.eof(p, s)
	_ = f.SetReadDeadline(time.Time{})
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			for {
				if n, rerr = syscall.Read(int(fd), buf); rerr != syscall.EINTR {
					return true // never wait for more
				}
			}
		}); err != nil || n <= 0 || rerr != nil {
			return // EOF, nothing more for now (EAGAIN), or an error
		}
		a.mu.Lock()
		if !p.gone {
			p.out[s].data = append(p.out[s].data, buf[:n]...)
			p.cond.Broadcast()
		}
		a.mu.Unlock()
	}
}

func (a *Agent) eof(p *proc, s int) {
	a.mu.Lock()
	p.out[s].eof = true
	p.cond.Broadcast()
	a.mu.Unlock()
}

// writeStdin writes what boxd sent to the command's stdin, acknowledging it, and closes the
// pipe on StdinClose (or when the command is forgotten).
func (a *Agent) writeStdin(p *proc, f *os.File) {
	defer f.Close()
	q := p.in
	for {
		a.mu.Lock()
		for len(q.data) == 0 && !q.closeReq && !q.broken && !p.gone {
			p.cond.Wait()
		}
		if p.gone || q.broken || len(q.data) == 0 {
			a.mu.Unlock()
			return // forgotten, broken, or closed with everything written
		}
		chunk := q.data[:min(len(q.data), ChunkSize)]
		a.mu.Unlock()
		n, err := f.Write(chunk)
		a.mu.Lock()
		q.data = q.data[n:]
		q.written += uint64(n)
		if err != nil {
			// The command closed its stdin (or exited): what boxd sends is discarded.
			q.broken = true
			q.written = q.received
			q.data = nil
		}
		if len(q.data) == 0 {
			q.data = nil
		}
		ack, c := q.written, p.conn
		a.mu.Unlock()
		if c != nil {
			a.sendTo(c, Frame{Type: StdinAck, ID: p.id, Payload: u64s(ack)})
		}
	}
}

// waiter starts a process and reports its wait status.
type waiter interface {
	start(fork func() (int, error)) (pid int, status <-chan syscall.WaitStatus, err error)
}

// pidWaiter waits for each command by its pid (the agent is not PID 1: other children of the
// process, e.g. a test's, are left alone).
type pidWaiter struct{}

func (pidWaiter) start(fork func() (int, error)) (int, <-chan syscall.WaitStatus, error) {
	pid, err := fork()
	if err != nil {
		return 0, nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	go func() {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
		ch <- ws
	}()
	return pid, ch, nil
}

// lookPath resolves name as execve-by-PATH does, with the command's own PATH.
func lookPath(name string, env []string) (string, error) {
	check := func(p string) error {
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return fs.ErrPermission
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		return name, nil
	}
	pathVar := ""
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathVar = v
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, fs.ErrPermission) && denied == nil {
			denied = fmt.Errorf("%s: %w", name, err)
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH: %w", name, fs.ErrNotExist)
}
