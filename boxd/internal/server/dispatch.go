package server

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/audit"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// class is an action class of §4.2.
type class int

const (
	hostControl class = iota
	tenantSandbox
	tenantOther
)

// call is one request as an action handler sees it.
type call struct {
	data json.RawMessage
	ctx  tenancy.Context // zero for host-control actions
	// grant is the admission grant in force (grant-enforced mode, sandbox actions only),
	// checked once by the dispatcher.
	grant admission.Grant
}

type action struct {
	class class
	run   func(context.Context, call) (any, error)
}

// Register adds (or replaces) an action; the skill store and admission actions of later
// work plug in here without touching the dispatcher.
func (s *Server) Register(name string, c class, run func(context.Context, call) (any, error)) {
	s.actions[name] = action{class: c, run: run}
}

// Dispatch runs one raw request and returns its response (§3.5).
func (s *Server) Dispatch(ctx context.Context, raw []byte) *rpc.Response {
	var req rpc.Request
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil // not an object: ignored
	}
	var probe map[string]json.RawMessage
	_ = json.Unmarshal(raw, &probe)
	if _, isResponse := probe["code"]; isResponse {
		return nil
	}
	if _, isRequest := probe["action"]; !isRequest {
		return nil
	}
	resp := s.dispatch(ctx, req)
	var name string
	_ = json.Unmarshal(req.Action, &name)
	if _, known := s.actions[name]; !known {
		name = "unknown"
	}
	class := ""
	if resp.Code != 0 {
		class = rpc.ClassOfMessage(resp.Message)
	}
	s.opts.Metrics.RPC(name, class)
	s.auditRPC(name, class, req, &resp)
	return &resp
}

func (s *Server) dispatch(ctx context.Context, req rpc.Request) rpc.Response {
	var seq int64
	var name string
	switch {
	case json.Unmarshal(req.SeqID, &seq) != nil:
		return rpc.Failure(req.SeqID, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionRequest\nseq_id\n  Input should be a valid integer"))
	case json.Unmarshal(req.Action, &name) != nil:
		return rpc.Failure(req.SeqID, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionRequest\naction\n  Input should be a valid string"))
	case !isObject(req.Data):
		return rpc.Failure(req.SeqID, rpc.Errorf(rpc.ValidationError, "1 validation error for ActionRequest\ndata\n  Input should be a valid dictionary"))
	}
	tctx, hasCtx, err := tenancy.ParseContext(req.Context)
	if err != nil {
		return rpc.Failure(req.SeqID, err)
	}
	a, ok := s.actions[name]
	if !ok {
		return rpc.Failure(req.SeqID, rpc.Errorf(rpc.ValueError, "Action %s not found", name))
	}
	trusted := s.trustedInstance()
	ctx = audit.WithScope(ctx, audit.Scope{Action: name, Instance: trusted, Workspace: tctx.Workspace})
	mismatch := rpc.Errorf(rpc.PermissionError, "Box action context does not match the trusted instance")
	if a.class == hostControl {
		if hasCtx && tctx.Instance != trusted {
			return rpc.Failure(req.SeqID, mismatch)
		}
		out, err := a.run(ctx, call{data: req.Data})
		return respond(req.SeqID, out, err)
	}
	if !hasCtx {
		return rpc.Failure(req.SeqID, rpc.Errorf(rpc.PermissionError, "Box tenant action requires a trusted Workspace context"))
	}
	if tctx.Instance != trusted {
		return rpc.Failure(req.SeqID, mismatch)
	}
	if err := s.requireInit(name); err != nil {
		return rpc.Failure(req.SeqID, err)
	}
	s.audit.Learn(tctx)
	c := call{data: req.Data, ctx: tctx}
	if a.class == tenantSandbox && s.adm.Required() {
		g, err := s.adm.Check(ctx, tctx) // §4.4 step 1, before the fence
		if err != nil {
			return rpc.Failure(req.SeqID, err)
		}
		c.grant = g
	}
	out, err := s.fenced(ctx, tctx, func() (any, error) { return a.run(ctx, c) })
	if err == nil && a.class == tenantSandbox {
		out = tctx.RewriteSessionIDs(out)
	}
	return respond(req.SeqID, out, err)
}

func respond(seq json.RawMessage, out any, err error) rpc.Response {
	if err != nil {
		return rpc.Failure(seq, err)
	}
	return rpc.Success(seq, out)
}

func isObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

// fenced is the tenant wrapper of §4.4.
func (s *Server) fenced(ctx context.Context, tctx tenancy.Context, run func() (any, error)) (any, error) {
	if err := s.fence.Observe(tctx); err != nil {
		return nil, err
	}
	s.retireStale(ctx, tctx)
	if !s.fence.Current(tctx) {
		return nil, tenancy.StaleError()
	}
	out, err := run()
	s.retireStale(ctx, tctx)
	if !s.fence.Current(tctx) {
		return nil, tenancy.StaleError()
	}
	return out, err
}

// retireStale deletes the workspace's sessions of older generations.
func (s *Server) retireStale(ctx context.Context, tctx tenancy.Context) {
	current := tctx.Namespace() + "-g"
	for _, sess := range s.mgr.List(tctx.WorkspacePrefix()) {
		if !s.fence.Current(tctx) {
			return
		}
		if strings.HasPrefix(sess.Physical, current) && strings.HasPrefix(sess.Physical, tctx.PlacementPrefix()) {
			continue
		}
		_ = s.mgr.Delete(session.WithDropReason(context.WithoutCancel(ctx), "generation"), sess.Physical)
	}
}
