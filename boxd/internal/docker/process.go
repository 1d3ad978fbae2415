package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// process is a managed process: an exec with stdin attached. The Engine API cannot signal an
// exec, so the shell records its PID (which `exec` keeps for the command) in the sandbox's
// /tmp and Terminate/Kill run `kill` through a second exec.
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
	once    sync.Once
	code    int
	waitErr error
}

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
	var r [6]byte
	_, _ = rand.Read(r[:])
	pidFile := "/tmp/.boxd-proc-" + hex.EncodeToString(r[:])
	argv := append([]string(nil), req.Argv...)
	if len(argv) == 3 && argv[0] == "sh" && argv[1] == "-lc" {
		argv[2] = "echo $$ > " + pidFile + " 2>/dev/null; " + argv[2]
	}
	b.opts.Logger.Info(fmt.Sprintf("LangBot Box backend start_managed_process: backend=docker container=%s", h.ID))
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: argv, Env: envList(req.Env),
		AttachStdin: true, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, backendErr(err)
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, backendErr(err)
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

// Wait waits for the output streams to end, then for the exec to be reported finished.
func (p *process) Wait(ctx context.Context) (int, error) {
	p.once.Do(func() {
		select {
		case <-p.copied:
		case <-ctx.Done():
			p.waitErr = ctx.Err()
			return
		}
		p.att.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ins, err := p.b.cli.ContainerExecInspect(context.WithoutCancel(ctx), p.execID)
			if err != nil {
				// The container is gone (session removed): the process was killed with it.
				p.code = -9
				return
			}
			if !ins.Running || time.Now().After(deadline) {
				p.code = ins.ExitCode
				return
			}
			select {
			case <-ctx.Done():
				p.waitErr = ctx.Err()
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	return p.code, p.waitErr
}

func (p *process) signal(ctx context.Context, sig string) error {
	res, err := p.b.cli.ContainerExecCreate(ctx, p.h.ID, container.ExecOptions{
		Cmd: []string{"sh", "-c", "kill -" + sig + " \"$(cat " + p.pidFile + ")\""}})
	if err != nil {
		return fmt.Errorf("signal managed process: %w", err)
	}
	return p.b.cli.ContainerExecStart(ctx, res.ID, container.ExecStartOptions{})
}

func (p *process) Terminate(ctx context.Context) error { return p.signal(ctx, "TERM") }
func (p *process) Kill(ctx context.Context) error      { return p.signal(ctx, "KILL") }
