package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/shellquote"
)

// OutputCap is the number of bytes kept per stream (§9.1.3).
const OutputCap = 1 << 20

// capture keeps the first OutputCap bytes written and counts the rest.
type capture struct {
	mu    sync.Mutex
	buf   []byte
	total int64
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := OutputCap - len(c.buf); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		c.buf = append(c.buf, p[:room]...)
	}
	c.total += int64(len(p))
	return len(p), nil
}

// Text decodes with replacement, trims, and appends the clip notice when over the cap.
func (c *capture) Text() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.TrimSpace(strings.ToValidUTF8(string(c.buf), "\uFFFD"))
	if c.total > OutputCap {
		s += fmt.Sprintf("\n... [raw output clipped at %d bytes, %d bytes discarded]", OutputCap, c.total-OutputCap)
	}
	return s
}

// Result is BoxExecutionResult (§6.3).
type Result struct {
	SessionID  string
	Backend    string
	TimedOut   bool
	ExitCode   int
	Stdout     string
	Stderr     string
	DurationMS int64
}

// Map renders the result with the protocol's keys.
func (r Result) Map() map[string]any {
	status, code := "completed", any(r.ExitCode)
	if r.TimedOut {
		status, code = "timed_out", nil
	}
	return map[string]any{"session_id": r.SessionID, "backend_name": r.Backend, "status": status, "exit_code": code,
		"stdout": r.Stdout, "stderr": r.Stderr, "duration_ms": r.DurationMS}
}

// Exec runs spec.Cmd in the session of physical (created or reused), per §5.5.
func (m *Manager) Exec(ctx context.Context, physical string, spec Spec) (Result, error) {
	if spec.Cmd == "" {
		return Result{}, rpc.Errorf(rpc.BoxValidationError, "cmd must not be empty")
	}
	// With a backend whose exec probes liveness, a reused session is not probed first; if the
	// exec then finds its sandbox gone before the command started, the session is dropped and
	// the exec runs once more in a new one — what a failed probe leads to (§8.1 step 5).
	probes, _ := m.backend.(backend.ExecProbesLiveness)
	optimistic := probes != nil && probes.ExecProbesLiveness()
	for {
		s, err := m.getOrCreate(ctx, physical, spec, !optimistic)
		if err != nil {
			return Result{}, err
		}
		out, err := m.execIn(ctx, s, physical, spec, optimistic)
		if optimistic && errors.Is(err, backend.ErrNotStarted) {
			m.log.Warn("LangBot Box session backend disappeared, recreating: session_id=" + physical)
			m.drop(WithDropReason(ctx, "backend_gone"), s)
			optimistic = false
			continue
		}
		return out, err
	}
}

// execIn runs spec.Cmd in session s. With retryable set, a backend.ErrNotStarted is returned
// as it is (and not counted) so that Exec can recreate the session and run the command again.
func (m *Manager) execIn(ctx context.Context, s *Session, physical string, spec Spec, retryable bool) (Result, error) {
	s.mu.Lock()
	s.activeExec++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.activeExec--
		s.mu.Unlock()
	}()
	s.lock.Lock()
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		s.lock.Unlock()
		return Result{}, rpc.Errorf(rpc.BoxSessionNotFoundError, "session %s is being deleted", physical)
	}
	m.log.Info(fmt.Sprintf("LangBot Box execute: session_id=%s backend_session_id=%s backend=%s workdir=%s timeout_sec=%d", physical, s.Handle.ID, m.BackendName(), spec.Workdir, spec.TimeoutSec))
	var stdout, stderr capture
	timeout := time.Duration(spec.TimeoutSec) * time.Second
	ectx, cancel := context.WithTimeout(ctx, timeout)
	start := time.Now()
	res, err := m.backend.Exec(ectx, s.Handle, backend.ExecRequest{
		Argv:   []string{"sh", "-lc", shellquote.ExecScript(spec.Workdir, spec.Cmd)},
		Env:    spec.Env,
		Stdout: &stdout,
		Stderr: &stderr,
	})
	timedOut := errors.Is(ectx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	cancel()
	dur := time.Since(start).Milliseconds()
	s.lock.Unlock()
	if retryable && !timedOut && errors.Is(err, backend.ErrNotStarted) {
		return Result{}, err
	}
	s.touch(m.now())
	status := "completed"
	switch {
	case timedOut:
		status = "timed_out"
	case err != nil && !errors.Is(err, backend.ErrNotFound):
		status = "error"
	}
	m.Observer.Exec(status, time.Since(start))
	out := Result{SessionID: physical, Backend: m.BackendName(), Stdout: stdout.Text(), Stderr: stderr.Text(), DurationMS: dur}
	switch {
	case timedOut:
		out.TimedOut = true
		if out.Stderr == "" {
			out.Stderr = fmt.Sprintf("Command timed out after %d seconds.", spec.TimeoutSec)
		}
		m.drop(WithDropReason(ctx, "exec_timeout"), s) // the command may still run in the container: remove it
		return out, nil
	case ctx.Err() != nil:
		return Result{}, ctx.Err()
	case errors.Is(err, backend.ErrNotFound):
		out.ExitCode = 125
		if out.Stderr == "" {
			out.Stderr = fmt.Sprintf("Error: No such container: %s", s.Handle.ID)
		}
		return out, nil
	case err != nil:
		return Result{}, backendError(err)
	}
	out.ExitCode = res.ExitCode
	return out, nil
}
