package admission

import (
	"strings"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

// Sandbox constants of admitted sessions.
const (
	mountPath = "/workspace"
	skillsDir = "/workspace/.skills/"
)

// NormalizeInput is what spec normalisation depends on besides the spec.
type NormalizeInput struct {
	Policy  Policy
	Context tenancy.Context
	// TenantDir returns the canonical tenant workspace directory
	// <default_workspace>/tenants/<NS> (creating it); called only after the spec checks.
	TenantDir func() (string, error)
	// Resolve is the non-strict realpath applied to a submitted host_path.
	Resolve func(string) string
	// SkillRoot resolves a skill name to its package root in the tenant skill store.
	SkillRoot func(name string) (string, error)
}

// Normalize replaces an admitted exec/create spec with the runtime-owned one (§7.5.4) and
// returns it with its physical session id. It checks, in the reference's order: network
// off, no extra mounts, mount_path /workspace, workdir under /workspace, host_path (if any)
// resolving to the tenant directory, skill_name (if any) present in the tenant's store.
func Normalize(spec session.Spec, in NormalizeInput) (session.Spec, string, error) {
	switch {
	case spec.Network != "off":
		return spec, "", admissionErr("Managed sandbox network access is disabled")
	case len(spec.ExtraMounts) > 0:
		return spec, "", admissionErr("Managed sandbox additional host mounts are disabled")
	case spec.MountPath != mountPath:
		return spec, "", admissionErr("Managed sandbox mount_path is runtime-owned")
	case spec.Workdir != mountPath && !strings.HasPrefix(spec.Workdir, mountPath+"/"):
		return spec, "", admissionErr("Managed sandbox workdir must stay under /workspace")
	}
	tenant, err := in.TenantDir()
	if err != nil {
		return spec, "", err
	}
	if spec.HostPath != nil {
		resolve := in.Resolve
		if resolve == nil {
			resolve = func(s string) string { return s }
		}
		if resolve(*spec.HostPath) != tenant {
			return spec, "", admissionErr("Managed sandbox host_path is runtime-owned")
		}
	}
	var extra []backend.Mount
	if spec.SkillName != nil {
		root := ""
		if in.SkillRoot != nil {
			root, err = in.SkillRoot(*spec.SkillName)
		}
		if in.SkillRoot == nil || err != nil {
			return spec, "", admissionErr("Managed sandbox skill is unavailable in this Workspace")
		}
		extra = append(extra, backend.Mount{HostPath: root, MountPath: skillsDir + *spec.SkillName, Mode: backend.MountRO})
	}
	phys, err := in.Context.Physical(in.Policy.LogicalSessionID)
	if err != nil {
		return spec, "", err
	}
	p := in.Policy
	out := spec
	out.SessionID = p.LogicalSessionID
	out.Network = "off"
	out.Image = session.DefaultImage
	out.HostPath = &tenant
	out.HostPathMode = "rw"
	out.MountPath = mountPath
	out.ExtraMounts = extra
	out.Persistent = true
	out.TimeoutSec = min(spec.TimeoutSec, p.MaxTimeoutSec)
	out.CPUs = p.CPUs
	out.MemoryMB = p.MemoryMB
	out.PidsLimit = p.PidsLimit
	out.ReadOnlyRootfs = p.ReadOnlyRootfs
	out.WorkspaceQuotaMB = p.WorkspaceQuotaMB
	return out, phys, nil
}
