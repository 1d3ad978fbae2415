// Package backend defines the seam between boxd's RPC/session layer and the thing that runs
// sandboxes (Docker today; e2b, a Kubernetes backend, a warm pool or an in-sandbox exec agent
// later). The session layer owns every protocol rule (validation, get-or-create, TTL, output
// caps, clip notices, the `sh -lc` wrapping, timeouts as results); a Backend only starts,
// probes, stops sandboxes and runs argv vectors in them.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// MountMode is a host mount mode of the protocol (§6.5): "none", "ro" or "rw".
type MountMode string

const (
	MountNone MountMode = "none"
	MountRO   MountMode = "ro"
	MountRW   MountMode = "rw"
)

// Mount is one bind mount of a host path into the sandbox.
type Mount struct {
	HostPath  string
	MountPath string
	Mode      MountMode
}

// SessionSpec is what a backend needs to start one sandbox. The session layer has already
// validated and normalised it (§6.1) and resolved the physical (namespaced) session id.
type SessionSpec struct {
	PhysicalID     string // namespaced session id, e.g. ws-<24 hex>-g1-p
	Image          string
	NetworkOn      bool
	HostPath       string    // "" when the spec has none
	HostPathMode   MountMode // ignored when HostPath is ""
	MountPath      string
	ExtraMounts    []Mount // mode "none" entries already removed
	Persistent     bool
	CPUs           float64
	MemoryMB       int
	PidsLimit      int
	ReadOnlyRootfs bool
	// WorkspaceQuotaMB is metadata only (LangBot enforces quotas); kept so a re-adopted
	// session compares equal to LangBot's spec.
	WorkspaceQuotaMB int
}

// Mounts lists the mounts of spec: the workspace first (when it has one whose mode is not
// none), then every extra mount whose mode is not none.
func (s SessionSpec) Mounts() []Mount {
	var all []Mount
	if s.HostPath != "" && s.HostPathMode != MountNone {
		all = append(all, Mount{HostPath: s.HostPath, MountPath: s.MountPath, Mode: s.HostPathMode})
	}
	for _, m := range s.ExtraMounts {
		if m.Mode != MountNone {
			all = append(all, m)
		}
	}
	return all
}

// Handle identifies a started sandbox to its backend. For Docker it is the container name,
// which is also the protocol's backend_session_id.
type Handle struct {
	ID string
}

// EnvVar keeps insertion order, which the protocol preserves (§9.1.3).
type EnvVar struct {
	Key, Value string
}

// ExecRequest runs Argv in the sandbox (the session layer builds the `sh -lc` script).
// Output is streamed to Stdout/Stderr; the session layer caps and trims it.
// Cancel ctx to kill the command (the session layer does that on timeout and then drops
// the session, as the protocol requires).
type ExecRequest struct {
	Argv   []string
	Env    []EnvVar
	Stdout io.Writer
	Stderr io.Writer
}

// Environ renders env as KEY=VALUE entries, in order.
func Environ(env []EnvVar) []string {
	out := make([]string, 0, len(env))
	for _, e := range env {
		out = append(out, e.Key+"="+e.Value)
	}
	return out
}

// ExecResult is the outcome of a completed command. A command that ran and failed is a
// result with a non-zero exit code, not an error; an error means the backend could not run it.
type ExecResult struct {
	ExitCode int
}

// ProcessRequest starts a long-lived process with pipes (managed processes, §8.7).
type ProcessRequest struct {
	Argv []string
	Env  []EnvVar
}

// Process is a running managed process.
type Process interface {
	Stdin() io.WriteCloser
	Stdout() io.Reader
	Stderr() io.Reader
	// Wait blocks until the process exits. The exit code follows the protocol's convention:
	// the exit status, or minus the signal number when killed by a signal.
	Wait(ctx context.Context) (exitCode int, err error)
	// Terminate asks the process to stop (SIGTERM semantics); Kill forces it (SIGKILL).
	Terminate(ctx context.Context) error
	Kill(ctx context.Context) error
}

// Info describes a backend for box_get_backend_info / box_status.
type Info struct {
	Name string // "docker"
}

// Backend runs sandboxes. Implementations must be safe for concurrent use: the session
// layer calls Start/Stop for different sessions in parallel and never holds a global lock
// around them.
type Backend interface {
	Info() Info
	// Available reports whether the backend can run sandboxes now (Docker: the daemon answers).
	Available(ctx context.Context) error
	// Start creates and starts a sandbox for spec.
	Start(ctx context.Context, spec SessionSpec) (Handle, error)
	// Alive reports whether the sandbox still runs; probe errors count as dead.
	Alive(ctx context.Context, h Handle) bool
	// Stop removes the sandbox; it is idempotent.
	Stop(ctx context.Context, h Handle) error
	// Exec runs one command to completion (or until ctx is cancelled).
	Exec(ctx context.Context, h Handle, req ExecRequest) (ExecResult, error)
	// StartProcess starts a managed process with stdin/stdout/stderr pipes.
	StartProcess(ctx context.Context, h Handle, req ProcessRequest) (Process, error)
	// Recover runs at start-up, once, before the runtime serves (§9.1.6 extended). It
	// removes every sandbox this runtime owns that belongs to another instance id, EXCEPT
	// running persistent sandboxes it can rebuild a session from: those are returned for
	// re-adoption into the session table (same handle, so LangBot's next get-or-create
	// reuses them). 0.5.5 removes them too; boxd keeps them (see boxd/README.md).
	Recover(ctx context.Context, currentInstanceID string) (adopted []Adopted, removed int, err error)
}

// Adopted is a persistent sandbox that survived a restart of the runtime.
type Adopted struct {
	Spec    SessionSpec
	Handle  Handle
	Created time.Time
}

// Error is a backend failure the session layer reports as `BoxError: <Message>`.
// Validation failures (e.g. a blocked host path) use ValidationError instead.
type Error struct {
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// ValidationError is reported as `BoxValidationError: <Message>`.
type ValidationError struct {
	Message string
}

func (e *ValidationError) Error() string { return e.Message }

// ErrNotFound is returned by Exec/StartProcess when the sandbox is gone.
var ErrNotFound = errors.New("sandbox not found")

// ErrNotStarted is the ErrNotFound of an Exec whose command never started because the sandbox
// was already gone (it matches errors.Is(err, ErrNotFound) too): running it again in a new
// sandbox cannot run it twice.
var ErrNotStarted = fmt.Errorf("%w before the command started", ErrNotFound)

// ExecProbesLiveness is implemented by backends whose Exec reliably fails with ErrNotStarted
// when the sandbox is gone. The session layer then skips the separate liveness probe before
// an exec of a reused session (one Engine API round trip for Docker) and, when the exec finds
// the sandbox gone, recreates it and runs the command there, as a failed probe would have.
type ExecProbesLiveness interface {
	ExecProbesLiveness() bool
}

// DefaultStopTimeout bounds Stop calls made during cleanup.
const DefaultStopTimeout = 20 * time.Second
