// Package admission implements grant-enforced ("Cloud") mode (§6.8, §7.5): the admission
// policy of the `admission` config section, grants and revocations with their monotonic
// rules, expiry, readiness in the grant-enforced shape, the admission check of sandbox
// actions and the spec normalisation of admitted sessions.
//
// OSS LangBot always sends `admission.required=false`; then the two admission actions
// answer `BoxAdmissionError: Sandbox admission enforcement is not enabled` and nothing else
// changes. boxd's backend is Docker while the policy requires nsjail, so with enforcement on
// readiness is honestly false and every sandbox action is refused (see Readiness).
package admission

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// verrs collects pydantic-style field errors of one model.
type verrs struct {
	model string
	errs  []string
}

func (v *verrs) add(field, msg string) { v.errs = append(v.errs, field+"\n  "+msg) }

// err renders "N validation error(s) for Model\nfield\n  message..." (pydantic's layout,
// without its type/url suffixes), or nil.
func (v *verrs) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	noun := "errors"
	if len(v.errs) == 1 {
		noun = "error"
	}
	return fmt.Errorf("%d validation %s for %s\n%s", len(v.errs), noun, v.model, strings.Join(v.errs, "\n"))
}

// decodeStrict decodes a JSON object keeping numbers as json.Number and the key order.
func decodeStrict(raw json.RawMessage) (map[string]any, []string, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	m := map[string]any{}
	var order []string
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		k := kt.(string)
		if _, dup := m[k]; !dup {
			order = append(order, k)
		}
		m[k] = v
	}
	return m, order, true
}

// strictInt accepts only a JSON integer (no bool, no float such as 1.0, no string), as the
// reference's "before" validators do.
func strictInt(v any) (int, bool) {
	switch t := v.(type) {
	case json.Number:
		if strings.ContainsAny(t.String(), ".eE") {
			return 0, false
		}
		n, err := strconv.Atoi(t.String())
		return n, err == nil
	case float64: // callers that decoded without UseNumber
		if t != math.Trunc(t) || math.Abs(t) > 1<<53 {
			return 0, false
		}
		return int(t), true
	case int:
		return t, true
	}
	return 0, false
}

// idField validates a trimmed non-empty string id.
func idField(v *verrs, m map[string]any, key string) string {
	raw, ok := m[key]
	if !ok {
		v.add(key, "Field required")
		return ""
	}
	s, isStr := raw.(string)
	if !isStr {
		v.add(key, "Input should be a valid string")
		return ""
	}
	s = strings.TrimSpace(s)
	if s == "" {
		v.add(key, "Value error, must not be empty")
	}
	return s
}

func extras(v *verrs, order []string, known ...string) {
	set := map[string]bool{}
	for _, k := range known {
		set[k] = true
	}
	for _, k := range order {
		if !set[k] {
			v.add(k, "Extra inputs are not permitted")
		}
	}
}

// Grant is a validated SandboxAdmissionGrant (§6.8).
type Grant struct {
	Instance            string
	Workspace           string
	ExecutionGeneration int
	EntitlementRevision int
	ExpiresAt           time.Time // UTC, microsecond precision
	MaxSessions         int
	MaxManagedProcesses int
}

// Key is the (instance, workspace) a grant or revocation belongs to.
type Key struct{ Instance, Workspace string }

// Key of the grant.
func (g Grant) Key() Key { return Key{g.Instance, g.Workspace} }

// Expired reports whether the grant is expired at now (expires_at <= now).
func (g Grant) Expired(now time.Time) bool { return !g.ExpiresAt.After(now) }

// Receipt is the upsert response of §5.26.
func (g Grant) Receipt() map[string]any {
	return map[string]any{"installed": true, "workspace_uuid": g.Workspace, "execution_generation": g.ExecutionGeneration,
		"entitlement_revision": g.EntitlementRevision, "max_sessions": g.MaxSessions,
		"max_managed_processes": g.MaxManagedProcesses, "expires_at": pyval.IsoFormat(g.ExpiresAt)}
}

var intFields = []string{"execution_generation", "entitlement_revision", "max_sessions", "max_managed_processes"}

// ParseGrant validates a SandboxAdmissionGrant payload. The error (without class) is the
// pydantic-style text the caller wraps as BoxValidationError.
func ParseGrant(raw json.RawMessage) (Grant, error) {
	v := &verrs{model: "SandboxAdmissionGrant"}
	m, order, ok := decodeStrict(raw)
	if !ok {
		v.errs = append(v.errs, "  Input should be a valid dictionary or instance of SandboxAdmissionGrant")
		return Grant{}, v.err()
	}
	var g Grant
	g.Instance = idField(v, m, "instance_uuid")
	g.Workspace = idField(v, m, "workspace_uuid")
	ints := map[string]*int{"execution_generation": &g.ExecutionGeneration, "entitlement_revision": &g.EntitlementRevision,
		"max_sessions": &g.MaxSessions, "max_managed_processes": &g.MaxManagedProcesses}
	for _, key := range intFields[:2] {
		intField(v, m, key, ints[key], 1, "must")
	}
	if rawExp, has := m["expires_at"]; !has {
		v.add("expires_at", "Field required")
	} else if t, msg := parseDatetime(rawExp); msg != "" {
		v.add("expires_at", msg)
	} else {
		g.ExpiresAt = t
	}
	for _, key := range intFields[2:] {
		intField(v, m, key, ints[key], 0, "must")
	}
	extras(v, order, "instance_uuid", "workspace_uuid", "execution_generation", "entitlement_revision", "expires_at", "max_sessions", "max_managed_processes")
	return g, v.err()
}

// intField reads a strict integer >= min; prefix is the start of the messages ("must" or
// "<field> must").
func intField(v *verrs, m map[string]any, key string, dst *int, min int, prefix string) {
	if _, has := m[key]; !has {
		v.add(key, "Field required")
		return
	}
	n, ok := intValue(v, m, key, prefix)
	if !ok {
		return
	}
	if n < min {
		v.add(key, fmt.Sprintf("Value error, %s be greater than or equal to %d", prefix, min))
		return
	}
	*dst = n
}

// intValue reads key as a strict integer (§6.8: no booleans, no floats, no strings); a
// present value of another type is reported as "<prefix> be an integer". ok is false when
// the key is absent or invalid.
func intValue(v *verrs, m map[string]any, key, prefix string) (int, bool) {
	raw, has := m[key]
	if !has {
		return 0, false
	}
	n, ok := strictInt(raw)
	if !ok {
		v.add(key, "Value error, "+prefix+" be an integer")
	}
	return n, ok
}

// Revocation is a validated SandboxAdmissionRevocation (§6.8).
type Revocation struct {
	Instance            string
	Workspace           string
	EntitlementRevision int
}

// Key of the revocation.
func (r Revocation) Key() Key { return Key{r.Instance, r.Workspace} }

// ParseRevocation validates a SandboxAdmissionRevocation payload.
func ParseRevocation(raw json.RawMessage) (Revocation, error) {
	v := &verrs{model: "SandboxAdmissionRevocation"}
	m, order, ok := decodeStrict(raw)
	if !ok {
		v.errs = append(v.errs, "  Input should be a valid dictionary or instance of SandboxAdmissionRevocation")
		return Revocation{}, v.err()
	}
	var r Revocation
	r.Instance = idField(v, m, "instance_uuid")
	r.Workspace = idField(v, m, "workspace_uuid")
	intField(v, m, "entitlement_revision", &r.EntitlementRevision, 1, "entitlement_revision must")
	extras(v, order, "instance_uuid", "workspace_uuid", "entitlement_revision")
	return r, v.err()
}

// parseDatetime accepts what pydantic accepts for an aware datetime that LangBot sends:
// ISO 8601 with a 'T' or ' ' separator, optional fraction, and 'Z' or ±HH:MM; and Unix
// timestamps (seconds, or milliseconds above 2e10), which pydantic makes UTC. A value
// without a timezone yields the reference's message.
func parseDatetime(raw any) (time.Time, string) {
	const invalid = "Input should be a valid datetime"
	switch t := raw.(type) {
	case json.Number:
		f, err := t.Float64()
		if err != nil {
			return time.Time{}, invalid
		}
		if math.Abs(f) > 2e10 {
			f /= 1000
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e6))*1000).UTC(), ""
	case string:
		s := strings.TrimSpace(t)
		if len(s) >= 11 && (s[10] == ' ' || s[10] == 't') {
			s = s[:10] + "T" + s[11:]
		}
		if strings.HasSuffix(s, "z") {
			s = s[:len(s)-1] + "Z"
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00"} {
			if ts, err := time.Parse(layout, s); err == nil {
				return ts.UTC().Truncate(time.Microsecond), ""
			}
		}
		for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
			if _, err := time.Parse(layout, s); err == nil {
				return time.Time{}, "Value error, expires_at must include a timezone"
			}
		}
		return time.Time{}, invalid + ", invalid datetime format"
	}
	return time.Time{}, invalid
}

// sortedKeys is for deterministic messages.
func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// wrapValidation turns a model error into `BoxValidationError: <text>` (§3.6).
func wrapValidation(err error) error {
	if err == nil {
		return nil
	}
	return rpc.Errorf(rpc.BoxValidationError, "%s", err.Error())
}

// ParseGrantRPC and ParseRevocationRPC are the action-level parsers: model failures are
// BoxValidationError, as the reference wraps them.
func ParseGrantRPC(raw json.RawMessage) (Grant, error) {
	g, err := ParseGrant(raw)
	return g, wrapValidation(err)
}

// ParseRevocationRPC: see ParseGrantRPC.
func ParseRevocationRPC(raw json.RawMessage) (Revocation, error) {
	r, err := ParseRevocation(raw)
	return r, wrapValidation(err)
}
