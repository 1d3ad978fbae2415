package kube

import (
	"context"
	"io"
	"sync"
	"syscall"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
)

// process is a managed process (§8.7) under the Pod's agent daemon.
type process struct {
	p *agent.Process

	mu       sync.Mutex
	signaled int // last signal boxd sent (15, 9), 0 if none
}

func (p *process) Stdin() io.WriteCloser { return p.p.Stdin() }
func (p *process) Stdout() io.Reader     { return p.p.Stdout() }
func (p *process) Stderr() io.Reader     { return p.p.Stderr() }

// Wait returns the exit code with the Docker backend's rules: the exit status; minus the
// signal number when the process died of a signal boxd sent (the agent reports 128+n, as the
// engine does); -9 when the process cannot be reached any more (the Pod was deleted, or the
// agent stream could not be re-opened within agent.ReattachTimeout: the daemon kills what it
// still runs once its detach timeout passes).
func (p *process) Wait(ctx context.Context) (int, error) {
	code, err := p.p.Wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return -9, nil
	}
	p.mu.Lock()
	sig := p.signaled
	p.mu.Unlock()
	return exitCode(code, sig), nil
}

// exitCode maps the agent's exit code to the protocol's: 128+n after boxd sent a signal (or
// SIGKILL following SIGTERM) is reported as -n (docker/process.go has the same rule).
func exitCode(status, signaled int) int {
	if signaled == 0 || status <= 128 || status > 128+64 {
		return status
	}
	return -(status - 128)
}

func (p *process) signal(ctx context.Context, sig syscall.Signal) error {
	p.mu.Lock()
	p.signaled = int(sig)
	p.mu.Unlock()
	return p.p.Signal(ctx, sig)
}

// Terminate sends SIGTERM to the process group; Kill sends SIGKILL.
func (p *process) Terminate(ctx context.Context) error { return p.signal(ctx, syscall.SIGTERM) }
func (p *process) Kill(ctx context.Context) error      { return p.signal(ctx, syscall.SIGKILL) }
