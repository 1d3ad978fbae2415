// Package explain tells, for a rendered release, where each component lands, which Pod
// Security level it needs and what it exposes; given the cluster's nodes it predicts which
// pods can schedule and why the others would stay Pending.
package explain

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/langbot-k8s/langbot-k8s/pkg/invariants"
	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// Component is the explanation of one workload.
type Component struct {
	Component     string            `json:"component"`
	Workload      string            `json:"workload"`
	NodeSelector  map[string]string `json:"nodeSelector,omitempty"`
	Tolerations   []string          `json:"tolerations,omitempty"`
	CoLocatedWith string            `json:"coLocatedWith,omitempty"` // required podAffinity target component
	Pool          string            `json:"pool"`                    // human summary of where it lands
	PodSecurity   string            `json:"podSecurity"`
	PSSReasons    []string          `json:"podSecurityReasons,omitempty"`
	Schedulable   *bool             `json:"schedulable,omitempty"` // set when nodes are known
	Nodes         []string          `json:"nodes,omitempty"`       // candidate nodes when nodes are known
	Pending       string            `json:"pending,omitempty"`     // the reason it would stay Pending
}

// Exposure is one way traffic reaches the release.
type Exposure struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// Sandboxes is where the sandbox Pods of the kubernetes backend may land. boxd creates them,
// so they are not in the render: their placement comes from boxd's configuration
// (LANGBOT_BOX_CONFIG) and, with a claim that is not ReadWriteMany, from where boxd lands.
type Sandboxes struct {
	Namespace    string            `json:"namespace"`
	Claim        string            `json:"boxRootClaim"`
	PinnedToNode bool              `json:"pinnedToBoxdNode"` // the claim attaches to one node
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	Tolerations  []string          `json:"tolerations,omitempty"`
	RuntimeClass string            `json:"runtimeClassName,omitempty"`
	Pool         string            `json:"pool"`
	Schedulable  *bool             `json:"schedulable,omitempty"`
	Nodes        []string          `json:"nodes,omitempty"`
	Pending      string            `json:"pending,omitempty"`
}

// Report is the whole explanation.
type Report struct {
	Components []Component `json:"components"`
	// Sandboxes is set for the kubernetes backend.
	Sandboxes *Sandboxes `json:"sandboxes,omitempty"`
	Exposures []Exposure `json:"exposures"`
}

// Explain builds the report. nodes may be nil (no scheduling prediction).
func Explain(set *manifest.Set, nodes []corev1.Node) (*Report, error) {
	pss, err := invariants.PodSecurityLevels(set)
	if err != nil {
		return nil, fmt.Errorf("evaluate pod security: %w", err)
	}
	levels := map[string]invariants.PodSecurity{}
	for _, p := range pss {
		levels[p.Object] = p
	}
	rep := &Report{}
	deps := set.Deployments()
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	sort.Strings(names)
	byComponent := map[string]*appsv1.Deployment{}
	for _, n := range names {
		byComponent[deps[n].Labels["app.kubernetes.io/component"]] = deps[n]
	}
	// Components without podAffinity first, so co-located ones can use their candidates.
	candidates := map[string][]string{}
	order := append([]string(nil), names...)
	sort.SliceStable(order, func(i, j int) bool {
		return affinityTarget(deps[order[i]], byComponent) == "" && affinityTarget(deps[order[j]], byComponent) != ""
	})
	out := map[string]Component{}
	for _, n := range order {
		d := deps[n]
		spec := d.Spec.Template.Spec
		c := Component{
			Component:     d.Labels["app.kubernetes.io/component"],
			Workload:      "Deployment/" + n,
			NodeSelector:  spec.NodeSelector,
			Tolerations:   tolerationStrings(spec.Tolerations),
			CoLocatedWith: affinityTarget(d, byComponent),
		}
		c.Pool = poolSummary(c)
		if l, ok := levels["Deployment/"+n]; ok {
			c.PodSecurity, c.PSSReasons = l.Level, l.Reasons
		}
		if nodes != nil {
			predict(&c, &spec, nodes, candidates)
			candidates[c.Component] = c.Nodes
		}
		out[n] = c
	}
	for _, n := range names {
		rep.Components = append(rep.Components, out[n])
	}
	if box := byComponent["box"]; box != nil {
		cfg, err := invariants.ParseBoxConfig(box)
		if err != nil {
			return nil, fmt.Errorf("read boxd's configuration: %w", err)
		}
		if cfg != nil && cfg.Kubernetes != nil {
			boxNodes, boxPending := []string(nil), ""
			for _, c := range out {
				if c.Component == "box" {
					boxNodes, boxPending = c.Nodes, c.Pending
				}
			}
			rep.Sandboxes = sandboxes(cfg.Kubernetes, nodes, boxNodes, boxPending)
		}
	}
	rep.Exposures = exposures(set)
	return rep, nil
}

// sandboxes explains the placement of the sandbox Pods; with nodes it predicts it like the
// other pods' (boxNodes are the box's candidates, where pinned sandboxes must also fit).
func sandboxes(k *invariants.KubeConfig, nodes []corev1.Node, boxNodes []string, boxPending string) *Sandboxes {
	sb := &Sandboxes{Namespace: k.Namespace, Claim: k.BoxRoot.ClaimName, PinnedToNode: k.BoxRoot.PinToNode,
		NodeSelector: k.NodeSelector, Tolerations: tolerationStrings(k.Tolerations), RuntimeClass: k.RuntimeClassName}
	where := poolSummary(Component{NodeSelector: sb.NodeSelector, Tolerations: sb.Tolerations})
	if sb.PinnedToNode {
		sb.Pool = fmt.Sprintf("only the node boxd runs on (the box root claim %s is not ReadWriteMany: it attaches to one node)", sb.Claim)
		if len(sb.NodeSelector) > 0 || len(sb.Tolerations) > 0 {
			sb.Pool += "; that node must also fit the sandboxes: " + where
		}
	} else {
		sb.Pool = fmt.Sprintf("%s (the box root claim %s is ReadWriteMany: sandboxes spread over them)", where, sb.Claim)
	}
	if sb.RuntimeClass != "" {
		sb.Pool += fmt.Sprintf("; RuntimeClass %s (its handler must be installed on those nodes)", sb.RuntimeClass)
	}
	if nodes == nil {
		return sb
	}
	spec := &corev1.PodSpec{NodeSelector: k.NodeSelector, Tolerations: k.Tolerations}
	var fits []string
	reasons := map[string]int{}
	onBoxNode := map[string]bool{}
	for _, n := range boxNodes {
		onBoxNode[n] = true
	}
	for _, n := range nodes {
		if r := misfit(spec, &n); r != "" {
			reasons[r]++
			continue
		}
		if sb.PinnedToNode && !onBoxNode[n.Name] {
			reasons["were not boxd's node (the ReadWriteOnce box root is attached there)"]++
			continue
		}
		fits = append(fits, n.Name)
	}
	ok := len(fits) > 0
	sb.Schedulable, sb.Nodes = &ok, fits
	if !ok {
		var rs []string
		for r, n := range reasons {
			rs = append(rs, fmt.Sprintf("%d node(s) %s", n, r))
		}
		sort.Strings(rs)
		if len(nodes) == 0 {
			rs = []string{"no nodes"}
		}
		sb.Pending = fmt.Sprintf("0/%d nodes are available: %s", len(nodes), strings.Join(rs, ", "))
		if sb.PinnedToNode && len(boxNodes) == 0 && boxPending != "" {
			sb.Pending = "boxd itself cannot be scheduled (" + boxPending + "), and the sandboxes run on its node"
		}
	}
	return sb
}

func affinityTarget(d *appsv1.Deployment, byComponent map[string]*appsv1.Deployment) string {
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAffinity == nil {
		return ""
	}
	for _, term := range aff.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err != nil {
			continue
		}
		for comp, other := range byComponent {
			if other != d && sel.Matches(labels.Set(other.Spec.Template.Labels)) {
				return comp
			}
		}
	}
	return ""
}

func tolerationStrings(ts []corev1.Toleration) []string {
	var out []string
	for _, t := range ts {
		s := t.Key
		if t.Operator == corev1.TolerationOpExists {
			s += " (any value)"
		} else {
			s += "=" + t.Value
		}
		if t.Effect != "" {
			s += ":" + string(t.Effect)
		}
		out = append(out, s)
	}
	return out
}

func poolSummary(c Component) string {
	var parts []string
	if len(c.NodeSelector) == 0 {
		parts = append(parts, "any node")
	} else {
		keys := make([]string, 0, len(c.NodeSelector))
		for k := range c.NodeSelector {
			keys = append(keys, k+"="+c.NodeSelector[k])
		}
		sort.Strings(keys)
		parts = append(parts, "nodes with "+strings.Join(keys, ","))
	}
	if len(c.Tolerations) > 0 {
		parts = append(parts, "tolerating "+strings.Join(c.Tolerations, ", "))
	}
	if c.CoLocatedWith != "" {
		parts = append(parts, "on the same node as "+c.CoLocatedWith)
	}
	return strings.Join(parts, "; ")
}

// predict filters nodes by readiness, nodeSelector, required node affinity (In/NotIn/Exists/
// DoesNotExist), untolerated NoSchedule/NoExecute taints, and the podAffinity target's candidates.
func predict(c *Component, spec *corev1.PodSpec, nodes []corev1.Node, candidates map[string][]string) {
	var fits []string
	reasons := map[string]int{}
	for _, n := range nodes {
		if r := misfit(spec, &n); r != "" {
			reasons[r]++
			continue
		}
		fits = append(fits, n.Name)
	}
	if c.CoLocatedWith != "" {
		target := map[string]bool{}
		for _, n := range candidates[c.CoLocatedWith] {
			target[n] = true
		}
		var both []string
		for _, n := range fits {
			if target[n] {
				both = append(both, n)
			}
		}
		if len(both) == 0 && len(fits) > 0 {
			reasons[fmt.Sprintf("didn't match pod affinity rules (%s can only run on %v)", c.CoLocatedWith, candidates[c.CoLocatedWith])] += len(fits)
		}
		fits = both
	}
	ok := len(fits) > 0
	c.Schedulable = &ok
	c.Nodes = fits
	if !ok {
		var rs []string
		for r, n := range reasons {
			rs = append(rs, fmt.Sprintf("%d node(s) %s", n, r))
		}
		sort.Strings(rs)
		if len(nodes) == 0 {
			rs = []string{"no nodes"}
		}
		c.Pending = fmt.Sprintf("0/%d nodes are available: %s", len(nodes), strings.Join(rs, ", "))
	}
}

func misfit(spec *corev1.PodSpec, n *corev1.Node) string {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
			return "were not ready"
		}
	}
	if !labels.SelectorFromSet(spec.NodeSelector).Matches(labels.Set(n.Labels)) {
		return "didn't match Pod's node affinity/selector"
	}
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		if !nodeAffinityMatches(a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, n.Labels) {
			return "didn't match Pod's node affinity/selector"
		}
	}
	for _, t := range n.Spec.Taints {
		if t.Effect != corev1.TaintEffectNoSchedule && t.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated := false
		for _, tol := range spec.Tolerations {
			if tol.ToleratesTaint(klog.Background(), &t, false) {
				tolerated = true
				break
			}
		}
		if !tolerated {
			return fmt.Sprintf("had untolerated taint {%s: %s}", t.Key, t.Value)
		}
	}
	return ""
}

func nodeAffinityMatches(sel *corev1.NodeSelector, nodeLabels map[string]string) bool {
	for _, term := range sel.NodeSelectorTerms {
		all := true
		for _, e := range term.MatchExpressions {
			v, has := nodeLabels[e.Key]
			switch e.Operator {
			case corev1.NodeSelectorOpIn:
				all = all && has && contains(e.Values, v)
			case corev1.NodeSelectorOpNotIn:
				all = all && !(has && contains(e.Values, v))
			case corev1.NodeSelectorOpExists:
				all = all && has
			case corev1.NodeSelectorOpDoesNotExist:
				all = all && !has
			}
		}
		if all {
			return true
		}
	}
	return false
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func exposures(set *manifest.Set) []Exposure {
	var out []Exposure
	for _, o := range set.Objects {
		switch v := o.Typed.(type) {
		case *corev1.Service:
			var ports []string
			for _, p := range v.Spec.Ports {
				s := fmt.Sprintf("%s:%d", p.Name, p.Port)
				if p.NodePort != 0 {
					s += fmt.Sprintf("(node %d)", p.NodePort)
				}
				ports = append(ports, s)
			}
			out = append(out, Exposure{Kind: "Service", Name: v.Name, Detail: fmt.Sprintf("%s %s", v.Spec.Type, strings.Join(ports, " "))})
		case *networkingv1.Ingress:
			var hosts []string
			for _, r := range v.Spec.Rules {
				hosts = append(hosts, r.Host)
			}
			tls := ""
			if len(v.Spec.TLS) > 0 {
				tls = " (TLS)"
			}
			out = append(out, Exposure{Kind: "Ingress", Name: v.Name, Detail: strings.Join(hosts, ",") + tls})
		case *unstructured.Unstructured:
			if v.GetKind() == "HTTPRoute" {
				hosts, _, _ := unstructured.NestedStringSlice(v.Object, "spec", "hostnames")
				out = append(out, Exposure{Kind: "HTTPRoute", Name: v.GetName(), Detail: strings.Join(hosts, ",")})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind+out[i].Name < out[j].Kind+out[j].Name })
	return out
}
