//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	"k8s.io/utils/ptr"
)

// The isolation pieces of the local cluster (hack/cluster.sh), on plain Pods and
// NetworkPolicies the tests create: the gVisor RuntimeClass on the real node, and the
// NetworkPolicy enforcer (kube-network-policies) judging real connections between pods, to a
// Service and to the API server's Service.

const isoImage = "langbot-k8s/sandbox:local" // busybox (hack/docker.sh), loaded into the node

// TestGVisorPod runs the same Pod under runc and under the gvisor RuntimeClass: under gVisor the
// kernel it reports is gVisor's, not the node's, and its network (the pod's CNI namespace),
// exec through the API server, exit codes, an emptyDir and a hostPath-backed claim (read back
// on the node) all work.
func TestGVisorPod(t *testing.T) {
	e := newEnv(t)
	ns := uniqueNS("kube-gvisor")
	e.createNamespace(ns)
	hostKernel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	require.NoError(t, err)

	for _, tc := range []struct {
		name         string
		runtimeClass *string
		gvisor       bool
	}{
		{name: "runc", gvisor: false},
		{name: "gvisor", runtimeClass: ptr.To("gvisor"), gvisor: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := e.with(t)
			ctx := context.Background()
			claim := claimObject(ns, "data-"+tc.name, "16Mi")
			_, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{})
			require.NoError(t, err)
			pod := isoPod(ns, "box-"+tc.name, map[string]string{"app": tc.name})
			pod.Spec.RuntimeClassName = tc.runtimeClass
			pod.Spec.Volumes = []corev1.Volume{
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name}}},
			}
			pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}, {Name: "data", MountPath: "/data"}}
			p := e.isoStartPod(pod)
			assert.Equal(t, "lbk-node", p.Spec.NodeName)

			kernel := e.isoExecOK(ns, p.Name, "uname", "-r")
			if tc.gvisor {
				assert.NotEqual(t, strings.TrimSpace(string(hostKernel)), strings.TrimSpace(kernel), "a gVisor pod must not see the node's kernel")
				assert.Contains(t, e.isoExecOK(ns, p.Name, "dmesg"), "Starting gVisor", "gVisor's kernel log")
			} else {
				assert.Equal(t, strings.TrimSpace(string(hostKernel)), strings.TrimSpace(kernel), "a runc pod shares the node's kernel")
			}

			// The pod's network namespace (CNI) is its network: the API server's Service answers.
			api := e.isoExecOK(ns, p.Name, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.96.0.1 443`)
			assert.Contains(t, api, "HTTP request to an HTTPS server")

			// exec: stdout, stderr and the exit code come back through the API server.
			res := e.isoExec(ns, p.Name, "sh", "-c", "echo out; echo err >&2; exit 3")
			require.NoError(t, res.err)
			assert.Equal(t, 3, res.code)
			assert.Equal(t, "out\n", res.stdout)
			assert.Equal(t, "err\n", res.stderr)

			// emptyDir and the claim: written in the pod, read in the pod and (claim) on the node.
			assert.Equal(t, "scratch ok", e.isoExecOK(ns, p.Name, "sh", "-c", "echo scratch ok > /scratch/f && cat /scratch/f"))
			e.isoExecOK(ns, p.Name, "sh", "-c", "echo written in "+tc.name+" > /data/from-pod")
			dir := e.claimDir(ns, claim.Name)
			onNode, err := os.ReadFile(filepath.Join(dir, "from-pod"))
			require.NoError(t, err, "the claim's file is on the node")
			assert.Equal(t, "written in "+tc.name+"\n", string(onNode))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "from-node"), []byte("written on the node\n"), 0o644))
			assert.Equal(t, "written on the node", e.isoExecOK(ns, p.Name, "cat", "/data/from-node"))
		})
	}
}

// TestNetworkPolicyEnforced opens real TCP connections (and DNS queries) from pods (one of them
// under gVisor), first with no
// policy (all reach), then under a namespace-wide deny-all (none reach: not the other pod, not
// its Service, not the API server's Service, not CoreDNS), then with allow policies for
// client -> web:8080 and client -> the API server (its endpoint, as policies see the
// connection after the Service's translation): those reach, everything else stays blocked.
func TestNetworkPolicyEnforced(t *testing.T) {
	e := newEnv(t)
	out, _ := e.run("bash", filepath.Join(e.repo, "hack", "cluster.sh"), "status")
	require.Contains(t, out, "kube-network-policies running", "the NetworkPolicy enforcer must run (hack/cluster.sh up without LBK_NETWORK_POLICIES=off)")
	ctx := context.Background()
	ns := uniqueNS("kube-netpol")
	e.createNamespace(ns)

	web := isoPod(ns, "web", map[string]string{"app": "web"})
	web.Spec.Containers[0].Command = []string{"sh", "-c", "mkdir -p /tmp/www && echo hello from web > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"}
	web.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1}
	pods := map[string]corev1.Pod{}
	// gclient is a client under gVisor: its packets come from gVisor's network stack.
	gclient := isoPod(ns, "gclient", map[string]string{"app": "client"})
	gclient.Spec.RuntimeClassName = ptr.To("gvisor")
	for _, p := range []*corev1.Pod{web, isoPod(ns, "client", map[string]string{"app": "client"}), gclient, isoPod(ns, "other", map[string]string{"app": "other"})} {
		_, err := e.cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	for _, name := range []string{"web", "client", "gclient", "other"} {
		pods[name] = e.isoAwaitPod(ns, name)
	}
	svc, err := e.cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	e.poll("endpoints of the web Service", time.Minute, func(ctx context.Context) (bool, error) {
		ep, err := e.cs.CoreV1().Endpoints(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && len(ep.Subsets) > 0 && len(ep.Subsets[0].Addresses) > 0, nil
	})
	apiIP, apiPort := e.isoAPIServerEndpoint()

	probes := map[string]isoProbe{
		"web pod":     {addr: net.JoinHostPort(pods["web"].Status.PodIP, "8080"), reached: "hello from web"},
		"web Service": {addr: net.JoinHostPort(svc.Spec.ClusterIP, "80"), reached: "hello from web"},
		// Plain HTTP to the TLS port: the API server answers 400 (and so proves it was reached).
		"API server Service": {addr: "10.96.0.1:443", reached: "HTTP request to an HTTPS server"},
		"CoreDNS":            {dns: "kubernetes.default.svc.cluster.local", reached: "10.96.0.1"},
	}
	type step struct {
		from, to string
		reach    bool
	}
	phases := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		steps    []step
	}{
		{name: "no policy", steps: []step{
			{"client", "web pod", true}, {"client", "web Service", true}, {"client", "API server Service", true},
			{"client", "CoreDNS", true}, {"other", "web pod", true}, {"gclient", "web Service", true}, {"gclient", "API server Service", true},
		}},
		{name: "deny all", policies: []*networkingv1.NetworkPolicy{isoDenyAll(ns)}, steps: []step{
			{"client", "web pod", false}, {"client", "web Service", false}, {"client", "API server Service", false},
			{"client", "CoreDNS", false}, {"other", "web pod", false}, {"web", "API server Service", false},
			{"gclient", "web pod", false}, {"gclient", "API server Service", false},
		}},
		{name: "allow client to web and the API server", policies: isoAllowClient(ns, apiIP, apiPort), steps: []step{
			{"client", "web pod", true}, {"client", "web Service", true}, {"client", "API server Service", true},
			{"client", "CoreDNS", false}, {"other", "web pod", false}, {"other", "API server Service", false},
			{"gclient", "web Service", true}, {"gclient", "API server Service", true},
		}},
	}
	for _, ph := range phases {
		for _, np := range ph.policies {
			_, err := e.cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
			require.NoError(t, err, "phase %q", ph.name)
		}
		// The enforcer sees a policy through its informers: the first step waits (bounded) for
		// the phase to be in force; the others are then checked once.
		first := ph.steps[0]
		e.poll(fmt.Sprintf("%s: %s -> %s reach=%v", ph.name, first.from, first.to, first.reach), time.Minute, func(context.Context) (bool, error) {
			got, _ := e.isoReach(ns, first.from, probes[first.to])
			return got == first.reach, nil
		})
		for _, s := range ph.steps[1:] {
			got, detail := e.isoReach(ns, s.from, probes[s.to])
			assert.Equal(t, s.reach, got, "%s: %s -> %s (%s)", ph.name, s.from, s.to, detail)
			t.Logf("%s: %s -> %s: reached=%v (%s)", ph.name, s.from, s.to, got, firstLine(detail))
		}
	}
}

// isoProbe is one destination: an HTTP request over a TCP connection (busybox nc), or a name
// looked up at CoreDNS.
type isoProbe struct {
	addr, dns string // addr is IP:port
	reached   string // what the output contains when the connection got through
}

// isoReach reports whether a connection from the pod got through. A connection the enforcer
// drops times out (nc -w, nslookup's timeout); any other failure (refused, reset) fails the
// test, because it means packets did get through to the destination's stack.
func (e *env) isoReach(ns, pod string, p isoProbe) (bool, string) {
	e.t.Helper()
	var res isoExecResult
	if p.dns != "" {
		res = e.isoExec(ns, pod, "nslookup", p.dns)
	} else {
		host, port, err := net.SplitHostPort(p.addr)
		require.NoError(e.t, err)
		res = e.isoExec(ns, pod, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" "$1"`, host, port)
	}
	require.NoError(e.t, res.err, "exec in %s", pod)
	out := res.stdout + res.stderr
	switch {
	case strings.Contains(out, p.reached):
		return true, out
	case strings.Contains(out, "timed out") || strings.Contains(out, "no servers could be reached"):
		return false, out
	}
	require.Failf(e.t, "unexpected probe result", "from %s to %+v: exit %d: %s", pod, p, res.code, out)
	return false, out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func isoDenyAll(ns string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny-all"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		},
	}
}

func isoAllowClient(ns, apiIP string, apiPort int32) []*networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	web := metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	client := metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}
	port := func(p int32) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(p))}}
	}
	return []*networkingv1.NetworkPolicy{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client-egress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: client,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &web}}, Ports: port(8080)},
					{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: apiIP + "/32"}}}, Ports: port(apiPort)},
				},
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-ingress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: web,
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &client}}, Ports: port(8080)}},
			},
		},
	}
}

// isoAPIServerEndpoint is where the kubernetes Service sends connections: a NetworkPolicy sees the
// connection after that translation, so this is what an egress rule for the API server names.
func (e *env) isoAPIServerEndpoint() (string, int32) {
	e.t.Helper()
	ep, err := e.cs.CoreV1().Endpoints("default").Get(context.Background(), "kubernetes", metav1.GetOptions{})
	require.NoError(e.t, err)
	require.NotEmpty(e.t, ep.Subsets)
	require.NotEmpty(e.t, ep.Subsets[0].Addresses)
	require.NotEmpty(e.t, ep.Subsets[0].Ports)
	return ep.Subsets[0].Addresses[0].IP, ep.Subsets[0].Ports[0].Port
}

// isoPod is a busybox Pod on the real node that sleeps until deleted.
func isoPod(ns, name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"lbk.dev/real": "true"},
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			AutomountServiceAccountToken:  ptr.To(false),
			Containers: []corev1.Container{{
				Name: "main", Image: isoImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "2147483647"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
			}},
		},
	}
}

func (e *env) isoStartPod(p *corev1.Pod) corev1.Pod {
	e.t.Helper()
	_, err := e.cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	require.NoError(e.t, err)
	return e.isoAwaitPod(p.Namespace, p.Name)
}

// isoAwaitPod waits until the pod is Running and Ready with an IP; a pod that fails is reported
// with its events.
func (e *env) isoAwaitPod(ns, name string) corev1.Pod {
	e.t.Helper()
	var pod corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod %s ended: %s", name, p.Status.Phase)
		}
		pod = *p
		return p.Status.Phase == corev1.PodRunning && podReady(*p) && p.Status.PodIP != "", nil
	})
	require.NoError(e.t, err, "pod %s running; status %+v; events:\n%s", name, pod.Status, e.events(ns, name))
	return pod
}

type isoExecResult struct {
	stdout, stderr string
	code           int
	err            error // the exec itself failed (not the command)
}

// isoExec runs argv in the pod's first container through the API server (WebSocket, SPDY as
// fallback, as kubectl does), bounded by a minute.
func (e *env) isoExec(ns, pod string, argv ...string) isoExecResult {
	e.t.Helper()
	cfg := e.isoRestConfig()
	req := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: argv, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, http.MethodGet, req.URL().String())
	require.NoError(e.t, err)
	spdy, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, req.URL())
	require.NoError(e.t, err)
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	require.NoError(e.t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr})
	res := isoExecResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr utilexec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.Exited():
		res.code = exitErr.ExitStatus()
	default:
		res.err = fmt.Errorf("exec %v in %s/%s: %w", argv, ns, pod, err)
	}
	return res
}

// isoExecOK runs argv, requires exit code 0 and returns its trimmed stdout.
func (e *env) isoExecOK(ns, pod string, argv ...string) string {
	e.t.Helper()
	res := e.isoExec(ns, pod, argv...)
	require.NoError(e.t, res.err)
	require.Equal(e.t, 0, res.code, "%v in %s: stdout %q stderr %q", argv, pod, res.stdout, res.stderr)
	return strings.TrimSpace(res.stdout)
}

// with is e reporting to a subtest's t.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func (e *env) isoRestConfig() *rest.Config {
	e.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig)
	require.NoError(e.t, err)
	return cfg
}
