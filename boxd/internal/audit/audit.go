// Package audit writes boxd's audit log: one JSON object per line for every state-changing
// action (session create/delete, exec, managed process start/stop/exit, skill changes,
// admission changes, box_init, box_shutdown), with who (instance, workspace, namespace) and
// what (logical session id, physical id, details), and the outcome ("ok" or the error
// class). It never records secrets or payloads: no env values, no control token, no command
// text (a SHA-256 of it instead), no file contents, no skill instructions.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// Record is one audit entry.
type Record struct {
	Time      string         `json:"time"`
	Event     string         `json:"event"`
	Action    string         `json:"action,omitempty"`
	Outcome   string         `json:"outcome"`
	Instance  string         `json:"instance,omitempty"`
	Workspace string         `json:"workspace,omitempty"`
	Namespace string         `json:"namespace,omitempty"`
	SessionID string         `json:"session_id,omitempty"`
	Physical  string         `json:"physical_id,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}

// Logger writes records; a nil *Logger discards them.
type Logger struct {
	now      func() time.Time
	instance func() string
	maxKnown int

	mu         sync.Mutex
	w          io.Writer
	workspaces map[string]string // namespace -> workspace uuid, learned from requests
}

// New writes to w; instance returns the trusted instance (the runtime serves one).
// maxWorkspaces bounds the namespace->workspace map used to name the workspace of events
// without a request (TTL reaping, process exits).
func New(w io.Writer, instance func() string, maxWorkspaces int) *Logger {
	return &Logger{now: time.Now, instance: instance, maxKnown: maxWorkspaces, w: w, workspaces: map[string]string{}}
}

// OpenFile opens (creating) an audit file for appending, mode 0600.
func OpenFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w", path, err)
	}
	return f, nil
}

// Scope is what a request contributes to the records written while it runs.
type Scope struct {
	Action    string
	Instance  string
	Workspace string
}

type scopeKey struct{}

// WithScope attaches the request's scope to ctx.
func WithScope(ctx context.Context, s Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

func scopeOf(ctx context.Context) Scope {
	if ctx == nil {
		return Scope{}
	}
	s, _ := ctx.Value(scopeKey{}).(Scope)
	return s
}

// Learn remembers the workspace of a namespace (bounded).
func (l *Logger) Learn(tctx tenancy.Context) {
	if l == nil {
		return
	}
	ns := tctx.Namespace()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.workspaces[ns]; ok || len(l.workspaces) < l.maxKnown {
		l.workspaces[ns] = tctx.Workspace
	}
}

// Log writes r, filling time, instance and the workspace of its namespace when missing.
func (l *Logger) Log(r Record) {
	if l == nil {
		return
	}
	if r.Time == "" {
		r.Time = l.now().UTC().Format(time.RFC3339Nano)
	}
	if r.Instance == "" && l.instance != nil {
		r.Instance = l.instance()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.Workspace == "" && r.Namespace != "" {
		r.Workspace = l.workspaces[r.Namespace]
	}
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	_, _ = l.w.Write(append(b, '\n'))
}

// Hash is the hex SHA-256 of s (commands are recorded by hash only).
func Hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Outcome is "ok" for nil, else the error class.
func Outcome(class string) string {
	if class == "" {
		return "ok"
	}
	return class
}

// SessionEvents adapts the logger to the session manager's lifecycle hooks.
func (l *Logger) SessionEvents() session.Events { return events{l} }

type events struct{ l *Logger }

func (e events) session(ctx context.Context, event, physical string, outcome string, details map[string]any) {
	sc := scopeOf(ctx)
	ns, gen, logical := tenancy.ParsePhysical(physical)
	if details == nil {
		details = map[string]any{}
	}
	if gen > 0 {
		details["generation"] = gen
	}
	r := Record{Event: event, Action: sc.Action, Outcome: outcome, Instance: sc.Instance, Namespace: ns,
		SessionID: logical, Physical: physical, Details: details}
	if sc.Workspace != "" && sc.Instance != "" && tenancy.Namespace(sc.Instance, sc.Workspace) == ns {
		r.Workspace = sc.Workspace
	}
	e.l.Log(r)
}

func (e events) SessionCreated(ctx context.Context, physical string, spec session.Spec, backendID string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = rpc.ClassOf(err)
	}
	d := map[string]any{"image": spec.Image, "network": spec.Network, "persistent": spec.Persistent,
		"read_only_rootfs": spec.ReadOnlyRootfs, "cpus": spec.CPUs, "memory_mb": spec.MemoryMB, "pids_limit": spec.PidsLimit,
		"extra_mounts": len(spec.ExtraMounts)}
	if backendID != "" {
		d["backend_session_id"] = backendID
	}
	e.session(ctx, "session.create", physical, outcome, d)
}

func (e events) SessionDropped(ctx context.Context, physical, backendID, reason string) {
	e.session(ctx, "session.delete", physical, "ok", map[string]any{"reason": reason, "backend_session_id": backendID})
}

func (e events) ProcessExited(physical, processID string, code int, stopped bool) {
	e.session(context.Background(), "process.exit", physical, "ok", map[string]any{"process_id": processID, "exit_code": code, "stopped": stopped})
}
