package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/wsync"
)

// DefaultAgentImage is the boxd image, whose /boxd install-agent copies /boxagent into the
// sandbox Pod's agent volume (the init container).
const DefaultAgentImage = "ghcr.io/langbot-k8s/boxd:0.1.0"

// Settings are the `box.kubernetes` block of boxd's start-up configuration
// (LANGBOT_BOX_CONFIG), validated. They apply to every sandbox Pod.
type Settings struct {
	// Namespace the sandbox Pods live in ("" = the namespace of boxd's client config: the
	// service account's namespace in a cluster, the kubeconfig context's otherwise).
	Namespace         string
	RuntimeClassName  string
	NodeSelector      map[string]string
	Tolerations       []corev1.Toleration
	PriorityClassName string
	Labels            map[string]string
	Annotations       map[string]string
	ImagePullSecrets  []string
	ImagePullPolicy   corev1.PullPolicy
	// ClaimName is the box root PersistentVolumeClaim, mounted in boxd (and LangBot) at
	// ClaimMountPath; every host_path and extra mount becomes a subPath of it.
	ClaimName      string
	ClaimMountPath string
	// PinToNode (box_root.pin_to_node, set by the chart when the claim is ReadWriteOnce or
	// ReadWriteOncePod) gives every sandbox Pod a required node affinity to boxd's own node
	// (BOXD_NODE_NAME), the only node that can mount the claim.
	PinToNode bool
	// OwnerConfigMap is a ConfigMap the chart owns, in Namespace: every sandbox Pod gets an
	// owner reference to it, so that deleting it (helm uninstall) deletes the Pods. "" = none.
	OwnerConfigMap string
	// SandboxGroup is boxd's own group when boxd is not root (0 = none): sandbox Pods get it as
	// a supplemental group, because what boxd creates in the box root (workspaces, the skill
	// store) is group-writable (umask 002 on this backend, internal/perm) and the sandboxes run
	// as root without CAP_DAC_OVERRIDE. ParseSettings takes it from the process.
	SandboxGroup  int64
	AgentImage    string
	CPURequest    resource.Quantity
	MemoryRequest resource.Quantity
	// StartTimeout bounds Pod creation to a running sandbox with a connected agent;
	// ScheduleTimeout bounds how long a Pod may stay unschedulable.
	StartTimeout    time.Duration
	ScheduleTimeout time.Duration
	// WorkspaceMode, WarmPool and SyncLimits: see workspace.go (isolated mode).
	WorkspaceMode WorkspaceMode
	WarmPool      []PoolShape
	SyncLimits    wsync.Limits
}

// wireSettings is the JSON shape of box.kubernetes (snake_case like the other box sections;
// tolerations are Kubernetes Toleration objects as in a Pod spec).
type wireSettings struct {
	Namespace         string              `json:"namespace"`
	RuntimeClassName  string              `json:"runtime_class_name"`
	NodeSelector      map[string]string   `json:"node_selector"`
	Tolerations       []corev1.Toleration `json:"tolerations"`
	PriorityClassName string              `json:"priority_class_name"`
	Labels            map[string]string   `json:"labels"`
	Annotations       map[string]string   `json:"annotations"`
	ImagePullSecrets  []string            `json:"image_pull_secrets"`
	ImagePullPolicy   string              `json:"image_pull_policy"`
	BoxRoot           struct {
		ClaimName string `json:"claim_name"`
		MountPath string `json:"mount_path"`
		PinToNode bool   `json:"pin_to_node"`
	} `json:"box_root"`
	OwnerConfigMap     string          `json:"owner_config_map"`
	AgentImage         string          `json:"agent_image"`
	CPURequest         string          `json:"cpu_request"`
	MemoryRequest      string          `json:"memory_request"`
	StartTimeoutSec    *int            `json:"start_timeout_sec"`
	ScheduleTimeoutSec *int            `json:"schedule_timeout_sec"`
	WorkspaceMode      string          `json:"workspace_mode"`
	WarmPool           []wirePoolShape `json:"warm_pool"`
	WorkspaceSync      *wsync.Limits   `json:"workspace_sync"`
}

// ParseSettings validates the box.kubernetes block (raw is what JSON decoding produced,
// nil when the block is absent). hostRoot (box.local.host_root, resolved) is the default
// claim mount path. Every error names the key and what to put there.
func ParseSettings(raw any, hostRoot string) (Settings, error) {
	var w wireSettings
	if raw != nil {
		data, err := json.Marshal(raw)
		if err != nil {
			return Settings{}, fmt.Errorf("box.kubernetes: encode: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&w); err != nil {
			return Settings{}, decodeErr(err)
		}
	}
	s := Settings{Namespace: w.Namespace, RuntimeClassName: w.RuntimeClassName, NodeSelector: w.NodeSelector,
		Tolerations: w.Tolerations, PriorityClassName: w.PriorityClassName, Labels: w.Labels, Annotations: w.Annotations,
		ImagePullSecrets: w.ImagePullSecrets, ImagePullPolicy: corev1.PullPolicy(w.ImagePullPolicy),
		ClaimName: w.BoxRoot.ClaimName, ClaimMountPath: w.BoxRoot.MountPath, PinToNode: w.BoxRoot.PinToNode,
		OwnerConfigMap: w.OwnerConfigMap, AgentImage: w.AgentImage}
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	name := func(key, v string, check func(string) []string) {
		if v != "" {
			if e := check(v); len(e) > 0 {
				bad("box.kubernetes.%s %q is not a valid name (%s)", key, v, strings.Join(e, "; "))
			}
		}
	}
	name("namespace", s.Namespace, validation.IsDNS1123Label)
	name("runtime_class_name", s.RuntimeClassName, validation.IsDNS1123Subdomain)
	name("priority_class_name", s.PriorityClassName, validation.IsDNS1123Subdomain)
	name("box_root.claim_name", s.ClaimName, validation.IsDNS1123Subdomain)
	name("owner_config_map", s.OwnerConfigMap, validation.IsDNS1123Subdomain)
	if s.PinToNode && s.ClaimName == "" {
		bad("box.kubernetes.box_root.pin_to_node is true but box.kubernetes.box_root.claim_name is empty: pinning follows the box root claim; name the claim or set pin_to_node to false")
	}
	for i, p := range s.ImagePullSecrets {
		name(fmt.Sprintf("image_pull_secrets[%d]", i), p, validation.IsDNS1123Subdomain)
		if p == "" {
			bad("box.kubernetes.image_pull_secrets[%d] is empty: name a Secret of type kubernetes.io/dockerconfigjson", i)
		}
	}
	labelMap := func(key string, m map[string]string, values bool) {
		for k, v := range m {
			if e := validation.IsQualifiedName(k); len(e) > 0 {
				bad("box.kubernetes.%s key %q is not a valid key (%s)", key, k, strings.Join(e, "; "))
			}
			if values {
				if e := validation.IsValidLabelValue(v); len(e) > 0 {
					bad("box.kubernetes.%s[%q] value %q is not a valid label value (%s)", key, k, v, strings.Join(e, "; "))
				}
			}
			if k == LabelBox || strings.HasPrefix(k, LabelBox+"/") {
				bad("box.kubernetes.%s key %q is reserved for boxd's own bookkeeping: use another key", key, k)
			}
		}
	}
	labelMap("node_selector", s.NodeSelector, true)
	labelMap("labels", s.Labels, true)
	labelMap("annotations", s.Annotations, false)
	for i, t := range s.Tolerations {
		if !slices.Contains([]corev1.TolerationOperator{"", corev1.TolerationOpEqual, corev1.TolerationOpExists}, t.Operator) {
			bad("box.kubernetes.tolerations[%d].operator %q must be Equal or Exists", i, t.Operator)
		}
		if t.Operator == corev1.TolerationOpExists && t.Value != "" {
			bad("box.kubernetes.tolerations[%d].value must be empty when operator is Exists", i)
		}
		if !slices.Contains([]corev1.TaintEffect{"", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute}, t.Effect) {
			bad("box.kubernetes.tolerations[%d].effect %q must be NoSchedule, PreferNoSchedule or NoExecute", i, t.Effect)
		}
	}
	switch s.ImagePullPolicy {
	case "":
		s.ImagePullPolicy = corev1.PullIfNotPresent
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		bad("box.kubernetes.image_pull_policy %q must be Always, IfNotPresent or Never", w.ImagePullPolicy)
	}
	if s.ClaimMountPath == "" {
		s.ClaimMountPath = hostRoot
	}
	if s.ClaimMountPath != "" {
		if !filepath.IsAbs(s.ClaimMountPath) {
			bad("box.kubernetes.box_root.mount_path %q must be an absolute path (where the box root claim is mounted in boxd and LangBot)", s.ClaimMountPath)
		}
		s.ClaimMountPath = filepath.Clean(s.ClaimMountPath)
	}
	if s.ClaimName != "" && s.ClaimMountPath == "" {
		bad("box.kubernetes.box_root.mount_path is empty and box.local.host_root is not set: give the path the claim %s is mounted at in boxd", s.ClaimName)
	}
	if s.AgentImage == "" {
		s.AgentImage = DefaultAgentImage
	}
	quantity := func(key, v, def string) resource.Quantity {
		if v == "" {
			v = def
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() < 0 {
			bad("box.kubernetes.%s %q is not a Kubernetes quantity (e.g. 100m, 64Mi)", key, v)
		}
		return q
	}
	s.CPURequest = quantity("cpu_request", w.CPURequest, "10m")
	s.MemoryRequest = quantity("memory_request", w.MemoryRequest, "32Mi")
	seconds := func(key string, v *int, def, max int) time.Duration {
		n := def
		if v != nil {
			n = *v
		}
		if n < 1 || n > max {
			bad("box.kubernetes.%s must be between 1 and %d", key, max)
		}
		return time.Duration(n) * time.Second
	}
	s.StartTimeout = seconds("start_timeout_sec", w.StartTimeoutSec, 180, 3600)
	s.ScheduleTimeout = seconds("schedule_timeout_sec", w.ScheduleTimeoutSec, 60, 3600)
	s.WorkspaceMode, s.WarmPool, s.SyncLimits = parseWorkspace(w.WorkspaceMode, w.WarmPool, w.WorkspaceSync, bad)
	if len(errs) > 0 {
		slices.Sort(errs)
		return Settings{}, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	if gid := os.Getgid(); gid > 0 {
		s.SandboxGroup = int64(gid)
	}
	return s, nil
}

// settingsKeys lists the keys of box.kubernetes, for errors.
const settingsKeys = "namespace, runtime_class_name, node_selector, tolerations, priority_class_name, labels, annotations, image_pull_secrets, image_pull_policy, box_root {claim_name, mount_path, pin_to_node}, owner_config_map, agent_image, cpu_request, memory_request, start_timeout_sec, schedule_timeout_sec, workspace_mode, warm_pool [{image, cpus, memory_mb, read_only_rootfs, size, max_surge, refill_per_minute, max_age_sec}], workspace_sync {push_max_files, push_max_file_bytes, push_max_total_bytes, pull_max_entries, pull_max_file_bytes, pull_max_total_bytes}"

// decodeErr names the key a JSON decoding error is about and what it must be.
func decodeErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		want := "a " + te.Type.Kind().String()
		switch te.Type.Kind() {
		case reflect.Map, reflect.Struct:
			want = "an object"
		case reflect.Slice:
			want = "a list"
		case reflect.Int, reflect.Int64, reflect.Int32:
			want = "a whole number"
		case reflect.Bool:
			want = "a boolean (true or false)"
		}
		return fmt.Errorf("box.kubernetes.%s must be %s, not a JSON %s", te.Field, want, te.Value)
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown key %s in box.kubernetes: remove it or fix its spelling (the keys are %s)", f, settingsKeys)
	}
	return fmt.Errorf("box.kubernetes must be an object with the keys %s: %v", settingsKeys, err)
}
