package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/utils/ptr"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube/kubetest"
)

// KubeOptions are the kubernetes rows of a run: boxd's kubernetes backend on the local
// cluster's real node next to raw Pods made through the API the same way.
type KubeOptions struct {
	AgentImage string // the boxd image in the node's containerd (the init container copies boxagent)
	ClaimDir   string // directory of this machine the box root claim is bound to ("" = a new temporary one)
	Sessions   int    // sessions of the concurrent-execs workload
	Execs      int    // execs per session there
}

// Way names of the kubernetes rows.
const (
	wayRawPod    = "raw pod"
	wayKubeAgent = "boxd kubernetes (agent)"
	wayKubeExec  = "per-command kubernetes exec"
)

// RunKube adds the kubernetes rows and targets to rep: session create to first exec (boxd)
// against a raw Pod's create to Running, interleaved; exec `true` through boxd's agent and
// through one Kubernetes exec per command; sessions × execs wall time.
func RunKube(ctx context.Context, o Options, ko KubeOptions, rep *Report) error {
	if ko.ClaimDir == "" {
		dir, err := os.MkdirTemp("", "lbk-bench-")
		if err != nil {
			return fmt.Errorf("create the box root claim directory: %w", err)
		}
		defer os.RemoveAll(dir)
		ko.ClaimDir = dir
	}
	env, err := kubetest.Up(ctx, "boxd-bench", ko.ClaimDir)
	if env != nil {
		defer func() { _ = env.Down(context.WithoutCancel(ctx)) }()
	}
	if err != nil {
		return err
	}
	cfg, _ := json.Marshal(env.BoxConfig(ko.AgentImage))
	b, err := startBoxd(ctx, o.BoxdBinary, o.BoxdLog, "LANGBOT_BOX_CONFIG="+string(cfg))
	if err != nil {
		return fmt.Errorf("start boxd on the kubernetes backend: %w", err)
	}
	defer b.stop()
	c, err := b.dial()
	if err != nil {
		return err
	}
	if _, err := c.call("box_init", map[string]any{"local": map[string]any{"host_root": env.Root, "allowed_mount_roots": []string{env.Root}}}); err != nil {
		return err
	}
	add := rep.add
	spec := func(id string, extra map[string]any) map[string]any {
		m := map[string]any{"session_id": id, "image": o.Image, "timeout_sec": 60}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	raw := &rawPods{env: env, image: o.Image}

	const createWL = "kubernetes: session create to first exec"
	for i := 0; i < o.N; i++ {
		d, name, err := raw.create(ctx)
		if err != nil {
			return err
		}
		add(createWL, wayRawPod+" (create to Running)", d)
		raw.remove(ctx, name)
		sid := fmt.Sprintf("kcold-%d", i)
		t := time.Now()
		if _, err := c.call("box_create_session", spec(sid, nil)); err != nil {
			return err
		}
		if _, err := c.call("box_exec", spec(sid, map[string]any{"cmd": "true"})); err != nil {
			return err
		}
		add(createWL, wayKubeAgent, time.Since(t))
		_, _ = c.call("box_delete_session", map[string]any{"session_id": sid})
	}

	// Exec round trips in a warm session and a warm raw Pod.
	_, warm, err := raw.create(ctx)
	if err != nil {
		return err
	}
	defer raw.remove(ctx, warm)
	if _, err := c.call("box_create_session", spec("kwarm", nil)); err != nil {
		return err
	}
	if _, err := c.call("box_exec", spec("kwarm", map[string]any{"cmd": "true"})); err != nil {
		return err
	}
	const execWL = "kubernetes: exec round trip `true`"
	for i := 0; i < o.N*5; i++ {
		d, err := raw.exec(ctx, warm, []string{"true"})
		if err != nil {
			return err
		}
		add(execWL, wayKubeExec, d)
		t := time.Now()
		if _, err := c.call("box_exec", spec("kwarm", map[string]any{"cmd": "true"})); err != nil {
			return err
		}
		add(execWL, wayKubeAgent, time.Since(t))
	}
	if _, err := c.call("box_shutdown", map[string]any{}); err != nil {
		return err
	}

	l := &concurrentLoad{sessions: ko.Sessions, execs: ko.Execs, boxd: b, spec: spec, add: add, facts: rep.Facts, prefix: "kubernetes: "}
	if err := l.runBoxd(wayKubeAgent, "kconc"); err != nil {
		return err
	}

	rep.target(Target{Name: "kubernetes exec `true` p50 through the agent", Goal: "≤ 5 ms",
		Measured: rep.stats(execWL, wayKubeAgent).P50, Limit: 5})
	rawRun := rep.stats(createWL, wayRawPod+" (create to Running)").P50
	rep.target(Target{Name: "kubernetes create to first exec p50, vs raw Pod create to Running p50 (same run)",
		Goal: fmt.Sprintf("≤ 1.5 × %.0f ms", rawRun), Measured: rep.stats(createWL, wayKubeAgent).P50, Limit: 1.5 * rawRun})
	return runKubeWarm(ctx, o, ko, env, rep)
}

// rawPods makes Pods the way boxd's sandboxes are made (same image, keep-alive command,
// hardening, node), without boxd: the baseline of the kubernetes rows.
type rawPods struct {
	env   *kubetest.Env
	image string
	n     int
}

func (r *rawPods) create(ctx context.Context) (time.Duration, string, error) {
	r.n++
	name := fmt.Sprintf("raw-%d", r.n)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks: ptr.To(false), NodeSelector: map[string]string{kubetest.RealNodeLabel: "true"},
			TerminationGracePeriodSeconds: ptr.To(int64(0)),
			Containers: []corev1.Container{{Name: "sandbox", Image: r.image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command: []string{"sh", "-lc", "while true; do sleep 3600; done"},
				SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false),
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}}}}
	pods := r.env.Client.CoreV1().Pods(r.env.Namespace)
	t := time.Now()
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return 0, "", fmt.Errorf("create raw pod %s: %w", name, err)
	}
	w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: created.ResourceVersion})
	if err != nil {
		return 0, name, fmt.Errorf("watch raw pod %s: %w", name, err)
	}
	defer w.Stop()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		select {
		case <-wctx.Done():
			return 0, name, fmt.Errorf("raw pod %s did not run: %w", name, wctx.Err())
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return 0, name, fmt.Errorf("watch of raw pod %s ended", name)
			}
			if p, isPod := ev.Object.(*corev1.Pod); isPod && p.Status.Phase == corev1.PodRunning {
				return time.Since(t), name, nil
			}
		}
	}
}

func (r *rawPods) remove(ctx context.Context, name string) {
	_ = r.env.Client.CoreV1().Pods(r.env.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
}

// exec is one Kubernetes exec (WebSocket, SPDY when the upgrade is refused) through the API
// server and the kubelet, stdout and stderr drained.
func (r *rawPods) exec(ctx context.Context, pod string, argv []string) (time.Duration, error) {
	t := time.Now()
	req := r.env.Client.CoreV1().RESTClient().Post().Resource("pods").Namespace(r.env.Namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "sandbox", Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(r.env.Rest, http.MethodGet, req.URL().String())
	if err != nil {
		return 0, fmt.Errorf("websocket executor: %w", err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(r.env.Rest, http.MethodPost, req.URL())
	if err != nil {
		return 0, fmt.Errorf("spdy executor: %w", err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return 0, fmt.Errorf("fallback executor: %w", err)
	}
	var out, errb bytes.Buffer
	if err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}); err != nil {
		return 0, fmt.Errorf("exec %v in raw pod %s: %w (stderr %q)", argv, pod, err, errb.String())
	}
	return time.Since(t), nil
}
