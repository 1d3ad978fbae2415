package admission

import (
	"encoding/json"
	"strings"
)

// Policy is the SandboxAdmissionPolicy of the `admission` config section (§6.8).
type Policy struct {
	Required            bool
	LogicalSessionID    string
	RequiredBackend     string
	MaxSessions         int
	MaxManagedProcesses int
	MaxGrantTTLSec      int
	MaxTimeoutSec       int
	CPUs                float64
	MemoryMB            int
	PidsLimit           int
	ReadOnlyRootfs      bool
	WorkspaceQuotaMB    int
	ReadinessCacheSec   int
}

// DefaultPolicy is the policy of a missing section.
func DefaultPolicy() Policy {
	return Policy{LogicalSessionID: "global", RequiredBackend: "nsjail", MaxSessions: 1, MaxGrantTTLSec: 300,
		MaxTimeoutSec: 120, CPUs: 1.0, MemoryMB: 512, PidsLimit: 128, ReadOnlyRootfs: true, ReadinessCacheSec: 15}
}

var policyKeys = []string{"required", "logical_session_id", "required_backend", "max_sessions", "max_managed_processes",
	"max_grant_ttl_sec", "max_timeout_sec", "cpus", "memory_mb", "pids_limit", "read_only_rootfs",
	"workspace_quota_mb", "readiness_cache_sec"}

// ParsePolicy validates the section as decoded from JSON (numbers as json.Number or
// float64). Unknown keys, wrong types and out-of-range values are errors; the caller turns
// an error into the fail-closed policy of §7.5.1.
func ParsePolicy(section any) (Policy, error) {
	v := &verrs{model: "SandboxAdmissionPolicy"}
	m, ok := section.(map[string]any)
	if !ok {
		v.errs = append(v.errs, "  Input should be a valid dictionary or instance of SandboxAdmissionPolicy")
		return Policy{}, v.err()
	}
	p := DefaultPolicy()
	boolean := func(key string, dst *bool) {
		if raw, has := m[key]; has {
			if b, ok := laxBool(raw); ok {
				*dst = b
			} else {
				v.add(key, "Input should be a valid boolean")
			}
		}
	}
	literal := func(key, want string) {
		if raw, has := m[key]; has && raw != want {
			v.add(key, "Input should be '"+want+"'")
		}
	}
	integer := func(key string, dst *int, check func(int) string) {
		n, ok := intValue(v, m, key, "must")
		if !ok {
			return
		}
		if msg := check(n); msg != "" {
			v.add(key, "Value error, "+msg)
			return
		}
		*dst = n
	}
	positive := func(n int) string {
		if n <= 0 {
			return "must be greater than 0"
		}
		return ""
	}
	nonNegative := func(n int) string {
		if n < 0 {
			return "must be greater than or equal to 0"
		}
		return ""
	}
	boolean("required", &p.Required)
	literal("logical_session_id", "global")
	literal("required_backend", "nsjail")
	integer("max_sessions", &p.MaxSessions, func(n int) string {
		if n < 0 || n > 1 {
			return "max_sessions must be between 0 and 1"
		}
		return ""
	})
	integer("max_managed_processes", &p.MaxManagedProcesses, func(n int) string {
		if n != 0 {
			return "max_managed_processes must be 0"
		}
		return ""
	})
	integer("max_grant_ttl_sec", &p.MaxGrantTTLSec, positive)
	integer("max_timeout_sec", &p.MaxTimeoutSec, positive)
	if raw, has := m["cpus"]; has {
		f, ok := number(raw)
		switch {
		case !ok:
			v.add("cpus", "Value error, cpus must be a number")
		case f <= 0:
			v.add("cpus", "Value error, cpus must be greater than 0")
		default:
			p.CPUs = f
		}
	}
	integer("memory_mb", &p.MemoryMB, func(n int) string {
		if n < 32 {
			return "memory_mb must be at least 32"
		}
		return ""
	})
	integer("pids_limit", &p.PidsLimit, positive)
	boolean("read_only_rootfs", &p.ReadOnlyRootfs)
	integer("workspace_quota_mb", &p.WorkspaceQuotaMB, nonNegative)
	integer("readiness_cache_sec", &p.ReadinessCacheSec, nonNegative)
	extras(v, sortedKeys(m), policyKeys...)
	if err := v.err(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// laxBool is pydantic's lax boolean: true/false, the integers 0/1, and the usual strings.
func laxBool(raw any) (bool, bool) {
	switch t := raw.(type) {
	case bool:
		return t, true
	case json.Number:
		switch t.String() {
		case "0":
			return false, true
		case "1":
			return true, true
		}
	case float64:
		switch t {
		case 0:
			return false, true
		case 1:
			return true, true
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(t)) {
		case "true", "yes", "on", "t", "y", "1":
			return true, true
		case "false", "no", "off", "f", "n", "0":
			return false, true
		}
	}
	return false, false
}

// number accepts a JSON number (int or float), not a bool or a string (the reference's
// "before" validator of cpus).
func number(raw any) (float64, bool) {
	switch t := raw.(type) {
	case json.Number:
		f, err := t.Float64()
		return f, err == nil
	case float64:
		return t, true
	case int:
		return float64(t), true
	}
	return 0, false
}
