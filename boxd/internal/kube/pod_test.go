package kube

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/mounts"
)

func testSettings(t *testing.T, raw map[string]any) Settings {
	t.Helper()
	s, err := ParseSettings(raw, "/data/box")
	require.NoError(t, err)
	return s
}

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name string
		raw  map[string]any
		want func(t *testing.T, s Settings)
		err  string
	}{
		{name: "defaults", raw: nil, want: func(t *testing.T, s Settings) {
			assert.Equal(t, "/data/box", s.ClaimMountPath)
			assert.Equal(t, DefaultAgentImage, s.AgentImage)
			assert.Equal(t, corev1.PullIfNotPresent, s.ImagePullPolicy)
			assert.Equal(t, "10m", s.CPURequest.String())
			assert.Equal(t, 180*time.Second, s.StartTimeout)
		}},
		{name: "everything", raw: map[string]any{"namespace": "sandboxes", "runtime_class_name": "gvisor",
			"node_selector": map[string]any{"pool": "box"}, "priority_class_name": "low",
			"tolerations": []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "box", "effect": "NoSchedule"}},
			"labels":      map[string]any{"team": "a"}, "annotations": map[string]any{"example.com/x": "any value"},
			"image_pull_secrets": []any{"regcred"}, "image_pull_policy": "Never",
			"box_root":    map[string]any{"claim_name": "box-root", "mount_path": "/app/data/box/"},
			"agent_image": "boxd:dev", "start_timeout_sec": 30, "schedule_timeout_sec": 5},
			want: func(t *testing.T, s Settings) {
				assert.Equal(t, "sandboxes", s.Namespace)
				assert.Equal(t, "gvisor", s.RuntimeClassName)
				assert.Equal(t, map[string]string{"pool": "box"}, s.NodeSelector)
				require.Len(t, s.Tolerations, 1)
				assert.Equal(t, corev1.TaintEffectNoSchedule, s.Tolerations[0].Effect)
				assert.Equal(t, "/app/data/box", s.ClaimMountPath)
				assert.Equal(t, "box-root", s.ClaimName)
				assert.Equal(t, corev1.PullNever, s.ImagePullPolicy)
				assert.Equal(t, 5.0, s.ScheduleTimeout.Seconds())
			}},
		{name: "unknown key", raw: map[string]any{"namespce": "x"}, err: `unknown key "namespce" in box.kubernetes: remove it or fix its spelling (the keys are namespace, `},
		{name: "owner and pinning", raw: map[string]any{"owner_config_map": "langbot-box-sandboxes",
			"box_root": map[string]any{"claim_name": "box-root", "pin_to_node": true}},
			want: func(t *testing.T, s Settings) {
				assert.Equal(t, "langbot-box-sandboxes", s.OwnerConfigMap)
				assert.True(t, s.PinToNode)
			}},
		{name: "pin_to_node not a boolean", raw: map[string]any{"box_root": map[string]any{"claim_name": "c", "pin_to_node": "yes"}},
			err: "box.kubernetes.box_root.pin_to_node must be a boolean (true or false), not a JSON string"},
		{name: "timeout not a number", raw: map[string]any{"start_timeout_sec": "60"}, err: "box.kubernetes.start_timeout_sec must be a whole number, not a JSON string"},
		{name: "labels not an object", raw: map[string]any{"labels": []any{"a"}}, err: "box.kubernetes.labels must be an object, not a JSON array"},
		{name: "pin_to_node without a claim", raw: map[string]any{"box_root": map[string]any{"pin_to_node": true}},
			err: "box.kubernetes.box_root.pin_to_node is true but box.kubernetes.box_root.claim_name is empty: pinning follows the box root claim; name the claim or set pin_to_node to false"},
		{name: "bad owner ConfigMap name", raw: map[string]any{"owner_config_map": "Not_A_Name"}, err: `box.kubernetes.owner_config_map "Not_A_Name" is not a valid name`},
		{name: "bad namespace", raw: map[string]any{"namespace": "Not_A_Name"}, err: "box.kubernetes.namespace"},
		{name: "reserved label", raw: map[string]any{"labels": map[string]any{"langbot.box/scope": "x"}}, err: "reserved for boxd"},
		{name: "bad label value", raw: map[string]any{"labels": map[string]any{"a": "not a value"}}, err: `box.kubernetes.labels["a"]`},
		{name: "bad toleration", raw: map[string]any{"tolerations": []any{map[string]any{"operator": "Exists", "value": "x"}}}, err: "tolerations[0].value"},
		{name: "bad pull policy", raw: map[string]any{"image_pull_policy": "Sometimes"}, err: "image_pull_policy"},
		{name: "relative mount path", raw: map[string]any{"box_root": map[string]any{"claim_name": "c", "mount_path": "data"}}, err: "must be an absolute path"},
		{name: "bad quantity", raw: map[string]any{"cpu_request": "lots"}, err: "box.kubernetes.cpu_request"},
		{name: "timeout range", raw: map[string]any{"start_timeout_sec": 0}, err: "start_timeout_sec must be between 1 and 3600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSettings(tt.raw, "/data/box")
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			tt.want(t, s)
		})
	}
}

func TestPodName(t *testing.T) {
	tests := map[string]string{
		"ws-0123456789abcdef01234567-g1-p": "langbot-box-ws-0123456789abcdef01234567-g1-p-abcd1234",
		"Has_Underscore.And.Dots":          "langbot-box-has-underscore-and-dots-abcd1234",
		"___":                              "langbot-box-session-abcd1234",
		"a-very-long-session-id-that-goes-on-and-on": "langbot-box-a-very-long-session-id-that-goes-abcd1234",
	}
	for in, want := range tests {
		got := podName(in, "abcd1234")
		assert.Equal(t, want, got, in)
		assert.Empty(t, validation.IsDNS1123Label(got), got)
	}
}

func TestSessionLabel(t *testing.T) {
	assert.Equal(t, "ws-0123456789abcdef01234567-g1-p", sessionLabel("ws-0123456789abcdef01234567-g1-p"))
	long := sessionLabel(strings.Repeat("x", 80))
	assert.True(t, strings.HasPrefix(long, "h-"))
	assert.Empty(t, validation.IsValidLabelValue(long))
	assert.Empty(t, validation.IsValidLabelValue(sessionLabel("a b/c")))
}

func TestBuildPod(t *testing.T) {
	set := testSettings(t, map[string]any{"namespace": "sbx", "runtime_class_name": "gvisor",
		"node_selector": map[string]any{"pool": "box"}, "priority_class_name": "low",
		"tolerations": []any{map[string]any{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}},
		"labels":      map[string]any{"team": "a"}, "annotations": map[string]any{"example.com/x": "y"},
		"image_pull_secrets": []any{"regcred"}, "box_root": map[string]any{"claim_name": "box-root"}, "agent_image": "boxd:dev"})
	spec := backend.SessionSpec{PhysicalID: "ws-0123456789abcdef01234567-g1-p", Image: "busybox", NetworkOn: false,
		HostPath: "/data/box/default/tenants/a", HostPathMode: backend.MountRW, MountPath: "/workspace",
		ExtraMounts: []backend.Mount{{HostPath: "/data/box/skills/s", MountPath: "/workspace/.skills/s", Mode: backend.MountRO}},
		Persistent:  true, CPUs: 1.5, MemoryMB: 512, PidsLimit: 128, ReadOnlyRootfs: true}
	subs := []subPathMount{{SubPath: "default/tenants/a", MountPath: "/workspace"}, {SubPath: "skills/s", MountPath: "/workspace/.skills/s", ReadOnly: true}}
	pod, err := buildPod(spec, subs, set, podIdentity{Name: "p", Namespace: "sbx", InstanceID: "0123456789ab", Scope: "prod"})
	require.NoError(t, err)

	assert.Equal(t, "sbx", pod.Namespace)
	assert.Equal(t, map[string]string{"team": "a", LabelBox: "true", LabelSession: spec.PhysicalID, LabelInstance: "0123456789ab",
		LabelPersistent: "true", LabelScope: "prod", LabelNetwork: "off"}, pod.Labels)
	assert.Equal(t, "y", pod.Annotations["example.com/x"])
	assert.Equal(t, spec.PhysicalID, pod.Annotations[AnnotationSession])
	var recorded backend.SessionSpec
	require.NoError(t, json.Unmarshal([]byte(pod.Annotations[AnnotationSpec]), &recorded))
	assert.Equal(t, spec, recorded)

	ps := pod.Spec
	assert.Equal(t, corev1.RestartPolicyNever, ps.RestartPolicy)
	assert.False(t, *ps.AutomountServiceAccountToken)
	assert.False(t, *ps.EnableServiceLinks)
	assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, ps.SecurityContext.SeccompProfile.Type)
	assert.Equal(t, "gvisor", *ps.RuntimeClassName)
	assert.Equal(t, map[string]string{"pool": "box"}, ps.NodeSelector)
	assert.Equal(t, "low", ps.PriorityClassName)
	assert.Equal(t, []corev1.LocalObjectReference{{Name: "regcred"}}, ps.ImagePullSecrets)
	require.Len(t, ps.Tolerations, 1)
	assert.Equal(t, "dedicated", ps.Tolerations[0].Key)

	require.Len(t, ps.InitContainers, 1)
	ic := ps.InitContainers[0]
	assert.Equal(t, "boxd:dev", ic.Image)
	assert.Equal(t, []string{"/boxd", InstallAgentCommand, AgentPath}, ic.Command)
	assert.True(t, *ic.SecurityContext.RunAsNonRoot)
	assert.True(t, *ic.SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, []corev1.VolumeMount{{Name: agentVolume, MountPath: AgentDir}}, ic.VolumeMounts)

	require.Len(t, ps.Containers, 1)
	c := ps.Containers[0]
	assert.Equal(t, "busybox", c.Image)
	assert.Equal(t, []string{"/.boxd-agent/boxagent", "daemon", "--socket", "@boxd-agent"}, c.Command)
	for _, sc := range []*corev1.SecurityContext{c.SecurityContext, ic.SecurityContext} {
		assert.False(t, *sc.AllowPrivilegeEscalation)
		assert.Equal(t, []corev1.Capability{"ALL"}, sc.Capabilities.Drop)
		assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, sc.SeccompProfile.Type)
	}
	assert.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, "1500m", c.Resources.Limits.Cpu().String())
	assert.Equal(t, "512Mi", c.Resources.Limits.Memory().String())
	assert.Equal(t, "10m", c.Resources.Requests.Cpu().String())
	assert.Equal(t, "32Mi", c.Resources.Requests.Memory().String())
	assert.Equal(t, []corev1.VolumeMount{
		{Name: agentVolume, MountPath: AgentDir, ReadOnly: true},
		{Name: tmpVolume, MountPath: "/tmp"},
		{Name: boxRootVolume, SubPath: "default/tenants/a", MountPath: "/workspace"},
		{Name: boxRootVolume, SubPath: "skills/s", MountPath: "/workspace/.skills/s", ReadOnly: true},
	}, c.VolumeMounts)
	vols := map[string]corev1.Volume{}
	for _, v := range ps.Volumes {
		vols[v.Name] = v
	}
	require.Len(t, vols, 3)
	assert.Equal(t, "box-root", vols[boxRootVolume].PersistentVolumeClaim.ClaimName)
	assert.Equal(t, resource.MustParse(TmpSize), *vols[tmpVolume].EmptyDir.SizeLimit)
	assert.NotNil(t, vols[agentVolume].EmptyDir)
}

func TestBuildPodMinimal(t *testing.T) {
	set := testSettings(t, map[string]any{"cpu_request": "2", "memory_request": "1Gi"})
	spec := backend.SessionSpec{PhysicalID: "s", Image: "img", NetworkOn: true, CPUs: 0.5, MemoryMB: 256}
	pod, err := buildPod(spec, nil, set, podIdentity{Name: "p", Namespace: "ns", InstanceID: "i"})
	require.NoError(t, err)
	c := pod.Spec.Containers[0]
	assert.False(t, *c.SecurityContext.ReadOnlyRootFilesystem)
	assert.Equal(t, []corev1.VolumeMount{{Name: agentVolume, MountPath: AgentDir, ReadOnly: true}}, c.VolumeMounts, "no /tmp volume and no claim without read_only_rootfs and mounts")
	assert.Len(t, pod.Spec.Volumes, 1)
	assert.Nil(t, pod.Spec.RuntimeClassName)
	assert.Equal(t, "on", pod.Labels[LabelNetwork])
	assert.NotContains(t, pod.Labels, LabelScope)
	assert.Equal(t, "500m", c.Resources.Requests.Cpu().String(), "a request above the limit is capped at the limit")
	assert.Equal(t, "256Mi", c.Resources.Requests.Memory().String())
}

func TestBuildPodOwnerAndPinning(t *testing.T) {
	spec := backend.SessionSpec{PhysicalID: "s", Image: "img"}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "langbot-box-sandboxes", UID: "1f0e-uid"}}
	cases := []struct {
		name     string
		id       podIdentity
		owners   []metav1.OwnerReference
		affinity *corev1.Affinity
	}{
		{name: "neither", id: podIdentity{Name: "p", Namespace: "ns", InstanceID: "i"}},
		{name: "owned by the chart's ConfigMap", id: podIdentity{Name: "p", Namespace: "ns", InstanceID: "i", Owner: ownerReference(cm)},
			owners: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "langbot-box-sandboxes", UID: "1f0e-uid"}}},
		{name: "pinned to boxd's node", id: podIdentity{Name: "p", Namespace: "ns", InstanceID: "i", Node: "node-a"},
			affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
					{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-a"}}}}}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod, err := buildPod(spec, nil, testSettings(t, nil), tc.id)
			require.NoError(t, err)
			assert.Equal(t, tc.owners, pod.OwnerReferences)
			for _, o := range pod.OwnerReferences {
				assert.Nil(t, o.Controller, "not a controller")
				assert.Nil(t, o.BlockOwnerDeletion, "blockOwnerDeletion unset")
			}
			assert.Equal(t, tc.affinity, pod.Spec.Affinity)
		})
	}
}

func TestSpecFromPod(t *testing.T) {
	spec := backend.SessionSpec{PhysicalID: "ws-0123456789abcdef01234567-g1-p", Image: "img", Persistent: true}
	pod, err := buildPod(spec, nil, testSettings(t, nil), podIdentity{Name: "p", Namespace: "ns", InstanceID: "i"})
	require.NoError(t, err)
	got, ok := specFromPod(pod)
	require.True(t, ok)
	assert.Equal(t, spec, got)

	forged := pod.DeepCopy()
	forged.Annotations[AnnotationSession] = "ws-ffffffffffffffffffffffff-g1-p"
	_, ok = specFromPod(forged)
	assert.False(t, ok, "a spec for another session than the Pod's label is not adopted")
	broken := pod.DeepCopy()
	broken.Annotations[AnnotationSpec] = "{"
	_, ok = specFromPod(broken)
	assert.False(t, ok)
	spec.Persistent = false
	ephemeral, err := buildPod(spec, nil, testSettings(t, nil), podIdentity{Name: "p", Namespace: "ns", InstanceID: "i"})
	require.NoError(t, err)
	_, ok = specFromPod(ephemeral)
	assert.False(t, ok)
}

func TestPodVerdict(t *testing.T) {
	running := corev1.ContainerStatus{Name: SandboxContainer, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	tests := []struct {
		name    string
		status  corev1.PodStatus
		deleted bool
		done    bool
		unsched string
		err     string
	}{
		{name: "pending", status: corev1.PodStatus{Phase: corev1.PodPending}},
		{name: "running", status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running}}, done: true},
		{name: "unschedulable", status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled,
			Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}}},
			unsched: "0/1 nodes are available"},
		{name: "image pull", status: corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: SandboxContainer,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImageNeverPull", Message: `Container image "x" is not present`}}}}},
			err: `sandbox container sandbox: ErrImageNeverPull: Container image "x" is not present`},
		{name: "agent image pull", status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{{Name: AgentContainer,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "back-off"}}}}},
			err: "init container boxd-agent: ImagePullBackOff"},
		{name: "agent install failed", status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{{Name: AgentContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}},
			err: "init container boxd-agent terminated: Error (exit code 1)"},
		{name: "agent installed", status: corev1.PodStatus{Phase: corev1.PodPending, InitContainerStatuses: []corev1.ContainerStatus{{Name: AgentContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}}},
		{name: "sandbox exited", status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: SandboxContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}}},
			err: "sandbox container sandbox terminated"},
		{name: "failed", status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"}, err: "phase Failed: Evicted"},
		{name: "deleting", status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{running}}, deleted: true, err: "being deleted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &corev1.Pod{Status: tt.status}
			if tt.deleted {
				p.DeletionTimestamp = &metav1.Time{}
			}
			done, unsched, err := podVerdict(p)
			assert.Equal(t, tt.done, done)
			if tt.unsched == "" {
				assert.Empty(t, unsched)
			} else {
				assert.Contains(t, unsched, tt.unsched)
			}
			if tt.err == "" {
				assert.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
			}
		})
	}
}

// TestClaimSubPaths runs the mount checks of internal/mounts and the claim translation on a
// real directory tree, with escape attempts.
func TestClaimSubPaths(t *testing.T) {
	base := t.TempDir()
	claim := filepath.Join(base, "claim")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{"claim/default/tenants/a", "claim/default/tenants/b", "claim/skills/s", "outside/secret"} {
		require.NoError(t, os.MkdirAll(filepath.Join(base, d), 0o755))
	}
	// A tenant directory that is a symlink to a directory outside the claim, and one to
	// another tenant's directory inside it.
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(claim, "default/tenants/evil")))
	require.NoError(t, os.Symlink(filepath.Join(claim, "default/tenants/b"), filepath.Join(claim, "default/tenants/sneaky")))
	set := testSettings(t, map[string]any{"box_root": map[string]any{"claim_name": "box-root", "mount_path": claim}})
	wide := mounts.Policy{Roots: []string{base}}    // allowed roots wider than the claim
	narrow := mounts.Policy{Roots: []string{claim}} // the usual: roots = the claim (host_root)
	rw := func(p string) backend.Mount {
		return backend.Mount{HostPath: p, MountPath: "/workspace", Mode: backend.MountRW}
	}
	tests := []struct {
		name   string
		pol    mounts.Policy
		set    Settings
		mount  backend.Mount
		want   subPathMount
		errMsg string
	}{
		{name: "tenant workspace", pol: narrow, set: set, mount: rw(filepath.Join(claim, "default/tenants/a")),
			want: subPathMount{SubPath: "default/tenants/a", MountPath: "/workspace"}},
		{name: "read-only skill", pol: narrow, set: set, mount: backend.Mount{HostPath: filepath.Join(claim, "skills/s"), MountPath: "/workspace/.skills/s", Mode: backend.MountRO},
			want: subPathMount{SubPath: "skills/s", MountPath: "/workspace/.skills/s", ReadOnly: true}},
		{name: "claim root read-only", pol: narrow, set: set, mount: backend.Mount{HostPath: claim, MountPath: "/box", Mode: backend.MountRO},
			want: subPathMount{SubPath: "", MountPath: "/box", ReadOnly: true}},
		{name: "not yet existing workspace", pol: narrow, set: set, mount: rw(filepath.Join(claim, "default/tenants/new")),
			want: subPathMount{SubPath: "default/tenants/new", MountPath: "/workspace"}},
		{name: "dot-dot out of the claim", pol: wide, set: set, mount: rw(filepath.Join(claim, "default/../../outside/secret")),
			errMsg: "is outside the box root claim box-root"},
		{name: "dot-dot inside the claim", pol: narrow, set: set, mount: rw(filepath.Join(claim, "default/tenants/a/../b")),
			want: subPathMount{SubPath: "default/tenants/b", MountPath: "/workspace"}},
		{name: "symlink resolved outside the claim", pol: wide, set: set, mount: rw(filepath.Join(claim, "default/tenants/evil")),
			errMsg: "is outside the box root claim"},
		{name: "symlink outside the allowed roots", pol: narrow, set: set, mount: rw(filepath.Join(claim, "default/tenants/evil")),
			errMsg: "is outside allowed_mount_roots"},
		{name: "symlink inside the claim mounts its target", pol: narrow, set: set, mount: rw(filepath.Join(claim, "default/tenants/sneaky")),
			want: subPathMount{SubPath: "default/tenants/b", MountPath: "/workspace"}},
		{name: "path outside the claim", pol: wide, set: set, mount: rw(filepath.Join(outside, "secret")),
			errMsg: "is outside the box root claim box-root mounted at " + claim},
		{name: "blocked path", pol: mounts.Policy{Roots: []string{"/"}}, set: set, mount: rw("/etc"), errMsg: "is blocked for security"},
		{name: "no claim configured", pol: narrow, set: testSettings(t, nil), mount: rw(filepath.Join(claim, "default/tenants/a")),
			errMsg: "box.kubernetes.box_root.claim_name is not set"},
		{name: "relative", pol: narrow, set: set, mount: rw("default/tenants/a"), errMsg: "must be an absolute host path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := claimSubPaths(tt.pol, []backend.Mount{tt.mount}, tt.set)
			if tt.errMsg != "" {
				require.Error(t, err)
				var ve *backend.ValidationError
				assert.ErrorAs(t, err, &ve, "reported as BoxValidationError")
				assert.Contains(t, err.Error(), tt.errMsg)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, []subPathMount{tt.want}, got)
		})
	}
}

// A non-root boxd's group reaches the sandboxes as a supplemental group; a root boxd adds none.
func TestBuildPodSandboxGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		group int64
		want  []int64
	}{
		{"boxd root", 0, nil},
		{"boxd non-root", 65532, []int64{65532}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := testSettings(t, nil)
			set.SandboxGroup = tc.group
			pod, err := buildPod(backend.SessionSpec{PhysicalID: "s", Image: "img"}, nil, set, podIdentity{Name: "p", Namespace: "ns", InstanceID: "i"})
			require.NoError(t, err)
			assert.Equal(t, tc.want, pod.Spec.SecurityContext.SupplementalGroups)
			assert.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.Spec.SecurityContext.SeccompProfile.Type)
		})
	}
}

// With the agent placed on the box root claim the Pod has no init container and no agent
// emptyDir: the sandbox mounts the file read-only at AgentPath (one claim volume, shared with
// the workspace subPaths); without it the init container delivers the agent.
func TestBuildPodAgentDelivery(t *testing.T) {
	subs := []subPathMount{{SubPath: "default/tenants/a", MountPath: "/workspace"}}
	for _, tc := range []struct {
		name      string
		agentSub  string
		subs      []subPathMount
		wantInit  bool
		wantMount corev1.VolumeMount
	}{
		{"init container", "", subs, true, corev1.VolumeMount{Name: agentVolume, MountPath: AgentDir, ReadOnly: true}},
		{"from the claim, with a workspace", ".boxd/agent-0123456789abcdef", subs, false,
			corev1.VolumeMount{Name: boxRootVolume, SubPath: ".boxd/agent-0123456789abcdef", MountPath: AgentPath, ReadOnly: true}},
		{"from the claim, no workspace", ".boxd/agent-0123456789abcdef", nil, false,
			corev1.VolumeMount{Name: boxRootVolume, SubPath: ".boxd/agent-0123456789abcdef", MountPath: AgentPath, ReadOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := testSettings(t, map[string]any{"box_root": map[string]any{"claim_name": "root", "mount_path": "/app/data/box"}})
			pod, err := buildPod(backend.SessionSpec{PhysicalID: "s", Image: "img"}, tc.subs, set,
				podIdentity{Name: "p", Namespace: "ns", InstanceID: "i", AgentSubPath: tc.agentSub})
			require.NoError(t, err)
			assert.Equal(t, tc.wantInit, len(pod.Spec.InitContainers) == 1)
			assert.Contains(t, pod.Spec.Containers[0].VolumeMounts, tc.wantMount)
			claims, agentDirs := 0, 0
			for _, v := range pod.Spec.Volumes {
				switch v.Name {
				case boxRootVolume:
					claims++
					assert.Equal(t, "root", v.PersistentVolumeClaim.ClaimName)
				case agentVolume:
					agentDirs++
				}
			}
			assert.Equal(t, map[bool]int{true: 1, false: 0}[tc.wantInit], agentDirs, "the agent emptyDir only with the init container")
			assert.LessOrEqual(t, claims, 1, "one claim volume")
			if !tc.wantInit {
				assert.Equal(t, 1, claims)
			}
			assert.Equal(t, DaemonCommand(), pod.Spec.Containers[0].Command, "the agent daemon is the main process either way")
		})
	}
}
