package invariants

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// Checks of the kubernetes backend (box.backend=kubernetes): boxd runs each sandbox as a Pod
// of its namespace, configured by LANGBOT_BOX_CONFIG (boxd/internal/kube/settings.go).

const (
	backendKubernetes = "kubernetes"
	envBoxConfig      = "LANGBOT_BOX_CONFIG"
	envScope          = "BOXD_SCOPE"
	envNodeName       = "BOXD_NODE_NAME"
	// Labels boxd puts on every sandbox Pod (boxd/internal/kube/pod.go).
	labelSandbox = "langbot.box"
	labelScope   = "langbot.box/scope"
	labelNetwork = "langbot.box/network"
)

// BoxConfig is boxd's start-up configuration (LANGBOT_BOX_CONFIG) as the chart renders it for
// the kubernetes backend: exactly the keys boxd reads (it refuses unknown ones).
type BoxConfig struct {
	Backend string `json:"backend"`
	Local   struct {
		HostRoot          string   `json:"host_root"`
		DefaultWorkspace  string   `json:"default_workspace"`
		SkillsRoot        string   `json:"skills_root"`
		AllowedMountRoots []string `json:"allowed_mount_roots"`
	} `json:"local"`
	Kubernetes *KubeConfig `json:"kubernetes"`
}

// KubeConfig is the kubernetes block of BoxConfig: what every sandbox Pod gets.
type KubeConfig struct {
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
	OwnerConfigMap     string `json:"owner_config_map"`
	AgentImage         string `json:"agent_image"`
	CPURequest         string `json:"cpu_request"`
	MemoryRequest      string `json:"memory_request"`
	StartTimeoutSec    int    `json:"start_timeout_sec"`
	ScheduleTimeoutSec int    `json:"schedule_timeout_sec"`
}

// ParseBoxConfig decodes LANGBOT_BOX_CONFIG of the box container of d strictly. It returns
// nil and no error when the container has no such variable (the docker and e2b backends).
func ParseBoxConfig(d *appsv1.Deployment) (*BoxConfig, error) {
	v, ok := envValue(d, boxName, envBoxConfig)
	if !ok {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(v)))
	dec.DisallowUnknownFields()
	var cfg BoxConfig
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("decode %s: %w", envBoxConfig, err)
	}
	return &cfg, nil
}

// boxBackend is the backend the chart declared to LangBot (BOX__BACKEND), "" without a box.
func boxBackend(r *Release) string {
	if r.Box == nil {
		return ""
	}
	b, _ := envValue(r.LangBot, langbotName, envBoxBackend)
	return b
}

// boxKube reports whether the release runs the kubernetes backend, by LangBot's or boxd's side.
func boxKube(r *Release) bool {
	if r.Box == nil {
		return false
	}
	if boxBackend(r) == backendKubernetes {
		return true
	}
	cfg, _ := ParseBoxConfig(r.Box)
	return cfg != nil && cfg.Backend == backendKubernetes
}

// kubeConfig returns boxd's kubernetes block, or a finding saying why there is none.
func kubeConfig(r *Release, check string) (*KubeConfig, []Finding) {
	cfg, err := ParseBoxConfig(r.Box)
	switch {
	case err != nil:
		return nil, []Finding{find(check, objName(r.Box), "%v: boxd refuses to start on a configuration it cannot read", err)}
	case cfg == nil:
		return nil, []Finding{find(check, objName(r.Box), "the box container has no %s: boxd would start the docker backend", envBoxConfig)}
	case cfg.Kubernetes == nil:
		return nil, []Finding{find(check, objName(r.Box), "%s has no kubernetes block: the sandbox Pods would get no box root claim", envBoxConfig)}
	}
	return cfg.Kubernetes, nil
}

func checkBoxBackend(r *Release) []Finding {
	if r.Box == nil || r.LangBot == nil {
		return nil
	}
	const name = "box-backend-consistent"
	want := boxBackend(r)
	cfg, err := ParseBoxConfig(r.Box)
	if err != nil {
		return []Finding{find(name, objName(r.Box), "%v: boxd refuses to start on a configuration it cannot read", err)}
	}
	runs := ""
	if cfg != nil {
		runs = cfg.Backend
	}
	switch {
	case want == backendKubernetes && runs != backendKubernetes:
		return []Finding{find(name, objName(r.Box), "LangBot sends box.backend=kubernetes but boxd's %s backend is %q: boxd would run the docker backend and report no backend to LangBot; render %s with \"backend\": \"kubernetes\"", envBoxConfig, runs, envBoxConfig)}
	case runs == backendKubernetes && want != backendKubernetes:
		return []Finding{find(name, objName(r.LangBot), "boxd runs the kubernetes backend but langbot has %s=%q: boxd accepts only \"\" or the name of the backend it runs in box_init, so LangBot would see no backend; set %s=kubernetes", envBoxBackend, want, envBoxBackend)}
	}
	return nil
}

func checkKubeNoHostAccess(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	const name = "box-kubernetes-no-host-access"
	var out []Finding
	for _, d := range []*appsv1.Deployment{r.Box, r.LangBot} {
		if d == nil {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.HostPath != nil {
				out = append(out, find(name, objName(d), "volume %q is a hostPath (%s): the kubernetes backend needs no node access (the box root is a claim); remove it", v.Name, v.HostPath.Path))
			}
		}
	}
	c := manifest.Container(&r.Box.Spec.Template.Spec, boxName)
	for _, m := range c.VolumeMounts {
		if m.MountPath == dockerSocketIn {
			out = append(out, find(name, objName(r.Box), "the box mounts %s: the kubernetes backend talks to the Kubernetes API, never to a container engine socket", dockerSocketIn))
		}
	}
	if manifest.Env(c, "DOCKER_HOST") != nil {
		out = append(out, find(name, objName(r.Box), "DOCKER_HOST is set on the box: the kubernetes backend uses no container engine; remove it"))
	}
	return out
}

// claimVolume returns the claim name of the box-root volume of d, or a finding.
func claimVolume(d *appsv1.Deployment, check string) (string, []Finding) {
	v := manifest.Volume(&d.Spec.Template.Spec, boxRootVolume)
	if v == nil || v.PersistentVolumeClaim == nil {
		return "", []Finding{find(check, objName(d), "no PersistentVolumeClaim volume %q: with the kubernetes backend langbot and boxd share the box root claim, which the sandboxes mount subPaths of", boxRootVolume)}
	}
	return v.PersistentVolumeClaim.ClaimName, nil
}

func checkKubeBoxRoot(r *Release) []Finding {
	if !boxKube(r) || r.LangBot == nil {
		return nil
	}
	const name = "box-root-same-path"
	k, bad := kubeConfig(r, name)
	if bad != nil {
		return bad
	}
	var out []Finding
	claims := map[string]string{}
	for _, d := range []*appsv1.Deployment{r.Box, r.LangBot} {
		c, f := claimVolume(d, name)
		out = append(out, f...)
		claims[objName(d)] = c
	}
	if len(out) > 0 {
		return out
	}
	for where, c := range claims {
		if c != k.BoxRoot.ClaimName {
			out = append(out, find(name, where, "mounts the claim %q but boxd mounts %q into the sandboxes (%s box_root.claim_name): langbot, boxd and every sandbox must share one claim", c, k.BoxRoot.ClaimName, envBoxConfig))
		}
	}
	hr, _ := envValue(r.LangBot, langbotName, envHostRoot)
	cfg, _ := ParseBoxConfig(r.Box)
	paths := map[string]string{
		envHostRoot:                           hr,
		envBoxConfig + " local.host_root":     cfg.Local.HostRoot,
		envBoxConfig + " box_root.mount_path": k.BoxRoot.MountPath,
		"box mountPath":                       mountPath(r.Box, boxName),
		"langbot mountPath":                   mountPath(r.LangBot, langbotName),
	}
	for where, p := range paths {
		switch {
		case p == "":
			out = append(out, find(name, where, "missing: it must be %q like %s", hr, envHostRoot))
		case !path.IsAbs(p) || path.Clean(p) != p:
			out = append(out, find(name, where, "%q is not a clean absolute path", p))
		case p != hr:
			out = append(out, find(name, where, "%q differs from %s=%q: LangBot sends its own paths as host_path and boxd turns them into subPaths of the claim mounted there, so the claim must be at one path in langbot and boxd", p, envHostRoot, hr))
		}
	}
	if r.Values != nil {
		existing := r.valueString("box.kubernetes.boxRoot.existingClaim")
		if _, rendered := r.Set.PersistentVolumeClaims()[k.BoxRoot.ClaimName]; !rendered && existing != k.BoxRoot.ClaimName {
			out = append(out, find(name, "release", "the box root claim %q is neither rendered nor box.kubernetes.boxRoot.existingClaim: the pods would stay Pending", k.BoxRoot.ClaimName))
		}
	}
	return sortFindings(out)
}

func mountPath(d *appsv1.Deployment, container string) string {
	if m := manifest.Mount(manifest.Container(&d.Spec.Template.Spec, container), boxRootVolume); m != nil {
		return m.MountPath
	}
	return ""
}

// claimAccessModes are the box root's access modes: the rendered claim's, else the values'.
func claimAccessModes(r *Release, claim string) []string {
	if pvc, ok := r.Set.PersistentVolumeClaims()[claim]; ok {
		var out []string
		for _, m := range pvc.Spec.AccessModes {
			out = append(out, string(m))
		}
		return out
	}
	return r.valueStrings("box.kubernetes.boxRoot.accessModes")
}

func checkKubeAffinity(r *Release) []Finding {
	if !boxKube(r) || r.LangBot == nil {
		return nil
	}
	const name = "box-affinity"
	k, bad := kubeConfig(r, name)
	if bad != nil {
		return bad
	}
	modes := claimAccessModes(r, k.BoxRoot.ClaimName)
	rwx := slices.Contains(modes, string(corev1.ReadWriteMany))
	if len(modes) > 0 && rwx == k.BoxRoot.PinToNode {
		return []Finding{find(name, objName(r.Box), "%s box_root.pin_to_node=%v but the box root claim's access modes are %v: pin the sandboxes to boxd's node exactly when the claim is not ReadWriteMany (it attaches to one node)", envBoxConfig, k.BoxRoot.PinToNode, modes)}
	}
	if !k.BoxRoot.PinToNode {
		return nil
	}
	if f := requiredAffinityToLangBot(r, name); f != nil {
		return []Finding{find(name, f.Object, "%s; the box root claim %v attaches to one node, which langbot and boxd must share", f.Message, modes)}
	}
	return nil
}

// requiredAffinityToLangBot is nil when the box has a required podAffinity term selecting
// langbot's pods on the same host, else the finding that says what is wrong.
func requiredAffinityToLangBot(r *Release, name string) *Finding {
	aff := r.Box.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAffinity == nil {
		f := find(name, objName(r.Box), "no podAffinity: the box may land on another node than langbot")
		return &f
	}
	for _, term := range aff.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err != nil {
			f := find(name, objName(r.Box), "invalid podAffinity selector: %v", err)
			return &f
		}
		if term.TopologyKey == corev1.LabelHostname && sel.Matches(labels.Set(r.LangBot.Spec.Template.Labels)) {
			return nil
		}
	}
	f := find(name, objName(r.Box), "no required podAffinity term with topologyKey %s selects langbot's pod labels %v", corev1.LabelHostname, r.LangBot.Spec.Template.Labels)
	return &f
}

func checkKubeConfig(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	const name = "box-kubernetes-config"
	k, bad := kubeConfig(r, name)
	if bad != nil {
		return bad
	}
	obj := objName(r.Box)
	var out []Finding
	if k.Namespace != r.Box.Namespace {
		out = append(out, find(name, obj, "sandboxes go to namespace %q but boxd, langbot and the box root claim are in %q: a Pod mounts only claims of its own namespace; set the kubernetes namespace to %q", k.Namespace, r.Box.Namespace, r.Box.Namespace))
	}
	if cm := r.Set.ConfigMaps()[k.OwnerConfigMap]; k.OwnerConfigMap == "" || cm == nil || cm.Namespace != k.Namespace {
		out = append(out, find(name, obj, "owner_config_map %q is not a ConfigMap of this release in %q: the sandbox Pods would have no owner, and helm uninstall would leave them running", k.OwnerConfigMap, k.Namespace))
	}
	if c := manifest.Container(&r.Box.Spec.Template.Spec, boxName); c.Image != k.AgentImage {
		out = append(out, find(name, obj, "agent_image %q is not the box container's image %q: the sandboxes' exec agent must be the boxagent of the same boxd", k.AgentImage, c.Image))
	}
	for _, s := range r.Box.Spec.Template.Spec.ImagePullSecrets {
		if !slices.Contains(k.ImagePullSecrets, s.Name) {
			out = append(out, find(name, obj, "image_pull_secrets lacks %q of the box pod: each sandbox's init container pulls the boxd image for the exec agent", s.Name))
		}
	}
	if r.Values != nil {
		for _, s := range r.valueStrings("global.imagePullSecrets") {
			if !slices.Contains(k.ImagePullSecrets, s) {
				out = append(out, find(name, obj, "image_pull_secrets lacks %q of global.imagePullSecrets: sandbox image pulls would fail on a private registry", s))
			}
		}
	}
	c := manifest.Container(&r.Box.Spec.Template.Spec, boxName)
	if e := manifest.Env(c, envNodeName); k.BoxRoot.PinToNode && (e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName") {
		out = append(out, find(name, obj, "%s is not the downward API's spec.nodeName: boxd cannot pin the sandboxes to its node, where the ReadWriteOnce box root is attached", envNodeName))
	}
	return out
}

func checkKubeScope(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	scope, ok := envValue(r.Box, boxName, envScope)
	if !ok || scope == "" {
		return []Finding{find("box-scope", objName(r.Box), "%s is not set: boxd would adopt and remove every sandbox Pod of the namespace, other releases' included", envScope)}
	}
	if e := validation.IsValidLabelValue(scope); len(e) > 0 {
		return []Finding{find("box-scope", objName(r.Box), "%s=%q is not a label value (%s): boxd refuses to start; use at most 63 letters, digits, '-', '_' or '.'", envScope, scope, strings.Join(e, "; "))}
	}
	return nil
}

// Permissions boxd's kubernetes backend uses, all of them in its own namespace.
var boxdVerbs = map[string][]string{
	"pods":      {"create", "delete", "get", "list", "watch"},
	"pods/exec": {"create", "get"},
	// get on the owner ConfigMap only (resourceNames).
	"configmaps": {"get"},
}

func checkKubeRBAC(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	const name = "box-rbac"
	k, bad := kubeConfig(r, name)
	if bad != nil {
		return bad
	}
	spec := r.Box.Spec.Template.Spec
	sa := spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	ns := r.Box.Namespace
	isBoxd := func(s rbacv1.Subject) bool {
		return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && (s.Namespace == "" || s.Namespace == ns)
	}
	var out []Finding
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		out = append(out, find(name, objName(r.Box), "automountServiceAccountToken is not true: boxd needs its token to create the sandbox Pods"))
	}
	if sa == "default" {
		out = append(out, find(name, objName(r.Box), "boxd runs as the namespace's default ServiceAccount: its Role would hold for every Pod without its own; give boxd its own ServiceAccount"))
	}
	for _, crb := range r.Set.ClusterRoleBindings() {
		out = append(out, find(name, "ClusterRoleBinding/"+crb.Name, "the release must grant nothing cluster-wide: boxd needs only a Role in %s", ns))
	}
	for _, cr := range r.Set.ClusterRoles() {
		out = append(out, find(name, "ClusterRole/"+cr.Name, "the release must grant nothing cluster-wide: boxd needs only a Role in %s", ns))
	}
	granted := map[string]map[string]bool{}
	roles := r.Set.Roles()
	for _, rb := range r.Set.RoleBindings() {
		if !slices.ContainsFunc(rb.Subjects, isBoxd) {
			continue
		}
		obj := "RoleBinding/" + rb.Name
		if rb.Namespace != ns {
			out = append(out, find(name, obj, "is in namespace %q, not boxd's %q", rb.Namespace, ns))
			continue
		}
		if rb.RoleRef.Kind != "Role" {
			out = append(out, find(name, obj, "binds the %s %q: boxd's permissions must be a Role of its namespace, listed by the chart", rb.RoleRef.Kind, rb.RoleRef.Name))
			continue
		}
		role := roles[rb.RoleRef.Name]
		if role == nil || role.Namespace != ns {
			out = append(out, find(name, obj, "binds the Role %q, which the release does not render in %s", rb.RoleRef.Name, ns))
			continue
		}
		out = append(out, roleRules(name, "Role/"+role.Name, role.Rules, k.OwnerConfigMap, granted)...)
	}
	for _, res := range sortedKeys(boxdVerbs) {
		for _, verb := range boxdVerbs[res] {
			if !granted[res][verb] {
				out = append(out, find(name, "release", "boxd's ServiceAccount %s may not %s %s in %s: the kubernetes backend fails without it", sa, verb, res, ns))
			}
		}
	}
	return out
}

// roleRules checks a Role's rules against boxdVerbs and records what they grant.
func roleRules(name, obj string, rules []rbacv1.PolicyRule, owner string, granted map[string]map[string]bool) []Finding {
	var out []Finding
	for i, rule := range rules {
		where := fmt.Sprintf("%s rules[%d]", obj, i)
		if len(rule.NonResourceURLs) > 0 {
			out = append(out, find(name, where, "grants non-resource URLs %v: boxd uses none", rule.NonResourceURLs))
		}
		if len(rule.APIGroups) != 1 || rule.APIGroups[0] != "" {
			out = append(out, find(name, where, "apiGroups %q: boxd uses only the core group \"\"", rule.APIGroups))
		}
		for _, res := range rule.Resources {
			allowed, known := boxdVerbs[res]
			if !known || res == "*" {
				out = append(out, find(name, where, "grants %v on %q: boxd uses only pods, pods/exec and its owner ConfigMap; remove it", rule.Verbs, res))
				continue
			}
			if res == "configmaps" && (len(rule.ResourceNames) != 1 || rule.ResourceNames[0] != owner) {
				out = append(out, find(name, where, "grants configmaps %v with resourceNames %q: boxd reads only its owner ConfigMap %q; restrict resourceNames to it", rule.Verbs, rule.ResourceNames, owner))
			}
			for _, verb := range rule.Verbs {
				if !slices.Contains(allowed, verb) {
					out = append(out, find(name, where, "grants %q on %s: boxd uses only %v there; remove it (least privilege)", verb, res, allowed))
					continue
				}
				if granted[res] == nil {
					granted[res] = map[string]bool{}
				}
				granted[res][verb] = true
			}
		}
	}
	return out
}

// sandboxProbes are addresses a sandbox with network=on must never reach: the private ranges
// (nodes, Pods, Services, the API server on most clusters), carrier-grade NAT, the cloud
// metadata address and loopback.
var sandboxProbes = []string{"10.0.0.1", "10.96.0.1", "172.16.0.1", "192.168.0.1", "100.64.0.1", "169.254.169.254", "127.0.0.1"}

// policyView is what the NetworkPolicies selecting one Pod allow.
type policyView struct {
	ingressIsolated, egressIsolated bool
	ingress                         []networkingv1.NetworkPolicyIngressRule
	egress                          []networkingv1.NetworkPolicyEgressRule
	policies                        []string
}

// policiesFor applies Kubernetes' semantics: a Pod is isolated in a direction by any policy
// selecting it with that policy type; what is allowed is the union of those policies' rules.
func policiesFor(nps []*networkingv1.NetworkPolicy, ns string, podLabels map[string]string) policyView {
	var v policyView
	for _, np := range nps {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || np.Namespace != ns || !sel.Matches(labels.Set(podLabels)) {
			continue
		}
		v.policies = append(v.policies, np.Name)
		types := np.Spec.PolicyTypes
		if len(types) == 0 {
			types = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
			if len(np.Spec.Egress) > 0 {
				types = append(types, networkingv1.PolicyTypeEgress)
			}
		}
		if slices.Contains(types, networkingv1.PolicyTypeIngress) {
			v.ingressIsolated = true
			v.ingress = append(v.ingress, np.Spec.Ingress...)
		}
		if slices.Contains(types, networkingv1.PolicyTypeEgress) {
			v.egressIsolated = true
			v.egress = append(v.egress, np.Spec.Egress...)
		}
	}
	sort.Strings(v.policies)
	return v
}

func blockAdmits(b *networkingv1.IPBlock, ip netip.Addr) bool {
	in := func(cidr string) bool {
		p, err := netip.ParsePrefix(cidr)
		return err == nil && p.Contains(ip)
	}
	if !in(b.CIDR) {
		return false
	}
	for _, e := range b.Except {
		if in(e) {
			return false
		}
	}
	return true
}

func onlyDNS(ports []networkingv1.NetworkPolicyPort) bool {
	if len(ports) == 0 {
		return false
	}
	for _, p := range ports {
		if p.Port == nil || p.Port.IntValue() != 53 || p.EndPort != nil {
			return false
		}
	}
	return true
}

func checkSandboxPolicies(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	const name = "box-sandbox-networkpolicy"
	k, bad := kubeConfig(r, name)
	if bad != nil {
		return bad
	}
	scope, _ := envValue(r.Box, boxName, envScope)
	nps := r.Set.NetworkPolicies()
	var out []Finding
	for _, network := range []string{"off", "on"} {
		pod := map[string]string{}
		for key, val := range k.Labels {
			pod[key] = val
		}
		pod[labelSandbox], pod[labelScope], pod[labelNetwork] = "true", scope, network
		pod["langbot.box/persistent"], pod["langbot.box/instance"], pod["langbot.box/session"] = "false", "0123456789ab", "s"
		obj := fmt.Sprintf("sandbox Pods (network=%s)", network)
		v := policiesFor(nps, k.Namespace, pod)
		if !v.ingressIsolated || !v.egressIsolated {
			out = append(out, find(name, obj, "no NetworkPolicy selecting %s=true,%s=%s isolates both ingress and egress (selected by %v): render the deny-all sandbox policy (the chart always does with this backend)", labelSandbox, labelScope, scope, v.policies))
			continue
		}
		if len(v.ingress) > 0 {
			out = append(out, find(name, obj, "%v admit ingress: nothing connects to a sandbox (boxd execs through the API server); remove the ingress rules", v.policies))
		}
		if network == "off" && len(v.egress) > 0 {
			out = append(out, find(name, obj, "%v allow egress to sessions that asked for network=off; only sandboxes labelled %s=on may have egress", v.policies, labelNetwork))
			continue
		}
		for i, rule := range v.egress {
			if len(rule.To) == 0 {
				out = append(out, find(name, obj, "egress rule %d of %v has no `to`: it admits every destination, the cluster's private ranges and the metadata address included", i, v.policies))
				continue
			}
			for _, peer := range rule.To {
				if peer.IPBlock == nil {
					if !onlyDNS(rule.Ports) {
						out = append(out, find(name, obj, "egress rule %d of %v admits in-cluster peers on ports other than DNS (53): a sandbox could reach cluster services", i, v.policies))
					}
					continue
				}
				for _, probe := range sandboxProbes {
					if blockAdmits(peer.IPBlock, netip.MustParseAddr(probe)) && !onlyDNS(rule.Ports) {
						out = append(out, find(name, obj, "egress rule %d of %v admits %s (ipBlock %s except %v): add its range to box.kubernetes.sandboxEgress.exceptCIDRs", i, v.policies, probe, peer.IPBlock.CIDR, peer.IPBlock.Except))
					}
				}
			}
		}
	}
	return out
}

func checkKubePodSecurity(r *Release) []Finding {
	if !boxKube(r) {
		return nil
	}
	const name = "box-pod-security"
	levels, err := PodSecurityLevels(r.Set)
	if err != nil {
		return []Finding{find(name, "release", "evaluate Pod Security: %v", err)}
	}
	var out []Finding
	for _, l := range levels {
		switch {
		case r.Box != nil && l.Object == objName(r.Box) && l.Level != "restricted":
			out = append(out, find(name, l.Object, "needs Pod Security %s, but boxd on the kubernetes backend runs at restricted (non-root, no host access): %s", l.Level, strings.Join(l.Reasons, "; ")))
		case r.LangBot != nil && l.Object == objName(r.LangBot) && l.Level == "privileged":
			out = append(out, find(name, l.Object, "needs Pod Security privileged, but with the kubernetes backend langbot needs at most baseline (no hostPath): %s", strings.Join(l.Reasons, "; ")))
		}
	}
	return out
}
