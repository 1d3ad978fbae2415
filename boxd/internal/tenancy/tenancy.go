// Package tenancy parses the envelope context (§4.1), derives workspace namespaces and
// physical session ids (§4.3) and keeps the generation fence (§4.4).
package tenancy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// Context is the (instance, workspace, generation) of a tenant request.
type Context struct {
	Instance   string
	Workspace  string
	Generation int
}

var contextKeys = map[string]bool{
	"instance_uuid": true, "workspace_uuid": true, "placement_generation": true,
	"installation_uuid": true, "runtime_revision": true, "artifact_digest": true,
}

// ParseContext validates a raw context (nil, or JSON null, means absent: ok=false).
// Unknown keys are rejected; installation extras are accepted and stripped.
func ParseContext(raw json.RawMessage) (ctx Context, ok bool, err error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return Context{}, false, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return Context{}, false, rpc.Errorf(rpc.ValidationError, "context must be an object")
	}
	for k := range m {
		if !contextKeys[k] {
			return Context{}, false, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionContext\n%s\n  Extra inputs are not permitted", k)
		}
	}
	str := func(k string) (string, error) {
		var s string
		if err := json.Unmarshal(m[k], &s); err != nil || strings.TrimSpace(s) == "" {
			return "", rpc.Errorf(rpc.ValidationError, "1 validation error for ActionContext\n%s\n  must be a non-empty string", k)
		}
		return strings.TrimSpace(s), nil
	}
	if ctx.Instance, err = str("instance_uuid"); err != nil {
		return Context{}, false, err
	}
	if ctx.Workspace, err = str("workspace_uuid"); err != nil {
		return Context{}, false, err
	}
	ctx.Generation = 1
	if g, has := m["placement_generation"]; has {
		var n json.Number
		dec := json.NewDecoder(bytes.NewReader(g))
		dec.UseNumber()
		if err := dec.Decode(&n); err != nil {
			return Context{}, false, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionContext\nplacement_generation\n  Input should be a valid integer")
		}
		v, err := strconv.Atoi(n.String())
		if err != nil {
			return Context{}, false, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionContext\nplacement_generation\n  Input should be a valid integer")
		}
		if v < 1 {
			return Context{}, false, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionContext\nplacement_generation\n  placement_generation must be greater than or equal to 1")
		}
		ctx.Generation = v
	}
	return ctx, true, nil
}

// Namespace is "ws-" + the first 24 hex chars of sha256(instance + "\x00" + workspace).
func Namespace(instance, workspace string) string {
	sum := sha256.Sum256([]byte(instance + "\x00" + workspace))
	return "ws-" + hex.EncodeToString(sum[:])[:24]
}

// Namespace of the context.
func (c Context) Namespace() string { return Namespace(c.Instance, c.Workspace) }

// PlacementPrefix is "<NS>-g<G>-".
func (c Context) PlacementPrefix() string {
	return fmt.Sprintf("%s-g%d-", c.Namespace(), c.Generation)
}

// WorkspacePrefix is "<NS>-" (every generation).
func (c Context) WorkspacePrefix() string { return c.Namespace() + "-" }

var invalidRun = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Sanitize turns a logical session id into its physical suffix.
func Sanitize(logical string) (string, error) {
	s := strings.TrimSpace(logical)
	if s == "" {
		return "", rpc.Errorf(rpc.ValueError, "Box session_id must not be empty")
	}
	s = strings.Trim(invalidRun.ReplaceAllString(s, "-"), "-")
	if s == "" {
		return "", rpc.Errorf(rpc.ValueError, "Box session_id must contain a valid character")
	}
	return s, nil
}

// Physical returns the physical session id of a logical id in this placement.
func (c Context) Physical(logical string) (string, error) {
	s, err := Sanitize(logical)
	if err != nil {
		return "", err
	}
	return c.PlacementPrefix() + s, nil
}

var physicalPattern = regexp.MustCompile(`^(ws-[0-9a-f]{24})-g([0-9]+)-(.+)$`)

// ParsePhysical splits a physical session id <NS>-g<G>-<logical> into its namespace,
// generation and logical id; an id of another shape is returned whole as the logical id.
func ParsePhysical(physical string) (ns string, gen int, logical string) {
	m := physicalPattern.FindStringSubmatch(physical)
	if m == nil {
		return "", 0, physical
	}
	gen, _ = strconv.Atoi(m[2])
	return m[1], gen, m[3]
}

// Logical strips the caller's placement prefix from a physical id.
func (c Context) Logical(physical string) string {
	if rest, ok := strings.CutPrefix(physical, c.PlacementPrefix()); ok {
		return rest
	}
	return physical
}

// RewriteSessionIDs converts every "session_id" key at any depth of v to its logical form.
func (c Context) RewriteSessionIDs(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if s, ok := val.(string); ok && k == "session_id" {
				t[k] = c.Logical(s)
			} else {
				t[k] = c.RewriteSessionIDs(val)
			}
		}
	case []any:
		for i := range t {
			t[i] = c.RewriteSessionIDs(t[i])
		}
	}
	return v
}

// Fence keeps the highest generation seen per (instance, workspace).
type Fence struct {
	mu       sync.Mutex
	capacity int
	current  map[[2]string]int
	changed  chan struct{} // closed and replaced whenever a generation advances
}

// NewFence bounds the number of workspaces tracked.
func NewFence(capacity int) *Fence {
	return &Fence{capacity: capacity, current: map[[2]string]int{}, changed: make(chan struct{})}
}

// Observe records ctx's generation, failing for a stale one (§4.4).
func (f *Fence) Observe(ctx Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := [2]string{ctx.Instance, ctx.Workspace}
	cur, has := f.current[key]
	switch {
	case !has && len(f.current) >= f.capacity:
		return rpc.Errorf(rpc.PermissionError, "Box generation fence capacity reached; refusing an unbounded Workspace allocation")
	case has && ctx.Generation < cur:
		return StaleError()
	case has && ctx.Generation == cur:
		return nil
	}
	f.current[key] = ctx.Generation
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

// Current reports whether ctx's generation is the current one of its workspace.
func (f *Fence) Current(ctx Context) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current[[2]string{ctx.Instance, ctx.Workspace}] == ctx.Generation
}

// Changed returns a channel closed at the next generation advance of any workspace.
func (f *Fence) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// StaleError is the error of a superseded placement.
func StaleError() error { return rpc.Errorf(rpc.PermissionError, "Stale Box placement generation") }
