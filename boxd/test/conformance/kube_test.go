//go:build integration

package conformance

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube/kubetest"
)

// BackendEnv selects the backend the in-process boxd of every test runs on: unset or "docker"
// (the private Docker Engine of hack/docker.sh), or "kubernetes": the local cluster of
// hack/cluster.sh (KUBECONFIG), sandboxes as Pods on its real node. ci/40-e2e.sh runs the
// suite that way, without the tests that drive Docker itself (kubeSkipped).
const BackendEnv = "BOXD_TEST_BACKEND"

// kubeSkipped are the tests that read or drive the Docker Engine directly (containers made or
// inspected through the Engine API, the engine stopped and started, its socket); ci/40-e2e.sh passes them
// to `go test -skip` on the kubernetes backend. The kubernetes backend's own integration suite
// (boxd/internal/kube, -tags integration_kube) covers the same behaviour with Pods: restart
// re-adoption, out-of-band deletion.
const kubeSkipped = "^(TestAdmissionGrantEnforced|TestExecRecreatesAGoneSandbox|TestRestartKeepsPersistentAndRemovesOrphans|TestOrphansAreRemovedWhenTheEngineComesBack|TestMountSwapRace|TestSandboxActionsNeedBoxInit|TestSandboxUser|TestEngineSocketNotMountable)$"

// kubeConfigEnv carries the LANGBOT_BOX_CONFIG that TestMain made for the cluster to every
// in-process boxd (unset on Docker).
const kubeConfigEnv = "BOXD_TEST_KUBE_CONFIG"

// onKube reports whether the suite runs on the kubernetes backend.
func onKube() bool { return os.Getenv(BackendEnv) == kube.Name }

// backendName is what box_get_backend_info, box_exec and the metrics name.
func backendName() string {
	if onKube() {
		return kube.Name
	}
	return "docker"
}

// kubeUp gives the suite a namespace whose box root claim is os.TempDir(): every test's
// t.TempDir() (box roots, workspaces, skill stores) is then a directory of the claim, as
// LangBot's box root is on the chart's claim. TMPDIR must be a directory of the suite's own
// (ci/40-e2e.sh makes one); kubetest refuses the machine's /tmp. The returned LANGBOT_BOX_CONFIG
// takes the exec agent from BOXD_KUBE_AGENT_IMAGE, else the boxd image hack/cluster.sh loads.
func kubeUp(ctx context.Context) (*kubetest.Env, string, error) {
	env, err := kubetest.Up(ctx, "boxd-conformance", os.TempDir())
	if err != nil {
		return env, "", err
	}
	agentImage := os.Getenv("BOXD_KUBE_AGENT_IMAGE")
	if agentImage == "" {
		agentImage = kube.DefaultAgentImage
	}
	b, _ := json.Marshal(env.BoxConfig(agentImage))
	return env, string(b), nil
}

// kubeNamespaceEnv carries the suite's namespace from TestMain to the tests.
const kubeNamespaceEnv = "BOXD_TEST_KUBE_NAMESPACE"

// sandboxFacts are what a test checks of a sandbox, read from the backend itself: the
// container through the Engine API, or the Pod through the Kubernetes API.
type sandboxFacts struct {
	Labels       map[string]string
	NetworkOff   bool
	CapDropAll   bool
	MemoryBytes  int64
	ReadOnlyRoot bool
}

// inspectSandbox reads the sandbox named by box_get_session's backend_session_id; ok is false
// when it does not exist.
func inspectSandbox(t *testing.T, name string) (sandboxFacts, bool) {
	t.Helper()
	if !onKube() {
		ins, err := dockerClient(t).ContainerInspect(context.Background(), name)
		if cerrdefs.IsNotFound(err) {
			return sandboxFacts{}, false
		}
		require.NoError(t, err)
		return sandboxFacts{Labels: ins.Config.Labels, NetworkOff: ins.HostConfig.NetworkMode == "none",
			CapDropAll:  len(ins.HostConfig.CapDrop) == 1 && ins.HostConfig.CapDrop[0] == "ALL",
			MemoryBytes: ins.HostConfig.Memory, ReadOnlyRoot: ins.HostConfig.ReadonlyRootfs}, true
	}
	cfg, err := kubetest.RestConfig()
	require.NoError(t, err)
	cs, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	p, err := cs.CoreV1().Pods(os.Getenv(kubeNamespaceEnv)).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) {
		return sandboxFacts{}, false
	}
	require.NoError(t, err)
	var c corev1.Container
	for _, cc := range p.Spec.Containers {
		if cc.Name == kube.SandboxContainer {
			c = cc
		}
	}
	require.Equal(t, kube.SandboxContainer, c.Name, "pod %s has a sandbox container", name)
	f := sandboxFacts{Labels: p.Labels, NetworkOff: p.Labels[kube.LabelNetwork] == "off"}
	if sc := c.SecurityContext; sc != nil {
		f.CapDropAll = sc.Capabilities != nil && len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL"
		f.ReadOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
	if m, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		f.MemoryBytes = m.Value()
	}
	return f, true
}
