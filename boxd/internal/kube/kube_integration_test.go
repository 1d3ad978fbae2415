//go:build integration_kube

// The kubernetes backend against the local cluster's real node (hack/cluster.sh: kubelet +
// containerd + runc, images imported, no registry). Run by ci/40-e2e.sh:
//
//	KUBECONFIG=$(bash hack/cluster.sh kubeconfig) go test -count=1 -p 1 -tags integration_kube ./boxd/internal/kube/
//
// BOXD_KUBE_AGENT_IMAGE names the boxd image on the node (default: the image the cluster
// loads, ghcr.io/langbot-k8s/boxd:0.1.0); BOXD_KUBE_SANDBOX_IMAGE the sandbox image
// (default langbot-k8s/sandbox:local, busybox); BOXD_KUBE_RUNTIME_CLASS runs every sandbox with
// that RuntimeClass (e.g. gvisor). Every test works in a namespace of its own.
package kube

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/config"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type cluster struct {
	t    *testing.T
	rest *rest.Config
	cs   kubernetes.Interface
	ns   string
	// claimDir is the box root claim's directory on this machine: the provisioner's hostPath,
	// i.e. what boxd would see at the claim's mount path.
	claimDir string
}

func rnd() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newCluster creates a namespace of the test's own with a box root claim, bound, and its
// default service account, and removes the namespace afterwards.
func newCluster(t *testing.T) *cluster {
	t.Helper()
	kc := os.Getenv("KUBECONFIG")
	require.NotEmpty(t, kc, "KUBECONFIG must point at the local cluster (bash hack/cluster.sh up; ci/40-e2e.sh sets it)")
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	c := &cluster{t: t, rest: cfg, cs: cs, ns: "kbt-" + rnd()}
	ctx := context.Background()
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.ns}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), c.ns, metav1.DeleteOptions{})
	})
	_, err = cs.CoreV1().PersistentVolumeClaims(c.ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "box-root"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	c.poll("claim box-root bound and the default service account", 2*time.Minute, func(ctx context.Context) (bool, error) {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(c.ns).Get(ctx, "box-root", metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			return false, nil
		}
		if _, err := cs.CoreV1().ServiceAccounts(c.ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false, nil
		}
		pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil || pv.Spec.HostPath == nil {
			return false, err
		}
		c.claimDir = pv.Spec.HostPath.Path
		return true, nil
	})
	require.NoError(t, os.MkdirAll(c.claimDir, 0o755))
	return c
}

func (c *cluster) poll(what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	c.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, cond)
	require.NoError(c.t, err, "waiting for %s", what)
}

// backend builds a kubernetes backend on the test namespace; extra overrides box.kubernetes keys.
func (c *cluster) backend(instance, scope string, extra map[string]any) *Backend {
	c.t.Helper()
	return c.backendOn("", instance, scope, extra)
}

// backendOn is backend with BOXD_NODE_NAME set to node.
func (c *cluster) backendOn(node, instance, scope string, extra map[string]any) *Backend {
	c.t.Helper()
	raw := map[string]any{"namespace": c.ns, "box_root": map[string]any{"claim_name": "box-root", "mount_path": c.claimDir},
		"agent_image": envOr("BOXD_KUBE_AGENT_IMAGE", DefaultAgentImage), "image_pull_policy": "IfNotPresent",
		// The real node: the cluster's kwok nodes only pretend to run Pods.
		"node_selector": map[string]any{"lbk.dev/real": "true"}}
	if rc := os.Getenv("BOXD_KUBE_RUNTIME_CLASS"); rc != "" {
		raw["runtime_class_name"] = rc
	}
	for k, v := range extra {
		raw[k] = v
	}
	set, err := ParseSettings(raw, "")
	require.NoError(c.t, err)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	RouteKlog(log) // as boxd does: client-go's noise about streams boxd closed is debug
	b, err := New(Options{InstanceID: instance, Scope: scope, Settings: set, Rest: c.rest, NodeName: node,
		AllowedMountRoots: func() []string { return []string{c.claimDir} }, HostRoot: func() string { return c.claimDir },
		Logger: log})
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = b.Close() })
	return b
}

func (c *cluster) pods(selector string) []corev1.Pod {
	c.t.Helper()
	l, err := c.cs.CoreV1().Pods(c.ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	require.NoError(c.t, err)
	return l.Items
}

func (c *cluster) waitNoPods(selector string) {
	c.t.Helper()
	c.poll("no pods "+selector, time.Minute, func(ctx context.Context) (bool, error) {
		return len(c.pods(selector)) == 0, nil
	})
}

func sandboxImage() string { return envOr("BOXD_KUBE_SANDBOX_IMAGE", "langbot-k8s/sandbox:local") }

func spec(id string) backend.SessionSpec {
	return backend.SessionSpec{PhysicalID: id, Image: sandboxImage(), CPUs: 0.5, MemoryMB: 128, PidsLimit: 64}
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, ctx context.Context, b *Backend, h backend.Handle, script string, env ...backend.EnvVar) (result, error) {
	t.Helper()
	var out, errb bytes.Buffer
	res, err := b.Exec(ctx, h, backend.ExecRequest{Argv: []string{"sh", "-c", script}, Env: env, Stdout: &out, Stderr: &errb})
	return result{res.ExitCode, out.String(), errb.String()}, err
}

func TestKubePodSecurityAndExec(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	ctx := context.Background()
	ws := filepath.Join(c.claimDir, "default", "tenants", "a")
	s := spec("ws-0123456789abcdef01234567-g1-sec")
	s.HostPath, s.HostPathMode, s.MountPath, s.ReadOnlyRootfs = ws, backend.MountRW, "/workspace", true
	skill := filepath.Join(c.claimDir, "skills", "tenants", "a", "hello")
	require.NoError(t, os.MkdirAll(skill, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(skill, "SKILL.md"), []byte("hello skill\n"), 0o644))
	s.ExtraMounts = []backend.Mount{{HostPath: skill, MountPath: "/workspace/.skills/hello", Mode: backend.MountRO}}

	h, err := b.Start(ctx, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop(context.Background(), h) })

	p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, h.ID, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, corev1.PodRunning, p.Status.Phase)
	assert.Equal(t, "lbk-node", p.Spec.NodeName, "runs on the real node")
	assert.False(t, *p.Spec.AutomountServiceAccountToken)
	assert.False(t, *p.Spec.EnableServiceLinks)
	assert.Equal(t, corev1.RestartPolicyNever, p.Spec.RestartPolicy)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, p.Spec.SecurityContext.SeccompProfile.Type)
	sc := p.Spec.Containers[0].SecurityContext
	assert.False(t, *sc.AllowPrivilegeEscalation)
	assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
	assert.True(t, *sc.ReadOnlyRootFilesystem)
	assert.Equal(t, "true", p.Labels[LabelBox])
	assert.Equal(t, s.PhysicalID, p.Labels[LabelSession])

	// What the kernel enforces in the running sandbox: no capabilities, no_new_privs, a
	// read-only root with a writable /tmp, no service account token.
	r, err := run(t, ctx, b, h, `grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; touch /rootfile 2>/dev/null && echo root-writable; `+
		`touch /tmp/x && echo tmp-ok; ls /var/run/secrets/kubernetes.io 2>&1 | head -1`)
	require.NoError(t, err)
	assert.Contains(t, r.stdout, "CapEff:\t0000000000000000")
	assert.Contains(t, r.stdout, "CapBnd:\t0000000000000000")
	assert.Contains(t, r.stdout, "NoNewPrivs:\t1")
	assert.NotContains(t, r.stdout, "root-writable")
	assert.Contains(t, r.stdout, "tmp-ok")
	assert.Contains(t, r.stdout, "No such file or directory")

	// The workspace is the claim's directory: a file written on boxd's side is read in the
	// sandbox and one written there appears here; the skill is read-only.
	require.NoError(t, os.WriteFile(filepath.Join(ws, "in.txt"), []byte("from boxd\n"), 0o644))
	r, err = run(t, ctx, b, h, `cat /workspace/in.txt; echo from-sandbox > /workspace/out.txt; cat /workspace/.skills/hello/SKILL.md; `+
		`touch /workspace/.skills/hello/x 2>/dev/null || echo skill-ro; echo err >&2; exit 3`)
	require.NoError(t, err)
	assert.Equal(t, 3, r.code)
	assert.Equal(t, "from boxd\nhello skill\nskill-ro\n", r.stdout)
	assert.Equal(t, "err\n", r.stderr)
	got, err := os.ReadFile(filepath.Join(ws, "out.txt"))
	require.NoError(t, err)
	assert.Equal(t, "from-sandbox\n", string(got))

	// Environment in order, through the agent.
	r, err = run(t, ctx, b, h, `echo "$B $A"`, backend.EnvVar{Key: "A", Value: "1"}, backend.EnvVar{Key: "B", Value: "2"})
	require.NoError(t, err)
	assert.Equal(t, "2 1\n", r.stdout)

	// A cancelled command is killed with its process group (a background child included).
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = run(t, cctx, b, h, `sleep 1001 & sleep 1002`)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	r, err = run(t, ctx, b, h, `ps -o args | grep -c '^sleep 100[12]' || true`)
	require.NoError(t, err)
	assert.Equal(t, "0\n", r.stdout, "the command's process group is gone")

	// The agent daemon is the sandbox's init.
	r, err = run(t, ctx, b, h, `tr '\0' ' ' < /proc/1/cmdline`)
	require.NoError(t, err)
	assert.Equal(t, "/.boxd-agent/boxagent daemon --socket @boxd-agent ", r.stdout)
}

func TestKubeMountOutsideClaimRefused(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	outside := t.TempDir()
	require.NoError(t, os.Symlink(outside, filepath.Join(c.claimDir, "link")))
	s := spec("ws-0123456789abcdef01234567-g1-esc")
	s.HostPath, s.HostPathMode, s.MountPath = filepath.Join(c.claimDir, "link", "ws"), backend.MountRW, "/workspace"
	_, err := b.Start(context.Background(), s)
	var ve *backend.ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Contains(t, err.Error(), "outside allowed_mount_roots")
	_, statErr := os.Stat(filepath.Join(outside, "ws"))
	assert.True(t, os.IsNotExist(statErr), "nothing was created outside the claim")
	assert.Empty(t, c.pods(LabelBox+"=true"))
}

func TestKubeDeleteSession(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	ctx := context.Background()
	h, err := b.Start(ctx, spec("ws-0123456789abcdef01234567-g1-del"))
	require.NoError(t, err)
	require.True(t, b.Alive(ctx, h))
	require.NoError(t, b.Stop(ctx, h))
	c.waitNoPods(LabelBox + "=true")
	assert.False(t, b.Alive(ctx, h))
	require.NoError(t, b.Stop(ctx, h), "stop is idempotent")
	_, err = run(t, ctx, b, h, "true")
	assert.ErrorIs(t, err, backend.ErrNotStarted)
}

// TestKubeOutOfBandDeletion: the session layer recreates a Pod deleted behind boxd's back on
// the next exec, and runs the command there.
func TestKubeOutOfBandDeletion(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	mgr := session.NewManager(b, config.DefaultLimits, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { mgr.Release(context.Background()) })
	ctx := context.Background()
	sp := session.Spec{Cmd: "hostname", Workdir: "/", TimeoutSec: 60, Network: "off", Image: sandboxImage(), HostPathMode: "rw",
		MountPath: "/workspace", CPUs: 0.5, MemoryMB: 128, PidsLimit: 64}
	physical := "ws-0123456789abcdef01234567-g1-oob"
	first, err := mgr.Exec(ctx, physical, sp)
	require.NoError(t, err)
	require.Equal(t, 0, first.ExitCode, first.Stderr)
	pods := c.pods(LabelBox + "=true")
	require.Len(t, pods, 1)
	old := pods[0].Name
	assert.Equal(t, old, first.Stdout, "stdout is trimmed as on Docker")

	require.NoError(t, c.cs.CoreV1().Pods(c.ns).Delete(ctx, old, metav1.DeleteOptions{}))
	c.poll("the deleted pod gone and its agent stream closed", time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, old, metav1.GetOptions{})
		return apierrors.IsNotFound(err) && !b.connected(old), nil
	})
	second, err := mgr.Exec(ctx, physical, sp)
	require.NoError(t, err)
	require.Equal(t, 0, second.ExitCode, second.Stderr)
	assert.NotEqual(t, old, second.Stdout)
	pods = c.pods(LabelBox + "=true")
	require.Len(t, pods, 1)
	assert.Equal(t, pods[0].Name, second.Stdout, "the command ran in the recreated pod")
}

// TestKubeRecover: a restarted boxd re-adopts the running persistent Pods of its scope,
// removes the others of its scope, and leaves other scopes alone.
func TestKubeRecover(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	first := c.backend("aaaaaaaaaaaa", "s1", nil)
	persistent := spec("ws-0123456789abcdef01234567-g1-keep")
	persistent.Persistent = true
	hp, err := first.Start(ctx, persistent)
	require.NoError(t, err)
	_, err = first.Start(ctx, spec("ws-0123456789abcdef01234567-g1-drop"))
	require.NoError(t, err)
	other := c.backend("cccccccccccc", "s2", nil)
	ho, err := other.Start(ctx, spec("ws-0123456789abcdef01234567-g1-other"))
	require.NoError(t, err)
	_, err = run(t, ctx, first, hp, "echo before > /tmp/marker")
	require.NoError(t, err)
	require.NoError(t, first.Close()) // boxd goes away; its Pods stay

	restarted := c.backend("bbbbbbbbbbbb", "s1", nil)
	adopted, removed, err := restarted.Recover(ctx, "bbbbbbbbbbbb")
	require.NoError(t, err)
	assert.Equal(t, 1, removed)
	require.Len(t, adopted, 1)
	assert.Equal(t, hp, adopted[0].Handle)
	assert.Equal(t, persistent, adopted[0].Spec)
	c.poll("the ephemeral pod removed", time.Minute, func(ctx context.Context) (bool, error) {
		return len(c.pods(LabelScope+"=s1")) == 1, nil
	})
	r, err := run(t, ctx, restarted, hp, "cat /tmp/marker")
	require.NoError(t, err)
	assert.Equal(t, "before\n", r.stdout, "the adopted pod is the same sandbox")
	assert.True(t, other.Alive(ctx, ho), "another scope's pod is untouched")
	var names []string
	for _, p := range c.pods(LabelBox + "=true") {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	want := []string{hp.ID, ho.ID}
	sort.Strings(want)
	assert.Equal(t, want, names)
}

func TestKubeStartFailures(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		extra map[string]any
		image string
		want  []string
	}{
		{name: "unpullable image", image: "langbot-k8s/does-not-exist:never", extra: map[string]any{"image_pull_policy": "Never"},
			want: []string{"kubernetes backend error", "ErrImageNeverPull", "does-not-exist"}},
		{name: "unschedulable", image: sandboxImage(), extra: map[string]any{"node_selector": map[string]any{"lbk.dev/no-such-pool": "x"}, "schedule_timeout_sec": 3},
			want: []string{"kubernetes backend error", "unschedulable", "didn't match Pod's node affinity/selector"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := c.backend("0123456789ab", "", tt.extra)
			s := spec("ws-0123456789abcdef01234567-g1-fail")
			s.Image = tt.image
			_, err := b.Start(ctx, s)
			var be *backend.Error
			require.ErrorAs(t, err, &be)
			for _, w := range tt.want {
				assert.Contains(t, be.Message, w)
			}
			assert.Empty(t, c.pods(LabelBox+"=true"), "nothing is left behind")
		})
	}
}

// TestKubeExecLatency measures create-to-first-exec and exec `true` through the agent on the
// real node, and checks every command succeeded (the figures are logged, not judged).
func TestKubeExecLatency(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	ctx := context.Background()
	t0 := time.Now()
	h, err := b.Start(ctx, spec("ws-0123456789abcdef01234567-g1-lat"))
	require.NoError(t, err)
	started := time.Since(t0)
	t.Cleanup(func() { _ = b.Stop(context.Background(), h) })
	r, err := run(t, ctx, b, h, "true")
	require.NoError(t, err)
	require.Equal(t, 0, r.code)
	firstExec := time.Since(t0)
	const n = 200
	d := make([]time.Duration, 0, n)
	for range n {
		s := time.Now()
		res, err := b.Exec(ctx, h, backend.ExecRequest{Argv: []string{"true"}})
		d = append(d, time.Since(s))
		require.NoError(t, err)
		require.Equal(t, 0, res.ExitCode)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })

	// The reference: a bare Pod of the same image (no init container, no agent) from create
	// to its container running, observed the same way (waitRunning's watch).
	raw := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "raw-" + rnd(), Namespace: c.ns},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, NodeSelector: map[string]string{"lbk.dev/real": "true"},
			TerminationGracePeriodSeconds: func() *int64 { var z int64; return &z }(),
			Containers: []corev1.Container{{Name: SandboxContainer, Image: sandboxImage(), ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-c", KeepAlive}}}}}
	t1 := time.Now()
	created, err := c.cs.CoreV1().Pods(c.ns).Create(ctx, raw, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, b.waitRunning(ctx, created))
	rawRunning := time.Since(t1)
	t.Logf("kubernetes backend on the real node: raw pod create to running %s; session create to running+agent %s, create to first exec %s (%.2fx raw); exec `true` through the agent (n=%d) p50 %s p99 %s",
		rawRunning.Round(time.Millisecond), started.Round(time.Millisecond), firstExec.Round(time.Millisecond),
		float64(firstExec)/float64(rawRunning), n, d[n/2], d[n*99/100])
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	require.NoError(t, err)
	return l
}

// count runs a pgrep-like count of the sandbox's processes whose command line starts with
// prefix (busybox ps).
func count(t *testing.T, b *Backend, h backend.Handle, prefix string) string {
	t.Helper()
	r, err := run(t, context.Background(), b, h, "ps -o args | grep -c '^"+prefix+"' || true")
	require.NoError(t, err)
	return strings.TrimSpace(r.stdout)
}

// TestKubeManagedProcess: managed processes run under the Pod's agent daemon with stdin,
// stdout, stderr, exit codes and signals, with the Docker backend's exit code rules.
func TestKubeManagedProcess(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	ctx := context.Background()
	s := spec("ws-0123456789abcdef01234567-g1-mcp")
	s.Persistent = true
	h, err := b.Start(ctx, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Stop(context.Background(), h) })

	t.Run("stdin stdout round trip, exit on stdin close", func(t *testing.T) {
		p, err := b.StartProcess(ctx, h, backend.ProcessRequest{
			Argv: []string{"sh", "-lc", `echo "boot $GREETING" >&2; while read -r l; do echo "got:$l"; done; exit 3`},
			Env:  []backend.EnvVar{{Key: "GREETING", Value: "hi"}}})
		require.NoError(t, err)
		assert.Equal(t, "boot hi\n", readLine(t, bufio.NewReader(p.Stderr())))
		out := bufio.NewReader(p.Stdout())
		for _, msg := range []string{`{"jsonrpc":"2.0","id":1}`, "second line"} {
			_, err = io.WriteString(p.Stdin(), msg+"\n")
			require.NoError(t, err)
			assert.Equal(t, "got:"+msg+"\n", readLine(t, out))
		}
		require.NoError(t, p.Stdin().Close())
		code, err := p.Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3, code)
		_, err = p.Stdin().Write([]byte("late\n"))
		assert.ErrorIs(t, err, io.ErrClosedPipe)
	})

	cases := []struct {
		name   string
		script string
		stop   func(backend.Process) error
		want   int
	}{
		{"terminate", "echo ready; exec sleep 300", func(p backend.Process) error { return p.Terminate(ctx) }, -15},
		{"kill", "echo ready; exec sleep 300", func(p backend.Process) error { return p.Kill(ctx) }, -9},
		{"kill reaches children", "sleep 299 & echo ready; exec sleep 300", func(p backend.Process) error { return p.Kill(ctx) }, -9},
		{"kill after a TERM trap", `trap 'echo ignored' TERM; echo ready; while true; do sleep 298; done`, func(p backend.Process) error {
			require.NoError(t, p.Terminate(ctx))
			return p.Kill(ctx)
		}, -9},
		{"exit status 137 without a signal from boxd stays 137", "echo ready; read x; exit 137", func(p backend.Process) error {
			_, err := io.WriteString(p.Stdin(), "go\n")
			return err
		}, 137},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := b.StartProcess(ctx, h, backend.ProcessRequest{Argv: []string{"sh", "-lc", tc.script}})
			require.NoError(t, err)
			go func() { _, _ = io.Copy(io.Discard, p.Stderr()) }()
			stdout := bufio.NewReader(p.Stdout())
			require.Equal(t, "ready\n", readLine(t, stdout))
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			require.NoError(t, tc.stop(p))
			code, err := p.Wait(ctx)
			require.NoError(t, err)
			assert.Equal(t, tc.want, code)
			assert.Equal(t, "0", count(t, b, h, "sleep 29[89]"), "nothing of the process is left")
		})
	}

	t.Run("session removal ends a process with -9", func(t *testing.T) {
		h2, err := b.Start(ctx, spec("ws-0123456789abcdef01234567-g1-gone"))
		require.NoError(t, err)
		p, err := b.StartProcess(ctx, h2, backend.ProcessRequest{Argv: []string{"sh", "-lc", "echo ready; exec sleep 300"}})
		require.NoError(t, err)
		require.Equal(t, "ready\n", readLine(t, bufio.NewReader(p.Stdout())))
		require.NoError(t, b.Stop(ctx, h2))
		code, err := p.Wait(ctx)
		require.NoError(t, err)
		assert.Equal(t, -9, code)
	})
}

// dropStream closes boxd's current exec stream to the Pod's agent, as an API server restart
// or an idle timeout does.
func dropStream(t *testing.T, b *Backend, pod string) {
	t.Helper()
	b.mu.Lock()
	s := b.sandboxes[pod]
	b.mu.Unlock()
	require.NotNil(t, s)
	s.smu.Lock()
	st := s.stream
	s.smu.Unlock()
	require.NotNil(t, st)
	st.close()
	<-st.done
}

// killRelay is a command that kills every `boxagent connect` relay of the sandbox from inside
// (the exec stream it runs on included: it completes through the re-attach).
const killRelay = `for d in /proc/[0-9]*; do if tr '\0' ' ' < $d/cmdline 2>/dev/null | grep -q '^/.boxd-agent/boxagent connect'; then kill -9 ${d#/proc/}; fi; done; echo killed`

// TestKubeReattachAfterDroppedStream: a managed process (an MCP-style echo server, driven
// through the session layer as the relay drives it) and a running box_exec survive the agent
// stream being dropped for real, by boxd's side closing it or by its relay process being
// killed inside the sandbox; boxd opens a new exec stream and re-attaches both.
func TestKubeReattachAfterDroppedStream(t *testing.T) {
	c := newCluster(t)
	b := c.backend("0123456789ab", "", nil)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr := session.NewManager(b, config.DefaultLimits, log)
	t.Cleanup(func() { mgr.Release(context.Background()) })
	ctx := context.Background()
	physical := "ws-0123456789abcdef01234567-g1-drop"
	sp := session.Spec{Cmd: "true", Workdir: "/", TimeoutSec: 60, Network: "off", Image: sandboxImage(), HostPathMode: "rw",
		MountPath: "/workspace", CPUs: 0.5, MemoryMB: 128, PidsLimit: 64, Persistent: true}
	res, err := mgr.Exec(ctx, physical, sp)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, res.Stderr)
	sess, err := mgr.Get(physical)
	require.NoError(t, err)
	pod := sess.Handle.ID

	p, err := mgr.StartProcess(ctx, physical, session.ProcessSpec{ProcessID: "echo", Command: "sh",
		Args: []string{"-c", `echo "pid $$"; while read -r l; do echo "echo:$l"; done`}, Cwd: "/"})
	require.NoError(t, err)
	pid := <-p.Lines
	require.True(t, strings.HasPrefix(pid, "pid "), pid)
	round := func(msg string) {
		t.Helper()
		_, err := io.WriteString(p.Stdin(), msg+"\n")
		require.NoError(t, err)
		assert.Equal(t, "echo:"+msg, <-p.Lines)
	}
	round(`{"jsonrpc":"2.0","id":0,"method":"initialize"}`)

	drops := []struct {
		name string
		drop func(t *testing.T)
	}{
		{"boxd closes its exec stream", func(t *testing.T) { dropStream(t, b, pod) }},
		{"the relay is killed inside the sandbox", func(t *testing.T) {
			r, err := run(t, ctx, b, sess.Handle, killRelay)
			require.NoError(t, err, "the exec that killed its own stream completes after the re-attach")
			assert.Equal(t, result{0, "killed\n", ""}, r)
		}},
	}
	for i, d := range drops {
		t.Run(d.name, func(t *testing.T) {
			d.drop(t)
			// Written right after the drop: held by boxd until the new stream re-attached.
			round(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i+1))
			r, err := run(t, ctx, b, sess.Handle, "cat /proc/"+strings.TrimPrefix(pid, "pid ")+"/cmdline | tr '\\0' ' '")
			require.NoError(t, err)
			assert.Contains(t, r.stdout, "while read -r l", "the process started first still runs")
			info := p.Info()
			assert.Equal(t, "running", info["status"])
		})
	}
	require.NoError(t, mgr.StopProcess(ctx, physical, "echo"))
	<-p.Done()
	assert.Equal(t, -15, p.Info()["exit_code"])
}

// TestKubeOwnerReferenceAndPinning: sandbox Pods are owned by the chart's ConfigMap (deleting
// it, as helm uninstall does, removes them through the garbage collector); a missing one fails
// the create with the fix; box_root.pin_to_node pins them to BOXD_NODE_NAME.
func TestKubeOwnerReferenceAndPinning(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	root := func(pin bool) map[string]any {
		return map[string]any{"claim_name": "box-root", "mount_path": c.claimDir, "pin_to_node": pin}
	}

	missing := c.backendOn("lbk-node", "0123456789ab", "", map[string]any{"owner_config_map": "no-such-config-map", "box_root": root(true)})
	_, err := missing.Start(ctx, spec("ws-0123456789abcdef01234567-g1-own0"))
	var be *backend.Error
	require.ErrorAs(t, err, &be)
	for _, want := range []string{"owner_config_map " + c.ns + "/no-such-config-map", "not found", `set owner_config_map to ""`} {
		assert.Contains(t, be.Message, want)
	}
	assert.Empty(t, c.pods(LabelBox+"=true"), "nothing is created without the owner")

	cm, err := c.cs.CoreV1().ConfigMaps(c.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "box-sandboxes"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	b := c.backendOn("lbk-node", "0123456789ab", "", map[string]any{"owner_config_map": "box-sandboxes", "box_root": root(true)})
	_, removed, err := b.Recover(ctx, "0123456789ab") // start-up: reads the owner
	require.NoError(t, err)
	assert.Zero(t, removed)
	h, err := b.Start(ctx, spec("ws-0123456789abcdef01234567-g1-own1"))
	require.NoError(t, err)
	p, err := c.cs.CoreV1().Pods(c.ns).Get(ctx, h.ID, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "box-sandboxes", UID: cm.UID}}, p.OwnerReferences)
	assert.Equal(t, "lbk-node", p.Spec.NodeName)
	require.NotNil(t, p.Spec.Affinity)
	assert.Equal(t, []string{"lbk-node"}, p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields[0].Values)

	elsewhere := c.backendOn("no-such-node", "0123456789ab", "", map[string]any{"owner_config_map": "box-sandboxes", "box_root": root(true),
		"schedule_timeout_sec": 3})
	_, err = elsewhere.Start(ctx, spec("ws-0123456789abcdef01234567-g1-own2"))
	require.ErrorAs(t, err, &be)
	assert.Contains(t, be.Message, "unschedulable")
	c.poll("the unschedulable pod removed", time.Minute, func(ctx context.Context) (bool, error) {
		return len(c.pods(LabelBox+"=true")) == 1, nil
	})

	// helm uninstall deletes the ConfigMap: the garbage collector deletes the sandbox Pods.
	require.NoError(t, c.cs.CoreV1().ConfigMaps(c.ns).Delete(ctx, "box-sandboxes", metav1.DeleteOptions{}))
	c.waitNoPods(LabelBox + "=true")
}
