package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/pyval"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/skills"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/transfer"
)

// skillLockWait bounds how long a skill action waits for its tenant's store: every store
// operation is itself bounded (no open can block on a FIFO, listings and copies have entry
// limits), so a longer wait means something is wrong and the caller gets an error to retry.
const skillLockWait = 30 * time.Second

// skillService serialises the skill-store operations of each tenant: one lock per tenant
// namespace (§11.12 has one for the process; a tenant whose package holds something slow
// can then never hold up another tenant's skill actions).
type skillService struct {
	mu    sync.Mutex
	locks map[string]*tenantLock // by namespace; an entry lives while someone holds or waits
	hooks skills.Hooks
}

type tenantLock struct {
	held  chan struct{} // capacity 1: a token in it means held
	users int
}

// lock takes the store lock of namespace ns, waiting at most skillLockWait (or until ctx
// ends), and returns its release.
func (s *skillService) lock(ctx context.Context, ns string) (func(), error) {
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*tenantLock{}
	}
	l := s.locks[ns]
	if l == nil {
		l = &tenantLock{held: make(chan struct{}, 1)}
		s.locks[ns] = l
	}
	l.users++
	s.mu.Unlock()
	leave := func() {
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, ns)
		}
		s.mu.Unlock()
	}
	select {
	case l.held <- struct{}{}: // free: taken even if ctx has ended
		return func() { <-l.held; leave() }, nil
	default:
	}
	timer := time.NewTimer(skillLockWait)
	defer timer.Stop()
	select {
	case l.held <- struct{}{}:
		return func() { <-l.held; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, fmt.Errorf("skill action cancelled while waiting for this Workspace's skill store: %w", ctx.Err())
	case <-timer.C:
		leave()
		return nil, fmt.Errorf("The skill store of this Workspace is busy: another skill action has held it for over %s; retry later", skillLockWait)
	}
}

// skillArgs is a skill action's data object, decoded with numbers kept exact.
type skillArgs map[string]any

func decodeSkillArgs(raw json.RawMessage) skillArgs {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	_ = dec.Decode(&m) // the dispatcher has checked that data is an object
	return m
}

// required is Python's data[key]: a missing key raises KeyError: 'key'.
func (a skillArgs) required(key string) (any, error) {
	v, ok := a[key]
	if !ok {
		return nil, rpc.Errorf(rpc.KeyError, "'%s'", key)
	}
	return v, nil
}

// requiredAll is required for several keys, in order (the first missing one is reported).
func (a skillArgs) requiredAll(keys ...string) ([]any, error) {
	out := make([]any, len(keys))
	for i, k := range keys {
		v, err := a.required(k)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// orDefault is Python's `str(data.get(key) or default)`.
func (a skillArgs) orDefault(key, def string) string {
	if v := a[key]; pyval.Truthy(v) {
		return pyval.Str(v)
	}
	return def
}

// getDefault is Python's `data.get(key, default)` followed by a falsy test: a missing key
// gives def, null gives "".
func (a skillArgs) getDefault(key, def string) string {
	v, ok := a[key]
	switch {
	case !ok:
		return def
	case v == nil || v == false:
		return ""
	}
	return pyval.Str(v)
}

// pyInt is Python's int() on a JSON value.
func pyInt(v any) (int, error) {
	switch t := v.(type) {
	case bool:
		if t {
			return 1, nil
		}
		return 0, nil
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return int(i), nil
		}
		f, err := t.Float64()
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("cannot convert float %s to integer", t)
		}
		return int(f), nil
	case string:
		if i, err := strconv.Atoi(strings.TrimSpace(strings.ReplaceAll(t, "_", ""))); err == nil {
			return i, nil
		}
		return 0, fmt.Errorf("invalid literal for int() with base 10: '%s'", t)
	case nil:
		return 0, fmt.Errorf("int() argument must be a string, a bytes-like object or a real number, not 'NoneType'")
	}
	return 0, fmt.Errorf("int() argument must be a string, a bytes-like object or a real number, not '%s'", pyTypeName(v))
}

func pyTypeName(v any) string {
	switch v.(type) {
	case map[string]any:
		return "dict"
	case []any:
		return "list"
	case string:
		return "str"
	case bool:
		return "bool"
	case nil:
		return "NoneType"
	}
	return "object"
}

func field(m map[string]any, key string) skills.Field {
	v, ok := m[key]
	if !ok {
		return skills.Field{}
	}
	if v == nil {
		return skills.Field{Present: true, Null: true}
	}
	return skills.Field{Present: true, Value: pyval.Str(v)}
}

func skillRequest(v any) (skills.Request, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return skills.Request{}, fmt.Errorf("'%s' object has no attribute 'get'", pyTypeName(v))
	}
	req := skills.Request{Name: field(m, "name"), DisplayName: field(m, "display_name"),
		Description: field(m, "description"), Instructions: field(m, "instructions"), PackageRoot: field(m, "package_root")}
	if req.Name.Null {
		req.Name = skills.Field{Present: true}
	}
	if req.Instructions.Null {
		req.Instructions = skills.Field{Present: true}
	}
	return req, nil
}

// skillStore opens the calling tenant's store.
func (s *Server) skillStore(c call) (*skills.Store, error) {
	root := s.Config().Paths.SkillsRoot
	if root == "" { // no box_init and no LANGBOT_BOX_CONFIG yet: §11.1's defaults
		root = config.ResolvePaths(nil, s.opts.Cwd).SkillsRoot
	}
	return skills.Open(root, c.ctx.Namespace(), s.skills.hooks)
}

// skillAction runs fn under the tenant's store lock; wrapped actions report every failure as
// BoxValidationError (§3.6), the others as ValueError (KeyError for a missing key).
func (s *Server) skillAction(wrapped bool, fn func(skillArgs, *skills.Store) (any, error)) func(context.Context, call) (any, error) {
	return func(ctx context.Context, c call) (any, error) {
		st, err := s.skillStore(c)
		var unlock func()
		if err == nil {
			unlock, err = s.skills.lock(ctx, c.ctx.Namespace())
		}
		if err == nil {
			var out any
			out, err = fn(decodeSkillArgs(c.data), st)
			unlock()
			if err == nil {
				return out, nil
			}
		}
		if _, isRPC := err.(*rpc.Error); isRPC && !wrapped {
			return nil, err
		}
		if wrapped {
			if re, isRPC := err.(*rpc.Error); isRPC {
				return nil, rpc.Errorf(rpc.BoxValidationError, "%s", re.Text)
			}
			return nil, rpc.Errorf(rpc.BoxValidationError, "%s", err.Error())
		}
		return nil, rpc.Errorf(rpc.ValueError, "%s", err.Error())
	}
}

// takeUpload consumes a completed __file_chunk transfer of this connection.
func takeUpload(ctx context.Context, a skillArgs) ([]byte, error) {
	key, err := a.required("file_key")
	if err != nil {
		return nil, err
	}
	st := transfer.FromContext(ctx)
	if st == nil {
		return nil, fmt.Errorf("File transfer is not available on this connection")
	}
	data, err := st.Take(pyval.Str(key))
	if re, ok := err.(*rpc.Error); ok {
		return nil, fmt.Errorf("%s", re.Text)
	}
	return data, err
}

func zipRequest(a skillArgs) skills.ZipRequest {
	req := skills.ZipRequest{
		Filename:     a.getDefault("filename", "skill.zip"),
		SourceSubdir: a.orDefault("source_subdir", ""),
		TargetSuffix: a.getDefault("target_suffix", "upload"),
		SourcePath:   a.orDefault("source_path", ""),
	}
	if list, ok := a["source_paths"].([]any); ok {
		for _, p := range list {
			if p == nil {
				req.SourcePaths = append(req.SourcePaths, "")
				continue
			}
			req.SourcePaths = append(req.SourcePaths, pyval.Str(p))
		}
	}
	return req
}

func (s *Server) registerSkills() {
	s.Register("box_list_skills", tenantOther, s.skillAction(false, func(_ skillArgs, st *skills.Store) (any, error) {
		list, err := st.List()
		return map[string]any{"skills": list}, err
	}))
	s.Register("box_get_skill", tenantOther, s.skillAction(false, func(a skillArgs, st *skills.Store) (any, error) {
		name, err := a.required("name")
		if err != nil {
			return nil, err
		}
		sk, err := st.Get(pyval.Str(name))
		return map[string]any{"skill": sk}, err
	}))
	s.Register("box_create_skill", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		raw, err := a.required("skill")
		if err != nil {
			return nil, err
		}
		req, err := skillRequest(raw)
		if err != nil {
			return nil, err
		}
		sk, err := st.Create(req)
		return map[string]any{"skill": sk}, err
	}))
	s.Register("box_update_skill", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		v, err := a.requiredAll("name", "skill")
		if err != nil {
			return nil, err
		}
		req, err := skillRequest(v[1])
		if err != nil {
			return nil, err
		}
		sk, err := st.Update(pyval.Str(v[0]), req)
		return map[string]any{"skill": sk}, err
	}))
	s.Register("box_delete_skill", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		name, err := a.required("name")
		if err != nil {
			return nil, err
		}
		if err := st.Delete(pyval.Str(name)); err != nil {
			return nil, err
		}
		return map[string]any{"deleted": name}, nil
	}))
	s.Register("box_scan_skill_directory", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		p, err := a.required("path")
		if err != nil {
			return nil, err
		}
		return st.Scan(pyval.Str(p))
	}))
	s.Register("box_list_skill_files", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		name, err := a.required("name")
		if err != nil {
			return nil, err
		}
		maxEntries := 200
		if v, ok := a["max_entries"]; ok {
			if maxEntries, err = pyInt(v); err != nil {
				return nil, err
			}
		}
		return st.ListFiles(pyval.Str(name), a.orDefault("path", "."), pyval.Truthy(a["include_hidden"]), maxEntries)
	}))
	s.Register("box_read_skill_file", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		v, err := a.requiredAll("name", "path")
		if err != nil {
			return nil, err
		}
		return st.ReadFile(pyval.Str(v[0]), orDot(v[1]))
	}))
	s.Register("box_write_skill_file", tenantOther, s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
		v, err := a.requiredAll("name", "path")
		if err != nil {
			return nil, err
		}
		content, ok := a["content"]
		if !ok {
			content = ""
		}
		text, isString := content.(string)
		if !isString {
			return nil, fmt.Errorf("'%s' object has no attribute 'encode'", pyTypeName(content))
		}
		return st.WriteFile(pyval.Str(v[0]), orDot(v[1]), text)
	}))
	s.Register("box_preview_skill_zip", tenantOther, s.zipAction((*skills.Store).PreviewZip))
	s.Register("box_install_skill_zip", tenantOther, s.zipAction((*skills.Store).InstallZip))
}

// zipAction consumes the uploaded archive of file_key and runs a zip operation on it.
func (s *Server) zipAction(op func(*skills.Store, []byte, skills.ZipRequest) ([]skills.Skill, error)) func(context.Context, call) (any, error) {
	return func(ctx context.Context, c call) (any, error) {
		return s.skillAction(true, func(a skillArgs, st *skills.Store) (any, error) {
			data, err := takeUpload(ctx, a)
			if err != nil {
				return nil, err
			}
			list, err := op(st, data, zipRequest(a))
			return map[string]any{"skills": list}, err
		})(ctx, c)
	}
}

// orDot is Python's `str(path or ".")` for a path argument.
func orDot(v any) string {
	if !pyval.Truthy(v) {
		return "."
	}
	return pyval.Str(v)
}
