//go:build e2e

// Package e2e installs the chart on the project's local Kubernetes cluster (hack/cluster.sh:
// a real node with containerd + the private Docker daemon, and kwok pools) with the pinned helm
// CLI, and checks what a user would: objects accepted, pods scheduled where expected and
// Ready, claims bound, and the Box design working for real.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type env struct {
	t          *testing.T
	cs         kubernetes.Interface
	helm       string
	kubeconfig string
	socket     string // the node's Docker socket path
	repo       string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, helm: os.Getenv("HELM"), kubeconfig: os.Getenv("KUBECONFIG"), socket: strings.TrimPrefix(os.Getenv("DOCKER_HOST"), "unix://")}
	require.NotEmpty(t, e.helm, "HELM must name the pinned helm binary (ci/40-e2e.sh sets it)")
	require.NotEmpty(t, e.kubeconfig, "KUBECONFIG must point at the local cluster (hack/cluster.sh up)")
	require.NotEmpty(t, e.socket, "DOCKER_HOST must be the private dockerd (hack/docker.sh env)")
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	require.NoError(t, err)
	e.cs, err = kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	wd, _ := os.Getwd()
	e.repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	return e
}

func (e *env) chart() string { return filepath.Join(e.repo, "charts", "langbot") }
func (e *env) values(name string) string {
	return filepath.Join(e.repo, "test", "e2e", "values", name)
}

// run executes a command and returns its combined output.
func (e *env) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) helmOK(args ...string) string {
	e.t.Helper()
	out, err := e.run(e.helm, args...)
	require.NoError(e.t, err, "helm %s:\n%s", strings.Join(args, " "), out)
	return out
}

// install installs release in a fresh namespace and registers its removal.
func (e *env) install(release, ns string, wait bool, args ...string) string {
	e.t.Helper()
	base := []string{"install", release, e.chart(), "-n", ns, "--create-namespace", "-f", e.values("standins.yaml")}
	if wait {
		base = append(base, "--wait", "--timeout", "4m")
	}
	// Registered before the install: a failed install (helm leaves the release and the
	// namespace behind) is removed too.
	e.t.Cleanup(func() {
		_, _ = e.run(e.helm, "uninstall", release, "-n", ns, "--wait", "--timeout", "2m")
		_ = e.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	return e.helmOK(append(base, args...)...)
}

// createNamespace makes a namespace for objects the user creates before installing and
// registers its removal, so it goes even when the test stops before the install.
func (e *env) createNamespace(ns string) {
	e.t.Helper()
	_, err := e.cs.CoreV1().Namespaces().Create(context.Background(), nsObject(ns), metav1.CreateOptions{})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
}

// poll waits for cond with a deadline (no sleeps as synchronisation).
func (e *env) poll(what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, cond)
	require.NoError(e.t, err, "waiting for %s", what)
}

func (e *env) pods(ns, component string) []corev1.Pod {
	e.t.Helper()
	l, err := e.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=" + component})
	require.NoError(e.t, err)
	return l.Items
}

func (e *env) onePod(ns, component string) corev1.Pod {
	e.t.Helper()
	var pod corev1.Pod
	e.poll("one "+component+" pod", 2*time.Minute, func(ctx context.Context) (bool, error) {
		ps := e.pods(ns, component)
		var live []corev1.Pod
		for _, p := range ps {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		if len(live) == 1 {
			pod = live[0]
			return true, nil
		}
		return false, nil
	})
	return pod
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// assertRunning checks what every scenario must hold: Deployments available, pods Running
// and Ready, claims bound, Service endpoints populated.
func (e *env) assertRunning(ns string) {
	e.t.Helper()
	ctx := context.Background()
	deps, err := e.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	require.NotEmpty(e.t, deps.Items)
	for _, d := range deps.Items {
		require.True(e.t, available(d), "Deployment %s is not available: %+v", d.Name, d.Status.Conditions)
	}
	pods, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component!=test"})
	require.NoError(e.t, err)
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		require.Equal(e.t, corev1.PodRunning, p.Status.Phase, "pod %s", p.Name)
		require.True(e.t, podReady(p), "pod %s not Ready", p.Name)
	}
	pvcs, err := e.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	for _, c := range pvcs.Items {
		require.Equal(e.t, corev1.ClaimBound, c.Status.Phase, "claim %s", c.Name)
	}
	svcs, err := e.cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	require.NoError(e.t, err)
	for _, s := range svcs.Items {
		e.poll("endpoints of "+s.Name, time.Minute, func(ctx context.Context) (bool, error) {
			ep, err := e.cs.CoreV1().Endpoints(ns).Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, sub := range ep.Subsets {
				if len(sub.Addresses) > 0 {
					return true, nil
				}
			}
			return false, nil
		})
	}
}

func available(d appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// proxyGet fetches path from a pod port through the API server.
func (e *env) proxyGet(ns, pod string, port int, path string) ([]byte, error) {
	return e.cs.CoreV1().RESTClient().Get().Namespace(ns).Resource("pods").
		Name(fmt.Sprintf("%s:%d", pod, port)).SubResource("proxy").Suffix(path).DoRaw(context.Background())
}

func (e *env) events(ns, involved string) string {
	l, err := e.cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + involved})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, ev := range l.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", ev.Type, ev.Reason, ev.Message)
	}
	return b.String()
}

func uniqueNS(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
}

// standinOutcome is what the langbot stand-in did with the chart's settings
// (test/standins/langbot: <data root>/standin-outcome.json on the langbot-data volume).
type standinOutcome struct {
	Database      map[string]any `json:"database"`
	PluginRuntime map[string]any `json:"plugin_runtime"`
	Box           struct {
		State     string         `json:"state"`
		Detail    string         `json:"detail"`
		Exec      map[string]any `json:"exec"`
		File      string         `json:"file"`
		Skill     map[string]any `json:"skill"`
		WriteBack string         `json:"write_back"`
		MCP       map[string]any `json:"mcp"`
	} `json:"box"`
}

// outcome polls the stand-in's outcome file on the node (the claim's hostPath PV: the stand-in
// serves nothing LangBot does not, so the result is read from its data volume) until done.
func (e *env) outcome(ns, what string, timeout time.Duration, done func(standinOutcome) bool) standinOutcome {
	e.t.Helper()
	var out standinOutcome
	var last string
	// Deferred: a poll that times out ends the test (FailNow runs the defers).
	defer func() { e.t.Logf("stand-in outcome: %s", last) }()
	e.poll(what, timeout, func(ctx context.Context) (bool, error) {
		claim, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "langbot-data", metav1.GetOptions{})
		if err != nil || claim.Spec.VolumeName == "" {
			return false, nil
		}
		pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, claim.Spec.VolumeName, metav1.GetOptions{})
		if err != nil || pv.Spec.HostPath == nil {
			return false, nil
		}
		b, err := os.ReadFile(filepath.Join(pv.Spec.HostPath.Path, "standin-outcome.json"))
		if err != nil {
			return false, nil
		}
		last = string(b)
		out = standinOutcome{}
		return json.Unmarshal(b, &out) == nil && done(out), nil
	})
	return out
}
