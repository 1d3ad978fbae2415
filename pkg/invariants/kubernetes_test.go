package invariants

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/utils/ptr"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

var kube = []string{"box.enabled=true", "box.backend=kubernetes"}

func kubeWith(set ...string) []string { return append(append([]string{}, kube...), set...) }

// editBoxConfig rewrites boxd's LANGBOT_BOX_CONFIG through its JSON form.
func editBoxConfig(t *testing.T, r *Release, edit func(cfg map[string]any, k map[string]any)) {
	t.Helper()
	c := container(r.Box, "box")
	var cfg map[string]any
	require.NoError(t, json.Unmarshal([]byte(manifest.Env(c, envBoxConfig).Value), &cfg))
	k, _ := cfg["kubernetes"].(map[string]any)
	edit(cfg, k)
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	setEnv(c, envBoxConfig, string(b))
}

func boxRole(r *Release) *rbacv1.Role { return r.Set.Roles()["langbot-box"] }

func sandboxPolicy(r *Release, name string) *networkingv1.NetworkPolicy {
	for _, np := range r.Set.NetworkPolicies() {
		if np.Name == name {
			return np
		}
	}
	return nil
}

// Each mutation breaks one invariant of a valid kubernetes-backend render; the named check
// must catch it (the mutations stand for a chart change that would break boxd or its isolation).
func TestKubernetesInvariantsCatchTheirBreakage(t *testing.T) {
	cases := []struct {
		name   string
		set    []string
		mutate func(t *testing.T, r *Release)
		check  string
		msg    string
	}{
		{"langbot told docker", kube, func(t *testing.T, r *Release) {
			setEnv(container(r.LangBot, "langbot"), envBoxBackend, "docker")
		}, "box-backend-consistent", "set BOX__BACKEND=kubernetes"},
		{"boxd told docker", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(cfg, _ map[string]any) { cfg["backend"] = "docker" })
		}, "box-backend-consistent", "boxd would run the docker backend"},
		{"unknown config key", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["pids_limit"] = 64 })
		}, "box-backend-consistent", "unknown field"},
		{"box root as hostPath", kube, func(t *testing.T, r *Release) {
			v := manifest.Volume(&r.Box.Spec.Template.Spec, "box-root")
			v.PersistentVolumeClaim, v.HostPath = nil, &corev1.HostPathVolumeSource{Path: "/app/data/box"}
		}, "box-kubernetes-no-host-access", "hostPath"},
		{"socket mounted", kube, func(t *testing.T, r *Release) {
			c := container(r.Box, "box")
			c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "tmp", MountPath: "/var/run/docker.sock"})
		}, "box-kubernetes-no-host-access", "container engine socket"},
		{"langbot on another claim", kube, func(t *testing.T, r *Release) {
			manifest.Volume(&r.LangBot.Spec.Template.Spec, "box-root").PersistentVolumeClaim.ClaimName = "other"
		}, "box-root-same-path", "must share one claim"},
		{"boxd mounts the claim elsewhere", kube, func(t *testing.T, r *Release) {
			manifest.Mount(container(r.Box, "box"), "box-root").MountPath = "/data/box"
		}, "box-root-same-path", "differs from BOX__LOCAL__HOST_ROOT"},
		{"config mount path differs", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["box_root"].(map[string]any)["mount_path"] = "/srv/box" })
		}, "box-root-same-path", "differs from BOX__LOCAL__HOST_ROOT"},
		{"claim not rendered", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["box_root"].(map[string]any)["claim_name"] = "gone" })
			manifest.Volume(&r.Box.Spec.Template.Spec, "box-root").PersistentVolumeClaim.ClaimName = "gone"
			manifest.Volume(&r.LangBot.Spec.Template.Spec, "box-root").PersistentVolumeClaim.ClaimName = "gone"
		}, "box-root-same-path", "neither rendered nor"},
		{"box root outside allowed roots", kube, func(t *testing.T, r *Release) {
			setEnv(container(r.LangBot, "langbot"), envAllowedRoots, "/srv")
		}, "box-root-allowed", "not inside"},
		{"RWO claim without podAffinity", kube, func(t *testing.T, r *Release) {
			r.Box.Spec.Template.Spec.Affinity = nil
		}, "box-affinity", "attaches to one node"},
		{"RWO claim not pinned", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["box_root"].(map[string]any)["pin_to_node"] = false })
		}, "box-affinity", "pin_to_node=false"},
		{"RWX claim pinned", kubeWith("box.kubernetes.boxRoot.accessModes={ReadWriteMany}"), func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["box_root"].(map[string]any)["pin_to_node"] = true })
		}, "box-affinity", "pin_to_node=true"},
		{"no node name when pinned", kube, func(t *testing.T, r *Release) {
			removeEnv(container(r.Box, "box"), envNodeName)
		}, "box-kubernetes-config", "BOXD_NODE_NAME"},
		{"sandboxes in another namespace", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["namespace"] = "sandboxes" })
		}, "box-kubernetes-config", "only claims of its own namespace"},
		{"no owner ConfigMap", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["owner_config_map"] = "" })
		}, "box-kubernetes-config", "helm uninstall would leave them"},
		{"agent from another image", kube, func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["agent_image"] = "ghcr.io/langbot-k8s/boxd:0.0.9" })
		}, "box-kubernetes-config", "same boxd"},
		{"sandboxes without the global pull secret", kubeWith("global.imagePullSecrets={regcred}"), func(t *testing.T, r *Release) {
			editBoxConfig(t, r, func(_, k map[string]any) { k["image_pull_secrets"] = []string{} })
		}, "box-kubernetes-config", "regcred"},
		{"scope not a label value", kube, func(t *testing.T, r *Release) {
			setEnv(container(r.Box, "box"), envScope, "a/b")
		}, "box-scope", "not a label value"},
		{"Role grants secrets", kube, func(t *testing.T, r *Release) {
			boxRole(r).Rules = append(boxRole(r).Rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}})
		}, "box-rbac", `on "secrets"`},
		{"Role grants pods patch", kube, func(t *testing.T, r *Release) {
			boxRole(r).Rules[0].Verbs = append(boxRole(r).Rules[0].Verbs, "patch")
		}, "box-rbac", `"patch" on pods`},
		{"Role reads every ConfigMap", kube, func(t *testing.T, r *Release) {
			boxRole(r).Rules[2].ResourceNames = nil
		}, "box-rbac", "restrict resourceNames"},
		{"Role without pods/exec", kube, func(t *testing.T, r *Release) {
			boxRole(r).Rules = []rbacv1.PolicyRule{boxRole(r).Rules[0], boxRole(r).Rules[2]}
		}, "box-rbac", "may not create pods/exec"},
		{"wildcard verbs", kube, func(t *testing.T, r *Release) {
			boxRole(r).Rules[0].Verbs = []string{"*"}
		}, "box-rbac", `"*" on pods`},
		{"token not mounted", kube, func(t *testing.T, r *Release) {
			r.Box.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(false)
		}, "box-rbac", "needs its token"},
		{"cluster-wide grant", kube, func(t *testing.T, r *Release) {
			r.Set.Objects = append(r.Set.Objects, manifest.Object{Kind: "ClusterRoleBinding", Name: "x", Typed: &rbacv1.ClusterRoleBinding{}})
		}, "box-rbac", "nothing cluster-wide"},
		{"no deny-all for sandboxes", kube, func(t *testing.T, r *Release) {
			sandboxPolicy(r, "langbot-box-sandboxes").Spec.PodSelector.MatchLabels["langbot.box/scope"] = "other"
		}, "box-sandbox-networkpolicy", "isolates both ingress and egress"},
		{"egress for network=off", kube, func(t *testing.T, r *Release) {
			delete(sandboxPolicy(r, "langbot-box-sandboxes-egress").Spec.PodSelector.MatchLabels, "langbot.box/network")
		}, "box-sandbox-networkpolicy", "network=off"},
		{"metadata address reachable", kube, func(t *testing.T, r *Release) {
			b := sandboxPolicy(r, "langbot-box-sandboxes-egress").Spec.Egress[0].To[0].IPBlock
			b.Except = b.Except[:4] // drops 169.254/16 and 127/8
		}, "box-sandbox-networkpolicy", "169.254.169.254"},
		{"cluster peers on every port", kube, func(t *testing.T, r *Release) {
			sandboxPolicy(r, "langbot-box-sandboxes-egress").Spec.Egress[1].Ports = nil
		}, "box-sandbox-networkpolicy", "other than DNS"},
		{"sandbox ingress", kube, func(t *testing.T, r *Release) {
			sandboxPolicy(r, "langbot-box-sandboxes").Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
		}, "box-sandbox-networkpolicy", "admit ingress"},
		{"boxd as root", kube, func(t *testing.T, r *Release) {
			r.Box.Spec.Template.Spec.SecurityContext.RunAsUser = ptr.To(int64(0))
		}, "box-pod-security", "restricted"},
		{"langbot with a hostPath", kube, func(t *testing.T, r *Release) {
			r.LangBot.Spec.Template.Spec.Volumes = append(r.LangBot.Spec.Template.Spec.Volumes, corev1.Volume{Name: "x", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/srv"}}})
		}, "box-pod-security", "at most baseline"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, vals := renderRelease(t, tc.set...)
			require.Empty(t, Run(set, vals), "the chart's render must pass every check")
			tc.mutate(t, NewRelease(set, vals))
			var hit []string
			for _, f := range Run(set, vals) {
				if f.Check == tc.check {
					hit = append(hit, f.Message)
				}
			}
			require.NotEmpty(t, hit, "check %s must fire; all findings: %v", tc.check, Run(set, vals))
			assert.Contains(t, hit[0], tc.msg)
		})
	}
}

// The kubernetes renders the chart produces keep every invariant, with each claim mode and a
// long release name (BOXD_SCOPE hashed to a label value).
func TestKubernetesRendersHoldEveryInvariant(t *testing.T) {
	cases := []struct {
		name string
		set  []string
	}{
		{"defaults (ReadWriteOnce)", kube},
		{"ReadWriteMany", kubeWith("box.kubernetes.boxRoot.accessModes={ReadWriteMany}")},
		{"existing claim", kubeWith("box.kubernetes.boxRoot.existingClaim=shared-box")},
		{"long names", kubeWith("fullnameOverride=a-release-name-that-is-quite-long-forty", "namespaceOverride=a-namespace-name-that-is-long-too")},
		{"pull secrets and scheduling", kubeWith("global.imagePullSecrets={regcred}", "box.kubernetes.imagePullSecrets={sandbox-reg}",
			"box.nodeSelector.pool=box", "langbot.nodeSelector.pool=box", "box.kubernetes.nodeSelector.pool=box", "box.kubernetes.runtimeClassName=gvisor")},
		{"network policies on", kubeWith("networkPolicy.enabled=true")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, vals := renderRelease(t, tc.set...)
			assert.Empty(t, Run(set, vals))
			r := NewRelease(set, vals)
			scope, ok := envValue(r.Box, "box", envScope)
			require.True(t, ok)
			assert.LessOrEqual(t, len(scope), 63)
			cfg, err := ParseBoxConfig(r.Box)
			require.NoError(t, err)
			require.NotNil(t, cfg.Kubernetes)
			assert.Equal(t, "kubernetes", cfg.Backend)
		})
	}
}

func TestKubernetesPodSecurityLevels(t *testing.T) {
	for _, modes := range []string{"ReadWriteOnce", "ReadWriteMany"} {
		t.Run(modes, func(t *testing.T) {
			levels, err := PodSecurityLevels(renderSet(t, kubeWith("box.kubernetes.boxRoot.accessModes={"+modes+"}")...))
			require.NoError(t, err)
			got := map[string]string{}
			for _, l := range levels {
				got[l.Object] = l.Level
			}
			assert.Equal(t, map[string]string{
				"Deployment/langbot":                "baseline",   // upstream image runs as root; the box root is a claim
				"Deployment/langbot-box":            "restricted", // non-root, no socket, no hostPath
				"Deployment/langbot-plugin-runtime": "baseline",
				"Pod/langbot-test":                  "restricted",
			}, got)
		})
	}
}
