// Package config holds the runtime configuration LangBot pushes with box_init (§7): the
// `box:` section of its config, shallow-merged over the previous one.
package config

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// Limits are the `limits` keys the runtime uses.
type Limits struct {
	MaxSessions           int `json:"max_sessions"`
	MaxManagedProcesses   int `json:"max_managed_processes"`
	MaxCompletedProcesses int `json:"max_completed_processes"`
	MaxAdmissionRecords   int `json:"max_admission_records"`
	MaxRPCFileBytes       int `json:"max_rpc_file_bytes"`
	RetentionSec          int `json:"-"`
}

// DefaultLimits of §7.1.
func DefaultLimits() Limits {
	return Limits{MaxSessions: 64, MaxManagedProcesses: 64, MaxCompletedProcesses: 256,
		MaxAdmissionRecords: 100000, MaxRPCFileBytes: 20971520, RetentionSec: 300}
}

type limitRule struct {
	key      string
	min, max int
	field    func(*Limits) *int
}

var limitRules = []limitRule{
	{"max_sessions", 0, 5000, func(l *Limits) *int { return &l.MaxSessions }},
	{"max_managed_processes", 0, 1024, func(l *Limits) *int { return &l.MaxManagedProcesses }},
	{"max_completed_processes", 0, 10000, func(l *Limits) *int { return &l.MaxCompletedProcesses }},
	{"max_admission_records", 1, 250000, func(l *Limits) *int { return &l.MaxAdmissionRecords }},
	{"max_rpc_file_bytes", 1, 104857600, func(l *Limits) *int { return &l.MaxRPCFileBytes }},
	{"completed_process_retention_sec", 0, 86400, func(l *Limits) *int { return &l.RetentionSec }},
}

// Paths are the resolved local paths (§7.4, §10.3). Empty strings mean "not configured".
type Paths struct {
	HostRoot         string
	DefaultWorkspace string
	// SkillsRoot is the skill store root of §11.1, always set: skills_root (default "skills")
	// under host_root, which for the skill store defaults to ./data/box even when unset.
	SkillsRoot        string
	AllowedMountRoots []string
}

// Config is the effective configuration.
type Config struct {
	Raw             map[string]any
	Backend         string
	Limits          Limits
	Paths           Paths
	CPULimitEnabled bool
	// Hardening drops every capability and sets no-new-privileges on sandboxes (boxd's
	// default, beyond 0.5.5); `docker.hardening: false` turns it off for images that need it.
	Hardening bool
	// ExecAgent (`docker.exec_agent`, off by default) runs sandbox commands through boxd's
	// in-sandbox exec agent instead of one Engine API exec each (see boxd/README.md).
	ExecAgent bool
	// SandboxUser (`docker.user`, "" by default = the image's user, root for most images) is
	// "<uid>" or "<uid>:<gid>": sandboxes and every command in them run as that user.
	SandboxUser string
	// Initialized is set once a configuration was applied (box_init, or LANGBOT_BOX_CONFIG at
	// start-up): until then no allowed mount roots are known and sandbox actions are refused.
	Initialized bool
}

// sandboxUser matches "<uid>" or "<uid>:<gid>".
var sandboxUser = regexp.MustCompile(`^[0-9]{1,10}(:[0-9]{1,10})?$`)

// parseSandboxUser reads docker.user.
func parseSandboxUser(v any) (string, error) {
	if v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if n, isNum := v.(json.Number); isNum {
		s, ok = n.String(), true
	}
	s = strings.TrimSpace(s)
	if !ok || (s != "" && !sandboxUser.MatchString(s)) {
		return "", rpc.Errorf(rpc.ValueError, `box.docker.user must be "<uid>" or "<uid>:<gid>" in numbers (e.g. "1000:1000"), or empty for the image's user`)
	}
	return s, nil
}

// Default is the configuration before any box_init.
func Default() Config {
	return Config{Raw: map[string]any{}, Limits: DefaultLimits(), CPULimitEnabled: true, Hardening: true}
}

// Apply merges payload over c (top-level keys replace whole sections) and returns the new
// configuration. Invalid limits are rejected before anything is applied. cwd resolves
// relative paths (the runtime's working directory).
func (c Config) Apply(payload map[string]any, cwd string) (Config, error) {
	raw := map[string]any{}
	for k, v := range c.Raw {
		raw[k] = v
	}
	for k, v := range payload {
		raw[k] = v
	}
	next := c
	next.Raw = raw
	lim, err := parseLimits(c.Limits, raw["limits"])
	if err != nil {
		return c, err
	}
	next.Limits = lim
	next.Backend, _ = raw["backend"].(string)
	next.Backend = strings.TrimSpace(next.Backend)
	docker, _ := raw["docker"].(map[string]any)
	if next.SandboxUser, err = parseSandboxUser(docker["user"]); err != nil {
		return c, err
	}
	next.Initialized = true
	next.CPULimitEnabled = truthy(docker["cpu_limit_enabled"], true)
	next.Hardening = truthy(docker["hardening"], true)
	next.ExecAgent = truthy(docker["exec_agent"], false)
	local, _ := raw["local"].(map[string]any)
	next.Paths = ResolvePaths(local, cwd)
	return next, nil
}

func parseLimits(cur Limits, v any) (Limits, error) {
	if v == nil {
		return cur, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return cur, rpc.Errorf(rpc.ValueError, "box.limits must be an object")
	}
	next := cur
	for _, r := range limitRules {
		raw, has := m[r.key]
		if !has {
			continue
		}
		n, ok := raw.(json.Number)
		var f float64
		if ok {
			var err error
			if f, err = n.Float64(); err != nil || strings.ContainsAny(n.String(), ".eE") {
				ok = false
			}
		} else if ff, isF := raw.(float64); isF && ff == math.Trunc(ff) {
			f, ok = ff, true
		}
		if !ok {
			return cur, rpc.Errorf(rpc.ValueError, "box.limits.%s must be an integer", r.key)
		}
		if f < float64(r.min) || f > float64(r.max) {
			return cur, rpc.Errorf(rpc.ValueError, "box.limits.%s must be between %d and %d", r.key, r.min, r.max)
		}
		*r.field(&next) = int(f)
	}
	return next, nil
}

// truthy: false only for false / 0 / "false" / "0" (case-insensitive), as §7.1 says.
func truthy(v any, def bool) bool {
	switch t := v.(type) {
	case nil:
		return def
	case bool:
		return t
	case json.Number:
		return t.String() != "0"
	case float64:
		return t != 0
	case string:
		s := strings.ToLower(strings.TrimSpace(t))
		return s != "false" && s != "0"
	}
	return def
}

// ResolvePaths resolves a `local` config section against the runtime's working directory
// (box_init applies it; a runtime not yet initialised uses ResolvePaths(nil, cwd)).
func ResolvePaths(local map[string]any, cwd string) Paths {
	str := func(k string) string {
		s, _ := local[k].(string)
		return strings.TrimSpace(s)
	}
	abs := func(p, base string) string {
		if strings.HasPrefix(p, "~") {
			if home, err := os.UserHomeDir(); err == nil {
				p = home + p[1:]
			}
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(base, p)
		}
		return mounts.Resolve(p)
	}
	var p Paths
	if hr := str("host_root"); hr != "" {
		p.HostRoot = abs(hr, cwd)
	}
	if p.HostRoot != "" {
		dw := str("default_workspace")
		if dw == "" {
			dw = "default"
		}
		p.DefaultWorkspace = abs(dw, p.HostRoot)
	}
	storeBase := p.HostRoot
	if storeBase == "" {
		storeBase = abs("./data/box", cwd)
	}
	sr := str("skills_root")
	if sr == "" {
		sr = "skills"
	}
	p.SkillsRoot = abs(sr, storeBase)
	var roots []string
	switch t := local["allowed_mount_roots"].(type) {
	case []any:
		for _, r := range t {
			if s, ok := r.(string); ok && strings.TrimSpace(s) != "" {
				roots = append(roots, strings.TrimSpace(s))
			}
		}
	case string:
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				roots = append(roots, s)
			}
		}
	}
	for _, r := range roots {
		p.AllowedMountRoots = append(p.AllowedMountRoots, abs(r, cwd))
	}
	if len(p.AllowedMountRoots) == 0 && p.HostRoot != "" {
		p.AllowedMountRoots = []string{p.HostRoot}
	}
	return p
}

// EnsureDefaultWorkspace creates the default workspace as §7.4 describes.
func (c Config) EnsureDefaultWorkspace() error {
	dw := c.Paths.DefaultWorkspace
	if dw == "" {
		return nil
	}
	if st, err := os.Stat(dw); err == nil {
		if st.IsDir() {
			return nil
		}
		return rpc.Errorf(rpc.BoxValidationError, "box.local.default_workspace must point to a directory on the Box runtime host")
	}
	if len(c.Paths.AllowedMountRoots) == 0 {
		return rpc.Errorf(rpc.BoxValidationError, "box.local.default_workspace cannot be created because no allowed_mount_roots are configured")
	}
	for _, r := range c.Paths.AllowedMountRoots {
		if mounts.Within(dw, r) {
			if err := mounts.MkdirAll(dw); err != nil {
				return rpc.Errorf(rpc.BoxValidationError, "create box.local.default_workspace %s: %v", dw, err)
			}
			return nil
		}
	}
	return rpc.Errorf(rpc.BoxValidationError, "box.local.default_workspace is outside allowed_mount_roots: %s", strings.Join(c.Paths.AllowedMountRoots, ", "))
}

// LimitsView is what box_status reports.
func (l Limits) LimitsView() map[string]any {
	return map[string]any{"max_sessions": l.MaxSessions, "max_managed_processes": l.MaxManagedProcesses,
		"max_completed_processes": l.MaxCompletedProcesses, "max_admission_records": l.MaxAdmissionRecords,
		"max_rpc_file_bytes": l.MaxRPCFileBytes}
}

// String is for logs.
func (c Config) String() string {
	return fmt.Sprintf("backend=%q host_root=%q default_workspace=%q", c.Backend, c.Paths.HostRoot, c.Paths.DefaultWorkspace)
}
