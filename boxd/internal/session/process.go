package session

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/shellquote"
)

// Relay framing limits (§8.7): a line is buffered up to just under the client's 1 MiB
// message cap; a longer line is flushed in 64 KiB pieces.
const (
	maxLine       = 1<<20 - 1024
	longLinePiece = 64 << 10
	// stdoutRead is the size of one read from a process's stdout.
	stdoutRead = 32 << 10
	// StdoutBufferMax bounds the bytes of one process's stdout that boxd has read and no relay
	// has taken yet: the line being assembled (at most maxLine, a longer one is flushed in
	// pieces) plus one read. While no relay takes the next message, boxd reads nothing more
	// from the process, so its pipe fills and its writes block, as with the reference (whose
	// asyncio reader stops reading at twice its 64 KiB limit).
	StdoutBufferMax  = maxLine + stdoutRead
	stderrPreviewMax = 4000
	terminateGrace   = 5 * time.Second
	// stderrGrace bounds how long an exit waits for the rest of stderr once the backend
	// reported it (the Docker backend ends both streams together; the bound is for a backend
	// whose stderr is held open by a child).
	stderrGrace = 2 * time.Second
)

// Process is a managed process of a session.
type Process struct {
	Session string
	Spec    ProcessSpec
	Started time.Time

	proc backend.Process
	// Lines carries stdout, one message per line, to the attached relay. It is unbuffered:
	// the next message waits in the pump (bounded by StdoutBufferMax) until a relay takes
	// it. It is closed after stdout ended AND the exit was recorded, so a relay that sees it
	// close can report the process exited (LangBot asks box_get_managed_process right then).
	Lines  chan string
	Attach chan struct{} // a one-slot semaphore: the relay attach lock

	// stdoutBuffered counts the stdout bytes read from the process and not yet handed to a
	// relay (or dropped); at most StdoutBufferMax.
	stdoutBuffered atomic.Int64
	discard        chan struct{} // closed when boxd stops the process: its stdout is dropped
	stderrDone     chan struct{} // closed when stderr has ended

	mu       sync.Mutex
	exited   bool
	exitCode int
	exitedAt time.Time
	stopped  bool
	stderr   []string
	stderrN  int
	done     chan struct{}
}

func (p *Process) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.exited
}

// Stdin is where relay messages go.
func (p *Process) Stdin() io.Writer { return p.proc.Stdin() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Info is BoxManagedProcessInfo (§6.7).
func (p *Process) Info() map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.Spec.Env))
	for _, e := range p.Spec.Env {
		keys = append(keys, e.Key)
	}
	sort.Strings(keys)
	args := p.Spec.Args
	if args == nil {
		args = []string{}
	}
	info := map[string]any{"session_id": p.Session, "process_id": p.Spec.ProcessID, "status": "running",
		"command": p.Spec.Command, "args": args, "cwd": p.Spec.Cwd, "env_keys": keys,
		"attached": len(p.Attach) > 0, "started_at": FormatTime(p.Started), "exited_at": nil, "exit_code": nil,
		"stderr_preview": strings.Join(p.stderr, "\n")}
	if p.exited {
		info["status"], info["exited_at"], info["exit_code"] = "exited", FormatTime(p.exitedAt), p.exitCode
	}
	return info
}

func (p *Process) addStderr(chunk string) {
	chunk = strings.TrimRight(chunk, " \t\r\n")
	if strings.TrimSpace(chunk) == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stderr = append(p.stderr, chunk)
	p.stderrN += len([]rune(chunk)) + 1
	for p.stderrN > stderrPreviewMax && len(p.stderr) > 0 {
		p.stderrN -= len([]rune(p.stderr[0])) + 1
		p.stderr = p.stderr[1:]
	}
}

// StartProcess implements box_start_managed_process (§5.10).
func (m *Manager) StartProcess(ctx context.Context, physical string, spec ProcessSpec) (*Process, error) {
	s, err := m.Get(physical)
	if err != nil {
		return nil, err
	}
	s.lock.Lock()
	defer s.lock.Unlock()
	s.mu.Lock()
	closing, old := s.closing, s.procs[spec.ProcessID]
	s.mu.Unlock()
	if closing {
		return nil, rpc.Errorf(rpc.BoxSessionNotFoundError, "session %s is being deleted", physical)
	}
	max := m.limits().MaxManagedProcesses
	m.mu.Lock()
	running := m.processes
	if old != nil && old.running() {
		running--
	}
	if running+m.starting >= max {
		m.mu.Unlock()
		m.Observer.Capacity("managed_processes")
		return nil, rpc.Errorf(rpc.BoxCapacityExceededError, "Box managed process capacity reached (%d)", max)
	}
	m.starting++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.starting--
		m.mu.Unlock()
	}()
	if old != nil && old.running() {
		m.log.Info(fmt.Sprintf("LangBot Box terminating stale managed process before restart: session_id=%s process_id=%s", physical, spec.ProcessID))
		m.terminate(ctx, old)
	}
	bp, err := m.backend.StartProcess(ctx, s.Handle, backend.ProcessRequest{
		Argv: []string{"sh", "-lc", shellquote.ProcessScript(spec.Cwd, spec.Command, spec.Args)},
		Env:  spec.Env,
	})
	if err != nil {
		return nil, backendError(err)
	}
	p := &Process{Session: physical, Spec: spec, Started: m.now(), proc: bp, Lines: make(chan string),
		Attach: make(chan struct{}, 1), done: make(chan struct{}), discard: make(chan struct{}), stderrDone: make(chan struct{})}
	m.mu.Lock()
	m.processes++
	m.mu.Unlock()
	s.mu.Lock()
	s.procs[spec.ProcessID] = p
	s.mu.Unlock()
	s.touch(m.now())
	go p.pumpStdout(bp.Stdout())
	go m.drainStderr(p, bp.Stderr())
	go m.watch(s, p)
	return p, nil
}

// StdoutBuffered is the number of stdout bytes boxd holds for the process's relay: read
// from the process, not yet taken by a relay (at most StdoutBufferMax).
func (p *Process) StdoutBuffered() int64 { return p.stdoutBuffered.Load() }

// pumpStdout splits stdout into messages (§8.7): one line per message without its "\n",
// empty lines skipped, lines longer than maxLine in 64 KiB pieces (never splitting a code
// point), UTF-8 decoded with replacement. Each message is handed to the relay before more
// is read (back-pressure). Lines is closed once stdout ended and the exit is recorded.
func (p *Process) pumpStdout(r io.Reader) {
	defer close(p.Lines)
	defer func() { <-p.done }()
	chunk := make([]byte, stdoutRead)
	var line []byte // the line being assembled, shorter than maxLine between reads
	dropping := false
	send := func(raw []byte, consumed int) { // consumed: raw plus the newline it ended with
		if len(raw) > 0 && !dropping && !p.deliver(strings.ToValidUTF8(string(raw), "\uFFFD")) {
			dropping = true
		}
		p.stdoutBuffered.Add(-int64(consumed))
	}
	for {
		n, err := r.Read(chunk)
		p.stdoutBuffered.Add(int64(n))
		data := chunk[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				line = append(line, data...)
				data = nil
				if len(line) > maxLine {
					line = flushLong(line, send)
				}
				continue
			}
			switch {
			case len(line) == 0 && i <= maxLine:
				send(data[:i], i+1)
			default:
				line = append(line, data[:i]...)
				full := line
				line = reuse(line)
				if len(full) > maxLine {
					full = flushLong(full, send)
				}
				send(full, len(full)+1)
			}
			data = data[i+1:]
		}
		if err != nil { // EOF or read error: flush what is left
			send(line, len(line))
			return
		}
	}
}

// reuse empties the line buffer, keeping its memory only while it is small.
func reuse(line []byte) []byte {
	if cap(line) > 4*stdoutRead {
		return nil
	}
	return line[:0]
}

// flushLong sends an over-long line in pieces of at most longLinePiece bytes cut at code
// point starts, and returns what remains: an incomplete code point at its end, if any.
func flushLong(line []byte, send func(raw []byte, consumed int)) []byte {
	keep := len(line)
	for i := len(line) - 1; i >= 0 && i >= len(line)-utf8.UTFMax; i-- {
		if utf8.RuneStart(line[i]) {
			if !utf8.FullRune(line[i:]) {
				keep = i
			}
			break
		}
	}
	rest := line[:keep]
	for len(rest) > 0 {
		n := min(longLinePiece, len(rest))
		for n < len(rest) && n > 1 && !utf8.RuneStart(rest[n]) {
			n--
		}
		send(rest[:n], n)
		rest = rest[n:]
	}
	tail := append([]byte(nil), line[keep:]...)
	return tail
}

// deliver hands one message to the relay, waiting while none takes it. It reports false
// when the message is dropped instead: boxd is stopping the process, or the process has
// exited and no relay is attached (the pump then takes the attach slot for a moment; a
// relay can no longer attach to an exited process).
func (p *Process) deliver(msg string) bool {
	done := p.done
	for {
		var free chan struct{} // the attach slot, once the process exited
		if done == nil {
			free = p.Attach
		}
		select {
		case p.Lines <- msg:
			return true
		case <-p.discard:
			return false
		case <-done:
			done = nil
		case free <- struct{}{}:
			<-free
			return false
		}
	}
}

func (m *Manager) drainStderr(p *Process, r io.Reader) {
	defer close(p.stderrDone)
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := strings.ToValidUTF8(string(buf[:n]), "\uFFFD")
			p.addStderr(chunk)
			m.log.Info(fmt.Sprintf("LangBot Box managed process stderr: session_id=%s process_id=%s %s", p.Session, p.Spec.ProcessID, truncate(chunk, 512)))
		}
		if err != nil {
			return
		}
	}
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n])
	}
	return s
}

func (m *Manager) watch(s *Session, p *Process) {
	code, err := p.proc.Wait(context.Background())
	if err != nil {
		code = -1
	}
	// What the process wrote to stderr before it exited is in stderr_preview by the time the
	// exit shows, as with the reference, whose exit watcher runs after its pipes closed.
	select {
	case <-p.stderrDone:
	case <-time.After(stderrGrace):
	}
	p.mu.Lock()
	if p.stopped && code >= 0 { // we signalled it: report the signal as Python does
		code = -15
	}
	p.exited, p.exitCode, p.exitedAt = true, code, m.now()
	stopped := p.stopped
	p.mu.Unlock()
	m.Events.ProcessExited(p.Session, p.Spec.ProcessID, code, stopped)
	close(p.done)
	m.mu.Lock()
	m.processes--
	m.completed = append(m.completed, p)
	m.mu.Unlock()
	s.touch(m.now())
	m.log.Info(fmt.Sprintf("LangBot Box managed process exited: session_id=%s process_id=%s return_code=%d", p.Session, p.Spec.ProcessID, code))
	m.reapCompleted(m.now())
}

// terminate closes stdin, asks the process to stop, and kills it after the grace period.
func (m *Manager) terminate(ctx context.Context, p *Process) {
	if !p.running() {
		return
	}
	p.mu.Lock()
	if !p.stopped {
		p.stopped = true
		close(p.discard) // nobody will read the rest of its stdout: do not let it block the exit
	}
	p.mu.Unlock()
	_ = p.proc.Stdin().Close()
	_ = p.proc.Terminate(ctx)
	select {
	case <-p.done:
		return
	case <-time.After(terminateGrace):
	}
	_ = p.proc.Kill(ctx)
	<-p.done
}

// GetProcess returns a process or the protocol's not-found errors.
func (m *Manager) GetProcess(physical, processID string) (*Session, *Process, error) {
	s, err := m.Get(physical)
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	p := s.procs[processID]
	s.mu.Unlock()
	if p == nil {
		return s, nil, rpc.Errorf(rpc.BoxManagedProcessNotFound, "session %s has no managed process with process_id=%s", physical, processID)
	}
	return s, p, nil
}

// StopProcess implements box_stop_managed_process (§5.12).
func (m *Manager) StopProcess(ctx context.Context, physical, processID string) error {
	s, p, err := m.GetProcess(physical, processID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.procs, processID)
	s.mu.Unlock()
	m.terminate(ctx, p)
	s.touch(m.now())
	m.log.Info(fmt.Sprintf("LangBot Box managed process stopped: session_id=%s process_id=%s", physical, processID))
	return nil
}

// Processes returns the session's processes by id.
func (s *Session) Processes() map[string]*Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*Process, len(s.procs))
	for k, v := range s.procs {
		out[k] = v
	}
	return out
}

// Touch refreshes last_used_at (relay traffic).
func (m *Manager) Touch(s *Session) { s.touch(m.now()) }

// reapCompleted removes exited processes older than the retention, and the oldest beyond
// the global cap (§8.7).
func (m *Manager) reapCompleted(now time.Time) {
	lim := m.limits()
	m.mu.Lock()
	keep := m.completed[:0]
	var drop []*Process
	for _, p := range m.completed {
		p.mu.Lock()
		old := now.Sub(p.exitedAt) >= time.Duration(lim.RetentionSec)*time.Second
		p.mu.Unlock()
		if old {
			drop = append(drop, p)
		} else {
			keep = append(keep, p)
		}
	}
	for len(keep) > lim.MaxCompletedProcesses {
		drop = append(drop, keep[0])
		keep = keep[1:]
	}
	m.completed = keep
	sessions := m.sessions
	for _, p := range drop {
		if s := sessions[p.Session]; s != nil {
			s.mu.Lock()
			if s.procs[p.Spec.ProcessID] == p {
				delete(s.procs, p.Spec.ProcessID)
			}
			s.mu.Unlock()
		}
	}
	m.mu.Unlock()
}
