package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// The Engine API cannot signal an exec, and the PID exec inspect reports is in the
// engine's PID namespace, not the sandbox's. So every command runs under a tiny wrapper
// shell that records its PID in the sandbox's /tmp ($0 is the file name). runc starts every
// exec as a session and process-group leader, so that PID is also the process group of
// everything the command spawns: signalling the group (kill -s SIG -- -PID) reaches
// background children too. When /tmp is not writable (an image without /tmp and a writable
// root file system), signalling is not possible; the session drop that follows every
// timeout (§8.2) and every session removal still ends the command.
//
// execWrapper (one-shot commands) stays the group leader, runs the command and removes the
// PID file afterwards, passing the exit status through.
const execWrapper = `{ echo $$ >"$0"; } 2>/dev/null; "$@"; rc=$?; rm -f "$0" 2>/dev/null; exit $rc`

// procWrapper (managed processes) replaces itself with the command, so the exit status and
// the death signal are the command's own; the PID file is removed once the process ended.
const procWrapper = `{ echo $$ >"$0"; } 2>/dev/null; exec "$@"`

// signalScript signals the process group recorded in $0 (busybox kill refuses "--", POSIX
// kill needs it before a negative operand: try both) and removes the PID file on KILL.
const signalScript = `p=$(cat "$0" 2>/dev/null) || exit 0; [ -n "$p" ] || exit 0; kill -s "$1" -- -"$p" 2>/dev/null || kill -s "$1" -"$p" 2>/dev/null; [ "$1" = KILL ] && rm -f "$0"; exit 0`

// reapScript kills the process group of every PID file left in the sandbox's /tmp and removes
// the files: run on re-adopted sandboxes, whose managed processes lost their pipes with the
// previous runtime and are no longer in any session table.
const reapScript = `for f in /tmp/.boxd-*.pid; do [ -f "$f" ] || continue; p=$(cat "$f" 2>/dev/null); [ -n "$p" ] && { kill -s KILL -- -"$p" 2>/dev/null || kill -s KILL -"$p" 2>/dev/null; }; rm -f "$f"; done; exit 0`

// wrap returns the argv that runs argv under wrapper with a fresh PID file.
func wrap(wrapper string, argv []string) (wrapped []string, pidFile string) {
	var r [8]byte
	_, _ = rand.Read(r[:])
	pidFile = "/tmp/.boxd-" + hex.EncodeToString(r[:]) + ".pid"
	return append([]string{"sh", "-c", wrapper, pidFile}, argv...), pidFile
}

// runQuiet runs a short helper command in the sandbox and waits for it (bounded).
func (b *Backend) runQuiet(ctx context.Context, h backend.Handle, argv ...string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	// Streams attached although discarded: Podman refuses to attach an exec without any.
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return err
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return err
	}
	defer att.Close()
	_, _ = io.Copy(io.Discard, att.Reader)
	return nil
}

// signalGroup sends sig (TERM or KILL) to the process group recorded in pidFile.
func (b *Backend) signalGroup(ctx context.Context, h backend.Handle, pidFile, sig string) error {
	if err := b.runQuiet(ctx, h, "sh", "-c", signalScript, pidFile, sig); err != nil {
		return fmt.Errorf("send SIG%s in %s: %w", sig, h.ID, err)
	}
	return nil
}

func envList(env []backend.EnvVar) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		out = append(out, e.Key+"="+e.Value)
	}
	return out
}

// execExitCode waits (bounded) until the engine reports the exec finished and returns its
// exit code. The output streams can end a moment before the engine records the exit.
func (b *Backend) execExitCode(ctx context.Context, execID string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ins, err := b.cli.ContainerExecInspect(ctx, execID)
		if err != nil {
			return 0, err
		}
		if !ins.Running {
			return ins.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return ins.ExitCode, fmt.Errorf("exec %s still reported running: %w", execID, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Exec runs argv and streams its output into the request's writers (stdout and stderr
// demultiplexed). Cancelling ctx kills the command's whole process group inside the sandbox
// and returns ctx's error; the session layer still drops the session on timeout (§8.2).
// With box.docker.exec_agent on, the command goes through the sandbox's exec agent
// (agent.go) when it has one, through its own Engine API exec otherwise.
func (b *Backend) Exec(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	if b.agentOn() {
		if c := b.agentFor(ctx, h); c != nil {
			if res, err, handled := b.execAgent(ctx, h, c, req); handled {
				return res, err
			}
		}
	}
	return b.execEngine(ctx, h, req)
}

// execEngine runs one command as one Engine API exec (create, attach, inspect) under the
// PID-recording wrapper.
func (b *Backend) execEngine(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	argv, pidFile := wrap(execWrapper, req.Argv)
	b.log.Debug(fmt.Sprintf("LangBot Box backend exec: backend=docker container=%s", h.ID))
	created, err := b.cli.ContainerExecCreate(ctx, h.ID, container.ExecOptions{Cmd: argv, Env: envList(req.Env), AttachStdout: true, AttachStderr: true})
	if err != nil {
		// No such container, or it is not running: the command was never started.
		if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
			return backend.ExecResult{}, fmt.Errorf("exec in %s: %w: %v", h.ID, backend.ErrNotStarted, err)
		}
		return backend.ExecResult{}, backendErr(fmt.Errorf("create exec in %s: %w", h.ID, err))
	}
	att, err := b.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		// Attaching starts the exec; the engine refuses the start when the container is gone
		// or stopped, so here too nothing ran.
		if errdefs.IsNotFound(err) || errdefs.IsConflict(err) {
			return backend.ExecResult{}, fmt.Errorf("exec in %s: %w: %v", h.ID, backend.ErrNotStarted, err)
		}
		return backend.ExecResult{}, backendErr(fmt.Errorf("start exec in %s: %w", h.ID, err))
	}
	defer att.Close()
	stdout, stderr := req.Stdout, req.Stderr
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(stdout, stderr, att.Reader)
		copied <- err
	}()
	select {
	case <-ctx.Done():
		kctx := context.WithoutCancel(ctx)
		if err := b.signalGroup(kctx, h, pidFile, "KILL"); err != nil {
			b.log.Warn(fmt.Sprintf("LangBot Box backend exec: kill after cancel failed: container=%s: %v", h.ID, err))
		}
		att.Close()
		<-copied // the writers are the caller's: never write to them after returning
		return backend.ExecResult{}, ctx.Err()
	case err := <-copied:
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			return backend.ExecResult{}, backendErr(fmt.Errorf("read exec output in %s: %w", h.ID, err))
		}
	}
	code, err := b.execExitCode(context.WithoutCancel(ctx), created.ID)
	if err != nil {
		return backend.ExecResult{}, backendErr(fmt.Errorf("inspect exec in %s: %w", h.ID, err))
	}
	return backend.ExecResult{ExitCode: code}, nil
}
