// Package session implements sessions, exec and managed processes on top of a backend
// (§6, §8): validation of specs, get-or-create with the reuse/conflict rules, per-session
// serialisation, capacity, TTL reaping, output capture and managed processes.
package session

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// DefaultImage is the protocol's default sandbox image.
const DefaultImage = "rockchin/langbot-sandbox:latest"

// Spec is a validated BoxSpec (§6.1).
type Spec struct {
	Cmd              string
	Workdir          string
	TimeoutSec       int
	Network          string
	SessionID        string
	Env              []backend.EnvVar
	Image            string
	HostPath         *string
	HostPathMode     string
	MountPath        string
	ExtraMounts      []backend.Mount
	SkillName        *string
	Persistent       bool
	CPUs             float64
	MemoryMB         int
	PidsLimit        int
	ReadOnlyRootfs   bool
	WorkspaceQuotaMB int
}

type fields struct {
	m    map[string]json.RawMessage
	errs []string
}

func (f *fields) fail(key, msg string) { f.errs = append(f.errs, key+"\n  "+msg) }

func (f *fields) has(key string) bool {
	v, ok := f.m[key]
	return ok && string(v) != "null"
}

func (f *fields) str(key, def string) string {
	if !f.has(key) {
		return def
	}
	var s string
	if err := json.Unmarshal(f.m[key], &s); err != nil {
		f.fail(key, "Input should be a valid string")
		return def
	}
	return s
}

func (f *fields) num(key string) (float64, bool) {
	raw := strings.TrimSpace(string(f.m[key]))
	var s string
	if json.Unmarshal(f.m[key], &s) == nil {
		raw = strings.TrimSpace(s)
	}
	switch raw {
	case "true":
		return 1, true
	case "false":
		return 0, true
	}
	v, err := strconv.ParseFloat(raw, 64)
	return v, err == nil
}

func (f *fields) integer(key string, def int) int {
	if !f.has(key) {
		return def
	}
	v, ok := f.num(key)
	if !ok || v != math.Trunc(v) {
		f.fail(key, "Input should be a valid integer")
		return def
	}
	return int(v)
}

func (f *fields) float(key string, def float64) float64 {
	if !f.has(key) {
		return def
	}
	v, ok := f.num(key)
	if !ok {
		f.fail(key, "Input should be a valid number")
		return def
	}
	return v
}

func (f *fields) boolean(key string, def bool) bool {
	if !f.has(key) {
		return def
	}
	var b bool
	if json.Unmarshal(f.m[key], &b) == nil {
		return b
	}
	var s string
	raw := string(f.m[key])
	if json.Unmarshal(f.m[key], &s) == nil {
		raw = s
	}
	switch strings.ToLower(strings.TrimSpace(raw)) {
	case "true", "yes", "on", "t", "y", "1":
		return true
	case "false", "no", "off", "f", "n", "0":
		return false
	}
	f.fail(key, "Input should be a valid boolean")
	return def
}

func (f *fields) enum(key, def string, allowed ...string) string {
	s := f.str(key, def)
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	f.fail(key, fmt.Sprintf("Input should be %s", quoteList(allowed)))
	return def
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = "'" + x + "'"
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func (f *fields) err(model string) error {
	if len(f.errs) == 0 {
		return nil
	}
	return rpc.Errorf(rpc.BoxValidationError, "%d validation error(s) for %s\n%s", len(f.errs), model, strings.Join(f.errs, "\n"))
}

func parseFields(raw json.RawMessage) (*fields, error) {
	f := &fields{}
	if err := json.Unmarshal(raw, &f.m); err != nil || f.m == nil {
		return nil, rpc.Errorf(rpc.BoxValidationError, "1 validation error(s) for BoxSpec\n  Input should be a valid dictionary")
	}
	return f, nil
}

func absHostPath(p string) bool {
	if strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\\`) {
		return true
	}
	return len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/')
}

// ParseSpec validates a BoxSpec payload, with the defaults and rules of §6.1.
func ParseSpec(raw json.RawMessage) (Spec, error) {
	f, err := parseFields(raw)
	if err != nil {
		return Spec{}, err
	}
	s := Spec{
		Cmd:              strings.TrimSpace(f.str("cmd", "")),
		TimeoutSec:       f.integer("timeout_sec", 30),
		Network:          f.enum("network", "off", "off", "on"),
		Image:            f.str("image", DefaultImage),
		HostPathMode:     f.enum("host_path_mode", "rw", "none", "ro", "rw"),
		MountPath:        strings.TrimSpace(f.str("mount_path", "/workspace")),
		Persistent:       f.boolean("persistent", false),
		CPUs:             f.float("cpus", 1.0),
		MemoryMB:         f.integer("memory_mb", 512),
		PidsLimit:        f.integer("pids_limit", 128),
		ReadOnlyRootfs:   f.boolean("read_only_rootfs", true),
		WorkspaceQuotaMB: f.integer("workspace_quota_mb", 0),
	}
	if !f.has("session_id") {
		f.fail("session_id", "Field required")
	} else if s.SessionID = strings.TrimSpace(f.str("session_id", "")); s.SessionID == "" {
		f.fail("session_id", "Value error, session_id must not be empty")
	}
	wd := f.str("workdir", "")
	if strings.TrimSpace(wd) == "" {
		if mp := strings.TrimSpace(f.str("mount_path", "")); f.has("mount_path") && mp != "" {
			wd = mp
		} else {
			wd = "/workspace"
		}
	}
	s.Workdir = strings.TrimSpace(wd)
	if !strings.HasPrefix(s.Workdir, "/") {
		f.fail("workdir", "Value error, workdir must be an absolute path inside the sandbox")
	}
	if s.TimeoutSec <= 0 {
		f.fail("timeout_sec", "Value error, timeout_sec must be greater than 0")
	}
	if !strings.HasPrefix(s.MountPath, "/") {
		f.fail("mount_path", "Value error, mount_path must be an absolute path inside the sandbox")
	}
	if f.has("host_path") {
		hp := strings.TrimSpace(f.str("host_path", ""))
		if !absHostPath(hp) {
			f.fail("host_path", "Value error, host_path must be an absolute host path")
		}
		s.HostPath = &hp
	}
	if f.has("env") {
		env, err := parseEnv(f.m["env"])
		if err != nil {
			f.fail("env", err.Error())
		}
		s.Env = env
	}
	if f.has("extra_mounts") {
		var items []json.RawMessage
		if json.Unmarshal(f.m["extra_mounts"], &items) != nil {
			f.fail("extra_mounts", "Input should be a valid list")
		}
		for i, it := range items {
			mf, err := parseFields(it)
			if err != nil {
				f.fail(fmt.Sprintf("extra_mounts.%d", i), "Input should be a valid dictionary")
				continue
			}
			m := backend.Mount{
				HostPath:  strings.TrimSpace(mf.str("host_path", "")),
				MountPath: strings.TrimSpace(mf.str("mount_path", "")),
				Mode:      backend.MountMode(mf.enum("mode", "rw", "none", "ro", "rw")),
			}
			if !mf.has("host_path") || !absHostPath(m.HostPath) {
				f.fail(fmt.Sprintf("extra_mounts.%d.host_path", i), "Value error, host_path must be an absolute host path")
			}
			if !mf.has("mount_path") || !strings.HasPrefix(m.MountPath, "/") {
				f.fail(fmt.Sprintf("extra_mounts.%d.mount_path", i), "Value error, mount_path must be an absolute path inside the sandbox")
			}
			f.errs = append(f.errs, mf.errs...)
			s.ExtraMounts = append(s.ExtraMounts, m)
		}
	}
	if f.has("skill_name") {
		if n := strings.TrimSpace(f.str("skill_name", "")); n != "" {
			if !validSkillName(n) {
				f.fail("skill_name", "Value error, skill_name can only contain up to 64 letters, numbers, hyphens and underscores")
			}
			s.SkillName = &n
		}
	}
	if s.CPUs <= 0 {
		f.fail("cpus", "Value error, cpus must be greater than 0")
	}
	if s.MemoryMB < 32 {
		f.fail("memory_mb", "Value error, memory_mb must be at least 32")
	}
	if s.PidsLimit < 1 {
		f.fail("pids_limit", "Value error, pids_limit must be at least 1")
	}
	if s.WorkspaceQuotaMB < 0 {
		f.fail("workspace_quota_mb", "Value error, workspace_quota_mb must be greater than or equal to 0")
	}
	if len(f.errs) == 0 && s.HostPath != nil && s.HostPathMode != "none" {
		if s.Workdir != s.MountPath && !strings.HasPrefix(s.Workdir, strings.TrimSuffix(s.MountPath, "/")+"/") {
			f.fail("workdir", "Value error, workdir must stay under mount_path when host_path is provided")
		}
	}
	return s, f.err("BoxSpec")
}

func validSkillName(n string) bool {
	if len([]rune(n)) > 64 {
		return false
	}
	for _, r := range strings.NewReplacer("-", "", "_", "").Replace(n) {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r > 127) {
			return false
		}
	}
	return true
}

// parseEnv keeps the JSON object's key order (the protocol passes env in insertion order).
func parseEnv(raw json.RawMessage) ([]backend.EnvVar, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("Input should be a valid dictionary")
	}
	var out []backend.EnvVar
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%v: Input should be a valid string", k)
		}
		out = append(out, backend.EnvVar{Key: k.(string), Value: s})
	}
	return out, nil
}

// mountsKey is the set of (host, mount, mode) of extra mounts whose mode is not none (§6.2).
func (s Spec) mountsKey() string {
	var parts []string
	seen := map[string]bool{}
	for _, m := range s.ExtraMounts {
		if m.Mode == backend.MountNone {
			continue
		}
		k := m.HostPath + "\x00" + m.MountPath + "\x00" + string(m.Mode)
		if !seen[k] {
			seen[k] = true
			parts = append(parts, k)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "\x01")
}

// ProcessSpec is a BoxManagedProcessSpec (§6.6).
type ProcessSpec struct {
	ProcessID string
	Command   string
	Args      []string
	Env       []backend.EnvVar
	Cwd       string
}

// ParseProcessSpec validates a managed-process spec.
func ParseProcessSpec(raw json.RawMessage) (ProcessSpec, error) {
	f, err := parseFields(raw)
	if err != nil {
		return ProcessSpec{}, rpc.Errorf(rpc.BoxValidationError, "1 validation error(s) for BoxManagedProcessSpec\n  Input should be a valid dictionary")
	}
	p := ProcessSpec{
		ProcessID: f.str("process_id", "default"),
		Command:   strings.TrimSpace(f.str("command", "")),
		Cwd:       strings.TrimSpace(f.str("cwd", "/workspace")),
	}
	if p.Command == "" {
		f.fail("command", "Value error, command must not be empty")
	}
	if !strings.HasPrefix(p.Cwd, "/") {
		f.fail("cwd", "Value error, cwd must be an absolute path inside the sandbox")
	}
	if f.has("args") {
		if json.Unmarshal(f.m["args"], &p.Args) != nil {
			f.fail("args", "Input should be a valid list of strings")
		}
	}
	if f.has("env") {
		env, err := parseEnv(f.m["env"])
		if err != nil {
			f.fail("env", err.Error())
		}
		p.Env = env
	}
	return p, f.err("BoxManagedProcessSpec")
}
