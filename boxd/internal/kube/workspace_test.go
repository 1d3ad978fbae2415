package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

func TestParseWorkspaceSettings(t *testing.T) {
	shape := func(extra map[string]any) map[string]any {
		m := map[string]any{"image": "sandbox:1", "cpus": 1, "memory_mb": 512}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		raw  map[string]any
		want func(t *testing.T, s Settings)
		err  []string // every part must be in the error
	}{
		{name: "default shared", raw: nil, want: func(t *testing.T, s Settings) {
			assert.Equal(t, WorkspaceShared, s.WorkspaceMode)
			assert.Empty(t, s.WarmPool)
		}},
		{name: "isolated with a pool and limits", raw: map[string]any{"workspace_mode": "isolated",
			"workspace_sync": map[string]any{"push_max_files": 10},
			"warm_pool":      []any{shape(map[string]any{"size": 32, "max_surge": 4, "refill_per_minute": 120, "max_age_sec": 600, "read_only_rootfs": true}), shape(map[string]any{"cpus": 2})}},
			want: func(t *testing.T, s Settings) {
				assert.Equal(t, WorkspaceIsolated, s.WorkspaceMode)
				assert.Equal(t, wsync.Limits{PushMaxFiles: 10}, s.SyncLimits, "zero fields take wsync's defaults")
				require.Len(t, s.WarmPool, 2)
				assert.Equal(t, PoolShape{Image: "sandbox:1", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true, Size: 32, MaxSurge: 4, RefillPerMinute: 120, MaxAge: 10 * time.Minute}, s.WarmPool[0])
				assert.Equal(t, PoolShape{Image: "sandbox:1", CPUs: 2, MemoryMB: 512, ReadOnlyRootfs: true, Size: DefaultPoolSize, MaxSurge: DefaultPoolMaxSurge,
					RefillPerMinute: DefaultPoolRefillPerMinute, MaxAge: DefaultPoolMaxAgeSec * time.Second}, s.WarmPool[1])
			}},
		{name: "a shape's resources default to a BoxSpec's", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{map[string]any{"image": "x"}}},
			want: func(t *testing.T, s Settings) {
				require.Len(t, s.WarmPool, 1)
				assert.Equal(t, PoolShape{Image: "x", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true, Size: 1, MaxSurge: 1, RefillPerMinute: 60, MaxAge: time.Hour}, s.WarmPool[0])
			}},
		{name: "isolated needs no claim", raw: map[string]any{"workspace_mode": "isolated"}, want: func(t *testing.T, s Settings) {
			assert.Empty(t, s.ClaimName)
		}},
		{name: "unknown mode", raw: map[string]any{"workspace_mode": "copy"}, err: []string{"box.kubernetes.workspace_mode \"copy\" must be shared", "or isolated"}},
		{name: "pool in shared mode", raw: map[string]any{"warm_pool": []any{shape(nil)}},
			err: []string{"box.kubernetes.warm_pool needs workspace_mode isolated", "subPath", "set workspace_mode to isolated or remove warm_pool"}},
		{name: "sync limits in shared mode", raw: map[string]any{"workspace_sync": map[string]any{"push_max_files": 1}},
			err: []string{"box.kubernetes.workspace_sync applies to workspace_mode isolated only"}},
		{name: "negative limit", raw: map[string]any{"workspace_mode": "isolated", "workspace_sync": map[string]any{"pull_max_file_bytes": -1}},
			err: []string{"box.kubernetes.workspace_sync.pull_max_file_bytes is -1: give a positive number"}},
		{name: "unknown limit", raw: map[string]any{"workspace_mode": "isolated", "workspace_sync": map[string]any{"max_files": 1}},
			err: []string{`unknown key "max_files"`}},
		{name: "shape without image", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{map[string]any{"size": 2}}},
			err: []string{"box.kubernetes.warm_pool[0].image is empty: name the sandbox image"}},
		{name: "shape ranges", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{shape(map[string]any{"size": 0, "max_surge": -1, "refill_per_minute": 0, "max_age_sec": 0, "cpus": 0, "memory_mb": 16})}},
			err: []string{"box.kubernetes.warm_pool[0].size is 0: it must be between 1 and 512", "warm_pool[0].max_surge is -1", "warm_pool[0].refill_per_minute is 0",
				"warm_pool[0].max_age_sec is 0", "warm_pool[0].cpus is 0: give the sessions' cpus, more than 0", "warm_pool[0].memory_mb is 16: give the sessions' memory_mb, at least 32"}},
		{name: "duplicate shapes", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{shape(nil), shape(map[string]any{"size": 3})}},
			err: []string{"box.kubernetes.warm_pool[1] has the image and resources of box.kubernetes.warm_pool[0]", "merge the two entries"}},
		{name: "shape field of the wrong type", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{shape(map[string]any{"size": "big"})}},
			err: []string{"box.kubernetes.warm_pool.size must be a whole number"}},
		{name: "unknown shape key", raw: map[string]any{"workspace_mode": "isolated", "warm_pool": []any{shape(map[string]any{"network": "on"})}},
			err: []string{`unknown key "network"`, "warm_pool [{image, cpus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSettings(tt.raw, "/data/box")
			if len(tt.err) > 0 {
				require.Error(t, err)
				for _, part := range tt.err {
					assert.Contains(t, err.Error(), part)
				}
				return
			}
			require.NoError(t, err)
			tt.want(t, s)
		})
	}
}

func TestTopMountPaths(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"none", nil, nil},
		{"workspace and skills", []string{"/workspace", "/workspace/.skills/a", "/workspace/.skills/b"}, []string{"/workspace"}},
		{"skills only", []string{"/workspace/.skills/b", "/workspace/.skills/a"}, []string{"/workspace/.skills/a", "/workspace/.skills/b"}},
		{"siblings with a common prefix", []string{"/data", "/data2", "/data/x"}, []string{"/data", "/data2"}},
		{"unclean", []string{"/workspace/", "/workspace/./x"}, []string{"/workspace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ms []backend.Mount
			for _, p := range tt.in {
				ms = append(ms, backend.Mount{MountPath: p, Mode: backend.MountRW})
			}
			assert.Equal(t, tt.want, topMountPaths(ms))
		})
	}
}

func TestBuildIsolatedPod(t *testing.T) {
	set := testSettings(t, map[string]any{"workspace_mode": "isolated", "box_root": map[string]any{"claim_name": "box-root", "pin_to_node": true}})
	spec := backend.SessionSpec{PhysicalID: "ws-1", Image: "sandbox:1", HostPath: "/data/box/t/a", HostPathMode: backend.MountRW, MountPath: "/workspace",
		ExtraMounts: []backend.Mount{{HostPath: "/data/box/skills/x", MountPath: "/workspace/.skills/x", Mode: backend.MountRO}}}
	pod, err := buildIsolatedPod(spec, set, podIdentity{Name: "p", Namespace: "ns", InstanceID: "i", Node: "node-1"})
	require.NoError(t, err)
	assert.Nil(t, pod.Spec.Affinity, "nothing of the claim is mounted: no pinning")
	for _, v := range pod.Spec.Volumes {
		assert.Nil(t, v.PersistentVolumeClaim, v.Name)
	}
	var ws []string
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		assert.Empty(t, m.SubPath)
		if strings.HasPrefix(m.Name, "workspace-") {
			ws = append(ws, m.MountPath)
		}
	}
	assert.Equal(t, []string{"/workspace"}, ws, "one emptyDir; the skill is a directory inside it")
	got, ok := specFromPod(pod)
	assert.False(t, ok, "not persistent")
	assert.Equal(t, spec, got, "the spec annotation is the session's")
}

func TestSyncNotice(t *testing.T) {
	rep := func(n int) *wsync.Report {
		tr := wsync.TreeReport{MountPath: "/workspace"}
		for i := 0; i < n; i++ {
			tr.Conflicts = append(tr.Conflicts, wsync.Conflict{Path: strings.Repeat("a", i+1), Note: "both changed"})
		}
		return &wsync.Report{Trees: []wsync.TreeReport{tr}}
	}
	assert.Equal(t, "", syncNotice(nil, rep(0)))
	assert.Equal(t, "[boxd workspace sync] conflict on /workspace/a: both changed\n", syncNotice(rep(1), nil))
	long := syncNotice(rep(6), rep(6))
	assert.Equal(t, maxNoticeLines+1, strings.Count(long, "\n"))
	assert.Contains(t, long, "… and 4 more (see boxd's log)")
}
