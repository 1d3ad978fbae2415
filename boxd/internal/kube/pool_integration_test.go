//go:build integration_kube

package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// poolBackend is an isolated backend with one warm pool shape for spec()'s image and
// resources, its pool running until the test ends.
func (c *cluster) poolBackend(instance string, shape map[string]any) *Backend {
	c.t.Helper()
	sh := map[string]any{"image": sandboxImage(), "cpus": 0.5, "memory_mb": 128, "read_only_rootfs": false, "refill_per_minute": 600}
	for k, v := range shape {
		sh[k] = v
	}
	b := c.backend(instance, "pool-test", map[string]any{"workspace_mode": "isolated", "warm_pool": []any{sh},
		// 32 idle sandboxes on one small node: requests as small as the API allows.
		"cpu_request": "1m", "memory_request": "8Mi"})
	require.NotNil(c.t, b.pool)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	c.t.Cleanup(func() {
		cancel()
		<-done
	})
	return b
}

// metricValue reads a counter or gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// readyPods are the pool's Pods whose agent stream this boxd holds.
func (b *Backend) readyPods() []string {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	var out []string
	for n := range b.pool.ready {
		out = append(out, n)
	}
	return out
}

func (c *cluster) waitPoolReady(b *Backend, n int, timeout time.Duration) []string {
	c.t.Helper()
	var ready []string
	c.poll(fmt.Sprintf("%d ready pool pods", n), timeout, func(context.Context) (bool, error) {
		ready = b.readyPods()
		return len(ready) >= n, nil
	})
	return ready
}

func poolSpec(id string) backend.SessionSpec {
	s := spec(id)
	s.PidsLimit = 0
	return s
}

// warmHit asserts that h is a pool Pod created before the request was made at t0.
func (c *cluster) warmHit(h backend.Handle, t0 time.Time) {
	c.t.Helper()
	p, err := c.cs.CoreV1().Pods(c.ns).Get(context.Background(), h.ID, metav1.GetOptions{})
	require.NoError(c.t, err)
	assert.True(c.t, strings.HasPrefix(h.ID, "langbot-box-pool-"), "pod %s is a pool pod", h.ID)
	assert.True(c.t, p.CreationTimestamp.Time.Before(t0), "pod %s was created (%s) before the request (%s)", h.ID, p.CreationTimestamp.Time, t0)
	assert.Equal(c.t, "true", p.Labels[LabelClaimed])
	assert.NotEmpty(c.t, p.Annotations[AnnotationSpec])
}

func TestKubePoolWarmHitRefillAndMiss(t *testing.T) {
	c := newCluster(t)
	b := c.poolBackend("0123456789ab", map[string]any{"size": 2})
	hash := b.pool.shapes[0].hash
	before := c.waitPoolReady(b, 2, 3*time.Minute)
	ctx := context.Background()

	s, ws, _ := isolatedSpec(t, c, "ws-0123456789abcdef01234567-g1-warm")
	s.PidsLimit = 0
	require.NoError(t, os.WriteFile(filepath.Join(ws, "in.txt"), []byte("warm\n"), 0o644))
	t0 := time.Now()
	h, err := b.Start(ctx, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop(context.Background(), h) })
	c.warmHit(h, t0)
	assert.Contains(t, before, h.ID)
	assert.Equal(t, 1.0, metricValue(b.pool.met.hits.WithLabelValues(hash)))
	r, err := run(t, ctx, b, h, `cat /workspace/in.txt; echo out > /workspace/out.txt`)
	require.NoError(t, err)
	assert.Equal(t, "warm\n", r.stdout)
	got, err := os.ReadFile(filepath.Join(ws, "out.txt"))
	require.NoError(t, err)
	assert.Equal(t, "out\n", string(got))

	// Refilled: two ready Pods again, the claimed one not among them.
	c.poll("the pool refilled", 3*time.Minute, func(context.Context) (bool, error) {
		r := b.readyPods()
		for _, n := range r {
			if n == h.ID {
				return false, nil
			}
		}
		return len(r) == 2, nil
	})
	assert.GreaterOrEqual(t, metricValue(b.pool.met.created.WithLabelValues(hash)), 3.0)

	// A spec of another shape gets a cold Pod.
	cold := poolSpec("ws-0123456789abcdef01234567-g1-cold")
	cold.CPUs = 0.25
	t1 := time.Now()
	hc, err := b.Start(ctx, cold)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop(context.Background(), hc) })
	assert.False(t, strings.HasPrefix(hc.ID, "langbot-box-pool-"), hc.ID)
	p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, hc.ID, metav1.GetOptions{})
	require.NoError(t, err)
	assert.False(t, p.CreationTimestamp.Time.Before(t1.Truncate(time.Second)), "created for the request")
	assert.Equal(t, 1.0, metricValue(b.pool.met.misses.WithLabelValues("no_shape")))
	// network on never matches a pool shape either.
	assert.False(t, b.pool.shapes[0].matches(func() backend.SessionSpec { s := poolSpec("x"); s.NetworkOn = true; return s }()))
}

// Two boxd replicas (two backends, two instance ids, one scope), both refilling the pool,
// creating sessions at the same time: no Pod is handed out twice.
func TestKubePoolConcurrentClaimsNeverShare(t *testing.T) {
	c := newCluster(t)
	// max_surge 4: the two replicas may both fill the pool (8 Pods) without trimming.
	a := c.poolBackend("aaaaaaaaaaaa", map[string]any{"size": 4, "max_surge": 4})
	b := c.poolBackend("bbbbbbbbbbbb", map[string]any{"size": 4, "max_surge": 4})
	c.waitPoolReady(a, 4, 3*time.Minute)
	c.waitPoolReady(b, 4, 3*time.Minute)
	ctx := context.Background()
	var mu sync.Mutex
	handles := map[string][]string{}
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		be := a
		if i%2 == 1 {
			be = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, err := be.Start(ctx, poolSpec(fmt.Sprintf("ws-0123456789abcdef01234567-g1-c%d", i)))
			if !assert.NoError(t, err) {
				return
			}
			t.Cleanup(func() { _ = be.Stop(context.Background(), h) })
			mu.Lock()
			handles[h.ID] = append(handles[h.ID], fmt.Sprint(i))
			mu.Unlock()
		}()
	}
	wg.Wait()
	require.Len(t, handles, 6, "six sessions, six different Pods: %v", handles)
	warm := 0
	for name := range handles {
		if strings.HasPrefix(name, "langbot-box-pool-") {
			warm++
		}
		p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, handles[name][0], strings.TrimPrefix(p.Annotations[AnnotationSession], "ws-0123456789abcdef01234567-g1-c"), "pod %s carries its session", name)
	}
	hash := a.pool.shapes[0].hash
	hits := metricValue(a.pool.met.hits.WithLabelValues(hash)) + metricValue(b.pool.met.hits.WithLabelValues(hash))
	assert.Equal(t, float64(warm), hits)
	assert.GreaterOrEqual(t, warm, 4, "at least the pool's size served warm")
	t.Logf("6 concurrent creates by two replicas: %d warm, conflicts a=%v b=%v", warm,
		metricValue(a.pool.met.conflicts), metricValue(b.pool.met.conflicts))
}

func TestKubePoolBurst32(t *testing.T) {
	c := newCluster(t)
	b := c.poolBackend("0123456789ab", map[string]any{"size": 32, "max_surge": 0, "refill_per_minute": 6000})
	c.waitPoolReady(b, 32, 8*time.Minute)
	ctx := context.Background()
	t0 := time.Now()
	var wg sync.WaitGroup
	hs := make([]backend.Handle, 32)
	errs := make([]error, 32)
	for i := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs[i], errs[i] = b.Start(ctx, poolSpec(fmt.Sprintf("ws-0123456789abcdef01234567-g1-b%d", i)))
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	seen := map[string]bool{}
	for i, h := range hs {
		require.NoError(t, errs[i])
		t.Cleanup(func() { _ = b.Stop(context.Background(), h) })
		c.warmHit(h, t0)
		assert.False(t, seen[h.ID], "pod %s handed out twice", h.ID)
		seen[h.ID] = true
	}
	assert.Equal(t, 32.0, metricValue(b.pool.met.hits.WithLabelValues(b.pool.shapes[0].hash)))
	t.Logf("32 concurrent creates against a pool of 32: all warm in %s", elapsed)
}

func TestKubePoolRecycleAfterMaxAge(t *testing.T) {
	c := newCluster(t)
	b := c.poolBackend("0123456789ab", map[string]any{"size": 1, "max_surge": 1, "max_age_sec": 8})
	first := c.waitPoolReady(b, 1, 3*time.Minute)[0]
	c.poll("the old pod replaced", 3*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, first, metav1.GetOptions{})
		r := b.readyPods()
		return err != nil && len(r) == 1 && r[0] != first, nil
	})
	assert.GreaterOrEqual(t, metricValue(b.pool.met.removed.WithLabelValues("max_age")), 1.0)
}

// A claimed persistent Pod is a session Pod: a restarted boxd re-adopts it (and leaves the
// unclaimed pool Pods to its pool), its workspace survives and syncs again.
func TestKubePoolClaimedPodSurvivesRestart(t *testing.T) {
	c := newCluster(t)
	a := c.poolBackend("aaaaaaaaaaaa", map[string]any{"size": 2})
	c.waitPoolReady(a, 2, 3*time.Minute)
	ctx := context.Background()
	s, ws, _ := isolatedSpec(t, c, "ws-0123456789abcdef01234567-g1-keep")
	s.PidsLimit, s.Persistent = 0, true
	require.NoError(t, os.WriteFile(filepath.Join(ws, "in.txt"), []byte("before\n"), 0o644))
	t0 := time.Now()
	h, err := a.Start(ctx, s)
	require.NoError(t, err)
	c.warmHit(h, t0)
	_, err = run(t, ctx, a, h, `echo kept > /workspace/sandbox.txt`)
	require.NoError(t, err)
	require.NoError(t, a.Close())

	b := c.poolBackend("bbbbbbbbbbbb", map[string]any{"size": 2})
	adopted, _, err := b.Recover(ctx, "bbbbbbbbbbbb")
	require.NoError(t, err)
	require.Len(t, adopted, 1)
	assert.Equal(t, h, adopted[0].Handle)
	assert.Equal(t, s, adopted[0].Spec)
	unclaimed := c.pods(LabelPool + ",!" + LabelClaimed)
	assert.NotEmpty(t, unclaimed, "Recover left the unclaimed pool pods alone")

	require.NoError(t, os.WriteFile(filepath.Join(ws, "in.txt"), []byte("after\n"), 0o644))
	r, err := run(t, ctx, b, h, `cat /workspace/in.txt /workspace/sandbox.txt; echo again > /workspace/again.txt`)
	require.NoError(t, err)
	assert.Equal(t, "after\nkept\n", r.stdout)
	got, err := os.ReadFile(filepath.Join(ws, "again.txt"))
	require.NoError(t, err)
	assert.Equal(t, "again\n", string(got))
	require.NoError(t, b.Stop(ctx, h))
}
