package kube

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

func TestPoolShapeMatches(t *testing.T) {
	shape := PoolShape{Image: "sandbox:1", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true}
	base := backend.SessionSpec{PhysicalID: "s", Image: "sandbox:1", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true, PidsLimit: 128,
		HostPath: "/data/t/a", HostPathMode: backend.MountRW, MountPath: "/workspace",
		ExtraMounts: []backend.Mount{{HostPath: "/data/skills/x", MountPath: "/workspace/.skills/x", Mode: backend.MountRW}}}
	tests := []struct {
		name   string
		change func(s *backend.SessionSpec)
		want   bool
	}{
		{"LangBot's spec", func(*backend.SessionSpec) {}, true},
		{"persistent, quota and pids do not matter", func(s *backend.SessionSpec) { s.Persistent, s.WorkspaceQuotaMB, s.PidsLimit = true, 100, 7 }, true},
		{"no mounts", func(s *backend.SessionSpec) { s.HostPath, s.ExtraMounts = "", nil }, true},
		{"a mount of mode none is not a mount", func(s *backend.SessionSpec) { s.HostPathMode, s.MountPath = backend.MountNone, "/elsewhere" }, true},
		{"network on", func(s *backend.SessionSpec) { s.NetworkOn = true }, false},
		{"another image", func(s *backend.SessionSpec) { s.Image = "sandbox:2" }, false},
		{"other cpus", func(s *backend.SessionSpec) { s.CPUs = 2 }, false},
		{"other memory", func(s *backend.SessionSpec) { s.MemoryMB = 256 }, false},
		{"writable root", func(s *backend.SessionSpec) { s.ReadOnlyRootfs = false }, false},
		{"workspace elsewhere", func(s *backend.SessionSpec) { s.MountPath = "/home/user" }, false},
		{"a mount beside the workspace", func(s *backend.SessionSpec) {
			s.ExtraMounts = append(s.ExtraMounts, backend.Mount{HostPath: "/d", MountPath: "/workspace2", Mode: backend.MountRO})
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base
			s.ExtraMounts = append([]backend.Mount(nil), base.ExtraMounts...)
			tt.change(&s)
			assert.Equal(t, tt.want, shape.matches(s))
		})
	}
}

func TestPoolPlan(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pod := func(name string, ageSec int, running bool) poolPod {
		return poolPod{Name: name, Created: now.Add(-time.Duration(ageSec) * time.Second), Running: running}
	}
	shape := func(size, surge int) PoolShape {
		return PoolShape{Size: size, MaxSurge: surge, MaxAge: 100 * time.Second}
	}
	tests := []struct {
		name    string
		shape   PoolShape
		pods    []poolPod
		pending int
		create  int
		delete  map[string]string
	}{
		{"empty pool fills up", shape(3, 1), nil, 0, 3, map[string]string{}},
		{"pending pods count", shape(3, 1), []poolPod{pod("a", 1, false)}, 1, 1, map[string]string{}},
		{"full", shape(2, 1), []poolPod{pod("a", 1, true), pod("b", 1, false)}, 0, 0, map[string]string{}},
		{"old pod: replacement first, kept while it starts", shape(2, 1), []poolPod{pod("old", 200, true), pod("b", 1, true)}, 0, 1, map[string]string{}},
		{"old pod: deleted once the others hold size", shape(2, 1), []poolPod{pod("old", 200, true), pod("b", 1, true), pod("c", 1, true)}, 0, 0,
			map[string]string{"old": "max_age"}},
		{"old pods without surge: deleted first", shape(2, 0), []poolPod{pod("o1", 200, true), pod("o2", 300, true)}, 0, 2,
			map[string]string{"o1": "max_age", "o2": "max_age"}},
		{"surge bounds replacements", shape(3, 1), []poolPod{pod("o1", 200, true), pod("o2", 200, true), pod("o3", 200, true)}, 0, 1, map[string]string{}},
		{"excess: the newest go", shape(1, 1), []poolPod{pod("a", 50, true), pod("b", 10, true), pod("c", 20, true), pod("d", 30, true)}, 0, 0,
			map[string]string{"b": "excess", "c": "excess"}},
		{"excess ties broken by name", shape(1, 0), []poolPod{pod("x", 10, true), pod("y", 10, true)}, 0, 0, map[string]string{"y": "excess"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := tt.shape.plan(tt.pods, tt.pending, now)
			assert.Equal(t, tt.create, pl.Create, "create")
			assert.Equal(t, tt.delete, pl.Delete, "delete")
		})
	}
}

func TestPoolTemplate(t *testing.T) {
	set := testSettings(t, map[string]any{"workspace_mode": "isolated", "labels": map[string]any{"team": "a"},
		"warm_pool": []any{map[string]any{"image": "sandbox:1"}}})
	tpl, hash, err := poolTemplate(set.WarmPool[0], set, "ns", "scope-1")
	require.NoError(t, err)
	assert.Len(t, hash, 16)
	assert.Equal(t, map[string]string{LabelBox: "true", LabelScope: "scope-1", LabelNetwork: "off", LabelPool: hash, "team": "a"}, tpl.Labels)
	assert.NotContains(t, tpl.Annotations, AnnotationSpec)
	assert.True(t, *tpl.Spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, "1", tpl.Spec.Containers[0].Resources.Limits.Cpu().String())
	var ws bool
	for _, m := range tpl.Spec.Containers[0].VolumeMounts {
		ws = ws || m.MountPath == PoolWorkspace
	}
	assert.True(t, ws, "an emptyDir at %s", PoolWorkspace)
	assert.True(t, isPoolPod(tpl))

	// Another configuration (here the runtime class) is another template: its Pods are stale.
	set2 := set
	set2.RuntimeClassName = "gvisor"
	_, hash2, err := poolTemplate(set2.WarmPool[0], set2, "ns", "scope-1")
	require.NoError(t, err)
	assert.NotEqual(t, hash, hash2)
}

// fakePool is a pool over client-go's fake clientset with its informer synced and agent
// connects that always succeed.
func fakePool(t *testing.T, pods ...*corev1.Pod) (*pool, *fake.Clientset) {
	t.Helper()
	set := testSettings(t, map[string]any{"namespace": "ns", "workspace_mode": "isolated",
		"warm_pool": []any{map[string]any{"image": "sandbox:1", "size": 2}}})
	cs := fake.NewClientset()
	b := &Backend{cs: cs, set: set, opts: Options{InstanceID: "me", Scope: "s"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), sandboxes: map[string]*sandbox{}}
	p, err := newPool(b)
	require.NoError(t, err)
	p.connect = func(context.Context, string) error { return nil }
	for _, pod := range pods {
		pod.Labels[LabelPool] = p.shapes[0].hash
		_, err := cs.CoreV1().Pods("ns").Create(context.Background(), pod, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.start(ctx)
	require.True(t, cache.WaitForCacheSync(ctx.Done(), p.synced))
	return p, cs
}

func runningPoolPod(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", ResourceVersion: "1", CreationTimestamp: metav1.Now(),
		Labels: map[string]string{LabelBox: "true", LabelScope: "s", LabelNetwork: "off"}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: SandboxContainer,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}}}
}

func counter(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	sum := 0.0
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		sum += d.GetCounter().GetValue()
	}
	return sum
}

// The race between two claimants of one Pod: the API server's 409 Conflict on a patch whose
// resourceVersion is outdated. A real API server cannot be made to interleave two claims at
// that exact point on demand, so this test uses client-go's fake clientset with a reactor
// that plays the other claimant (it labels the Pod, then answers 409), only for this.
func TestPoolClaimConflict(t *testing.T) {
	spec := backend.SessionSpec{PhysicalID: "ws-1", Image: "sandbox:1", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true, Persistent: true}
	podsGVR := schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	tests := []struct {
		name string
		// otherClaims: the first patch loses to another claimant (the Pod is claimed); else
		// the first patch meets a status update (the Pod is still unclaimed).
		otherClaims bool
		pods        int
		wantOK      bool
		wantSame    bool // the Pod of the first patch is the one claimed in the end
		conflicts   float64
	}{
		{name: "another claimant won: the next Pod", otherClaims: true, pods: 2, wantOK: true, conflicts: 1},
		{name: "another claimant won the only Pod: a miss", otherClaims: true, pods: 1, wantOK: false, conflicts: 1},
		{name: "a status update raced the patch: the same Pod again", otherClaims: false, pods: 1, wantOK: true, wantSame: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pods []*corev1.Pod
			for i := 0; i < tt.pods; i++ {
				pods = append(pods, runningPoolPod("pool-"+string(rune('a'+i))))
			}
			p, cs := fakePool(t, pods...)
			var mu sync.Mutex
			var first string
			var patches []map[string]any
			cs.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				pa := a.(k8stesting.PatchAction)
				var body map[string]any
				require.NoError(t, json.Unmarshal(pa.GetPatch(), &body))
				mu.Lock()
				defer mu.Unlock()
				patches = append(patches, body)
				if first != "" {
					return false, nil, nil // the tracker applies it
				}
				first = pa.GetName()
				obj, err := cs.Tracker().Get(podsGVR, "ns", first)
				require.NoError(t, err)
				pod := obj.(*corev1.Pod).DeepCopy()
				pod.ResourceVersion = "2"
				if tt.otherClaims {
					pod.Labels[LabelClaimed] = "true"
					pod.Labels[LabelInstance] = "other"
				}
				require.NoError(t, cs.Tracker().Update(podsGVR, pod, "ns"))
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, first, assert.AnError)
			})
			name, ok := p.claim(context.Background(), spec)
			require.Equal(t, tt.wantOK, ok)
			assert.Equal(t, tt.conflicts, counter(p.met.conflicts))
			require.NotEmpty(t, patches)
			meta := patches[0]["metadata"].(map[string]any)
			assert.Equal(t, "1", meta["resourceVersion"], "the claim carries the version it saw")
			if !ok {
				assert.Equal(t, 1.0, counter(p.met.misses))
				return
			}
			assert.Equal(t, tt.wantSame, name == first, "claimed %s, first patch %s", name, first)
			if tt.wantSame {
				assert.Equal(t, "2", patches[1]["metadata"].(map[string]any)["resourceVersion"], "retried with the new version")
			}
			got, err := cs.CoreV1().Pods("ns").Get(context.Background(), name, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, "true", got.Labels[LabelClaimed])
			assert.Equal(t, "me", got.Labels[LabelInstance])
			assert.Equal(t, "true", got.Labels[LabelPersistent])
			assert.Equal(t, sessionLabel(spec.PhysicalID), got.Labels[LabelSession])
			adopted, ok := specFromPod(got)
			require.True(t, ok, "restart recovery can rebuild the session")
			assert.Equal(t, spec, adopted)
			assert.Equal(t, 1.0, counter(p.met.hits))
			if tt.otherClaims {
				lost, err := cs.CoreV1().Pods("ns").Get(context.Background(), first, metav1.GetOptions{})
				require.NoError(t, err)
				assert.Equal(t, "other", lost.Labels[LabelInstance], "the other claimant's Pod is left alone")
			}
		})
	}
}

func TestPoolClaimMissWithoutShape(t *testing.T) {
	p, _ := fakePool(t, runningPoolPod("pool-a"))
	_, ok := p.claim(context.Background(), backend.SessionSpec{PhysicalID: "x", Image: "other", CPUs: 1, MemoryMB: 512, ReadOnlyRootfs: true})
	assert.False(t, ok)
	assert.Equal(t, 1.0, counter(p.met.misses))
	assert.Equal(t, 0.0, counter(p.met.hits))
}
