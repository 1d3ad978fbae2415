//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The Box design for real: langbot (stand-in) and boxd on the real node, the stand-in's file
// written under the hostPath root is read by `cat` in a sandbox that boxd started through the
// node's Docker daemon; then helm test, an upgrade that rolls only what changed, a rollback,
// and an uninstall that keeps the claims for a reinstall.
func TestBoxOnRealNode(t *testing.T) {
	e := newEnv(t)
	ns := uniqueNS("box")
	args := []string{"-f", e.values("real-node.yaml"), "-f", filepath.Join(e.chart(), "ci", "box-docker-values.yaml"),
		"--set", "box.docker.socketPath=" + e.socket}
	notes := e.install("langbot", ns, true, args...)
	assert.Contains(t, notes, "SECURITY WARNING")
	e.assertRunning(ns)

	lb, box := e.onePod(ns, "langbot"), e.onePod(ns, "box")
	assert.Equal(t, lb.Spec.NodeName, box.Spec.NodeName, "the box runs on langbot's node (podAffinity)")
	assert.Equal(t, "lbk-node", box.Spec.NodeName)

	status := e.outcome(ns, "the stand-in's sandbox round trip", 3*time.Minute, func(o standinOutcome) bool { return o.Box.State == "ok" }).Box
	// LangBot's control connection through PLUGIN__RUNTIME_WS_URL, the runtime's Service and
	// its --ws-control-port, with the token both pods got from the chart.
	rt := e.outcome(ns, "langbot's control connection to the plugin runtime", 2*time.Minute, func(o standinOutcome) bool { return o.PluginRuntime["state"] == "ok" })
	assert.Equal(t, true, rt.PluginRuntime["pong"])
	assert.Equal(t, "written by the langbot stand-in", status.Exec["stdout"])
	assert.True(t, strings.HasPrefix(status.File, "/app/data/box/default/tenants/ws-"), status.File)
	onHost, err := os.ReadFile(status.File)
	require.NoError(t, err, "the file is on the node, under the same absolute path")
	assert.Equal(t, "written by the langbot stand-in\n", string(onHost))
	// The skill store lives under the shared root too: the skill's script ran in the sandbox from
	// its read-only mount, and the package is on the node at the path the Box reported.
	assert.Equal(t, "hello from a skill", status.Skill["stdout"])
	pkg, _ := status.Skill["package_root"].(string)
	assert.True(t, strings.HasPrefix(pkg, "/app/data/box/skills/tenants/ws-"), pkg)
	script, err := os.ReadFile(filepath.Join(pkg, "run.sh"))
	require.NoError(t, err, "the skill package is on the node, under the same absolute path")
	assert.Equal(t, "echo hello from a skill\n", string(script))
	// A sandbox command wrote into the workspace and the stand-in read it on its own disk; the
	// stdio MCP-style process (cat) echoed the initialize line through the relay.
	assert.True(t, strings.HasPrefix(status.WriteBack, "/app/data/box/default/tenants/ws-"), status.WriteBack)
	assert.Contains(t, status.MCP["echoed"], `"method":"initialize"`)

	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	require.NoError(t, err)
	list, err := cli.ContainerList(context.Background(), container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "langbot.box=true"))})
	require.NoError(t, err)
	var sandbox *container.Summary
	for i, c := range list {
		if strings.HasSuffix(c.Labels["langbot.session_id"], "-g1-standin") {
			sandbox = &list[i]
		}
	}
	require.NotNil(t, sandbox, "the sandbox container is on the node's Docker daemon with boxd's labels")
	assert.NotEmpty(t, sandbox.Labels["langbot.box.instance_id"])

	ready, err := e.proxyGet(ns, box.Name, 5410, "/readyz")
	require.NoError(t, err, "/readyz answers 200, as the readiness probe saw")
	assert.Contains(t, string(ready), `"ready":true`)

	out := e.helmOK("test", "langbot", "-n", ns, "--timeout", "3m")
	assert.Contains(t, out, "Succeeded")

	// Upgrade: a plugin-runtime-only change rolls only the plugin runtime; tokens are kept.
	tokens := func() map[string]string {
		m := map[string]string{}
		for _, name := range []string{"langbot-box-token", "langbot-plugin-runtime-token"} {
			s, err := e.cs.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
			require.NoError(t, err)
			m[name] = string(s.Data["token"])
		}
		return m
	}
	before := tokens()
	pr := e.onePod(ns, "plugin-runtime")
	e.helmOK(append([]string{"upgrade", "langbot", e.chart(), "-n", ns, "-f", e.values("standins.yaml"), "--wait", "--timeout", "4m",
		"--set-json", `pluginRuntime.extraEnv=[{"name":"E2E_MARK","value":"1"}]`}, args...)...)
	assert.Equal(t, before, tokens(), "generated tokens survive helm upgrade")
	assert.Equal(t, lb.UID, e.onePod(ns, "langbot").UID, "langbot did not roll")
	assert.Equal(t, box.UID, e.onePod(ns, "box").UID, "the box did not roll")
	e.poll("the plugin runtime to roll", 2*time.Minute, func(ctx context.Context) (bool, error) {
		p := e.onePod(ns, "plugin-runtime")
		return p.UID != pr.UID && podReady(p), nil
	})
	// A config change rolls every pod (checksum/config).
	e.helmOK(append([]string{"upgrade", "langbot", e.chart(), "-n", ns, "-f", e.values("standins.yaml"), "--wait", "--timeout", "4m",
		"--set", "config.timezone=UTC"}, args...)...)
	assert.NotEqual(t, lb.UID, e.onePod(ns, "langbot").UID, "a ConfigMap change rolls langbot")
	e.helmOK("rollback", "langbot", "1", "-n", ns, "--wait", "--timeout", "4m")
	assert.Equal(t, before, tokens(), "tokens survive the rollback")
	e.assertRunning(ns)

	// Uninstall keeps the claims; a reinstall re-attaches them with their data.
	claim, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "langbot-data", metav1.GetOptions{})
	require.NoError(t, err)
	pv, err := e.cs.CoreV1().PersistentVolumes().Get(context.Background(), claim.Spec.VolumeName, metav1.GetOptions{})
	require.NoError(t, err)
	marker := filepath.Join(pv.Spec.HostPath.Path, "e2e-marker")
	require.NoError(t, os.WriteFile(marker, []byte("kept"), 0o644))
	e.helmOK("uninstall", "langbot", "-n", ns, "--wait", "--timeout", "2m")
	e.poll("the workloads to go", 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := e.cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(d.Items) == 0, nil
	})
	kept, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "langbot-data", metav1.GetOptions{})
	require.NoError(t, err, "helm uninstall keeps the claim")
	assert.Equal(t, claim.UID, kept.UID)
	e.helmOK(append([]string{"install", "langbot", e.chart(), "-n", ns, "-f", e.values("standins.yaml"), "--wait", "--timeout", "4m"}, args...)...)
	again, err := e.cs.CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "langbot-data", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, claim.UID, again.UID, "the reinstall re-attached the same claim")
	data, err := os.ReadFile(marker)
	require.NoError(t, err)
	assert.Equal(t, "kept", string(data))
	assert.Equal(t, before, tokens(), "kept token Secrets are reused by the reinstall")
}

// Scenarios that only need the API server and the scheduler run on the simulated pools.
func TestScenariosOnSimulatedPools(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		args []string
		pool map[string]string             // component -> pool label its pods must land on
		pre  func(t *testing.T, ns string) // objects the user creates before installing
	}{
		{"defaults", []string{"--set", "global.nodeSelector.pool=general"}, map[string]string{"langbot": "general", "plugin-runtime": "general"}, nil},
		{"node-pools", []string{"-f", filepath.Join(e.chart(), "ci", "node-pools-values.yaml"), "--set", "box.docker.socketPath=" + e.socket},
			map[string]string{"langbot": "box", "box": "box", "plugin-runtime": "general"}, nil},
		{"box-e2b", []string{"-f", filepath.Join(e.chart(), "ci", "box-e2b-values.yaml"), "--set", "global.nodeSelector.pool=general"}, map[string]string{"box": "general"}, func(t *testing.T, ns string) {
			_, err := e.cs.CoreV1().Secrets(ns).Create(context.Background(), secretObject(ns, "e2b-credentials", "E2B_API_KEY", "e2b-test-key"), metav1.CreateOptions{})
			require.NoError(t, err)
		}},
		{"ingress-tls", []string{"-f", filepath.Join(e.chart(), "ci", "ingress-tls-values.yaml"), "--set", "global.nodeSelector.pool=general"}, nil, nil},
		{"networkpolicy", []string{"-f", filepath.Join(e.chart(), "ci", "networkpolicy-values.yaml"), "--set", "global.nodeSelector.pool=general", "--set", "box.docker.socketPath=" + e.socket}, nil, nil},
		// The HTTPRoute CRD comes from hack/cluster.sh (Gateway API module); no gateway controller runs.
		{"gateway", []string{"-f", filepath.Join(e.chart(), "ci", "gateway-values.yaml"), "--set", "global.nodeSelector.pool=general"}, nil, nil},
		{"podman-socket", []string{"-f", filepath.Join(e.chart(), "ci", "podman-socket-values.yaml"), "--set", "global.nodeSelector.pool=general"},
			map[string]string{"langbot": "general", "box": "general"}, nil},
		{"existing-secrets", []string{"-f", filepath.Join(e.chart(), "ci", "existing-secrets-values.yaml"), "--set", "global.nodeSelector.pool=general"},
			map[string]string{"langbot": "general", "box": "general"}, func(t *testing.T, ns string) {
				// The user's own Secrets and restored claim, made before the install.
				_, err := e.cs.CoreV1().Secrets(ns).Create(context.Background(), secretObject(ns, "langbot-box-control", "control-token", "user-box-token"), metav1.CreateOptions{})
				require.NoError(t, err)
				_, err = e.cs.CoreV1().Secrets(ns).Create(context.Background(), secretObject(ns, "langbot-runtime-control", "control-token", "user-runtime-token"), metav1.CreateOptions{})
				require.NoError(t, err)
				_, err = e.cs.CoreV1().PersistentVolumeClaims(ns).Create(context.Background(), claimObject(ns, "langbot-data-restored", "1Gi"), metav1.CreateOptions{})
				require.NoError(t, err)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ns := uniqueNS(tc.name)
			if tc.pre != nil {
				e.createNamespace(ns)
				tc.pre(t, ns)
			}
			e.install("langbot", ns, true, tc.args...)
			e.assertRunning(ns)
			for comp, pool := range tc.pool {
				for _, p := range e.pods(ns, comp) {
					node, err := e.cs.CoreV1().Nodes().Get(context.Background(), p.Spec.NodeName, metav1.GetOptions{})
					require.NoError(t, err)
					assert.Equal(t, pool, node.Labels["pool"], "%s pod %s on %s", comp, p.Name, p.Spec.NodeName)
				}
			}
			if tc.name == "existing-secrets" {
				d, err := e.cs.AppsV1().Deployments(ns).Get(context.Background(), "langbot", metav1.GetOptions{})
				require.NoError(t, err)
				assert.Contains(t, claimNames(d.Spec.Template.Spec.Volumes), "langbot-data-restored", "langbot mounts the user's claim")
				_, err = e.cs.CoreV1().Secrets(ns).Get(context.Background(), "langbot-box-token", metav1.GetOptions{})
				assert.True(t, apierrors.IsNotFound(err), "no token Secret is generated when the user brings one")
			}
			if tc.name == "node-pools" {
				assert.Equal(t, e.onePod(ns, "langbot").Spec.NodeName, e.onePod(ns, "box").Spec.NodeName)
			}
		})
	}
}

// A box pool without nodes leaves the box Pending with the scheduler's reason, which
// `langbotctl explain` predicted; a missing socket fails the pod on the kubelet's hostPath check.
func TestNegativeScenarios(t *testing.T) {
	e := newEnv(t)
	ctl := filepath.Join(t.TempDir(), "langbotctl")
	out, err := e.run("go", "build", "-o", ctl, filepath.Join(e.repo, "cmd", "langbotctl"))
	require.NoError(t, err, out)

	t.Run("box pool without nodes", func(t *testing.T) {
		ns := uniqueNS("nopool")
		args := []string{"-f", e.values("real-node.yaml"), "--set", "box.enabled=true", "--set", "box.nodeSelector.pool=gpu",
			"--set", "box.docker.socketPath=" + e.socket}
		pred, err := e.run(ctl, append([]string{"explain", "--chart", e.chart(), "--kubeconfig", e.kubeconfig, "-f", e.values("standins.yaml")}, args...)...)
		require.Error(t, err, "explain exits non-zero when a pod would stay Pending")
		assert.Contains(t, pred, "PENDING")
		assert.Contains(t, pred, "didn't match Pod's node affinity/selector")
		e.install("langbot", ns, false, args...)
		box := e.onePod(ns, "box")
		e.poll("the scheduler's reason", 2*time.Minute, func(ctx context.Context) (bool, error) {
			return strings.Contains(e.events(ns, box.Name), "FailedScheduling"), nil
		})
		p := e.onePod(ns, "box")
		assert.Equal(t, "Pending", string(p.Status.Phase))
		assert.Contains(t, e.events(ns, box.Name), "didn't match Pod's node affinity/selector")
	})

	t.Run("missing socket", func(t *testing.T) {
		ns := uniqueNS("nosock")
		notes := e.install("langbot", ns, false, "-f", e.values("real-node.yaml"), "--set", "box.enabled=true",
			"--set", "box.docker.socketPath=/run/lbk-missing/docker.sock")
		assert.Contains(t, notes, "is not a socket file", "NOTES.txt says what to check")
		box := e.onePod(ns, "box")
		e.poll("the kubelet's hostPath type error", 2*time.Minute, func(ctx context.Context) (bool, error) {
			return strings.Contains(e.events(ns, box.Name), "/run/lbk-missing/docker.sock"), nil
		})
		assert.Contains(t, e.events(ns, box.Name), "hostPath type check failed")
	})
}
