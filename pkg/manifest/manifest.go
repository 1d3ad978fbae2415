// Package manifest decodes rendered YAML into typed Kubernetes objects with strict decoding
// (unknown or misplaced fields are errors): the offline equivalent of a schema validator.
package manifest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Object is one decoded document.
type Object struct {
	Kind   string
	Name   string
	Source string         // "# Source:" template path, when present
	Typed  runtime.Object // typed object for built-in kinds, *unstructured.Unstructured otherwise
}

// Set is every object of a render.
type Set struct {
	Objects []Object
}

// Decode splits a multi-document manifest and decodes each document strictly.
// All decode problems are returned together.
func Decode(manifest string) (*Set, error) {
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	dec := codecs.UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	set := &Set{}
	var errs []error
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("split manifest: %w", err)
		}
		source := sourceOf(doc)
		if isEmpty(doc) {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil && runtime.IsNotRegisteredError(err) {
			u := &unstructured.Unstructured{}
			if jerr := yaml.Unmarshal(doc, &u.Object); jerr != nil {
				errs = append(errs, fmt.Errorf("%s: decode: %w", source, jerr))
				continue
			}
			set.Objects = append(set.Objects, Object{Kind: u.GetKind(), Name: u.GetName(), Source: source, Typed: u})
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source, err))
			continue
		}
		name := ""
		if m, ok := obj.(interface{ GetName() string }); ok {
			name = m.GetName()
		}
		set.Objects = append(set.Objects, Object{Kind: gvk.Kind, Name: name, Source: source, Typed: obj})
	}
	return set, errors.Join(errs...)
}

func sourceOf(doc []byte) string {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if s, ok := strings.CutPrefix(string(line), "# Source: "); ok {
			return s
		}
	}
	return "manifest"
}

func isEmpty(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := strings.TrimSpace(string(line))
		if t != "" && !strings.HasPrefix(t, "#") && t != "---" {
			return false
		}
	}
	return true
}

// Deployments returns the Deployments by name.
func (s *Set) Deployments() map[string]*appsv1.Deployment { return named[*appsv1.Deployment](s) }

// Component returns the Deployment labelled app.kubernetes.io/component=c, or nil.
func (s *Set) Component(c string) *appsv1.Deployment {
	for _, o := range s.Objects {
		if d, ok := o.Typed.(*appsv1.Deployment); ok && d.Labels["app.kubernetes.io/component"] == c {
			return d
		}
	}
	return nil
}

// Services returns the Services by name.
func (s *Set) Services() map[string]*corev1.Service { return named[*corev1.Service](s) }

// Secrets returns the Secrets by name.
func (s *Set) Secrets() map[string]*corev1.Secret { return named[*corev1.Secret](s) }

// PodSpecs returns every pod template (Deployments) and bare Pod (test hooks), keyed by "Kind/name".
func (s *Set) PodSpecs() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for _, o := range s.Objects {
		switch v := o.Typed.(type) {
		case *appsv1.Deployment:
			out["Deployment/"+v.Name] = &v.Spec.Template
		case *corev1.Pod:
			out["Pod/"+v.Name] = &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}
		}
	}
	return out
}

// Container returns the named container of a pod spec, or nil.
func Container(spec *corev1.PodSpec, name string) *corev1.Container {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	return nil
}

// Env returns the env entry name of c, or nil.
func Env(c *corev1.Container, name string) *corev1.EnvVar {
	if c == nil {
		return nil
	}
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// Mount returns the volume mount named volume of c, or nil.
func Mount(c *corev1.Container, volume string) *corev1.VolumeMount {
	if c == nil {
		return nil
	}
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// Volume returns the named volume of spec, or nil.
func Volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// ConfigMaps returns the ConfigMaps by name.
func (s *Set) ConfigMaps() map[string]*corev1.ConfigMap { return named[*corev1.ConfigMap](s) }

// NetworkPolicies returns every NetworkPolicy.
func (s *Set) NetworkPolicies() []*networkingv1.NetworkPolicy {
	return typed[*networkingv1.NetworkPolicy](s)
}

// PersistentVolumeClaims returns the claims by name.
func (s *Set) PersistentVolumeClaims() map[string]*corev1.PersistentVolumeClaim {
	return named[*corev1.PersistentVolumeClaim](s)
}

// ServiceAccounts returns the ServiceAccounts by name.
func (s *Set) ServiceAccounts() map[string]*corev1.ServiceAccount {
	return named[*corev1.ServiceAccount](s)
}

// Roles returns the Roles by name.
func (s *Set) Roles() map[string]*rbacv1.Role { return named[*rbacv1.Role](s) }

// RoleBindings returns every RoleBinding.
func (s *Set) RoleBindings() []*rbacv1.RoleBinding { return typed[*rbacv1.RoleBinding](s) }

// ClusterRoles returns every ClusterRole.
func (s *Set) ClusterRoles() []*rbacv1.ClusterRole { return typed[*rbacv1.ClusterRole](s) }

// ClusterRoleBindings returns every ClusterRoleBinding.
func (s *Set) ClusterRoleBindings() []*rbacv1.ClusterRoleBinding {
	return typed[*rbacv1.ClusterRoleBinding](s)
}

// Unstructured returns the objects of a kind the scheme does not know (e.g. ServiceMonitor).
func (s *Set) Unstructured(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range s.Objects {
		if u, ok := o.Typed.(*unstructured.Unstructured); ok && o.Kind == kind {
			out = append(out, u)
		}
	}
	return out
}

// typed returns the decoded objects of type T, in render order.
func typed[T metav1.Object](s *Set) []T {
	var out []T
	for _, o := range s.Objects {
		if v, ok := o.Typed.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// named returns the decoded objects of type T by name.
func named[T metav1.Object](s *Set) map[string]T {
	out := map[string]T{}
	for _, v := range typed[T](s) {
		out[v.GetName()] = v
	}
	return out
}
