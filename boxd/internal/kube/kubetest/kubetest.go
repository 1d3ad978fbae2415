// Package kubetest gives the suites and the benchmark that run boxd's kubernetes backend on a
// real cluster their own piece of it: a namespace holding a box root claim bound to a
// hostPath PersistentVolume on a directory of this machine, as the chart's claim is the box
// root LangBot and boxd share. It needs a cluster whose node is this machine (hack/cluster.sh).
package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClaimName is the box root claim in every Env's namespace.
const ClaimName = "box-root"

// RealNodeLabel (=true) selects the local cluster's real node (its kwok nodes only pretend
// to run Pods).
const RealNodeLabel = "lbk.dev/real"

// Env is a namespace with a bound box root claim whose directory on this machine is Root.
type Env struct {
	Client    kubernetes.Interface
	Rest      *rest.Config
	Namespace string
	Root      string
	pv        string
}

// RestConfig loads KUBECONFIG (or ~/.kube/config).
func RestConfig() (*rest.Config, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load KUBECONFIG (export KUBECONFIG=$(bash hack/cluster.sh kubeconfig)): %w", err)
	}
	return cfg, nil
}

// Up creates namespace prefix-<random>, a Retain hostPath PersistentVolume on dir and the
// claim bound to it, and waits until it is bound. dir is exposed to every sandbox Pod of the
// namespace: give a directory of the caller's own, never / or /tmp. On error the returned Env
// (when not nil) holds what was made, for Down.
func Up(ctx context.Context, prefix, dir string) (*Env, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve the claim directory %s: %w", dir, err)
	}
	if root == "/" || root == "/tmp" {
		return nil, fmt.Errorf("the claim directory %s would expose the machine's %s to sandbox Pods: give a directory of your own (e.g. mktemp -d)", dir, root)
	}
	cfg, err := RestConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("build the Kubernetes client: %w", err)
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	name := prefix + "-" + hex.EncodeToString(r[:])
	e := &Env{Client: cs, Rest: cfg, Namespace: name, Root: root, pv: name}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, err)
	}
	size := resource.MustParse("1Gi")
	// Retain: deleting the volume never touches the directory.
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: e.pv},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			ClaimRef:                      &corev1.ObjectReference{Namespace: name, Name: ClaimName},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: root}},
		}}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		return e, fmt.Errorf("create persistent volume %s on %s: %w", e.pv, root, err)
	}
	noClass := ""
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: ClaimName, Namespace: name},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &noClass, VolumeName: e.pv,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(name).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return e, fmt.Errorf("create claim %s/%s: %w", name, ClaimName, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(name).Get(ctx, ClaimName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return c.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		return e, fmt.Errorf("wait for claim %s/%s to bind to %s: %w", name, ClaimName, e.pv, err)
	}
	return e, nil
}

// Down deletes the namespace (with every Pod left in it) and the volume; the directory stays.
func (e *Env) Down(ctx context.Context) error {
	var errs []error
	if err := e.Client.CoreV1().Namespaces().Delete(ctx, e.Namespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete namespace %s: %w", e.Namespace, err))
	}
	if err := e.Client.CoreV1().PersistentVolumes().Delete(ctx, e.pv, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete persistent volume %s: %w", e.pv, err))
	}
	return errors.Join(errs...)
}

// BoxConfig is boxd's LANGBOT_BOX_CONFIG for the kubernetes backend on this Env: sandboxes on
// the real node, the exec agent from agentImage (the boxd image in the node's containerd).
func (e *Env) BoxConfig(agentImage string) map[string]any {
	return map[string]any{"backend": "kubernetes", "kubernetes": map[string]any{
		"namespace":         e.Namespace,
		"box_root":          map[string]any{"claim_name": ClaimName, "mount_path": e.Root},
		"agent_image":       agentImage,
		"image_pull_policy": "IfNotPresent",
		"node_selector":     map[string]string{RealNodeLabel: "true"},
	}}
}
