// Package kube is the `kubernetes` backend: every Box session is one Pod created through the
// Kubernetes API (client-go; in-cluster config, else KUBECONFIG), in one namespace, labelled
// so that boxd recognises its own Pods and annotated with the session spec so that a
// restarted boxd can re-adopt persistent ones. Commands run through boxd's in-sandbox exec
// agent over one long-lived exec stream per Pod (agent.go); there is no Docker socket and no
// hostPath: the workspace and extra mounts are subPaths of the box root claim.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/docker"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Name is the backend's name in box.backend and box_get_backend_info.
const Name = "kubernetes"

const (
	probeTimeout = 5 * time.Second
	listTimeout  = 30 * time.Second
)

// Options configure the backend.
type Options struct {
	// InstanceID is the runtime's random per-process id (label langbot.box/instance).
	InstanceID string
	// Scope (BOXD_SCOPE) is written to langbot.box/scope and confines Recover to Pods of the
	// same scope; empty = Pods without the label.
	Scope    string
	Settings Settings
	// AllowedMountRoots and HostRoot are box.local's allowed_mount_roots and host_root, read
	// at every Start (box_init changes them): the mount policy of internal/mounts.
	AllowedMountRoots func() []string
	HostRoot          func() string
	// NodeName (BOXD_NODE_NAME, from the downward API's spec.nodeName) is boxd's own node:
	// with box_root.pin_to_node every sandbox Pod must run there.
	NodeName string
	// Rest is the client configuration; nil = in-cluster config, else KUBECONFIG (or
	// ~/.kube/config), which also gives the default namespace.
	Rest   *rest.Config
	Logger *slog.Logger
}

// Backend runs sandboxes as Pods. It is safe for concurrent use.
type Backend struct {
	cs   kubernetes.Interface
	rest *rest.Config
	set  Settings
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by Pod name

	omu   sync.Mutex
	owner *metav1.OwnerReference // owner_config_map, once read

	amu      sync.Mutex
	agentSub string // the agent file as a path of the box root claim, once placed (agentOnClaim)

	ws   workspaces // isolated mode: the sandboxes' workspaces (isolated.go)
	pool *pool      // the warm pool, nil without one (pool.go)
}

// New builds the client (nothing is contacted yet: readiness reports an unreachable API).
func New(opts Options) (*Backend, error) {
	if opts.InstanceID == "" {
		return nil, errors.New("kubernetes backend: Options.InstanceID is empty: pass the runtime's instance id")
	}
	if opts.Scope != "" {
		if e := validation.IsValidLabelValue(opts.Scope); len(e) > 0 {
			return nil, fmt.Errorf("BOXD_SCOPE %q cannot be a Kubernetes label value (%s): use at most 63 letters, digits, '-', '_' or '.'", opts.Scope, strings.Join(e, "; "))
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Settings.PinToNode {
		if opts.NodeName == "" {
			return nil, errors.New("kubernetes backend: box.kubernetes.box_root.pin_to_node is true (the box root claim is ReadWriteOnce) but BOXD_NODE_NAME is empty: set BOXD_NODE_NAME in boxd's container from the downward API (fieldRef spec.nodeName), as the chart does")
		}
		if e := validation.IsDNS1123Subdomain(opts.NodeName); len(e) > 0 {
			return nil, fmt.Errorf("kubernetes backend: BOXD_NODE_NAME %q is not a node name (%s): set it from the downward API (fieldRef spec.nodeName)", opts.NodeName, strings.Join(e, "; "))
		}
	}
	if opts.AllowedMountRoots == nil {
		opts.AllowedMountRoots = func() []string { return nil }
	}
	if opts.HostRoot == nil {
		opts.HostRoot = func() string { return "" }
	}
	set := opts.Settings
	cfg := opts.Rest
	if cfg == nil || set.Namespace == "" {
		loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
		if cfg == nil {
			c, err := loader.ClientConfig()
			if err != nil {
				return nil, fmt.Errorf("kubernetes backend: load the client configuration (in-cluster service account, or KUBECONFIG): %w", err)
			}
			cfg = c
		}
		if set.Namespace == "" {
			ns, _, err := loader.Namespace()
			if err != nil || ns == "" {
				return nil, fmt.Errorf("kubernetes backend: box.kubernetes.namespace is not set and the client configuration names no namespace: set box.kubernetes.namespace (%v)", err)
			}
			set.Namespace = ns
		}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "boxd"
	if cfg.QPS == 0 {
		// client-go's default (5/s, burst 10) would queue a burst of session creates (and the
		// warm pool's claims) behind each other for seconds; the API server's own priority
		// and fairness still applies.
		cfg.QPS, cfg.Burst = 100, 200
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes backend: build the client: %w", err)
	}
	b := &Backend{cs: cs, rest: cfg, set: set, opts: opts, log: opts.Logger, sandboxes: map[string]*sandbox{}}
	if b.pool, err = newPool(b); err != nil {
		return nil, err
	}
	b.log.Info(fmt.Sprintf("LangBot Box kubernetes backend: namespace=%s box_root_claim=%q mount_path=%q agent_image=%s; not enforced per Pod: pids_limit (Kubernetes has only a node-wide PID limit), network=off (needs a NetworkPolicy selecting %s=off)",
		set.Namespace, set.ClaimName, set.ClaimMountPath, set.AgentImage, LabelNetwork))
	if set.PinToNode {
		b.log.Info(fmt.Sprintf("LangBot Box kubernetes backend: sandbox Pods are pinned to node %s (box_root.pin_to_node: the box root claim %s can be mounted on one node only)", opts.NodeName, set.ClaimName))
	}
	if set.OwnerConfigMap == "" {
		b.log.Warn("LangBot Box kubernetes backend: box.kubernetes.owner_config_map is empty: sandbox Pods get no owner reference, so uninstalling the release does not remove them")
	}
	return b, nil
}

// ownerRef returns the owner reference for sandbox Pods, reading owner_config_map the first
// time (Recover does it at start-up; a failed read is tried again by the next Start). nil
// when owner_config_map is empty.
func (b *Backend) ownerRef(ctx context.Context) (*metav1.OwnerReference, error) {
	if b.set.OwnerConfigMap == "" {
		return nil, nil
	}
	b.omu.Lock()
	defer b.omu.Unlock()
	if b.owner != nil {
		return b.owner, nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cm, err := b.cs.CoreV1().ConfigMaps(b.set.Namespace).Get(ctx, b.set.OwnerConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read box.kubernetes.owner_config_map %s/%s (every sandbox Pod is owned by it, so that uninstalling the release removes them): %w: create it (the chart does) and let boxd's Role get it, or set owner_config_map to \"\"", b.set.Namespace, b.set.OwnerConfigMap, err)
	}
	b.owner = ownerReference(cm)
	b.log.Info(fmt.Sprintf("LangBot Box kubernetes backend: sandbox Pods are owned by ConfigMap %s/%s (uid %s): deleting it removes them", b.set.Namespace, cm.Name, cm.UID))
	return b.owner, nil
}

// Namespace is where the sandbox Pods live.
func (b *Backend) Namespace() string { return b.set.Namespace }

// Close ends every agent stream.
func (b *Backend) Close() error {
	defer b.ws.closeAll()
	b.mu.Lock()
	names := make([]string, 0, len(b.sandboxes))
	for n := range b.sandboxes {
		names = append(names, n)
	}
	b.mu.Unlock()
	for _, n := range names {
		b.forget(n)
	}
	return nil
}

// Info implements backend.Backend.
func (b *Backend) Info() backend.Info { return backend.Info{Name: Name} }

// Available lists at most one Pod of the namespace within 5 s (what boxd's Role allows).
func (b *Backend) Available(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := b.cs.CoreV1().Pods(b.set.Namespace).List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		return fmt.Errorf("list pods in namespace %s: %w", b.set.Namespace, err)
	}
	return nil
}

// backendErr is reported by the session layer as `BoxError: kubernetes backend error: …`.
func backendErr(err error) error {
	return &backend.Error{Message: "kubernetes backend error: " + docker.Collapse(err.Error()), Err: err}
}

// selector selects the Pods of this runtime's scope.
func (b *Backend) selector() string {
	if b.opts.Scope == "" {
		return LabelBox + "=true,!" + LabelScope
	}
	return LabelBox + "=true," + LabelScope + "=" + b.opts.Scope
}

// Start validates the mounts as the Docker backend does (internal/mounts: blocked paths,
// allowed roots, symlinks resolved, the workspace created without following a symlink),
// refuses any that is not on the box root claim, creates the Pod, waits until its sandbox
// container runs (failing with the scheduler's or kubelet's reason, within the configured
// bounds, and deleting the Pod), and connects the exec agent.
func (b *Backend) Start(ctx context.Context, spec backend.SessionSpec) (backend.Handle, error) {
	if b.isolated() {
		return b.startIsolated(ctx, spec)
	}
	pol := mounts.Policy{Roots: b.opts.AllowedMountRoots(), HostRoot: b.opts.HostRoot()}
	if spec.HostPath != "" {
		if err := pol.CheckBlocked(spec.HostPath); err != nil {
			return backend.Handle{}, err
		}
	}
	// Checked before the workspace directory is created, so nothing is made outside the claim.
	all := spec.Mounts()
	if _, err := claimSubPaths(pol, all, b.set); err != nil {
		return backend.Handle{}, err
	}
	wants := make([]mounts.Want, len(all))
	for i, m := range all {
		wants[i] = mounts.Want{Mount: m, Create: i == 0 && spec.HostPath != "" && spec.HostPathMode != backend.MountNone}
	}
	srcs, err := mounts.Prepare(wants, pol)
	if err != nil {
		return backend.Handle{}, err
	}
	defer srcs.Close()
	subs, err := subPaths(srcs.Mounts(), b.set.ClaimName, b.set.ClaimMountPath)
	if err != nil {
		return backend.Handle{}, err
	}
	owner, err := b.ownerRef(ctx)
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	node := ""
	if b.set.PinToNode {
		node = b.opts.NodeName
	}
	name := PodName(spec.PhysicalID)
	pod, err := buildPod(spec, subs, b.set, podIdentity{Name: name, Namespace: b.set.Namespace, InstanceID: b.opts.InstanceID, Scope: b.opts.Scope,
		Node: node, Owner: owner, AgentSubPath: b.agentOnClaim()})
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	if spec.PidsLimit > 0 {
		b.log.Info(fmt.Sprintf("LangBot Box kubernetes backend: pids_limit=%d of session %s is not enforced per Pod (Kubernetes has only the kubelet's node-wide PID limit)", spec.PidsLimit, spec.PhysicalID))
	}
	b.log.Info(fmt.Sprintf("LangBot Box backend start_session: backend=kubernetes session_id=%s pod=%s/%s image=%s", spec.PhysicalID, b.set.Namespace, name, spec.Image))
	sctx, cancel := context.WithTimeout(ctx, b.set.StartTimeout)
	defer cancel()
	created, err := b.cs.CoreV1().Pods(b.set.Namespace).Create(sctx, pod, metav1.CreateOptions{})
	if err != nil {
		return backend.Handle{}, backendErr(fmt.Errorf("create pod %s: %w", name, err))
	}
	fail := func(err error) (backend.Handle, error) {
		b.forget(name)
		if derr := b.deletePod(context.WithoutCancel(ctx), name); derr != nil {
			b.log.Warn(fmt.Sprintf("delete pod %s after a failed start: %v", name, derr))
		}
		return backend.Handle{}, backendErr(err)
	}
	if err := b.waitRunning(sctx, created); err != nil {
		return fail(fmt.Errorf("start pod %s: %w", name, err))
	}
	if _, err := b.agentFor(sctx, name); err != nil {
		return fail(err)
	}
	return backend.Handle{ID: name}, nil
}

// fatalWaiting are container waiting reasons that do not resolve by waiting.
var fatalWaiting = map[string]bool{"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true,
	"InvalidImageName": true, "CreateContainerConfigError": true, "CreateContainerError": true,
	"RunContainerError": true, "CrashLoopBackOff": true}

// podVerdict reads a Pod's status: done when the sandbox container runs, an error when it
// cannot get there; unschedulable carries the scheduler's message while it is pending.
func podVerdict(p *corev1.Pod) (done bool, unschedulable string, err error) {
	if p.DeletionTimestamp != nil {
		return false, "", errors.New("the pod is being deleted")
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			unschedulable = c.Message
		}
	}
	check := func(kind string, st []corev1.ContainerStatus) error {
		for _, cs := range st {
			if w := cs.State.Waiting; w != nil && fatalWaiting[w.Reason] {
				return fmt.Errorf("%s container %s: %s: %s", kind, cs.Name, w.Reason, w.Message)
			}
			if t := cs.State.Terminated; t != nil && (t.ExitCode != 0 || kind == "sandbox") {
				return fmt.Errorf("%s container %s terminated: %s (exit code %d): %s", kind, cs.Name, t.Reason, t.ExitCode, t.Message)
			}
		}
		return nil
	}
	if err := check("init", p.Status.InitContainerStatuses); err != nil {
		return false, unschedulable, err
	}
	if err := check("sandbox", p.Status.ContainerStatuses); err != nil {
		return false, unschedulable, err
	}
	switch p.Status.Phase {
	case corev1.PodFailed, corev1.PodSucceeded:
		return false, unschedulable, fmt.Errorf("pod ended: phase %s: %s %s", p.Status.Phase, p.Status.Reason, p.Status.Message)
	case corev1.PodRunning:
		for _, cs := range p.Status.ContainerStatuses {
			if cs.Name == SandboxContainer && cs.State.Running != nil {
				return true, "", nil
			}
		}
	}
	return false, unschedulable, nil
}

// waitRunning watches the Pod until its sandbox container runs, it fails, it stays
// unschedulable for longer than ScheduleTimeout, or ctx ends. One watch is held; a watch that
// closes or reports an error (e.g. a compacted resource version) is reopened after a fresh Get.
func (b *Backend) waitRunning(ctx context.Context, p *corev1.Pod) error {
	pods := b.cs.CoreV1().Pods(b.set.Namespace)
	var unschedSince time.Time
	var w watch.Interface
	defer func() {
		if w != nil {
			w.Stop()
		}
	}()
	for {
		done, unsched, err := podVerdict(p)
		switch {
		case err != nil:
			return err
		case done:
			return nil
		case unsched == "":
			unschedSince = time.Time{}
		case unschedSince.IsZero():
			unschedSince = time.Now()
		}
		bound := b.set.ScheduleTimeout
		if !unschedSince.IsZero() {
			if bound -= time.Since(unschedSince); bound <= 0 {
				return fmt.Errorf("unschedulable for %s: %s", b.set.ScheduleTimeout, unsched)
			}
		}
		if w == nil {
			if w, err = pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", p.Name).String(),
				ResourceVersion: p.ResourceVersion}); err != nil {
				return fmt.Errorf("watch pod: %w", err)
			}
		}
		t := time.NewTimer(bound)
		select {
		case <-ctx.Done():
			t.Stop()
			msg := "waiting for the sandbox container to run"
			if unsched != "" {
				msg += " (unschedulable: " + unsched + ")"
			}
			return fmt.Errorf("%s: %w", msg, ctx.Err())
		case <-t.C:
			// Re-evaluate: the unschedulable bound may have passed.
		case ev, ok := <-w.ResultChan():
			t.Stop()
			switch {
			case !ok || ev.Type == watch.Error:
				w.Stop()
				w = nil
				fresh, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
				if err != nil {
					return fmt.Errorf("get pod after its watch ended: %w", err)
				}
				p = fresh
			case ev.Type == watch.Deleted:
				return errors.New("the pod was deleted")
			default:
				if np, isPod := ev.Object.(*corev1.Pod); isPod {
					p = np
				}
			}
		}
	}
}

// deletePod deletes a Pod at once (grace period 0); a missing Pod is not an error.
func (b *Backend) deletePod(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, backend.DefaultStopTimeout)
	defer cancel()
	err := b.cs.CoreV1().Pods(b.set.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", b.set.Namespace, name, err)
	}
	return nil
}

// ExecProbesLiveness: an exec in a Pod that is gone fails with ErrNotStarted (no agent stream
// can be opened), so the exec itself probes a reused session.
func (b *Backend) ExecProbesLiveness() bool { return true }

// Alive: a connected agent stream means the Pod runs; otherwise the Pod's status is read.
func (b *Backend) Alive(ctx context.Context, h backend.Handle) bool {
	if b.connected(h.ID) {
		return true
	}
	return b.podRunning(ctx, h.ID)
}

func (b *Backend) podRunning(ctx context.Context, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	p, err := b.cs.CoreV1().Pods(b.set.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	done, _, verr := podVerdict(p)
	return done && verr == nil
}

// Stop deletes the Pod; it is idempotent.
func (b *Backend) Stop(ctx context.Context, h backend.Handle) error {
	b.log.Info("LangBot Box backend stop_session: backend=kubernetes pod=" + b.set.Namespace + "/" + h.ID)
	b.forget(h.ID)
	b.ws.forget(h.ID)
	return b.deletePod(ctx, h.ID)
}

// agentErr maps a failure to reach a Pod's agent before anything ran: a Pod that is gone is
// backend.ErrNotStarted (the session layer recreates the sandbox and runs the command there).
func (b *Backend) agentErr(ctx context.Context, what, pod string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, agent.ErrGone) || !b.podRunning(context.WithoutCancel(ctx), pod) {
		return fmt.Errorf("%s in pod %s: %w: %v", what, pod, backend.ErrNotStarted, err)
	}
	return backendErr(err)
}

// Exec runs the command through the Pod's exec agent. A Pod that is gone (no stream can be
// opened and the Pod does not run) is backend.ErrNotStarted, so the session layer recreates
// the sandbox and runs the command there. In isolated mode the workspace is synced around it.
func (b *Backend) Exec(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	if b.isolated() {
		return b.execIsolated(ctx, h, req)
	}
	return b.exec(ctx, h, req)
}

func (b *Backend) exec(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	c, err := b.agentFor(ctx, h.ID)
	if err != nil {
		return backend.ExecResult{}, b.agentErr(ctx, "exec", h.ID, err)
	}
	code, err := c.Run(ctx, agent.Command{Argv: req.Argv, Env: backend.Environ(req.Env)}, req.Stdout, req.Stderr)
	switch {
	case err == nil:
		return backend.ExecResult{ExitCode: code}, nil
	case errors.Is(err, agent.ErrFrameTooLarge):
		return backend.ExecResult{}, backendErr(fmt.Errorf("the command and its environment are larger than one exec agent frame (%d bytes) and this backend has no per-command exec: shorten it or pass data through the workspace", agent.MaxPayload))
	case ctx.Err() != nil:
		return backend.ExecResult{}, ctx.Err()
	case errors.Is(err, agent.ErrGone):
		// No stream could be opened for it: the command was never sent.
		return backend.ExecResult{}, fmt.Errorf("exec in pod %s: %w: %v", h.ID, backend.ErrNotStarted, err)
	}
	if !b.podRunning(context.WithoutCancel(ctx), h.ID) {
		return backend.ExecResult{}, fmt.Errorf("exec in pod %s: %w: %v", h.ID, backend.ErrNotFound, err)
	}
	b.log.Warn(fmt.Sprintf("LangBot Box exec agent failed: backend=kubernetes pod=%s: %v (last stream: %s)", h.ID, err, c.LastEnd()))
	return backend.ExecResult{}, backendErr(fmt.Errorf("exec through the agent in pod %s: %w", h.ID, err))
}

// StartProcess implements backend.Backend: the process runs under the Pod's agent daemon,
// with its stdin, stdout and stderr relayed over the agent stream; it survives a dropped
// stream (the client re-attaches it).
func (b *Backend) StartProcess(ctx context.Context, h backend.Handle, req backend.ProcessRequest) (backend.Process, error) {
	c, err := b.agentFor(ctx, h.ID)
	if err != nil {
		if err = b.agentErr(ctx, "start managed process", h.ID, err); errors.Is(err, backend.ErrNotStarted) {
			err = backendErr(err)
		}
		return nil, err
	}
	if b.isolated() {
		// The process sees the workspace as of now; what it writes comes back with the pull
		// after the session's next box_exec.
		if _, err := b.pushIsolated(ctx, h.ID); err != nil {
			if errors.Is(err, backend.ErrNotStarted) {
				err = backendErr(err)
			}
			return nil, err
		}
	}
	b.log.Info("LangBot Box backend start_managed_process: backend=kubernetes pod=" + b.set.Namespace + "/" + h.ID)
	p, err := c.Start(ctx, agent.Command{Argv: req.Argv, Env: backend.Environ(req.Env)})
	if err != nil {
		if errors.Is(err, agent.ErrFrameTooLarge) {
			return nil, backendErr(fmt.Errorf("the managed process's command and environment are larger than one exec agent frame (%d bytes)", agent.MaxPayload))
		}
		return nil, backendErr(fmt.Errorf("start managed process in pod %s: %w", h.ID, err))
	}
	return &process{p: p}, nil
}

// Recover implements backend.Backend: Pods of this scope made by another instance are
// deleted, except running persistent ones with a readable spec whose sandbox container runs
// the agent daemon (a Pod of an older boxd, whose main command was a shell, has no daemon to
// connect to), which are returned for re-adoption (their agent stream is opened on the first
// exec). Like the Docker backend it
// does not relabel them (boxd's Role has no patch), so they keep their creator's instance id.
func (b *Backend) Recover(ctx context.Context, currentInstanceID string) ([]backend.Adopted, int, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	// Start-up: the owner ConfigMap is read now, so that a missing one is reported at once.
	if _, err := b.ownerRef(ctx); err != nil {
		b.log.Warn("LangBot Box kubernetes backend: " + err.Error() + " (sessions cannot be created until it can be read)")
	}
	list, err := b.cs.CoreV1().Pods(b.set.Namespace).List(ctx, metav1.ListOptions{LabelSelector: b.selector()})
	if err != nil {
		return nil, 0, fmt.Errorf("list pods %s in namespace %s: %w", b.selector(), b.set.Namespace, err)
	}
	var adopted []backend.Adopted
	removed := 0
	var failed []string
	for i := range list.Items {
		p := &list.Items[i]
		if p.Labels[LabelInstance] == currentInstanceID || p.DeletionTimestamp != nil || isPoolPod(p) {
			continue // unclaimed warm pool Pods belong to the pool (pool.go)
		}
		if p.Labels[LabelPersistent] == "true" && runsDaemon(p) {
			if spec, ok := specFromPod(p); ok {
				if done, _, verr := podVerdict(p); done && verr == nil {
					adopted = append(adopted, backend.Adopted{Spec: spec, Handle: backend.Handle{ID: p.Name}, Created: p.CreationTimestamp.Time})
					continue
				}
			}
		}
		b.log.Info("Cleaning up orphaned Box pod: " + b.set.Namespace + "/" + p.Name)
		if err := b.deletePod(ctx, p.Name); err != nil {
			failed = append(failed, err.Error())
			continue
		}
		removed++
	}
	if len(failed) > 0 {
		return adopted, removed, fmt.Errorf("remove orphaned pods: %s", strings.Join(failed, "; "))
	}
	return adopted, removed, nil
}

// agentOnClaim places boxd's own boxagent on the box root claim (<mount path>/.boxd, as the
// Docker backend places it under host_root; internal/mounts never mounts .boxd read-write) and
// returns it as a path of the claim, so sandbox Pods mount it instead of running an init
// container. "" (the init container from agent_image is used) without a claim or a boxagent
// binary next to boxd, or when placing it fails (logged).
func (b *Backend) agentOnClaim() string {
	if b.set.ClaimName == "" || b.set.ClaimMountPath == "" {
		return ""
	}
	bin := docker.DefaultAgentBinary()
	if bin == "" {
		return ""
	}
	b.amu.Lock()
	defer b.amu.Unlock()
	root := mounts.Resolve(b.set.ClaimMountPath)
	if b.agentSub != "" {
		if _, err := os.Stat(filepath.Join(root, b.agentSub)); err == nil {
			return b.agentSub
		}
	}
	path, err := docker.InstallAgentFile(root, bin)
	if err != nil {
		b.log.Warn(fmt.Sprintf("LangBot Box kubernetes backend: cannot place the exec agent on the box root claim, sandbox Pods get it from an init container: %v", err))
		return ""
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	b.agentSub = rel
	return rel
}
