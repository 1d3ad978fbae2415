// Package nodes loads a cluster's Nodes from a YAML file or a live cluster.
package nodes

import (
	"context"
	"fmt"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// Load returns nil when neither source is given.
func Load(ctx context.Context, file, kubeconfig string) ([]corev1.Node, error) {
	switch {
	case file != "" && kubeconfig != "":
		return nil, fmt.Errorf("give either --nodes or --kubeconfig, not both")
	case file != "":
		return FromFile(file)
	case kubeconfig != "":
		return FromCluster(ctx, kubeconfig)
	}
	return nil, nil
}

// FromFile reads a YAML List or NodeList of Nodes (e.g. `kubectl get nodes -o yaml`).
func FromFile(path string) ([]corev1.Node, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read nodes file: %w", err)
	}
	var list corev1.NodeList
	if err := yaml.UnmarshalStrict(b, &list); err != nil {
		return nil, fmt.Errorf("decode nodes file %s (want a List of Nodes): %w", path, err)
	}
	return list.Items, nil
}

// FromCluster lists the nodes of the cluster the kubeconfig points at.
func FromCluster(ctx context.Context, kubeconfig string) ([]corev1.Node, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client: %w", err)
	}
	l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return l.Items, nil
}
