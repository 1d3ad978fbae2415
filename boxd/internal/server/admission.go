package server

import (
	"context"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/perm"
	"os"
	"path/filepath"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/admission"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/probe"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// newAdmission builds the grant-enforced mode controller and applies the start-up config.
func (s *Server) newAdmission() *admission.Controller {
	a := admission.New(admission.Options{
		Sessions:   s,
		MaxRecords: func() int { return s.Limits().MaxAdmissionRecords },
		Logger:     s.log,
		Probes: admission.Probes{
			BackendName:             s.backend.Info().Name,
			BackendAvailable:        func(ctx context.Context) bool { return s.backend.Available(ctx) == nil },
			CgroupV2:                s.opts.CgroupV2,
			Paths:                   func() config.Paths { return s.Config().Paths },
			UnsafeSoftStorageLimits: s.opts.UnsafeSoftStorageLimits,
		},
	})
	a.Configure(s.opts.Config.Raw)
	return a
}

// DropWorkspace drops the workspace's sessions of every generation except keep (admission
// changes, §7.5.2).
func (s *Server) DropWorkspace(ctx context.Context, k admission.Key, keep string) {
	ctx = session.WithDropReason(ctx, "admission")
	for _, sess := range s.mgr.List(tenancy.Namespace(k.Instance, k.Workspace) + "-") {
		if sess.Physical != keep {
			_ = s.mgr.Delete(ctx, sess.Physical)
		}
	}
}

func (s *Server) boxUpsertGrant(ctx context.Context, c call) (any, error) {
	g, err := admission.ParseGrantRPC(c.data)
	if err != nil {
		return nil, err
	}
	if g.Instance != s.trustedInstance() {
		return nil, rpc.Errorf(rpc.PermissionError, "%s", admission.MsgGrantMismatch)
	}
	receipt, err := s.adm.Upsert(ctx, g)
	if err != nil {
		return nil, err
	}
	gctx := tenancy.Context{Instance: g.Instance, Workspace: g.Workspace, Generation: g.ExecutionGeneration}
	if err := s.fence.Observe(gctx); err != nil {
		return nil, err
	}
	return receipt, nil
}

func (s *Server) boxRevokeGrant(ctx context.Context, c call) (any, error) {
	r, err := admission.ParseRevocationRPC(c.data)
	if err != nil {
		return nil, err
	}
	if r.Instance != s.trustedInstance() {
		return nil, rpc.Errorf(rpc.PermissionError, "%s", admission.MsgRevokeMismatch)
	}
	return s.adm.Revoke(ctx, r)
}

// boxHealth: standard mode = backend info; grant-enforced = the readiness, or an error
// when not ready (the reference's lower-case message).
func (s *Server) boxHealth(ctx context.Context, _ call) (any, error) {
	if !s.adm.Required() {
		return s.backendInfo(ctx), nil
	}
	r := s.adm.Readiness(ctx)
	if !r.Ready {
		return nil, rpc.Errorf(rpc.BoxReadinessError, "managed sandbox isolation is not ready")
	}
	return r.Map(), nil
}

// grantBackendInfo is box_get_backend_info / box_status.backend in grant-enforced mode.
func (s *Server) grantBackendInfo(ctx context.Context) map[string]any {
	r := s.adm.Readiness(ctx)
	m := r.Map()
	return map[string]any{"name": m["backend"].(map[string]any)["name"], "available": r.Ready, "readiness": m}
}

// physical maps a logical session id of get/delete/process actions to its physical id;
// in grant-enforced mode only the policy's logical id is accepted.
func (s *Server) physical(c call, logical string) (string, error) {
	if s.adm.Required() {
		p, _ := s.adm.Policy()
		id, err := admission.LogicalSession(p, logical)
		if err != nil {
			return "", err
		}
		logical = id
	}
	return c.ctx.Physical(logical)
}

// admitted normalises an exec/create spec in grant-enforced mode and applies the
// workspace's session cap (§7.5.4) of the grant the dispatcher checked.
func (s *Server) admitted(c call, spec session.Spec) (session.Spec, string, error) {
	policy, _ := s.adm.Policy()
	paths := s.Config().Paths
	out, phys, err := admission.Normalize(spec, admission.NormalizeInput{
		Policy: policy, Context: c.ctx, Resolve: mounts.Resolve,
		TenantDir: func() (string, error) { return tenantDir(paths, c.ctx) },
		SkillRoot: func(name string) (string, error) {
			st, err := s.skillStore(c)
			if err != nil {
				return "", err
			}
			return st.ResolvePackageRoot(name)
		},
	})
	if err != nil {
		return spec, "", err
	}
	existing := s.mgr.List(c.ctx.WorkspacePrefix())
	_, getErr := s.mgr.Get(phys)
	if err := admission.SessionCap(c.grant, len(existing), getErr == nil); err != nil {
		return spec, "", err
	}
	return out, phys, nil
}

// tenantDir is <default_workspace>/tenants/<NS>, created, and checked not to escape.
func tenantDir(p config.Paths, tctx tenancy.Context) (string, error) {
	root, err := probe.WorkspaceRoot(p)
	if err != nil {
		return "", err
	}
	tenants := filepath.Join(root, "tenants")
	if err := os.MkdirAll(tenants, perm.Dir); err != nil {
		return "", rpc.Errorf(rpc.BoxAdmissionError, "Managed sandbox tenant directory escapes the configured workspace")
	}
	resolved := mounts.Resolve(tenants)
	if !mounts.Within(resolved, root) {
		return "", rpc.Errorf(rpc.BoxAdmissionError, "Managed sandbox tenant directory escapes the configured workspace")
	}
	dir := mounts.Resolve(filepath.Join(resolved, tctx.Namespace()))
	if !mounts.Within(dir, resolved) || dir == resolved {
		return "", rpc.Errorf(rpc.BoxAdmissionError, "Managed sandbox Workspace path escapes its tenant directory")
	}
	if err := os.MkdirAll(dir, perm.Dir); err != nil {
		return "", rpc.Errorf(rpc.BoxAdmissionError, "Managed sandbox Workspace path escapes its tenant directory")
	}
	return dir, nil
}
