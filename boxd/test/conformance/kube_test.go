//go:build integration

package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/kube"
)

// BackendEnv selects the backend the in-process boxd of every test runs on: unset or "docker"
// (the private Docker Engine of hack/docker.sh), or "kubernetes": the local cluster of
// hack/cluster.sh (KUBECONFIG), sandboxes as Pods on its real node. ci/40-e2e.sh runs the
// suite that way, without the tests that inspect Docker itself (kubeSkipped).
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

// kubeEnv is the suite's piece of the cluster: a namespace of its own holding the box root
// claim, a PersistentVolume whose directory is os.TempDir(). Every test's t.TempDir() (box
// roots, workspaces, skill stores) is therefore a directory of the claim, as LangBot's box
// root is on a claim the chart creates, and boxd mounts it into Pods as subPaths.
type kubeEnv struct {
	cs        kubernetes.Interface
	namespace string
	claim     string
	pv        string
	root      string
}

// kubeUp creates the namespace, the volume and the claim, and waits until the claim is bound.
// TMPDIR must name a directory of the suite's own (ci/40-e2e.sh makes one): the claim exposes
// it to sandbox Pods, so the machine's shared /tmp is refused.
func kubeUp(ctx context.Context) (*kubeEnv, error) {
	root, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		return nil, fmt.Errorf("resolve TMPDIR %s: %w", os.TempDir(), err)
	}
	if root == "/tmp" || root == "/" {
		return nil, fmt.Errorf("%s=%s needs TMPDIR set to a directory of the suite's own (it becomes the box root claim sandbox Pods mount): e.g. TMPDIR=$(mktemp -d)", BackendEnv, kube.Name)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load KUBECONFIG (export KUBECONFIG=$(bash hack/cluster.sh kubeconfig)): %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the Kubernetes client: %w", err)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	suffix := hex.EncodeToString(r[:])
	e := &kubeEnv{cs: cs, namespace: "boxd-conformance-" + suffix, claim: "box-root", pv: "boxd-conformance-" + suffix, root: root}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.namespace}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", e.namespace, err)
	}
	// Retain: deleting the volume must never remove the directory (it is TMPDIR).
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: e.pv},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			ClaimRef:                      &corev1.ObjectReference{Namespace: e.namespace, Name: e.claim},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: root}},
		}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return e, fmt.Errorf("create persistent volume %s for %s: %w", e.pv, root, err)
	}
	empty := ""
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: e.claim, Namespace: e.namespace},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &empty, VolumeName: e.pv,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(e.namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return e, fmt.Errorf("create claim %s/%s: %w", e.namespace, e.claim, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(e.namespace).Get(ctx, e.claim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return c.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		return e, fmt.Errorf("wait for claim %s/%s to bind to %s: %w", e.namespace, e.claim, e.pv, err)
	}
	return e, nil
}

// down deletes the namespace (and with it every sandbox Pod a test left) and the volume; the
// directory stays (Retain).
func (e *kubeEnv) down(ctx context.Context) error {
	var errs []error
	if err := e.cs.CoreV1().Namespaces().Delete(ctx, e.namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", e.namespace, err))
	}
	if err := e.cs.CoreV1().PersistentVolumes().Delete(ctx, e.pv, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete persistent volume %s: %w", e.pv, err))
	}
	return errors.Join(errs...)
}

// configJSON is boxd's LANGBOT_BOX_CONFIG on this backend: sandboxes on the real node (the
// kwok nodes only pretend to run Pods), the agent from the boxd image loaded into the node's
// containerd (BOXD_KUBE_AGENT_IMAGE overrides it).
func (e *kubeEnv) configJSON() string {
	agentImage := os.Getenv("BOXD_KUBE_AGENT_IMAGE")
	if agentImage == "" {
		agentImage = kube.DefaultAgentImage
	}
	cfg := map[string]any{"backend": kube.Name, "kubernetes": map[string]any{
		"namespace":         e.namespace,
		"box_root":          map[string]any{"claim_name": e.claim, "mount_path": e.root},
		"agent_image":       agentImage,
		"image_pull_policy": "IfNotPresent",
		"node_selector":     map[string]string{"lbk.dev/real": "true"},
	}}
	b, _ := json.Marshal(cfg)
	return string(b)
}
