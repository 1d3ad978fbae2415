package session

import "context"

// Events receives the session lifecycle for the audit log: what happens to sessions and
// processes outside of a single request's answer (implicit creation by box_exec, TTL
// reaping, generation retirement, admission drops, exec timeouts, process exits). Methods
// must be cheap and must not call back into the manager.
type Events interface {
	// SessionCreated reports a creation attempt (err != nil: it failed; backendID is "").
	SessionCreated(ctx context.Context, physical string, spec Spec, backendID string, err error)
	// SessionDropped reports a session removed from the table, with why (see DropReason).
	SessionDropped(ctx context.Context, physical, backendID, reason string)
	// ProcessExited reports a managed process exit (stopped: boxd stopped it).
	ProcessExited(physical, processID string, exitCode int, stopped bool)
}

type noEvents struct{}

func (noEvents) SessionCreated(context.Context, string, Spec, string, error) {}
func (noEvents) SessionDropped(context.Context, string, string, string)      {}
func (noEvents) ProcessExited(string, string, int, bool)                     {}

type dropReasonKey struct{}

// WithDropReason tells the manager why the sessions dropped under ctx go away ("delete",
// "ttl", "exec_timeout", "mounts_changed", "backend_gone", "generation", "admission",
// "shutdown").
func WithDropReason(ctx context.Context, reason string) context.Context {
	return context.WithValue(ctx, dropReasonKey{}, reason)
}

// DropReason is the reason set on ctx, "delete" by default.
func DropReason(ctx context.Context) string {
	if r, ok := ctx.Value(dropReasonKey{}).(string); ok && r != "" {
		return r
	}
	return "delete"
}
