//go:build integration

package conformance

import (
	"context"
	"encoding/json"
	"os"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube/kubetest"
)

// BackendEnv selects the backend the in-process boxd of every test runs on: unset or "docker"
// (the private Docker Engine of hack/docker.sh), or "kubernetes": the local cluster of
// hack/cluster.sh (KUBECONFIG), sandboxes as Pods on its real node. ci/40-e2e.sh runs the
// suite that way, without the tests that drive Docker itself (kubeSkipped).
const BackendEnv = "BOXD_TEST_BACKEND"

// kubeSkipped are the tests that read or drive the Docker Engine directly (containers made or
// inspected through the Engine API, the engine stopped and started); ci/40-e2e.sh passes them
// to `go test -skip` on the kubernetes backend. The kubernetes backend's own integration suite
// (boxd/internal/kube, -tags integration_kube) covers the same behaviour with Pods: restart
// re-adoption, out-of-band deletion.
const kubeSkipped = "^(TestAdmissionGrantEnforced|TestExecRecreatesAGoneSandbox|TestRestartKeepsPersistentAndRemovesOrphans|TestOrphansAreRemovedWhenTheEngineComesBack|TestMountSwapRace|TestSandboxActionsNeedBoxInit|TestSandboxUser)$"

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
