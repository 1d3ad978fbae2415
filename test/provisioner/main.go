// Command provisioner is the local cluster's dynamic provisioner for the StorageClass
// `lbk-hostpath`: every pending claim of that class gets a hostPath PersistentVolume under a
// directory of the real node, pre-bound to the claim, so claims bind as on a real cluster.
// Released volumes are deleted (their data stays on disk, like a Retain policy).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const class = "lbk-hostpath"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	root := flag.String("root", "", "directory of the node under which volumes are created")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Error("load kubeconfig", "err", err)
		os.Exit(1)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for ctx.Err() == nil {
		if err := reconcile(ctx, cs, *root, log); err != nil {
			log.Warn("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func reconcile(ctx context.Context, cs kubernetes.Interface, root string, log *slog.Logger) error {
	claims, err := cs.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list claims: %w", err)
	}
	for _, c := range claims.Items {
		if c.Status.Phase != corev1.ClaimPending || c.Spec.StorageClassName == nil || *c.Spec.StorageClassName != class || c.Spec.VolumeName != "" {
			continue
		}
		name := "pv-" + string(c.UID)
		dir := filepath.Join(root, c.Namespace+"-"+c.Name)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		// The kubelet applies a Pod's fsGroup to CSI and block volumes, never to hostPath ones:
		// world-writable stands in for that, so a non-root pod (boxd, uid 65532 with fsGroup)
		// can write its claim here as it can on a cluster's real storage. The umask made it 0755.
		if err := os.Chmod(dir, 0o777); err != nil {
			return fmt.Errorf("open %s to the claim's non-root users: %w", dir, err)
		}
		hpType := corev1.HostPathDirectoryOrCreate
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"lbk.dev/provisioned": "true"}},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: c.Spec.Resources.Requests[corev1.ResourceStorage]},
				AccessModes:                   c.Spec.AccessModes,
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				StorageClassName:              class,
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: c.Namespace, Name: c.Name, UID: c.UID, APIVersion: "v1"},
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hpType}},
			},
		}
		if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create volume for %s/%s: %w", c.Namespace, c.Name, err)
		}
		log.Info("provisioned", "claim", c.Namespace+"/"+c.Name, "volume", name, "dir", dir)
	}
	pvs, err := cs.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{LabelSelector: "lbk.dev/provisioned=true"})
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	for _, pv := range pvs.Items {
		if pv.Status.Phase == corev1.VolumeReleased || pv.Status.Phase == corev1.VolumeFailed {
			_ = cs.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
		}
	}
	return nil
}
