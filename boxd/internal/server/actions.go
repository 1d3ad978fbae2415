package server

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/probe"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/transfer"
)

func (s *Server) registry() map[string]action {
	s.actions = map[string]action{}
	s.Register("__ping", hostControl, func(context.Context, call) (any, error) { return map[string]any{}, nil })
	s.Register("__file_chunk", hostControl, func(ctx context.Context, c call) (any, error) {
		st := transfer.FromContext(ctx)
		if st == nil {
			return nil, rpc.Errorf(rpc.ValueError, "File transfer is not available on this connection")
		}
		return map[string]any{}, st.Chunk(c.data)
	})
	s.Register("box_init", hostControl, s.boxInit)
	s.Register("box_health", hostControl, s.boxHealth)
	s.Register("box_get_backend_info", hostControl, func(ctx context.Context, _ call) (any, error) { return s.backendInfo(ctx), nil })
	s.Register("box_shutdown", hostControl, func(ctx context.Context, _ call) (any, error) {
		s.mgr.Shutdown(ctx, false)
		return map[string]any{}, nil
	})
	s.Register("box_upsert_sandbox_admission_grant", hostControl, s.boxUpsertGrant)
	s.Register("box_revoke_sandbox_admission_grant", hostControl, s.boxRevokeGrant)
	s.Register("box_verify_shared_workspace", hostControl, func(_ context.Context, c call) (any, error) {
		var req struct {
			Marker any `json:"marker_name"`
		}
		_ = json.Unmarshal(c.data, &req)
		marker, _ := req.Marker.(string)
		return probe.Verify(s.Config().Paths, marker)
	})
	s.Register("box_status", tenantOther, s.boxStatus)
	s.Register("box_exec", tenantSandbox, s.boxExec)
	s.Register("box_create_session", tenantSandbox, s.boxCreateSession)
	s.Register("box_get_session", tenantSandbox, s.boxGetSession)
	s.Register("box_get_sessions", tenantSandbox, s.boxGetSessions)
	s.Register("box_delete_session", tenantSandbox, s.boxDeleteSession)
	s.Register("box_start_managed_process", tenantSandbox, s.boxStartProcess)
	s.Register("box_get_managed_process", tenantSandbox, s.boxGetProcess)
	s.Register("box_stop_managed_process", tenantSandbox, s.boxStopProcess)
	s.registerSkills()
	return s.actions
}

func decodeObject(raw json.RawMessage) (map[string]any, error) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, rpc.Errorf(rpc.ValueError, "box_init payload must be an object")
	}
	return m, nil
}

func (s *Server) boxInit(ctx context.Context, c call) (any, error) {
	payload, err := decodeObject(c.data)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	next, err := s.cfg.Apply(payload, s.opts.Cwd)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.cfg = next
	s.readyAt = timeZero
	s.mu.Unlock()
	s.adm.Configure(next.Raw)
	if cf, ok := s.backend.(Configurable); ok {
		cf.Configure(next.CPULimitEnabled, next.Hardening)
	}
	if err := next.EnsureDefaultWorkspace(); err != nil {
		return nil, err
	}
	s.log.Info("box_init applied: " + next.String())
	return map[string]any{"initialized": true}, nil
}

func (s *Server) boxStatus(ctx context.Context, c call) (any, error) {
	sessions := s.mgr.List(c.ctx.PlacementPrefix())
	running := 0
	for _, sess := range sessions {
		for _, p := range sess.Processes() {
			if p.Info()["status"] == "running" {
				running++
			}
		}
	}
	return map[string]any{"backend": s.backendInfo(ctx), "active_sessions": len(sessions), "managed_processes": running,
		"session_ttl_sec": int(session.TTL.Seconds()), "limits": s.Limits().LimitsView()}, nil
}

func (s *Server) requireBackend(ctx context.Context) error {
	if s.backendInfo(ctx)["available"] != true {
		return rpc.Errorf(rpc.BoxBackendUnavailableError, "LangBot Box backend unavailable. Install and start Docker or nsjail before using exec.")
	}
	return nil
}

func (s *Server) specAndID(c call) (session.Spec, string, error) {
	spec, err := session.ParseSpec(c.data)
	if err != nil {
		return spec, "", err
	}
	if s.adm.Required() {
		return s.admitted(c, spec)
	}
	phys, err := c.ctx.Physical(spec.SessionID)
	return spec, phys, err
}

func (s *Server) boxExec(ctx context.Context, c call) (any, error) {
	spec, phys, err := s.specAndID(c)
	if err != nil {
		return nil, err
	}
	if spec.Cmd == "" {
		return nil, rpc.Errorf(rpc.BoxValidationError, "cmd must not be empty")
	}
	if err := s.requireBackend(ctx); err != nil {
		return nil, err
	}
	res, err := s.mgr.Exec(ctx, phys, spec)
	if err != nil {
		return nil, err
	}
	return res.Map(), nil
}

func (s *Server) boxCreateSession(ctx context.Context, c call) (any, error) {
	spec, phys, err := s.specAndID(c)
	if err != nil {
		return nil, err
	}
	if err := s.requireBackend(ctx); err != nil {
		return nil, err
	}
	sess, err := s.mgr.GetOrCreate(ctx, phys, spec)
	if err != nil {
		return nil, err
	}
	return sess.Info(s.mgr.BackendName()), nil
}

// requiredString reads a required string key; missing -> KeyError: 'key' as Python raises.
func requiredString(data json.RawMessage, key, def string, required bool) (string, error) {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(data, &m)
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		if required {
			return "", rpc.Errorf(rpc.KeyError, "'%s'", key)
		}
		return def, nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String(), nil
		}
		return "", rpc.Errorf(rpc.ValueError, "%s must be a string", key)
	}
	return v, nil
}

func (s *Server) sessionFromData(c call) (*session.Session, string, error) {
	id, err := requiredString(c.data, "session_id", "", true)
	if err != nil {
		return nil, "", err
	}
	phys, err := s.physical(c, id)
	if err != nil {
		return nil, "", err
	}
	sess, err := s.mgr.Get(phys)
	return sess, phys, err
}

func (s *Server) boxGetSession(ctx context.Context, c call) (any, error) {
	sess, _, err := s.sessionFromData(c)
	if err != nil {
		return nil, err
	}
	info := sess.Info(s.mgr.BackendName())
	procs := sess.Processes()
	if len(procs) > 0 {
		all := map[string]any{}
		for id, p := range procs {
			all[id] = p.Info()
		}
		info["managed_processes"] = all
		if d, ok := procs["default"]; ok {
			info["managed_process"] = d.Info()
		}
	}
	return info, nil
}

func (s *Server) boxGetSessions(ctx context.Context, c call) (any, error) {
	out := []any{}
	for _, sess := range s.mgr.List(c.ctx.PlacementPrefix()) {
		out = append(out, sess.Info(s.mgr.BackendName()))
	}
	return map[string]any{"sessions": out}, nil
}

func (s *Server) boxDeleteSession(ctx context.Context, c call) (any, error) {
	var m map[string]any
	_ = json.Unmarshal(c.data, &m)
	raw, ok := m["session_id"]
	if !ok {
		return nil, rpc.Errorf(rpc.KeyError, "'session_id'")
	}
	id, _ := raw.(string)
	phys, err := s.physical(c, id)
	if err != nil {
		return nil, err
	}
	if err := s.mgr.Delete(ctx, phys); err != nil {
		return nil, err
	}
	return map[string]any{"deleted": raw}, nil
}

func (s *Server) boxStartProcess(ctx context.Context, c call) (any, error) {
	id, err := requiredString(c.data, "session_id", "", true)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(c.data, &m)
	rawSpec, ok := m["spec"]
	if !ok {
		return nil, rpc.Errorf(rpc.KeyError, "'spec'")
	}
	phys, err := s.physical(c, id)
	if err != nil {
		return nil, err
	}
	spec, err := session.ParseProcessSpec(rawSpec)
	if err != nil {
		return nil, err
	}
	if s.adm.Required() && c.grant.MaxManagedProcesses <= 0 {
		return nil, rpc.Errorf(rpc.BoxAdmissionError, "%s", admission.MsgNoProcesses)
	}
	p, err := s.mgr.StartProcess(ctx, phys, spec)
	if err != nil {
		return nil, err
	}
	return p.Info(), nil
}

func (s *Server) processFromData(c call) (*session.Session, *session.Process, string, error) {
	id, err := requiredString(c.data, "session_id", "", true)
	if err != nil {
		return nil, nil, "", err
	}
	pid, err := requiredString(c.data, "process_id", "default", false)
	if err != nil {
		return nil, nil, "", err
	}
	phys, err := s.physical(c, id)
	if err != nil {
		return nil, nil, "", err
	}
	sess, p, err := s.mgr.GetProcess(phys, pid)
	return sess, p, pid, err
}

func (s *Server) boxGetProcess(ctx context.Context, c call) (any, error) {
	_, p, _, err := s.processFromData(c)
	if err != nil {
		return nil, err
	}
	return p.Info(), nil
}

func (s *Server) boxStopProcess(ctx context.Context, c call) (any, error) {
	id, err := requiredString(c.data, "session_id", "", true)
	if err != nil {
		return nil, err
	}
	pid, err := requiredString(c.data, "process_id", "default", false)
	if err != nil {
		return nil, err
	}
	phys, err := s.physical(c, id)
	if err != nil {
		return nil, err
	}
	if err := s.mgr.StopProcess(ctx, phys, pid); err != nil {
		return nil, err
	}
	return map[string]any{"stopped": pid}, nil
}

// Cwd is the runtime's working directory (relative config paths resolve against it).
func Cwd() string {
	wd, err := os.Getwd()
	if err != nil {
		return "/"
	}
	return strings.TrimSuffix(wd, "/") + "/"
}
