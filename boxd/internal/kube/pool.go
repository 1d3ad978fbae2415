package kube

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

// The warm pool (box.kubernetes.warm_pool, isolated mode only): per configured shape, boxd
// keeps `size` generic sandbox Pods started ahead of any session (network off, an emptyDir
// at PoolWorkspace, the agent daemon running and boxd's agent stream already open), labelled
// langbot.box/pool=<template hash> and without langbot.box/claimed. A box_create_session
// whose spec has the shape's image and resources, network off and every mount at or under
// PoolWorkspace claims one:
//
//   - atomically: one merge patch that sets langbot.box/claimed plus the session's labels
//     and spec annotation, carrying the resourceVersion the claimant saw. The API server
//     applies it only if the Pod is unchanged since (optimistic concurrency), so of two
//     claimants — two requests of one boxd, two boxd replicas, or a boxd and its restarted
//     successor — exactly one wins; the other gets 409 Conflict, re-reads the Pod and moves
//     on to the next one when it was claimed (a 409 from a mere status update is retried on
//     the same Pod). boxd's Role needs `patch` on pods for it.
//   - for good: a claimed Pod is a session Pod like any other (Recover re-adopts it when it
//     is persistent, Stop deletes it); it is never handed out again.
//
// A background loop (Backend.Run) watches the pool's Pods, refills each shape up to its size
// at refill_per_minute, replaces Pods older than max_age_sec (the replacement first while
// max_surge allows), deletes Pods that failed, Pods above size+max_surge and Pods of a
// template no shape has any more (another boxd version or configuration), and opens the
// agent stream of every running pool Pod so that a claim costs one API call. A spec that
// matches no shape, or a shape whose Pods are all taken, gets a cold Pod.

// Labels of pool Pods.
const (
	// LabelPool is the hash of the pool Pod's template (shape and backend settings).
	LabelPool = "langbot.box/pool"
	// LabelClaimed ("true") is set, with the session's labels, by the claim.
	LabelClaimed = "langbot.box/claimed"
)

// claimTries bounds how often one Pod is re-tried after a 409 that was not another claim.
const claimTries = 3

// quietAfterClaim delays a shape's refill after a claim: starting a Pod keeps this machine's
// API server, kubelet and container runtime busy for seconds, and the claimed session's first
// box_exec follows its create at once.
const quietAfterClaim = time.Second

// poolShape is a configured shape with its Pod template.
type poolShape struct {
	PoolShape
	hash     string
	template *corev1.Pod // no name, no instance label, no owner
	limiter  flowcontrol.PassiveRateLimiter

	// guarded by pool.mu
	failures     int
	backoffUntil time.Time
	lastClaim    time.Time
}

// matches reports whether a session spec can be served by a Pod of shape p.
func (p PoolShape) matches(spec backend.SessionSpec) bool {
	if spec.NetworkOn || spec.Image != p.Image || spec.CPUs != p.CPUs || spec.MemoryMB != p.MemoryMB || spec.ReadOnlyRootfs != p.ReadOnlyRootfs {
		return false
	}
	for _, m := range spec.Mounts() {
		if m.MountPath != PoolWorkspace && !strings.HasPrefix(m.MountPath, PoolWorkspace+"/") {
			return false
		}
	}
	return true
}

// poolTemplate is the Pod of a shape without its name and instance: buildPod of a spec with
// the shape's image and resources, network off, no claim, plus the PoolWorkspace emptyDir;
// its hash covers everything the Pod is made of.
func poolTemplate(p PoolShape, set Settings, namespace, scope string) (*corev1.Pod, string, error) {
	spec := backend.SessionSpec{PhysicalID: "pool", Image: p.Image, CPUs: p.CPUs, MemoryMB: p.MemoryMB, ReadOnlyRootfs: p.ReadOnlyRootfs}
	pod, err := buildPod(spec, nil, set, podIdentity{Namespace: namespace, Scope: scope})
	if err != nil {
		return nil, "", err
	}
	for _, k := range []string{LabelSession, LabelPersistent, LabelInstance} {
		delete(pod.Labels, k)
	}
	for _, k := range []string{AnnotationSession, AnnotationSpec} {
		delete(pod.Annotations, k)
	}
	addWorkspaceDirs(pod, []string{PoolWorkspace})
	data, err := json.Marshal([]any{pod.Labels, pod.Annotations, pod.Spec})
	if err != nil {
		return nil, "", fmt.Errorf("encode the pool pod template: %w", err)
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:8])
	pod.Labels[LabelPool] = hash
	return pod, hash, nil
}

// poolMetrics are the pool's instruments (registered by the runtime through Collectors).
type poolMetrics struct {
	pods      *prometheus.GaugeVec
	info      *prometheus.GaugeVec
	hits      *prometheus.CounterVec
	misses    *prometheus.CounterVec
	claim     prometheus.Histogram
	conflicts prometheus.Counter
	created   *prometheus.CounterVec
	removed   *prometheus.CounterVec
}

func newPoolMetrics() *poolMetrics {
	return &poolMetrics{
		pods: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "boxd_pool_pods",
			Help: "Unclaimed warm pool Pods by shape (template hash) and state (ready: running with an open agent stream; starting)."}, []string{"shape", "state"}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "boxd_pool_shape_info",
			Help: "The configured warm pool shapes (value: the target size)."}, []string{"shape", "image", "cpus", "memory_mb", "read_only_rootfs"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_pool_hits_total",
			Help: "Sessions served by a warm pool Pod, by shape."}, []string{"shape"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_pool_misses_total",
			Help: "Sessions that got a cold Pod, by reason (no_shape: the spec matches no shape; empty: no unclaimed Pod of the shape could be claimed)."}, []string{"reason"}),
		claim: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "boxd_pool_claim_seconds",
			Help: "Time to claim a warm Pod (the claim patch, conflicts included, and its agent stream) on a hit.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "boxd_pool_claim_conflicts_total",
			Help: "Claims that lost a warm Pod to another claimant (409 Conflict)."}),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_pool_pods_created_total",
			Help: "Warm pool Pods created, by shape."}, []string{"shape"}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "boxd_pool_pods_removed_total",
			Help: "Unclaimed warm pool Pods deleted, by reason (max_age, failed, excess, stale)."}, []string{"reason"}),
	}
}

func (m *poolMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pods, m.info, m.hits, m.misses, m.claim, m.conflicts, m.created, m.removed}
}

// pool keeps the warm Pods of every shape.
type pool struct {
	b      *Backend
	shapes []*poolShape
	byHash map[string]*poolShape
	met    *poolMetrics
	log    *slog.Logger
	now    func() time.Time
	// connect opens a Pod's agent stream (Backend.agentFor; unit tests replace it).
	connect func(ctx context.Context, pod string) error

	lister listersv1.PodLister
	synced cache.InformerSynced
	kick   chan struct{}

	mu         sync.Mutex
	pending    map[string]string // Pods this boxd created that the watch has not shown yet → shape hash
	connecting map[string]bool   // agent streams being opened
	ready      map[string]bool   // pool Pods whose agent stream is open
	claiming   map[string]bool   // Pods a claim is patching
	deleting   map[string]bool   // Pods the pool is deleting (until the watch shows it)
	// taken are Pods this boxd claimed (→ when): an agent stream opened for the pool after the
	// claim must not mark them ready again (and then close it when they leave the pool's
	// watch). Kept until no such open can still run (start_timeout_sec and a minute).
	taken map[string]time.Time
}

// newPool builds the pool of the configured shapes (nil when there is none).
func newPool(b *Backend) (*pool, error) {
	if len(b.set.WarmPool) == 0 {
		return nil, nil
	}
	p := &pool{b: b, byHash: map[string]*poolShape{}, met: newPoolMetrics(), log: b.log, now: time.Now,
		connect: func(ctx context.Context, pod string) error { _, err := b.agentFor(ctx, pod); return err },
		kick:    make(chan struct{}, 1), pending: map[string]string{}, connecting: map[string]bool{}, ready: map[string]bool{}, claiming: map[string]bool{}, deleting: map[string]bool{}, taken: map[string]time.Time{}}
	for i, s := range b.set.WarmPool {
		tpl, hash, err := poolTemplate(s, b.set, b.set.Namespace, b.opts.Scope)
		if err != nil {
			return nil, fmt.Errorf("box.kubernetes.warm_pool[%d]: %w", i, err)
		}
		burst := min(s.Size, s.RefillPerMinute)
		ps := &poolShape{PoolShape: s, hash: hash, template: tpl, limiter: flowcontrol.NewTokenBucketPassiveRateLimiter(float32(s.RefillPerMinute)/60, max(1, burst))}
		p.shapes = append(p.shapes, ps)
		p.byHash[hash] = ps
		p.met.info.WithLabelValues(hash, s.Image, fmt.Sprint(s.CPUs), fmt.Sprint(s.MemoryMB), fmt.Sprint(s.ReadOnlyRootfs)).Set(float64(s.Size))
		b.log.Info(fmt.Sprintf("LangBot Box kubernetes warm pool: shape %s = image %s cpus=%g memory_mb=%d read_only_rootfs=%t network=off: size %d, max_surge %d, refill %d/min, max_age %s",
			hash, s.Image, s.CPUs, s.MemoryMB, s.ReadOnlyRootfs, s.Size, s.MaxSurge, s.RefillPerMinute, s.MaxAge))
	}
	return p, nil
}

// selector selects the unclaimed pool Pods of this scope.
func (p *pool) selector() string {
	return p.b.selector() + "," + LabelPool + ",!" + LabelClaimed
}

func (p *pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// start starts the watch of the pool's Pods (an informer on the selector).
func (p *pool) start(ctx context.Context) {
	f := informers.NewSharedInformerFactoryWithOptions(p.b.cs, 0, informers.WithNamespace(p.b.set.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = p.selector() }))
	inf := f.Core().V1().Pods()
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { p.wake() },
		UpdateFunc: func(any, any) { p.wake() },
		DeleteFunc: func(any) { p.wake() },
	})
	p.lister = inf.Lister()
	p.synced = inf.Informer().HasSynced
	f.Start(ctx.Done())
}

// run keeps the pool until ctx ends.
func (p *pool) run(ctx context.Context) {
	p.start(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), p.synced) {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		p.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-p.kick:
		case <-tick.C:
		}
	}
}

// poolPod is what the planner knows of one unclaimed pool Pod.
type poolPod struct {
	Name    string
	Created time.Time
	Running bool // the sandbox container runs
	Ready   bool // running and this boxd holds its agent stream
}

// poolPlan is what to do for one shape.
type poolPlan struct {
	Create int
	Delete map[string]string // Pod name → reason
}

// plan decides, for one shape, how many Pods to create and which to delete: pending are Pods
// created but not seen yet. Pods older than MaxAge are replaced (a running Pod of the shape
// is deleted only while the others still hold Size, unless MaxSurge is 0); the pool never
// holds more than Size+MaxSurge.
func (s PoolShape) plan(pods []poolPod, pending int, now time.Time) poolPlan {
	out := poolPlan{Delete: map[string]string{}}
	var fresh, old []poolPod
	for _, p := range pods {
		if now.Sub(p.Created) >= s.MaxAge {
			old = append(old, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	// Oldest first.
	sort.Slice(old, func(i, j int) bool { return old[i].Created.Before(old[j].Created) })
	running := 0
	for _, p := range fresh {
		if p.Running {
			running++
		}
	}
	keepOld := len(old)
	for _, p := range old {
		if s.MaxSurge > 0 && running+keepOld-1 < s.Size {
			break
		}
		out.Delete[p.Name] = "max_age"
		keepOld--
	}
	limit := s.Size + s.MaxSurge
	total := len(fresh) + keepOld + pending
	if total > limit {
		// Excess (size lowered, two boxd replicas filling together): the newest go first,
		// in an order every replica computes alike from the same Pods (creation time, then
		// name), so that replicas trimming at once delete the same ones.
		ex := append([]poolPod(nil), fresh...)
		sort.Slice(ex, func(i, j int) bool {
			if !ex[i].Created.Equal(ex[j].Created) {
				return ex[i].Created.After(ex[j].Created)
			}
			return ex[i].Name > ex[j].Name
		})
		for _, p := range ex {
			if total <= limit {
				break
			}
			out.Delete[p.Name] = "excess"
			total--
		}
		fresh = fresh[:0]
		for _, p := range ex {
			if out.Delete[p.Name] == "" {
				fresh = append(fresh, p)
			}
		}
	}
	want := s.Size - len(fresh) - pending
	room := limit - total
	out.Create = max(0, min(want, room))
	return out
}

// reconcile applies the plan of every shape and opens the agent streams of running Pods.
func (p *pool) reconcile(ctx context.Context) {
	all, err := p.lister.List(labels.Everything())
	if err != nil {
		p.log.Warn("LangBot Box warm pool: list pool pods: " + err.Error())
		return
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	byShape := map[string][]poolPod{}
	del := map[string]string{}
	rvs := map[string]string{}
	for _, pod := range all {
		seen[pod.Name] = true
		rvs[pod.Name] = pod.ResourceVersion
		delete(p.pending, pod.Name)
		if pod.DeletionTimestamp != nil || p.claiming[pod.Name] || p.deleting[pod.Name] || !p.taken[pod.Name].IsZero() {
			continue
		}
		s := p.byHash[pod.Labels[LabelPool]]
		if s == nil {
			del[pod.Name] = "stale"
			continue
		}
		done, _, verr := podVerdict(pod)
		if verr != nil {
			p.log.Warn(fmt.Sprintf("LangBot Box warm pool: pod %s failed (%v): deleting it", pod.Name, verr))
			del[pod.Name] = "failed"
			p.failedLocked(s, now)
			continue
		}
		byShape[s.hash] = append(byShape[s.hash], poolPod{Name: pod.Name, Created: pod.CreationTimestamp.Time, Running: done, Ready: done && p.ready[pod.Name]})
		if done && !p.ready[pod.Name] && !p.connecting[pod.Name] {
			p.connecting[pod.Name] = true
			go p.open(ctx, pod.Name, pod.ResourceVersion)
		}
	}
	for name := range p.deleting {
		if !seen[name] {
			delete(p.deleting, name)
		}
	}
	// Pods gone (deleted, or claimed by another boxd): their streams are closed.
	for name := range p.ready {
		if !seen[name] && !p.claiming[name] && p.taken[name].IsZero() {
			delete(p.ready, name)
			go func() { p.b.forget(name); p.b.ws.forget(name) }()
		}
	}
	for name, at := range p.taken {
		if now.Sub(at) > p.b.set.StartTimeout+time.Minute {
			delete(p.taken, name)
		}
	}
	for _, s := range p.shapes {
		pending := 0
		for _, h := range p.pending {
			if h == s.hash {
				pending++
			}
		}
		pods := byShape[s.hash]
		pl := s.plan(pods, pending, now)
		for n, why := range pl.Delete {
			del[n] = why
		}
		ready, starting := 0, pending
		for _, pp := range pods {
			if pl.Delete[pp.Name] != "" {
				continue
			}
			if pp.Ready {
				ready++
			} else {
				starting++
			}
		}
		p.met.pods.WithLabelValues(s.hash, "ready").Set(float64(ready))
		p.met.pods.WithLabelValues(s.hash, "starting").Set(float64(starting))
		if now.Before(s.backoffUntil) || now.Sub(s.lastClaim) < quietAfterClaim {
			continue
		}
		for i := 0; i < pl.Create && s.limiter.TryAccept(); i++ {
			name := poolPodName(s.hash)
			p.pending[name] = s.hash
			p.connecting[name] = true
			go p.create(ctx, s, name)
		}
	}
	for name, why := range del {
		delete(p.ready, name)
		p.deleting[name] = true
		go p.removeUnclaimed(ctx, name, rvs[name], why)
	}
}

func poolPodName(hash string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "langbot-box-pool-" + hash[:8] + "-" + hex.EncodeToString(r[:])
}

// failedLocked backs a shape off after a Pod of it failed (1 s doubling to 5 min).
func (p *pool) failedLocked(s *poolShape, now time.Time) {
	s.failures++
	d := time.Second << min(s.failures-1, 9)
	if d > 5*time.Minute {
		d = 5 * time.Minute
	}
	s.backoffUntil = now.Add(d)
}

// removeUnclaimed deletes a pool Pod only if it is still the version the pool saw: one a
// claimant (this boxd or another) labelled meanwhile has a new resourceVersion, and the
// delete's precondition fails with 409 Conflict instead of deleting a session's Pod.
func (p *pool) removeUnclaimed(ctx context.Context, name, rv, why string) {
	dctx, cancel := context.WithTimeout(ctx, backend.DefaultStopTimeout)
	defer cancel()
	err := p.b.cs.CoreV1().Pods(p.b.set.Namespace).Delete(dctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	switch {
	case err == nil:
		p.met.removed.WithLabelValues(why).Inc()
		p.log.Info(fmt.Sprintf("LangBot Box warm pool: deleted unclaimed pod %s/%s (%s)", p.b.set.Namespace, name, why))
		p.b.forget(name)
		p.b.ws.forget(name)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// Claimed (or changed, or gone) since the pool looked: not the pool's to delete now.
		p.undelete(name)
	case ctx.Err() == nil:
		p.log.Warn(fmt.Sprintf("LangBot Box warm pool: delete pod %s/%s (%s): %v", p.b.set.Namespace, name, why, err))
		p.undelete(name)
	}
}

// undelete lets the pool look at a Pod it failed to delete again.
func (p *pool) undelete(name string) {
	p.mu.Lock()
	delete(p.deleting, name)
	p.mu.Unlock()
	p.wake()
}

// remove deletes a Pod the pool created and never gave out (it did not start).
func (p *pool) remove(ctx context.Context, name, why string) {
	p.met.removed.WithLabelValues(why).Inc()
	p.b.forget(name)
	p.b.ws.forget(name)
	p.log.Info(fmt.Sprintf("LangBot Box warm pool: deleting unclaimed pod %s/%s (%s)", p.b.set.Namespace, name, why))
	if err := p.b.deletePod(ctx, name); err != nil {
		p.log.Warn("LangBot Box warm pool: " + err.Error())
	}
}

// create makes one pool Pod and opens its agent stream once it runs.
func (p *pool) create(ctx context.Context, s *poolShape, name string) {
	ok := false
	defer func() {
		p.mu.Lock()
		delete(p.connecting, name)
		if !ok {
			delete(p.pending, name)
			p.failedLocked(s, p.now())
		} else {
			s.failures, s.backoffUntil = 0, time.Time{}
		}
		p.mu.Unlock()
		p.wake()
	}()
	pod := s.template.DeepCopy()
	pod.Name = name
	pod.Labels[LabelInstance] = p.b.opts.InstanceID
	owner, err := p.b.ownerRef(ctx)
	if err != nil {
		p.log.Warn("LangBot Box warm pool: " + err.Error())
		return
	}
	if owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	sctx, cancel := context.WithTimeout(ctx, p.b.set.StartTimeout)
	defer cancel()
	created, err := p.b.cs.CoreV1().Pods(p.b.set.Namespace).Create(sctx, pod, metav1.CreateOptions{})
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn(fmt.Sprintf("LangBot Box warm pool: create pod %s of shape %s: %v", name, s.hash, err))
		}
		return
	}
	p.met.created.WithLabelValues(s.hash).Inc()
	if err := p.b.waitRunning(sctx, created); err != nil {
		if ctx.Err() != nil {
			return // boxd stops: the Pod is left to the next boxd's pool
		}
		p.log.Warn(fmt.Sprintf("LangBot Box warm pool: pod %s of shape %s did not start: %v: deleting it", name, s.hash, err))
		p.remove(context.WithoutCancel(ctx), name, "failed")
		return
	}
	if err := p.connect(sctx, name); err != nil {
		if ctx.Err() != nil {
			return // boxd stops: the Pod is left to the next boxd's pool
		}
		p.log.Warn(fmt.Sprintf("LangBot Box warm pool: pod %s: %v: deleting it", name, err))
		p.remove(context.WithoutCancel(ctx), name, "failed")
		return
	}
	ok = true
	p.b.prespawn(name)
	p.mu.Lock()
	if p.taken[name].IsZero() {
		p.ready[name] = true
	}
	p.mu.Unlock()
}

// open opens the agent stream of a running pool Pod this boxd did not create (or whose
// stream it lost); a Pod whose agent cannot be reached is deleted (if still unclaimed).
func (p *pool) open(ctx context.Context, name, rv string) {
	sctx, cancel := context.WithTimeout(ctx, p.b.set.StartTimeout)
	defer cancel()
	err := p.connect(sctx, name)
	if err == nil {
		p.b.prespawn(name)
	}
	p.mu.Lock()
	delete(p.connecting, name)
	if err == nil && !p.claiming[name] && p.taken[name].IsZero() {
		p.ready[name] = true
	}
	p.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		p.log.Warn(fmt.Sprintf("LangBot Box warm pool: open the agent stream of pod %s: %v: deleting it", name, err))
		p.mu.Lock()
		p.deleting[name] = true
		p.mu.Unlock()
		p.removeUnclaimed(ctx, name, rv, "failed")
	}
	p.wake()
}

// match returns the shape that serves spec (nil: none).
func (p *pool) match(spec backend.SessionSpec) *poolShape {
	for _, s := range p.shapes {
		if s.matches(spec) {
			return s
		}
	}
	return nil
}

// candidates are the unclaimed running Pods of shape s, not too old: those with an open
// agent stream first, in random order.
func (p *pool) candidates(s *poolShape) []*corev1.Pod {
	if p.lister == nil {
		return nil
	}
	all, err := p.lister.List(labels.SelectorFromSet(labels.Set{LabelPool: s.hash}))
	if err != nil {
		return nil
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*corev1.Pod
	for _, pod := range all {
		if pod.DeletionTimestamp != nil || pod.Labels[LabelClaimed] != "" || p.claiming[pod.Name] || now.Sub(pod.CreationTimestamp.Time) >= s.MaxAge {
			continue
		}
		if done, _, err := podVerdict(pod); !done || err != nil {
			continue
		}
		out = append(out, pod)
	}
	// Shuffled, so that claimants (requests, replicas) seldom race for the same Pod.
	mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	sort.SliceStable(out, func(i, j int) bool { return p.ready[out[i].Name] && !p.ready[out[j].Name] })
	return out
}

// errTaken: another claimant has the Pod (or it is gone).
var errTaken = errors.New("the pool pod was claimed by another session or is gone")

// claim hands a warm Pod of a matching shape to the session of spec, or reports false (the
// caller creates a cold Pod).
func (p *pool) claim(ctx context.Context, spec backend.SessionSpec) (string, bool) {
	s := p.match(spec)
	if s == nil {
		p.met.misses.WithLabelValues("no_shape").Inc()
		return "", false
	}
	start := time.Now()
	defer p.wake()
	for _, pod := range p.candidates(s) {
		if ctx.Err() != nil {
			return "", false
		}
		p.mu.Lock()
		if p.claiming[pod.Name] {
			p.mu.Unlock()
			continue
		}
		p.claiming[pod.Name] = true
		p.mu.Unlock()
		err := p.patchClaim(ctx, pod, spec)
		if err == nil {
			err = p.connect(ctx, pod.Name)
			if err != nil {
				// Ours now, but unusable: delete it (the session layer never saw it).
				p.log.Warn(fmt.Sprintf("LangBot Box warm pool: claimed pod %s has no agent (%v): deleting it", pod.Name, err))
				p.remove(context.WithoutCancel(ctx), pod.Name, "failed")
			}
		}
		p.mu.Lock()
		delete(p.claiming, pod.Name)
		delete(p.ready, pod.Name)
		if err == nil {
			p.taken[pod.Name] = p.now()
			s.lastClaim = p.now()
		}
		p.mu.Unlock()
		switch {
		case err == nil:
			p.met.hits.WithLabelValues(s.hash).Inc()
			p.met.claim.Observe(time.Since(start).Seconds())
			return pod.Name, true
		case errors.Is(err, errTaken):
			p.met.conflicts.Inc()
		case ctx.Err() == nil:
			p.log.Warn(fmt.Sprintf("LangBot Box warm pool: claim pod %s: %v", pod.Name, err))
		}
	}
	p.met.misses.WithLabelValues("empty").Inc()
	return "", false
}

// patchClaim labels pod as the session's with a merge patch that carries the Pod's
// resourceVersion: the API server refuses it with 409 Conflict when the Pod changed since.
// After a 409 the Pod is read again: claimed (or gone, or being deleted) is errTaken;
// otherwise (a status update raced the patch) the patch is retried with the new version.
func (p *pool) patchClaim(ctx context.Context, pod *corev1.Pod, spec backend.SessionSpec) error {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode session spec annotation: %w", err)
	}
	pods := p.b.cs.CoreV1().Pods(p.b.set.Namespace)
	rv := pod.ResourceVersion
	for try := 0; ; try++ {
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": rv,
			"labels": map[string]string{LabelClaimed: "true", LabelSession: sessionLabel(spec.PhysicalID), LabelInstance: p.b.opts.InstanceID,
				LabelPersistent: fmt.Sprint(spec.Persistent), LabelNetwork: "off"},
			"annotations": map[string]string{AnnotationSession: spec.PhysicalID, AnnotationSpec: string(specJSON)},
		}})
		if err != nil {
			return fmt.Errorf("encode the claim patch: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err = pods.Patch(pctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		cancel()
		switch {
		case err == nil:
			return nil
		case apierrors.IsNotFound(err):
			return errTaken
		case !apierrors.IsConflict(err):
			return fmt.Errorf("patch pod %s: %w", pod.Name, err)
		}
		gctx, cancel := context.WithTimeout(ctx, probeTimeout)
		fresh, gerr := pods.Get(gctx, pod.Name, metav1.GetOptions{})
		cancel()
		switch {
		case apierrors.IsNotFound(gerr):
			return errTaken
		case gerr != nil:
			return fmt.Errorf("read pod %s after a claim conflict: %w", pod.Name, gerr)
		case fresh.Labels[LabelClaimed] != "" || fresh.DeletionTimestamp != nil:
			return errTaken
		case try+1 >= claimTries:
			return fmt.Errorf("pod %s changed %d times while it was claimed: %w", pod.Name, claimTries, err)
		}
		rv = fresh.ResourceVersion
	}
}

// isPoolPod: an unclaimed warm pool Pod (Recover leaves them to the pool).
func isPoolPod(p *corev1.Pod) bool {
	return p.Labels[LabelPool] != "" && p.Labels[LabelClaimed] == ""
}

// Run keeps the warm pool (box.kubernetes.warm_pool) until ctx ends; it returns at once when
// there is none. The runtime runs it in the background after start-up.
func (b *Backend) Run(ctx context.Context) {
	if b.pool == nil {
		return
	}
	b.pool.run(ctx)
}

// Collectors are the warm pool's metrics (none without a pool), registered on boxd's
// /metrics by the runtime.
func (b *Backend) Collectors() []prometheus.Collector {
	if b.pool == nil {
		return nil
	}
	return b.pool.met.collectors()
}
