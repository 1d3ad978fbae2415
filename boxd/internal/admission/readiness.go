package admission

import (
	"context"
	"strings"
	"time"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/probe"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
)

// Probes are the facts readiness is computed from.
type Probes struct {
	// BackendName is the sandbox backend boxd runs ("docker"); "" when none.
	BackendName string
	// BackendAvailable pings the backend.
	BackendAvailable func(ctx context.Context) bool
	// CgroupV2 reports whether the backend's daemon runs on cgroup v2 (nil = unknown).
	CgroupV2 func(ctx context.Context) (bool, error)
	// Paths returns the effective local paths (for the workspace_mount check).
	Paths func() config.Paths
	// UnsafeSoftStorageLimits is LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS.
	UnsafeSoftStorageLimits bool
	// StrictIsolation is a backend's strict isolation probe (the reference runs a
	// disposable jail under the workspace): it returns the isolation/storage checks it
	// proved. Consulted only when the backend is the required one. boxd's Docker backend
	// has none, so boxd leaves it nil and those checks stay false.
	StrictIsolation func(ctx context.Context, workspace string) (map[string]bool, error)
}

// CheckNames are the grant-enforced readiness checks of §7.5.3, in the reference's order.
var CheckNames = []string{"configuration", "required_backend", "workspace_mount", "backend_available",
	"cgroup_v2", "namespace_isolation", "mount_isolation", "network_isolation",
	"hard_workspace_quota", "hard_skill_storage_quota", "bounded_ephemeral_storage", "inode_quota",
	"session_cap", "managed_process_cap"}

var storageChecks = []string{"hard_workspace_quota", "hard_skill_storage_quota", "bounded_ephemeral_storage", "inode_quota"}

// Readiness is the grant-enforced readiness of §7.5.3.
type Readiness struct {
	Ready            bool
	BackendName      string
	BackendAvailable bool
	Checks           map[string]bool
	Details          map[string]any
	Unsafe           bool
	Error            string
}

// Failed lists the failed checks in CheckNames order.
func (r Readiness) Failed() []string {
	var out []string
	for _, n := range CheckNames {
		if !r.Checks[n] {
			out = append(out, n)
		}
	}
	return out
}

// Map is the wire shape.
func (r Readiness) Map() map[string]any {
	checks := make(map[string]any, len(r.Checks))
	for k, v := range r.Checks {
		checks[k] = v
	}
	var name any
	if r.BackendName != "" {
		name = r.BackendName
	}
	details := make(map[string]any, len(r.Details))
	for k, v := range r.Details {
		details[k] = v
	}
	out := map[string]any{"ready": r.Ready, "mode": "grant_enforced",
		"backend":                    map[string]any{"name": name, "available": r.BackendAvailable, "details": details},
		"checks":                     checks,
		"unsafe_soft_storage_limits": r.Unsafe}
	if r.Error != "" {
		out["error"] = r.Error
	}
	return out
}

// backendNote explains why the isolation checks are false under Docker.
const backendNote = "grant-enforced mode requires the nsjail backend; boxd runs sandboxes with Docker and " +
	"does not run a strict isolation probe, so namespace, mount and network isolation and hard storage quotas are not proven"

// Readiness computes (or returns the cached) grant-enforced readiness. What boxd checks,
// and how:
//   - configuration: no recorded admission configuration error;
//   - required_backend: the backend is the policy's (nsjail); boxd's is docker, so false;
//   - workspace_mount: default workspace configured, under an allowed root, a directory,
//     readable/writable/searchable by boxd (the reference's rule);
//   - backend_available: the Docker daemon answers a ping;
//   - cgroup_v2: the Docker daemon reports cgroup version 2 (docker info);
//   - namespace_isolation, mount_isolation, network_isolation: false. The reference proves
//     them by running a disposable nsjail and comparing namespaces; boxd runs no such probe,
//     so it does not claim them;
//   - the four storage-quota checks: false. boxd enforces no hard quotas; as in the
//     reference, LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS only forces them when the
//     required backend is in use, which it never is in boxd;
//   - session_cap / managed_process_cap: the policy's caps (<= 1, == 0).
func (c *Controller) Readiness(ctx context.Context) Readiness {
	policy, cerr := c.Policy()
	c.readyMu.Lock()
	defer c.readyMu.Unlock()
	now := c.opts.Now()
	if c.readyCache != nil && now.Sub(c.readyAt) <= time.Duration(policy.ReadinessCacheSec)*time.Second {
		return *c.readyCache
	}
	r := compute(ctx, policy, cerr, c.opts.Probes)
	c.readyCache, c.readyAt = &r, now
	return r
}

func (c *Controller) clearReadiness() {
	c.readyMu.Lock()
	c.readyCache = nil
	c.readyMu.Unlock()
}

func compute(ctx context.Context, policy Policy, configErr string, p Probes) Readiness {
	checks := map[string]bool{}
	for _, n := range CheckNames {
		checks[n] = false
	}
	checks["configuration"] = configErr == ""
	checks["required_backend"] = p.BackendName != "" && p.BackendName == policy.RequiredBackend
	checks["session_cap"] = policy.MaxSessions <= 1
	checks["managed_process_cap"] = policy.MaxManagedProcesses == 0
	var paths config.Paths
	if p.Paths != nil {
		paths = p.Paths()
	}
	wsRoot, wsErr := probe.WorkspaceRoot(paths)
	checks["workspace_mount"] = wsErr == nil
	details := map[string]any{"strict_isolation_probe": false}
	if p.BackendName != "" && p.BackendAvailable != nil {
		checks["backend_available"] = p.BackendAvailable(ctx)
	}
	details["available"] = checks["backend_available"]
	if checks["backend_available"] && p.CgroupV2 != nil {
		v2, err := p.CgroupV2(ctx)
		checks["cgroup_v2"] = err == nil && v2
		if err != nil {
			details["cgroup_error"] = err.Error()
		}
	}
	details["cgroup_v2"] = checks["cgroup_v2"]
	var probeErr error
	if checks["required_backend"] && p.StrictIsolation != nil {
		var proved map[string]bool
		proved, probeErr = p.StrictIsolation(ctx, wsRoot)
		for _, n := range []string{"namespace_isolation", "mount_isolation", "network_isolation", "hard_workspace_quota",
			"hard_skill_storage_quota", "bounded_ephemeral_storage", "inode_quota"} {
			checks[n] = probeErr == nil && proved[n]
		}
		details["strict_isolation_probe"] = probeErr == nil
	}
	if checks["required_backend"] && p.UnsafeSoftStorageLimits {
		for _, n := range storageChecks {
			checks[n] = true
		}
	}
	r := Readiness{BackendName: p.BackendName, BackendAvailable: checks["backend_available"], Checks: checks,
		Details: details, Unsafe: p.UnsafeSoftStorageLimits}
	r.Ready = len(r.Failed()) == 0
	switch {
	case configErr != "":
		r.Error = configErr
	case wsErr != nil:
		r.Error = rpc.Message(wsErr)[len(rpc.BoxReadinessError)+2:]
	case !checks["required_backend"]:
		r.Error = backendNote
	case probeErr != nil:
		r.Error = probeErr.Error()
	}
	return r
}

// UnsafeSoftStorageLimitsEnabled reads LANGBOT_BOX_ALLOW_UNSAFE_SOFT_STORAGE_LIMITS's value.
func UnsafeSoftStorageLimitsEnabled(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}
