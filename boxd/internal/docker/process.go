package docker

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// process is a managed process (§8.7, §9.1.5): an exec with stdin attached, run under the
// PID-recording wrapper so Terminate/Kill can signal its process group.
type process struct {
	b       *Backend
	h       backend.Handle
	execID  string
	pidFile string
	att     types.HijackedResponse
	stdin   *stdinWriter
	stdout  *io.PipeReader
	stderr  *io.PipeReader
	copied  chan struct{}

	mu       sync.Mutex
	signaled int // last signal sent (15, 9), 0 if none

	once    sync.Once
	code    int
	waitErr error
}

// stdinWriter writes to the exec's hijacked connection; Close half-closes it, which is EOF
// on the process's stdin.
type stdinWriter struct {
	mu     sync.Mutex
	att    *types.HijackedResponse
	closed bool
}

func (w *stdinWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	return w.att.Conn.Write(p)
}

func (w *stdinWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.att.CloseWrite()
}

// StartProcess implements backend.Backend.
func (b *Backend) StartProcess(ctx context.Context, h backend.Handle, req backend.ProcessRequest) (backend.Process, error) {
	argv, pidFile := wrap(procWrapper, req.Argv)
	b.log.Info(fmt.Sprintf("LangBot Box backend start_managed_process: backend=docker container=%s", h.ID))
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: argv, Env: envList(req.Env),
		AttachStdin: true, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, backendErr(fmt.Errorf("create managed process in %s: %w", h.ID, err))
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, backendErr(fmt.Errorf("start managed process in %s: %w", h.ID, err))
	}
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	p := &process{b: b, h: h, execID: created.ID, pidFile: pidFile, att: att, stdout: outR, stderr: errR, copied: make(chan struct{})}
	p.stdin = &stdinWriter{att: &p.att}
	go func() {
		_, err := stdcopy.StdCopy(outW, errW, att.Reader)
		outW.CloseWithError(err)
		errW.CloseWithError(err)
		close(p.copied)
	}()
	return p, nil
}

func (p *process) Stdin() io.WriteCloser { return p.stdin }
func (p *process) Stdout() io.Reader     { return p.stdout }
func (p *process) Stderr() io.Reader     { return p.stderr }

// Wait waits for the output streams to end, then for the engine to report the exec
// finished. Exit codes follow the protocol: minus the signal number when the process died
// of a signal boxd sent (the engine reports those as 128+signal), -9 when the container
// disappeared under it (session removed), the exit status otherwise.
func (p *process) Wait(ctx context.Context) (int, error) {
	p.once.Do(func() {
		select {
		case <-p.copied:
		case <-ctx.Done():
			p.waitErr = ctx.Err()
			return
		}
		p.att.Close()
		code, err := p.b.execExitCode(context.WithoutCancel(ctx), p.execID)
		if err != nil {
			p.code = -9
			return
		}
		p.mu.Lock()
		sig := p.signaled
		p.mu.Unlock()
		p.code = exitCode(code, sig)
		if err := p.b.runQuiet(context.WithoutCancel(ctx), p.h, "rm", "-f", p.pidFile); err != nil {
			p.b.log.Debug(fmt.Sprintf("remove managed process PID file in %s: %v", p.h.ID, err))
		}
	})
	return p.code, p.waitErr
}

// exitCode maps an engine exit status to the protocol's: a status of 128+n after boxd sent
// signal n (or SIGKILL following SIGTERM) is reported as -n.
func exitCode(status, signaled int) int {
	if signaled == 0 || status <= 128 || status > 128+64 {
		return status
	}
	return -(status - 128)
}

func (p *process) signal(ctx context.Context, name string, num int) error {
	p.mu.Lock()
	p.signaled = num
	p.mu.Unlock()
	if err := p.b.signalGroup(ctx, p.h, p.pidFile, name); err != nil {
		return fmt.Errorf("signal managed process: %w", err)
	}
	return nil
}

// Terminate sends SIGTERM to the process group; Kill sends SIGKILL.
func (p *process) Terminate(ctx context.Context) error { return p.signal(ctx, "TERM", 15) }
func (p *process) Kill(ctx context.Context) error      { return p.signal(ctx, "KILL", 9) }
