//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The kubernetes backend as a user installs it: no Docker socket and no hostPath anywhere,
// the box root a ReadWriteOnce claim (the local cluster's lbk-hostpath class) mounted at the
// same path in langbot and boxd, the namespace enforcing Pod Security baseline. The langbot
// stand-in writes a file that a sandbox Pod reads, the sandbox writes one back, a skill from
// the store runs from its mount, and a stdio MCP-style process echoes through the relay;
// the sandbox Pods carry the hardening the issue asks for and an owner reference to the
// chart's ConfigMap, so helm uninstall removes every one of them.
func TestBoxKubernetesOnRealNode(t *testing.T) {
	e := newEnv(t)
	ns := uniqueNS("boxk8s")
	ctx := context.Background()
	nsObj := nsObject(ns)
	nsObj.Labels = map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}
	_, err := e.cs.CoreV1().Namespaces().Create(ctx, nsObj, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// networkPolicy.enabled: boxd and the plugin runtime accept only langbot; the sandbox
	// policies are rendered either way. The cluster enforces them (kube-network-policies).
	e.install("langbot", ns, true, "-f", e.values("real-node.yaml"), "-f", filepath.Join(e.chart(), "ci", "box-kubernetes-values.yaml"),
		"--set", "networkPolicy.enabled=true")

	status := e.outcome(ns, "the stand-in's sandbox round trip through sandbox Pods", 4*time.Minute, func(o standinOutcome) bool { return o.Box.State == "ok" }).Box
	assert.Equal(t, "written by the langbot stand-in", status.Exec["stdout"])
	assert.Equal(t, "hello from a skill", status.Skill["stdout"])
	assert.Contains(t, status.MCP["echoed"], `"method":"initialize"`)
	// The box root is the claim: what the sandbox wrote is in the claim's directory on the node,
	// at the path the stand-in reported under /app/data/box.
	root := e.claimDir(ns, "langbot-box-root")
	require.True(t, strings.HasPrefix(status.WriteBack, "/app/data/box/"), status.WriteBack)
	back, err := os.ReadFile(filepath.Join(root, strings.TrimPrefix(status.WriteBack, "/app/data/box/")))
	require.NoError(t, err, "the file the sandbox wrote is on the box root claim")
	assert.Equal(t, "written back by a sandbox command\n", string(back))

	// No socket, no hostPath in any pod of the release (sandboxes included).
	all, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	for _, p := range all.Items {
		for _, v := range p.Spec.Volumes {
			assert.Nil(t, v.HostPath, "pod %s volume %s is a hostPath", p.Name, v.Name)
		}
	}

	sandboxes := e.sandboxPods(ns)
	require.NotEmpty(t, sandboxes, "the round trip left its sandbox Pods (the standin session and mcp-shared)")
	for _, p := range sandboxes {
		t.Run("sandbox "+p.Name, func(t *testing.T) {
			assert.Equal(t, "lbk-node", p.Spec.NodeName, "pinned to the node of the RWO claim")
			assert.Equal(t, corev1.RestartPolicyNever, p.Spec.RestartPolicy)
			require.NotNil(t, p.Spec.AutomountServiceAccountToken)
			assert.False(t, *p.Spec.AutomountServiceAccountToken)
			require.NotNil(t, p.Spec.EnableServiceLinks)
			assert.False(t, *p.Spec.EnableServiceLinks)
			require.NotNil(t, p.Spec.SecurityContext.SeccompProfile)
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, p.Spec.SecurityContext.SeccompProfile.Type)
			for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
				sc := c.SecurityContext
				require.NotNil(t, sc, "container %s has a security context", c.Name)
				require.NotNil(t, sc.AllowPrivilegeEscalation, c.Name)
				assert.False(t, *sc.AllowPrivilegeEscalation, c.Name)
				require.NotNil(t, sc.Capabilities, c.Name)
				assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop, c.Name)
			}
			require.Len(t, p.OwnerReferences, 1)
			assert.Equal(t, "ConfigMap", p.OwnerReferences[0].Kind)
			assert.True(t, strings.HasPrefix(p.OwnerReferences[0].Name, "langbot"), p.OwnerReferences[0].Name)
		})
	}

	// The chart's sandbox policies, enforced: a network=off sandbox (the stand-in's session)
	// reaches nothing, not boxd, langbot, the API server's Service or CoreDNS; a network=on
	// sandbox (mcp-shared) still reaches none of the cluster's private addresses. langbot
	// reached boxd through its policy: the round trip above went through it.
	off, on := sandboxWithNetwork(t, sandboxes, "off"), sandboxWithNetwork(t, sandboxes, "on")
	boxIP, lbIP := e.onePod(ns, "box").Status.PodIP, e.onePod(ns, "langbot").Status.PodIP
	apiIP, apiPort := e.isoAPIServerEndpoint()
	for _, tc := range []struct {
		name  string
		from  corev1.Pod
		probe isoProbe
	}{
		{"off -> boxd", off, isoProbe{addr: boxIP + ":5410", reached: "HTTP/1."}},
		{"off -> langbot", off, isoProbe{addr: lbIP + ":5300", reached: "HTTP/1."}},
		{"off -> API server Service", off, isoProbe{addr: "10.96.0.1:443", reached: "HTTP/1."}},
		{"off -> API server endpoint", off, isoProbe{addr: net.JoinHostPort(apiIP, fmt.Sprint(apiPort)), reached: "HTTP/1."}},
		{"off -> CoreDNS", off, isoProbe{dns: "kubernetes.default.svc.cluster.local", reached: "Address"}},
		{"on -> boxd", on, isoProbe{addr: boxIP + ":5410", reached: "HTTP/1."}},
		{"on -> langbot", on, isoProbe{addr: lbIP + ":5300", reached: "HTTP/1."}},
		{"on -> API server Service", on, isoProbe{addr: "10.96.0.1:443", reached: "HTTP/1."}},
	} {
		reached, detail := e.isoReach(ns, tc.from.Name, tc.probe)
		assert.False(t, reached, "%s: the sandbox got through: %s", tc.name, firstLine(detail))
	}

	e.helmOK("uninstall", "langbot", "-n", ns, "--wait", "--timeout", "2m")
	e.poll("every sandbox Pod to go with the release", 2*time.Minute, func(ctx context.Context) (bool, error) {
		return len(e.sandboxPods(ns)) == 0, nil
	})
}

// sandboxWithNetwork is the sandbox Pod labelled langbot.box/network=value.
func sandboxWithNetwork(t *testing.T, pods []corev1.Pod, value string) corev1.Pod {
	t.Helper()
	for _, p := range pods {
		if p.Labels["langbot.box/network"] == value {
			return p
		}
	}
	require.Failf(t, "no sandbox Pod", "none with langbot.box/network=%s among %d", value, len(pods))
	return corev1.Pod{}
}

// sandboxPods are the Pods boxd made in ns (label langbot.box=true), not being deleted.
func (e *env) sandboxPods(ns string) []corev1.Pod {
	e.t.Helper()
	l, err := e.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "langbot.box=true"})
	require.NoError(e.t, err)
	var live []corev1.Pod
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live
}

// claimDir is the node directory of a bound claim (the local cluster's hostPath PVs).
func (e *env) claimDir(ns, claim string) string {
	e.t.Helper()
	var dir string
	e.poll("claim "+claim+" bound", time.Minute, func(ctx context.Context) (bool, error) {
		c, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil || c.Spec.VolumeName == "" {
			return false, nil
		}
		pv, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, c.Spec.VolumeName, metav1.GetOptions{})
		if err != nil || pv.Spec.HostPath == nil {
			return false, nil
		}
		dir = pv.Spec.HostPath.Path
		return true, nil
	})
	return dir
}
