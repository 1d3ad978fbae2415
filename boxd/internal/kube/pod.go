package kube

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

// Labels and annotations of sandbox Pods. Label selectors find boxd's own Pods; the spec
// annotation lets a restarted boxd rebuild a persistent session.
const (
	LabelBox        = "langbot.box"
	LabelSession    = "langbot.box/session"
	LabelInstance   = "langbot.box/instance"
	LabelPersistent = "langbot.box/persistent"
	LabelScope      = "langbot.box/scope"
	// LabelNetwork is "on" or "off": Kubernetes has no per-Pod switch for the network, so
	// `network: off` is enforced only by a NetworkPolicy that selects langbot.box/network=off
	// (the chart's job); boxd itself cannot cut a Pod's network.
	LabelNetwork = "langbot.box/network"
	// AnnotationSession holds the physical session id as it is (a label value cannot hold
	// every id; LabelSession then carries its hash).
	AnnotationSession = "langbot.box/session-id"
	AnnotationSpec    = "langbot.box/spec"

	// SandboxContainer runs the image; AgentContainer is the init container that copies
	// boxagent into the agent volume.
	SandboxContainer = "sandbox"
	AgentContainer   = "boxd-agent"
	// AgentDir is where the agent volume is mounted (read-only) in the sandbox container.
	AgentDir = "/.boxd-agent"
	// AgentPath is the agent binary in the sandbox container.
	AgentPath = AgentDir + "/boxagent"
	// AgentSocket is where the agent daemon (the sandbox container's main process) listens: an
	// abstract unix socket of the Pod's network namespace. It needs no writable directory, it
	// is bound before any sandbox process runs, and nothing can take the name over while the
	// daemon (PID 1) lives.
	AgentSocket = "@boxd-agent"
	// KeepAlive is the Docker backend's main command (§9.1.2); a sandbox Pod runs the agent
	// daemon instead (DaemonCommand).
	KeepAlive = "while true; do sleep 3600; done"
	// TmpSize bounds the /tmp emptyDir of a read-only root file system (the Docker backend's
	// tmpfs is 64 MiB too). Kubernetes enforces it by eviction, not ENOSPC.
	TmpSize = "64Mi"

	agentVolume   = "boxd-agent"
	boxRootVolume = "box-root"
	tmpVolume     = "tmp"
)

// DaemonCommand is the sandbox container's main command: the exec agent as the container's
// init (PID 1: it reaps orphans, and commands and managed processes outlive a dropped exec
// stream). Its environment and working directory are the container's, as an exec's are.
func DaemonCommand() []string { return []string{AgentPath, "daemon", "--socket", AgentSocket} }

// ConnectCommand is what each exec stream of boxd runs: a relay to the daemon.
func ConnectCommand() []string { return []string{AgentPath, "connect", "--socket", AgentSocket} }

var nameRun = regexp.MustCompile(`[^a-z0-9-]+`)

// PodName is langbot-box-<sanitised physical id, ≤ 32 chars>-<8 random hex>: a DNS-1123
// label like the Docker backend's container name.
func PodName(physical string) string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return podName(physical, hex.EncodeToString(r[:]))
}

func podName(physical, suffix string) string {
	s := strings.Trim(nameRun.ReplaceAllString(strings.ToLower(physical), "-"), "-")
	if len(s) > 32 {
		s = strings.TrimRight(s[:32], "-")
	}
	if s == "" {
		s = "session"
	}
	return "langbot-box-" + s + "-" + suffix
}

// sessionLabel is the physical id when it is a valid label value, else "h-" + its hash.
func sessionLabel(physical string) string {
	if len(validation.IsValidLabelValue(physical)) == 0 {
		return physical
	}
	sum := sha256.Sum256([]byte(physical))
	return "h-" + hex.EncodeToString(sum[:20])
}

// subPathMount is one validated mount expressed against the box root claim.
type subPathMount struct {
	SubPath   string // "" = the claim's root
	MountPath string
	ReadOnly  bool
}

// subPaths translates validated mounts (host paths already resolved by mounts.Validate) into
// subPaths of the box root claim mounted at claimRoot in boxd. A path outside the claim
// cannot be mounted into a Pod at all (there is no hostPath on this backend) and is refused.
func subPaths(binds []backend.Mount, claimName, claimRoot string) ([]subPathMount, error) {
	if len(binds) == 0 {
		return nil, nil
	}
	if claimName == "" {
		return nil, &backend.ValidationError{Message: fmt.Sprintf("host_path %s cannot be mounted: the kubernetes backend mounts host paths only as subPaths of the box root claim, and box.kubernetes.box_root.claim_name is not set", binds[0].HostPath)}
	}
	root := mounts.Resolve(claimRoot)
	out := make([]subPathMount, 0, len(binds))
	for _, m := range binds {
		p := filepath.Clean(m.HostPath)
		if !filepath.IsAbs(p) || !mounts.Within(p, root) {
			return nil, &backend.ValidationError{Message: fmt.Sprintf("host_path %s is outside the box root claim %s mounted at %s: the kubernetes backend can mount only directories of that claim (symlinks resolved)", m.HostPath, claimName, claimRoot)}
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, &backend.ValidationError{Message: fmt.Sprintf("host_path %s escapes the box root claim mounted at %s", m.HostPath, claimRoot)}
		}
		out = append(out, subPathMount{SubPath: rel, MountPath: m.MountPath, ReadOnly: m.Mode == backend.MountRO})
	}
	return out, nil
}

// claimSubPaths checks every mount against the policy (internal/mounts: the same checks as
// on Docker, symlinks resolved) and translates the resolved paths into subPaths of the claim.
func claimSubPaths(pol mounts.Policy, ms []backend.Mount, set Settings) ([]subPathMount, error) {
	resolved := make([]backend.Mount, 0, len(ms))
	for _, m := range ms {
		r, err := pol.Check(m)
		if err != nil {
			return nil, err
		}
		m.HostPath = r
		resolved = append(resolved, m)
	}
	return subPaths(resolved, set.ClaimName, set.ClaimMountPath)
}

// podIdentity is what ties a Pod to this runtime.
type podIdentity struct {
	Name, Namespace, InstanceID, Scope string
	// Node, when set, is the node the Pod must run on (box_root.pin_to_node).
	Node string
	// Owner, when set, is the owner reference every sandbox Pod gets (owner_config_map).
	Owner *metav1.OwnerReference
	// AgentSubPath, when set, is boxd's boxagent file as a path of the box root claim
	// (docker.InstallAgentFile under the claim's mount path): the sandbox mounts it read-only
	// at AgentPath and the Pod has no init container.
	AgentSubPath string
}

// buildPod is the sandbox Pod for spec: restricted security context, the agent delivered by
// an init container into a read-only emptyDir, the workspace and extra mounts as subPaths of
// the box root claim, and the spec recorded for re-adoption.
func buildPod(spec backend.SessionSpec, subs []subPathMount, set Settings, id podIdentity) (*corev1.Pod, error) {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode session spec annotation: %w", err)
	}
	labels := map[string]string{}
	for k, v := range set.Labels {
		labels[k] = v
	}
	network := "off"
	if spec.NetworkOn {
		network = "on"
	}
	for k, v := range map[string]string{LabelBox: "true", LabelSession: sessionLabel(spec.PhysicalID), LabelInstance: id.InstanceID,
		LabelPersistent: fmt.Sprint(spec.Persistent), LabelNetwork: network} {
		labels[k] = v
	}
	if id.Scope != "" {
		labels[LabelScope] = id.Scope
	}
	annotations := map[string]string{}
	for k, v := range set.Annotations {
		annotations[k] = v
	}
	annotations[AnnotationSession] = spec.PhysicalID
	annotations[AnnotationSpec] = string(specJSON)

	limits := corev1.ResourceList{}
	requests := corev1.ResourceList{}
	if spec.CPUs > 0 {
		cpu := *resource.NewMilliQuantity(int64(spec.CPUs*1000+0.5), resource.DecimalSI)
		limits[corev1.ResourceCPU] = cpu
		requests[corev1.ResourceCPU] = minQuantity(set.CPURequest, cpu)
	}
	if spec.MemoryMB > 0 {
		mem := *resource.NewQuantity(int64(spec.MemoryMB)<<20, resource.BinarySI)
		limits[corev1.ResourceMemory] = mem
		requests[corev1.ResourceMemory] = minQuantity(set.MemoryRequest, mem)
	}
	hardened := func(readOnlyRoot bool) *corev1.SecurityContext {
		return &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			ReadOnlyRootFilesystem:   ptr.To(readOnlyRoot),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
	}
	initSC := hardened(true)
	initSC.RunAsUser, initSC.RunAsGroup, initSC.RunAsNonRoot = ptr.To(int64(65534)), ptr.To(int64(65534)), ptr.To(true)
	sandbox := corev1.Container{
		Name: SandboxContainer, Image: spec.Image, ImagePullPolicy: set.ImagePullPolicy,
		Command:         DaemonCommand(),
		Resources:       corev1.ResourceRequirements{Limits: limits, Requests: requests},
		SecurityContext: hardened(spec.ReadOnlyRootfs),
		VolumeMounts:    []corev1.VolumeMount{{Name: agentVolume, MountPath: AgentDir, ReadOnly: true}},
	}
	volumes := []corev1.Volume{{Name: agentVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
		SizeLimit: ptr.To(resource.MustParse("64Mi"))}}}}
	if spec.ReadOnlyRootfs {
		volumes = append(volumes, corev1.Volume{Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			SizeLimit: ptr.To(resource.MustParse(TmpSize))}}})
		sandbox.VolumeMounts = append(sandbox.VolumeMounts, corev1.VolumeMount{Name: tmpVolume, MountPath: "/tmp"})
	}
	if len(subs) > 0 {
		volumes = append(volumes, corev1.Volume{Name: boxRootVolume, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: set.ClaimName}}})
		for _, s := range subs {
			sandbox.VolumeMounts = append(sandbox.VolumeMounts, corev1.VolumeMount{Name: boxRootVolume, SubPath: s.SubPath,
				MountPath: s.MountPath, ReadOnly: s.ReadOnly})
		}
	}
	var pullSecrets []corev1.LocalObjectReference
	for _, n := range set.ImagePullSecrets {
		pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: n})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: id.Name, Namespace: id.Namespace, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To(int64(1)),
			SecurityContext:               podSecurity(set),
			InitContainers: []corev1.Container{{
				Name: AgentContainer, Image: set.AgentImage, ImagePullPolicy: set.ImagePullPolicy,
				Command:         []string{"/boxd", InstallAgentCommand, AgentPath},
				SecurityContext: initSC,
				VolumeMounts:    []corev1.VolumeMount{{Name: agentVolume, MountPath: AgentDir}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
			}},
			Containers:        []corev1.Container{sandbox},
			Volumes:           volumes,
			NodeSelector:      set.NodeSelector,
			Tolerations:       set.Tolerations,
			PriorityClassName: set.PriorityClassName,
			ImagePullSecrets:  pullSecrets,
		},
	}
	if id.AgentSubPath != "" && set.ClaimName != "" {
		agentFromClaim(pod, set.ClaimName, id.AgentSubPath)
	}
	if set.RuntimeClassName != "" {
		pod.Spec.RuntimeClassName = ptr.To(set.RuntimeClassName)
	}
	if id.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*id.Owner}
	}
	if id.Node != "" {
		// The node that holds the ReadWriteOnce box root claim (boxd's own): matchFields on
		// metadata.name, as the DaemonSet controller pins its Pods.
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{id.Node}}},
			}}}}}
	}
	return pod, nil
}

func minQuantity(a, b resource.Quantity) resource.Quantity {
	if a.Cmp(b) < 0 {
		return a
	}
	return b
}

// runsDaemon reports whether the Pod's sandbox container runs the agent daemon (DaemonCommand).
func runsDaemon(p *corev1.Pod) bool {
	for _, c := range p.Spec.Containers {
		if c.Name == SandboxContainer {
			return slices.Equal(c.Command, DaemonCommand())
		}
	}
	return false
}

// ownerReference is the owner reference of sandbox Pods to the chart's ConfigMap: no
// controller, blockOwnerDeletion unset (boxd's Role has no update on it), so the garbage
// collector deletes the Pods once the ConfigMap is gone.
func ownerReference(cm *corev1.ConfigMap) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: cm.Name, UID: cm.UID}
}

// specFromPod rebuilds the session spec of a Pod boxd created; ok is false when the Pod
// cannot be re-adopted (no or a broken spec annotation, or one for another session).
func specFromPod(p *corev1.Pod) (backend.SessionSpec, bool) {
	var spec backend.SessionSpec
	raw := p.Annotations[AnnotationSpec]
	if raw == "" || json.Unmarshal([]byte(raw), &spec) != nil {
		return backend.SessionSpec{}, false
	}
	ok := spec.PhysicalID != "" && spec.PhysicalID == p.Annotations[AnnotationSession] &&
		p.Labels[LabelSession] == sessionLabel(spec.PhysicalID) && spec.Persistent
	return spec, ok
}

// podSecurity is the sandbox Pod's security context: seccomp RuntimeDefault, and boxd's group
// as a supplemental group when boxd is not root (Settings.SandboxGroup), so that root in the
// sandbox (no CAP_DAC_OVERRIDE) can write the group-writable directories boxd made.
func podSecurity(set Settings) *corev1.PodSecurityContext {
	sc := &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
	if set.SandboxGroup > 0 {
		sc.SupplementalGroups = []int64{set.SandboxGroup}
	}
	return sc
}

// agentFromClaim delivers the agent from the box root claim instead of by an init container:
// the file boxd placed there (read-only for everyone but boxd) is mounted read-only at
// AgentPath. One container start less per sandbox, and no short-lived init container (whose
// exit a runtime such as runsc driven through the runc shim may never report).
func agentFromClaim(pod *corev1.Pod, claim, sub string) {
	pod.Spec.InitContainers = nil
	vols := pod.Spec.Volumes[:0]
	hasClaim := false
	for _, v := range pod.Spec.Volumes {
		switch v.Name {
		case agentVolume:
			continue
		case boxRootVolume:
			hasClaim = true
		}
		vols = append(vols, v)
	}
	if !hasClaim {
		vols = append(vols, corev1.Volume{Name: boxRootVolume, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
	}
	pod.Spec.Volumes = vols
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Name != SandboxContainer {
			continue
		}
		mounts := []corev1.VolumeMount{{Name: boxRootVolume, SubPath: sub, MountPath: AgentPath, ReadOnly: true}}
		for _, m := range c.VolumeMounts {
			if m.Name != agentVolume {
				mounts = append(mounts, m)
			}
		}
		c.VolumeMounts = mounts
	}
}
