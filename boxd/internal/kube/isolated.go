package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/agent"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// The `isolated` workspace mode (box.kubernetes.workspace_mode): a sandbox Pod mounts no
// claim. Its workspace is an emptyDir (one per top-level mount path of the session; a warm
// Pod has one at PoolWorkspace), and boxd keeps the session's trees in step with it through
// internal/wsync: before every box_exec (and before a managed process starts) what changed
// on boxd's side is pushed; after the command returns, and before its result goes back, what
// the command changed in the rw trees is pulled. Each exchange is one `boxagent sync` process
// started through the Pod's agent (agent.Process: its stdin carries the request, its stdout
// the response). A command killed on its timeout is pulled too, before the session layer
// deletes the Pod, so nothing it wrote before the exec returned is lost. Managed processes
// get a push before they start; what they write later comes back with the pull after the
// next box_exec of the session (or not at all if none follows before the Pod goes).

// pullAfterCancel bounds the pull that follows a command cancelled (timed out) by the caller.
const pullAfterCancel = time.Minute

// syncDoneTimeout bounds the wait for a `boxagent sync` process to exit after its exchange.
const syncDoneTimeout = 30 * time.Second

// maxNoticeLines bounds the sync notice appended to a command's stderr.
const maxNoticeLines = 8

// workspace is what boxd keeps of one isolated sandbox: the wsync Session (its base).
type workspace struct {
	sess *wsync.Session
}

// workspaces are the isolated sandboxes' workspaces by Pod name, and the spare `boxagent
// sync` process each isolated sandbox (and warm Pod) keeps waiting for its next exchange.
type workspaces struct {
	mu     sync.Mutex
	byPod  map[string]*workspace
	spares map[string]*spare
	// syncArgv runs the sandbox end; nil = AgentPath sync (unit tests run a local binary).
	syncArgv []string
}

// spare is a `boxagent sync` process started ahead of its exchange (a Go binary's start in
// the sandbox costs about 10 ms on the agent's path; a spare takes it off the exec's).
type spare struct {
	ready   chan struct{} // closed once p or err is set
	p       *agent.Process
	err     error
	stderr  *agent.HeadBuffer
	drained chan struct{} // stderr read to its end
}

func (sp *spare) exited() bool {
	select {
	case <-sp.p.Done():
		return true
	default:
		return false
	}
}

// takeSpare removes and returns pod's spare (nil when there is none).
func (w *workspaces) takeSpare(pod string) *spare {
	w.mu.Lock()
	defer w.mu.Unlock()
	sp := w.spares[pod]
	delete(w.spares, pod)
	return sp
}

// newSpare registers a spare for pod being started; nil when pod has one already.
func (w *workspaces) newSpare(pod string) *spare {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spares[pod] != nil {
		return nil
	}
	if w.spares == nil {
		w.spares = map[string]*spare{}
	}
	sp := &spare{ready: make(chan struct{})}
	w.spares[pod] = sp
	return sp
}

func (w *workspaces) put(pod string, ws *workspace) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byPod == nil {
		w.byPod = map[string]*workspace{}
	}
	if old := w.byPod[pod]; old != nil && old != ws {
		old.sess.Close()
	}
	w.byPod[pod] = ws
}

func (w *workspaces) get(pod string) *workspace {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byPod[pod]
}

// forget closes the workspace of pod (nothing when there is none) and drops its spare (the
// process goes with the Pod).
func (w *workspaces) forget(pod string) {
	w.mu.Lock()
	ws := w.byPod[pod]
	delete(w.byPod, pod)
	delete(w.spares, pod)
	w.mu.Unlock()
	if ws != nil {
		ws.sess.Close()
	}
}

func (w *workspaces) closeAll() {
	w.mu.Lock()
	all := w.byPod
	w.byPod, w.spares = nil, nil
	w.mu.Unlock()
	for _, ws := range all {
		ws.sess.Close()
	}
}

// isolated reports whether sandboxes get their own workspace (workspace_mode isolated).
func (b *Backend) isolated() bool { return b.set.WorkspaceMode == WorkspaceIsolated }

// openWorkspace checks the spec's mounts exactly as the shared mode and the Docker backend
// do (internal/mounts: blocked paths, allowed roots, symlinks resolved, the workspace created
// without following a symlink) and opens them as the trees of a new wsync Session. They
// need not be on the box root claim: they are read on boxd's disk.
func (b *Backend) openWorkspace(spec backend.SessionSpec) (*workspace, error) {
	pol := mounts.Policy{Roots: b.opts.AllowedMountRoots(), HostRoot: b.opts.HostRoot()}
	if spec.HostPath != "" {
		if err := pol.CheckBlocked(spec.HostPath); err != nil {
			return nil, err
		}
	}
	srcs, err := mounts.Prepare(mounts.SpecWants(spec), pol)
	if err != nil {
		return nil, err
	}
	defer srcs.Close()
	trees, done, err := wsync.TreesOf(srcs)
	if err != nil {
		return nil, backendErr(fmt.Errorf("open the workspace of session %s: %w", spec.PhysicalID, err))
	}
	defer done()
	sess, err := wsync.NewSession(trees, wsync.Options{Limits: b.set.SyncLimits, Logger: b.log})
	if err != nil {
		return nil, backendErr(fmt.Errorf("workspace of session %s: %w", spec.PhysicalID, err))
	}
	return &workspace{sess: sess}, nil
}

// topMountPaths are the mount paths of ms that lie under no other one, sorted: each gets
// an emptyDir in a cold isolated Pod (nested ones are directories inside it).
func topMountPaths(ms []backend.Mount) []string {
	ps := make([]string, 0, len(ms))
	for _, m := range ms {
		ps = append(ps, path.Clean(m.MountPath))
	}
	sort.Strings(ps)
	var out []string
	for _, p := range ps {
		if len(out) > 0 {
			last := out[len(out)-1]
			if p == last || strings.HasPrefix(p, last+"/") || last == "/" {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

// addWorkspaceDirs gives the sandbox container an emptyDir at each of dirs.
func addWorkspaceDirs(pod *corev1.Pod, dirs []string) {
	for i, d := range dirs {
		name := fmt.Sprintf("workspace-%d", i)
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		for j := range pod.Spec.Containers {
			if pod.Spec.Containers[j].Name == SandboxContainer {
				pod.Spec.Containers[j].VolumeMounts = append(pod.Spec.Containers[j].VolumeMounts, corev1.VolumeMount{Name: name, MountPath: d})
			}
		}
	}
}

// buildIsolatedPod is the sandbox Pod of spec in isolated mode: buildPod without any claim
// subPath and without node pinning (nothing of the claim is mounted), plus the emptyDir
// workspaces.
func buildIsolatedPod(spec backend.SessionSpec, set Settings, id podIdentity) (*corev1.Pod, error) {
	id.Node = ""
	pod, err := buildPod(spec, nil, set, id)
	if err != nil {
		return nil, err
	}
	addWorkspaceDirs(pod, topMountPaths(spec.Mounts()))
	return pod, nil
}

// startIsolated is Start in isolated mode: the workspace is opened (checked) first, then a
// warm Pod of a matching pool shape is claimed, or a cold one created.
func (b *Backend) startIsolated(ctx context.Context, spec backend.SessionSpec) (backend.Handle, error) {
	ws, err := b.openWorkspace(spec)
	if err != nil {
		return backend.Handle{}, err
	}
	keep := false
	defer func() {
		if !keep {
			ws.sess.Close()
		}
	}()
	if spec.PidsLimit > 0 {
		b.log.Info(fmt.Sprintf("LangBot Box kubernetes backend: pids_limit=%d of session %s is not enforced per Pod (Kubernetes has only the kubelet's node-wide PID limit)", spec.PidsLimit, spec.PhysicalID))
	}
	if b.pool != nil {
		if name, ok := b.pool.claim(ctx, spec); ok {
			b.ws.put(name, ws)
			keep = true
			b.log.Info(fmt.Sprintf("LangBot Box backend start_session: backend=kubernetes session_id=%s pod=%s/%s image=%s warm=true", spec.PhysicalID, b.set.Namespace, name, spec.Image))
			return backend.Handle{ID: name}, nil
		}
		if err := ctx.Err(); err != nil {
			return backend.Handle{}, err
		}
	}
	owner, err := b.ownerRef(ctx)
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	name := PodName(spec.PhysicalID)
	pod, err := buildIsolatedPod(spec, b.set, podIdentity{Name: name, Namespace: b.set.Namespace, InstanceID: b.opts.InstanceID, Scope: b.opts.Scope, Owner: owner})
	if err != nil {
		return backend.Handle{}, backendErr(err)
	}
	b.log.Info(fmt.Sprintf("LangBot Box backend start_session: backend=kubernetes session_id=%s pod=%s/%s image=%s workspace=isolated", spec.PhysicalID, b.set.Namespace, name, spec.Image))
	if err := b.startPod(ctx, pod); err != nil {
		return backend.Handle{}, err
	}
	b.ws.put(name, ws)
	keep = true
	return backend.Handle{ID: name}, nil
}

// startPod creates pod, waits until its sandbox container runs and connects its agent,
// bounded by start_timeout_sec; on failure the Pod is deleted.
func (b *Backend) startPod(ctx context.Context, pod *corev1.Pod) error {
	sctx, cancel := context.WithTimeout(ctx, b.set.StartTimeout)
	defer cancel()
	created, err := b.cs.CoreV1().Pods(b.set.Namespace).Create(sctx, pod, metav1.CreateOptions{})
	if err != nil {
		return backendErr(fmt.Errorf("create pod %s: %w", pod.Name, err))
	}
	fail := func(err error) error {
		b.forget(pod.Name)
		if derr := b.deletePod(context.WithoutCancel(ctx), pod.Name); derr != nil {
			b.log.Warn(fmt.Sprintf("delete pod %s after a failed start: %v", pod.Name, derr))
		}
		return backendErr(err)
	}
	if err := b.waitRunning(sctx, created); err != nil {
		return fail(fmt.Errorf("start pod %s: %w", pod.Name, err))
	}
	if _, err := b.agentFor(sctx, pod.Name); err != nil {
		return fail(err)
	}
	if b.isolated() {
		b.prespawn(pod.Name)
	}
	return nil
}

// workspaceOf returns the workspace of an isolated sandbox; a Pod boxd re-adopted after a
// restart gets a new one from the spec annotation (its first push compares everything: the
// sandbox keeps what it holds, differing files are reported as conflicts).
func (b *Backend) workspaceOf(ctx context.Context, pod string) (*workspace, error) {
	if ws := b.ws.get(pod); ws != nil {
		return ws, nil
	}
	gctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	p, err := b.cs.CoreV1().Pods(b.set.Namespace).Get(gctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read pod %s for its workspace: %w", pod, err)
	}
	spec, ok := specFromPod(p)
	if !ok {
		return nil, fmt.Errorf("pod %s has no session spec boxd can rebuild its workspace from", pod)
	}
	ws, err := b.openWorkspace(spec)
	if err != nil {
		return nil, err
	}
	b.ws.mu.Lock()
	if cur := b.ws.byPod[pod]; cur != nil {
		b.ws.mu.Unlock()
		ws.sess.Close()
		return cur, nil
	}
	b.ws.mu.Unlock()
	b.ws.put(pod, ws)
	return ws, nil
}

// startSync starts `boxagent sync` in the Pod through its agent client c.
func (w *workspaces) startSync(ctx context.Context, c *agent.Client, pod string, sp *spare) {
	defer close(sp.ready)
	argv := w.syncArgv
	if argv == nil {
		argv = []string{AgentPath, wsync.AgentSubcommand}
	}
	p, err := c.Start(ctx, agent.Command{Argv: argv})
	if err != nil {
		if errors.Is(err, agent.ErrGone) {
			sp.err = fmt.Errorf("workspace sync in pod %s: %w: %v", pod, backend.ErrNotStarted, err)
		} else {
			sp.err = fmt.Errorf("start boxagent sync in pod %s: %w", pod, err)
		}
		return
	}
	sp.p, sp.stderr, sp.drained = p, &agent.HeadBuffer{Limit: 4 << 10}, make(chan struct{})
	go func() {
		_, _ = io.Copy(sp.stderr, p.Stderr())
		close(sp.drained)
	}()
}

// prespawn starts the Pod's spare `boxagent sync` in the background when it has none (and
// its agent is connected; nothing happens otherwise).
func (b *Backend) prespawn(pod string) {
	b.mu.Lock()
	s := b.sandboxes[pod]
	b.mu.Unlock()
	if s == nil || !s.mu.TryLock() { // connecting: the next dial starts its own
		return
	}
	c := s.client
	s.mu.Unlock()
	if c == nil || c.Err() != nil {
		return
	}
	if sp := b.ws.newSpare(pod); sp != nil {
		go b.ws.startSync(context.Background(), c, pod, sp)
	}
}

// syncDialer gives each exchange a `boxagent sync` in the Pod: the spare when there is a
// live one, else one started now; then a new spare is started for the next exchange. A Pod
// that is gone is backend.ErrNotStarted (wrapped), as for an exec.
func (b *Backend) syncDialer(pod string) wsync.Dialer {
	return func(ctx context.Context) (*wsync.Conn, error) {
		c, err := b.agentFor(ctx, pod)
		if err != nil {
			return nil, b.agentErr(ctx, "workspace sync", pod, err)
		}
		sp := b.ws.takeSpare(pod)
		if sp != nil {
			select {
			case <-sp.ready:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if sp.err != nil || sp.exited() {
				sp = nil // killed in the sandbox, or its start failed: a new one
			}
		}
		if sp == nil {
			sp = &spare{ready: make(chan struct{})}
			b.ws.startSync(ctx, c, pod, sp)
			if sp.err != nil {
				return nil, sp.err
			}
		}
		defer b.prespawn(pod)
		p, stderr, drained := sp.p, sp.stderr, sp.drained
		return &wsync.Conn{Stdin: p.Stdin(), Stdout: p.Stdout(), Done: func(failed bool) error {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncDoneTimeout)
			defer cancel()
			if failed {
				_ = p.Signal(dctx, syscall.SIGKILL)
			}
			code, err := p.Wait(dctx)
			if err == nil {
				select {
				case <-drained:
				case <-dctx.Done():
				}
			}
			switch {
			case err != nil:
				return fmt.Errorf("boxagent sync in pod %s: %w", pod, err)
			case code != 0 && !failed:
				return fmt.Errorf("boxagent sync in pod %s exited with %d: %s", pod, code, strings.TrimSpace(stderr.String()))
			}
			return nil
		}}, nil
	}
}

// pushIsolated sends what changed on boxd's side to the sandbox (before a command or a
// managed process). A sandbox that is gone is backend.ErrNotStarted; a limit is the
// *backend.Error wsync made.
func (b *Backend) pushIsolated(ctx context.Context, pod string) (*wsync.Report, error) {
	ws, err := b.workspaceOf(ctx, pod)
	if err != nil {
		if errors.Is(err, backend.ErrNotStarted) {
			return nil, err
		}
		var be *backend.Error
		var ve *backend.ValidationError
		if errors.As(err, &be) || errors.As(err, &ve) {
			return nil, err
		}
		if !b.podRunning(context.WithoutCancel(ctx), pod) {
			return nil, fmt.Errorf("workspace of pod %s: %w: %v", pod, backend.ErrNotStarted, err)
		}
		return nil, backendErr(err)
	}
	rep, err := ws.sess.Push(ctx, b.syncDialer(pod))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return rep, nil
}

// execIsolated is Exec in isolated mode: push, the command, pull, then the result. The pull
// runs after a command that was cancelled too (its timeout), bounded by pullAfterCancel;
// it is skipped only when the Pod is gone.
func (b *Backend) execIsolated(ctx context.Context, h backend.Handle, req backend.ExecRequest) (backend.ExecResult, error) {
	if _, err := b.agentFor(ctx, h.ID); err != nil {
		return backend.ExecResult{}, b.agentErr(ctx, "exec", h.ID, err)
	}
	pushed, err := b.pushIsolated(ctx, h.ID)
	if err != nil {
		return backend.ExecResult{}, err
	}
	res, execErr := b.exec(ctx, h, req)
	if errors.Is(execErr, backend.ErrNotFound) {
		return res, execErr
	}
	pctx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), pullAfterCancel)
		defer cancel()
	}
	ws := b.ws.get(h.ID)
	if ws == nil { // Stop ran meanwhile
		return res, execErr
	}
	pulled, perr := ws.sess.Pull(pctx, b.syncDialer(h.ID))
	if perr != nil {
		if execErr != nil {
			b.log.Warn(fmt.Sprintf("LangBot Box workspace sync after a failed exec: backend=kubernetes pod=%s: %v", h.ID, perr))
			return res, execErr
		}
		if errors.Is(perr, backend.ErrNotFound) {
			return backend.ExecResult{}, fmt.Errorf("exec in pod %s: %w: the pod went before its workspace was copied back: %v", h.ID, backend.ErrNotFound, perr)
		}
		return backend.ExecResult{}, perr
	}
	if n := syncNotice(pushed, pulled); n != "" {
		b.log.Warn(fmt.Sprintf("LangBot Box workspace sync notice: backend=kubernetes pod=%s: %s", h.ID, strings.ReplaceAll(strings.TrimSpace(n), "\n", "; ")))
		if req.Stderr != nil {
			_, _ = io.WriteString(req.Stderr, "\n"+n)
		}
	}
	return res, execErr
}

// syncNotice is the short text appended to a command's stderr when a sync kept both
// versions of a path or could not apply something ("" otherwise).
func syncNotice(reps ...*wsync.Report) string {
	var lines []string
	for _, r := range reps {
		if r == nil {
			continue
		}
		for _, l := range strings.Split(r.Notice(), "\n") {
			if l != "" {
				lines = append(lines, l)
			}
		}
	}
	if len(lines) > maxNoticeLines {
		more := len(lines) - maxNoticeLines
		lines = append(lines[:maxNoticeLines], fmt.Sprintf("[boxd workspace sync] … and %d more (see boxd's log)", more))
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
