package admission

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

func dockerProbes(paths config.Paths, cgroupV2 bool) Probes {
	return Probes{BackendName: "docker", BackendAvailable: func(context.Context) bool { return true },
		CgroupV2: func(context.Context) (bool, error) { return cgroupV2, nil }, Paths: func() config.Paths { return paths }}
}

func TestReadiness(t *testing.T) {
	dir := t.TempDir()
	ws := filepath.Join(dir, "default")
	require.NoError(t, os.MkdirAll(ws, 0o755))
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	good := config.Paths{DefaultWorkspace: ws, AllowedMountRoots: []string{dir}}
	strict := func(context.Context, string) (map[string]bool, error) {
		return map[string]bool{"namespace_isolation": true, "mount_isolation": true, "network_isolation": true}, nil
	}
	isolation := []string{"namespace_isolation", "mount_isolation", "network_isolation"}
	storage := []string{"hard_workspace_quota", "hard_skill_storage_quota", "bounded_ephemeral_storage", "inode_quota"}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name      string
		probes    Probes
		section   map[string]any
		failed    []string
		errText   string
		available bool
	}{
		{name: "docker, cgroup v2", probes: dockerProbes(good, true), available: true,
			failed: cat([]string{"required_backend"}, isolation, storage), errText: backendNote},
		{name: "docker, cgroup v1", probes: dockerProbes(good, false), available: true,
			failed: cat([]string{"required_backend", "cgroup_v2"}, isolation, storage), errText: backendNote},
		{name: "docker down", probes: Probes{BackendName: "docker", BackendAvailable: func(context.Context) bool { return false },
			CgroupV2: func(context.Context) (bool, error) { return true, nil }, Paths: func() config.Paths { return good }},
			failed: cat([]string{"required_backend", "backend_available", "cgroup_v2"}, isolation, storage), errText: backendNote},
		{name: "cgroup probe error", probes: Probes{BackendName: "docker", BackendAvailable: func(context.Context) bool { return true },
			CgroupV2: func(context.Context) (bool, error) { return false, errors.New("no info") }, Paths: func() config.Paths { return good }},
			available: true, failed: cat([]string{"required_backend", "cgroup_v2"}, isolation, storage), errText: backendNote},
		{name: "no default workspace", probes: dockerProbes(config.Paths{}, true), available: true,
			failed:  cat([]string{"required_backend", "workspace_mount"}, isolation, storage),
			errText: "Managed sandbox admission requires box.local.default_workspace"},
		{name: "workspace outside roots", probes: dockerProbes(config.Paths{DefaultWorkspace: ws, AllowedMountRoots: []string{filepath.Join(dir, "other")}}, true), available: true,
			failed:  cat([]string{"required_backend", "workspace_mount"}, isolation, storage),
			errText: "Managed sandbox workspace is outside box.local.allowed_mount_roots"},
		{name: "workspace not a directory", probes: dockerProbes(config.Paths{DefaultWorkspace: file, AllowedMountRoots: []string{dir}}, true), available: true,
			failed:  cat([]string{"required_backend", "workspace_mount"}, isolation, storage),
			errText: "Managed sandbox workspace path is not a directory"},
		{name: "invalid configuration", probes: dockerProbes(good, true), section: map[string]any{"required": true, "x": 1}, available: true,
			failed:  cat([]string{"configuration", "required_backend"}, isolation, storage),
			errText: "1 validation error for SandboxAdmissionPolicy\nx\n  Extra inputs are not permitted"},
		{name: "unsafe storage does not apply to docker", probes: func() Probes { p := dockerProbes(good, true); p.UnsafeSoftStorageLimits = true; return p }(),
			available: true, failed: cat([]string{"required_backend"}, isolation, storage), errText: backendNote},
		{name: "required backend with strict probe, hard quotas missing", available: true,
			probes: Probes{BackendName: "nsjail", BackendAvailable: func(context.Context) bool { return true },
				CgroupV2: func(context.Context) (bool, error) { return true, nil }, Paths: func() config.Paths { return good }, StrictIsolation: strict},
			failed: storage},
		{name: "required backend, unsafe soft storage", available: true,
			probes: Probes{BackendName: "nsjail", BackendAvailable: func(context.Context) bool { return true },
				CgroupV2: func(context.Context) (bool, error) { return true, nil }, Paths: func() config.Paths { return good },
				StrictIsolation: strict, UnsafeSoftStorageLimits: true}},
		{name: "strict probe failure", available: true,
			probes: Probes{BackendName: "nsjail", BackendAvailable: func(context.Context) bool { return true },
				CgroupV2: func(context.Context) (bool, error) { return true, nil }, Paths: func() config.Paths { return good },
				StrictIsolation: func(context.Context, string) (map[string]bool, error) { return nil, errors.New("jail failed") }},
			failed: cat(isolation, storage), errText: "jail failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			section := tc.section
			if section == nil {
				section = map[string]any{"required": true}
			}
			f := newFixture(t, tc.probes, section)
			r := f.c.Readiness(context.Background())
			assert.Equal(t, tc.failed, r.Failed())
			assert.Equal(t, len(tc.failed) == 0, r.Ready)
			assert.Equal(t, tc.errText, r.Error)
			m := r.Map()
			assert.Equal(t, "grant_enforced", m["mode"])
			assert.Equal(t, tc.probes.UnsafeSoftStorageLimits, m["unsafe_soft_storage_limits"])
			assert.Len(t, m["checks"], len(CheckNames))
			backend := m["backend"].(map[string]any)
			assert.Equal(t, tc.probes.BackendName, backend["name"])
			assert.Equal(t, tc.available, backend["available"])
			if len(tc.failed) > 0 && tc.section == nil {
				_, err := f.c.Check(context.Background(), tenancy.Context{Instance: "i", Workspace: "w", Generation: 1})
				require.Error(t, err)
				assert.Contains(t, err.Error(), "BoxReadinessError: Managed sandbox isolation is not ready (failed checks: "+tc.failed[0])
			}
		})
	}
}

func TestReadinessCache(t *testing.T) {
	calls := 0
	p := dockerProbes(config.Paths{}, true)
	p.BackendAvailable = func(context.Context) bool { calls++; return true }
	f := newFixture(t, p, map[string]any{"required": true, "readiness_cache_sec": 15})
	ctx := context.Background()
	f.c.Readiness(ctx)
	f.c.Readiness(ctx)
	assert.Equal(t, 1, calls, "cached")
	f.clk.advance(16 * time.Second)
	f.c.Readiness(ctx)
	assert.Equal(t, 2, calls, "expired")
	f.c.Configure(map[string]any{"admission": map[string]any{"required": true, "readiness_cache_sec": 0}})
	f.c.Readiness(ctx)
	assert.Equal(t, 3, calls, "box_init clears the cache")
	f.clk.advance(time.Second)
	f.c.Readiness(ctx)
	assert.Equal(t, 4, calls, "0 = no cache")
	assert.Equal(t, "BoxReadinessError: Managed sandbox isolation is not ready (failed checks: required_backend, workspace_mount, namespace_isolation, mount_isolation, network_isolation, hard_workspace_quota, hard_skill_storage_quota, bounded_ephemeral_storage, inode_quota)",
		func() string {
			_, err := f.c.Check(ctx, tenancy.Context{Instance: "i", Workspace: "w", Generation: 1})
			return err.Error()
		}())
}

func TestUnsafeSoftStorageLimitsEnabled(t *testing.T) {
	for in, want := range map[string]bool{"1": true, " TRUE ": true, "yes": true, "on": true, "": false, "0": false, "off": false, "enabled": false} {
		assert.Equal(t, want, UnsafeSoftStorageLimitsEnabled(in), in)
	}
}
