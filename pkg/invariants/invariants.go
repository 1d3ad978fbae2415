// Package invariants checks a rendered release for the properties the Box design depends on.
// Each check is small and named, and reports findings a user can act on.
package invariants

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// Finding is one broken invariant.
type Finding struct {
	Check   string `json:"check"`
	Object  string `json:"object"`
	Message string `json:"message"`
}

func (f Finding) String() string { return fmt.Sprintf("[%s] %s: %s", f.Check, f.Object, f.Message) }

// Check is one named invariant.
type Check struct {
	Name        string
	Description string
	Run         func(*Release) []Finding
}

// Release is the rendered release viewed through its three components.
type Release struct {
	Set           *manifest.Set
	LangBot       *appsv1.Deployment
	PluginRuntime *appsv1.Deployment
	Box           *appsv1.Deployment
	// Values are the complete values the release was rendered with (chart defaults included).
	// Checks that compare the render with what the values asked for skip when it is nil.
	Values map[string]any
}

// NewRelease locates the components of a decoded render by their component label.
func NewRelease(set *manifest.Set, vals map[string]any) *Release {
	return &Release{
		Set:           set,
		LangBot:       set.Component("langbot"),
		PluginRuntime: set.Component("plugin-runtime"),
		Box:           set.Component("box"),
		Values:        vals,
	}
}

// All is every check, in reporting order.
func All() []Check {
	return []Check{
		{"langbot-present", "the langbot Deployment and its container exist", checkLangBotPresent},
		{"box-enabled-consistent", "box off => no box objects and BOX__ENABLED=false; box on => BOX__ENABLED=true", checkBoxEnabled},
		{"box-endpoint", "BOX__RUNTIME__ENDPOINT names the box Service (DNS-1123) and its port", checkBoxEndpoint},
		{"box-backend-consistent", "LangBot's BOX__BACKEND names the backend boxd runs (LANGBOT_BOX_CONFIG), which boxd requires in box_init", checkBoxBackend},
		{"box-root-same-path", "one absolute box root: docker = the hostPath, both mounts and BOX__LOCAL__HOST_ROOT; kubernetes = one claim mounted at BOX__LOCAL__HOST_ROOT in langbot and boxd, named in boxd's config", checkBoxRoot},
		{"box-root-allowed", "the box root lies inside BOX__LOCAL__ALLOWED_MOUNT_ROOTS", checkBoxRootAllowed},
		{"box-affinity", "docker, and kubernetes with a claim that is not ReadWriteMany: the box podAffinity selects langbot's pods on the same host, and boxd pins sandboxes exactly then", checkBoxAffinity},
		{"box-e2b-no-host-access", "e2b backend => no hostPath and no Docker socket", checkE2B},
		{"box-kubernetes-no-host-access", "kubernetes backend => no hostPath, no container engine socket, no DOCKER_HOST", checkKubeNoHostAccess},
		{"box-kubernetes-config", "kubernetes backend: sandboxes in boxd's namespace, owned by a ConfigMap of the release, the agent from boxd's image, boxd's and the global pull secrets, BOXD_NODE_NAME when pinned", checkKubeConfig},
		{"box-rbac", "kubernetes backend: boxd's own ServiceAccount with its token, a Role of its namespace granting exactly pods, pods/exec and its owner ConfigMap, nothing cluster-wide", checkKubeRBAC},
		{"box-sandbox-networkpolicy", "kubernetes backend: sandbox Pods isolated both ways, egress only with network=on and never to private ranges, metadata or loopback (DNS excepted)", checkSandboxPolicies},
		{"box-pod-security", "kubernetes backend: boxd at Pod Security restricted, langbot at most baseline", checkKubePodSecurity},
		{"control-tokens", "both ends of each control token read the same Secret key", checkTokens},
		{"image-tags", "no image uses `latest` or no tag", checkImages},
		{"secret-refs", "every secretKeyRef names a Secret and a key; LangBot's secrets never as plain env or ConfigMap data", checkSecretRefs},
		{"image-registry", "global.imageRegistry, when set, is the registry of every image", checkImageRegistry},
		{"probe-handlers", "every probe has exactly one handler", checkProbeHandlers},
		{"probe-endpoints", "HTTP probes ask the runtimes for paths they answer, on ports of the container", checkProbeEndpoints},
		{"runtime-ports", "the runtimes listen (--ws-control-port / --ws-debug-port) on the ports the containers, Services and URLs name", checkRuntimePorts},
		{"service-ports-unique", "no Service or container carries a port twice", checkUniquePorts},
		{"plugin-enabled-consistent", "plugin runtime off => PLUGIN__ENABLE=false; on => PLUGIN__ENABLE=true", checkPluginEnabled},
		{"managed-env", "every LangBot config key the chart manages is set in every state (LangBot persists env overrides)", checkManagedEnv},
		{"blocking-executor", "langbot's SYSTEM__BLOCKING_EXECUTOR__* and the runtimes' LANGBOT_BLOCKING_EXECUTOR_* carry config.blockingExecutor", checkBlockingExecutor},
		{"box-e2b-template", "box.e2b.template reaches LangBot as BOX__E2B__TEMPLATE", checkE2BTemplate},
		{"box-scope", "the default BOXD_SCOPE starts with the namespace the box runs in", checkBoxScope},
		{"uv-cache-writable", "a uv-started container on a read-only root file system has a writable uv cache", checkUVCache},
		{"common-metadata", "commonLabels and ServiceMonitor labels are in metadata.labels, commonAnnotations in metadata.annotations", checkCommonMetadata},
		{"pull-secrets", "every pod, the test hook included, carries global.imagePullSecrets", checkPullSecrets},
		{"metrics-reachable", "a NetworkPolicy in front of a ServiceMonitor's pods admits a scraper on the metrics port", checkMetricsReachable},
	}
}

// Run runs every check and returns all findings. vals are the complete values of the render
// (nil skips the checks that compare the render with the values).
func Run(set *manifest.Set, vals map[string]any) []Finding {
	r := NewRelease(set, vals)
	var out []Finding
	for _, c := range All() {
		out = append(out, c.Run(r)...)
	}
	return out
}

const (
	boxRootVolume   = "box-root"
	socketVolume    = "docker-socket"
	langbotName     = "langbot"
	boxName         = "box"
	pluginName      = "plugin-runtime"
	dockerSocketIn  = "/var/run/docker.sock"
	envBoxEnabled   = "BOX__ENABLED"
	envBoxEndpoint  = "BOX__RUNTIME__ENDPOINT"
	envBoxBackend   = "BOX__BACKEND"
	envHostRoot     = "BOX__LOCAL__HOST_ROOT"
	envAllowedRoots = "BOX__LOCAL__ALLOWED_MOUNT_ROOTS"
)

func find(check, object, format string, args ...any) Finding {
	return Finding{Check: check, Object: object, Message: fmt.Sprintf(format, args...)}
}

func objName(d *appsv1.Deployment) string { return "Deployment/" + d.Name }

func envValue(d *appsv1.Deployment, container, name string) (string, bool) {
	if d == nil {
		return "", false
	}
	e := manifest.Env(manifest.Container(&d.Spec.Template.Spec, container), name)
	if e == nil {
		return "", false
	}
	return e.Value, true
}

func checkLangBotPresent(r *Release) []Finding {
	if r.LangBot == nil {
		return []Finding{find("langbot-present", "release", "no Deployment labelled app.kubernetes.io/component=langbot was rendered")}
	}
	if manifest.Container(&r.LangBot.Spec.Template.Spec, langbotName) == nil {
		return []Finding{find("langbot-present", objName(r.LangBot), "no container named %q", langbotName)}
	}
	return nil
}

func boxObjects(r *Release) []string {
	var out []string
	for _, o := range r.Set.Objects {
		if m, ok := o.Typed.(metav1.Object); ok && m.GetLabels()["app.kubernetes.io/component"] == boxName {
			out = append(out, o.Kind+"/"+o.Name)
		}
	}
	return out
}

func checkBoxEnabled(r *Release) []Finding {
	if r.LangBot == nil {
		return nil
	}
	enabled, ok := envValue(r.LangBot, langbotName, envBoxEnabled)
	objs := boxObjects(r)
	switch {
	case !ok:
		return []Finding{find("box-enabled-consistent", objName(r.LangBot), "%s is not set on langbot: LangBot would try to reach a box that may not exist; set it to %q", envBoxEnabled, fmt.Sprint(r.Box != nil))}
	case r.Box == nil && enabled != "false":
		return []Finding{find("box-enabled-consistent", objName(r.LangBot), "no box is deployed but %s=%q: it must be \"false\"", envBoxEnabled, enabled)}
	case r.Box == nil && len(objs) > 0:
		return []Finding{find("box-enabled-consistent", "release", "box is off but box objects were rendered: %s", strings.Join(objs, ", "))}
	case r.Box != nil && enabled != "true":
		return []Finding{find("box-enabled-consistent", objName(r.LangBot), "the box is deployed but %s=%q on langbot: set it to \"true\"", envBoxEnabled, enabled)}
	}
	return nil
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func checkBoxEndpoint(r *Release) []Finding {
	if r.Box == nil || r.LangBot == nil {
		return nil
	}
	const name = "box-endpoint"
	ep, ok := envValue(r.LangBot, langbotName, envBoxEndpoint)
	if !ok {
		return []Finding{find(name, objName(r.LangBot), "%s is missing: LangBot would fall back to ws://langbot_box:5410, which is not a valid Kubernetes DNS name", envBoxEndpoint)}
	}
	rest, found := strings.CutPrefix(ep, "ws://")
	if !found {
		return []Finding{find(name, objName(r.LangBot), "%s=%q must start with ws://", envBoxEndpoint, ep)}
	}
	host, port, _ := strings.Cut(strings.SplitN(rest, "/", 2)[0], ":")
	svcName := strings.SplitN(host, ".", 2)[0]
	var out []Finding
	if !dns1123Label.MatchString(svcName) || len(svcName) > 63 {
		out = append(out, find(name, objName(r.LangBot), "endpoint host %q is not a DNS-1123 label (underscores and capitals are invalid in Kubernetes)", svcName))
	}
	svc := r.Set.Services()[svcName]
	if svc == nil {
		return append(out, find(name, objName(r.LangBot), "endpoint host %q is not a Service of this release", svcName))
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(r.Box.Spec.Template.Labels)) {
		out = append(out, find(name, "Service/"+svc.Name, "the Service the endpoint names does not select the box pods"))
	}
	matched := false
	for _, p := range svc.Spec.Ports {
		if fmt.Sprint(p.Port) == port {
			matched = true
		}
	}
	if !matched {
		out = append(out, find(name, "Service/"+svc.Name, "endpoint port %q is not a port of the Service", port))
	}
	return out
}

// boxDocker reports whether the box runs the docker backend (it mounts the socket, or LangBot
// is told docker).
func boxDocker(r *Release) bool {
	return r.Box != nil && !boxKube(r) && (manifest.Volume(&r.Box.Spec.Template.Spec, socketVolume) != nil || boxBackend(r) == "docker")
}

func checkBoxRoot(r *Release) []Finding {
	if boxKube(r) {
		return checkKubeBoxRoot(r)
	}
	if !boxDocker(r) || r.LangBot == nil {
		return nil
	}
	const name = "box-root-same-path"
	paths := map[string]string{}
	add := func(where, p string) { paths[where] = p }
	for _, d := range []*appsv1.Deployment{r.Box, r.LangBot} {
		v := manifest.Volume(&d.Spec.Template.Spec, boxRootVolume)
		if v == nil || v.HostPath == nil {
			return []Finding{find(name, objName(d), "no hostPath volume %q: the workspace root must be a node hostPath shared by langbot, the box and every sandbox (a PVC path is invisible to the node's Docker daemon)", boxRootVolume)}
		}
		add(objName(d)+" hostPath", v.HostPath.Path)
	}
	if m := manifest.Mount(manifest.Container(&r.Box.Spec.Template.Spec, boxName), boxRootVolume); m != nil {
		add("box mountPath", m.MountPath)
	} else {
		add("box mountPath", "")
	}
	if m := manifest.Mount(manifest.Container(&r.LangBot.Spec.Template.Spec, langbotName), boxRootVolume); m != nil {
		add("langbot mountPath", m.MountPath)
	} else {
		add("langbot mountPath", "")
	}
	hr, _ := envValue(r.LangBot, langbotName, envHostRoot)
	add(envHostRoot, hr)
	ref := paths[envHostRoot]
	var out []Finding
	for where, p := range paths {
		switch {
		case p == "":
			out = append(out, find(name, where, "missing: it must be %q like %s", ref, envHostRoot))
		case !path.IsAbs(p) || path.Clean(p) != p:
			out = append(out, find(name, where, "%q is not a clean absolute path", p))
		case p != ref:
			out = append(out, find(name, where, "%q differs from %s=%q: the node daemon resolves sandbox bind mounts on the node, so all must be the same path", p, envHostRoot, ref))
		}
	}
	return sortFindings(out)
}

func within(p, root string) bool {
	root = strings.TrimSuffix(root, "/")
	return p == root || strings.HasPrefix(p, root+"/") || root == ""
}

func checkBoxRootAllowed(r *Release) []Finding {
	if !boxDocker(r) && !boxKube(r) {
		return nil
	}
	hr, _ := envValue(r.LangBot, langbotName, envHostRoot)
	roots, _ := envValue(r.LangBot, langbotName, envAllowedRoots)
	for _, root := range strings.Split(roots, ",") {
		if root = strings.TrimSpace(root); root != "" && within(hr, root) {
			return nil
		}
	}
	return []Finding{find("box-root-allowed", objName(r.LangBot), "%s=%q is not inside %s=%q: LangBot would refuse to mount its own workspaces; add the box root to box.allowedMountRoots", envHostRoot, hr, envAllowedRoots, roots)}
}

func checkBoxAffinity(r *Release) []Finding {
	if boxKube(r) {
		return checkKubeAffinity(r)
	}
	if !boxDocker(r) || r.LangBot == nil {
		return nil
	}
	if f := requiredAffinityToLangBot(r, "box-affinity"); f != nil {
		if strings.HasPrefix(f.Message, "no podAffinity") {
			f.Message += " and the shared hostPath would differ"
		}
		return []Finding{*f}
	}
	return nil
}

func checkE2B(r *Release) []Finding {
	backend, _ := envValue(r.LangBot, langbotName, envBoxBackend)
	if r.Box == nil || backend != "e2b" {
		return nil
	}
	var out []Finding
	for _, d := range []*appsv1.Deployment{r.Box, r.LangBot} {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.HostPath != nil {
				out = append(out, find("box-e2b-no-host-access", objName(d), "volume %q is a hostPath (%s) but the e2b backend needs no node access", v.Name, v.HostPath.Path))
			}
		}
	}
	return out
}

type tokenRef struct{ secret, key string }

func secretRef(d *appsv1.Deployment, container, env string) (tokenRef, bool) {
	if d == nil {
		return tokenRef{}, false
	}
	e := manifest.Env(manifest.Container(&d.Spec.Template.Spec, container), env)
	if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		return tokenRef{}, false
	}
	return tokenRef{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key}, true
}

func checkTokens(r *Release) []Finding {
	const name = "control-tokens"
	var out []Finding
	pairs := []struct {
		env       string
		runtime   *appsv1.Deployment
		container string
	}{
		{"LANGBOT_BOX_CONTROL_TOKEN", r.Box, boxName},
		{"LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN", r.PluginRuntime, pluginName},
	}
	secrets := r.Set.Secrets()
	for _, p := range pairs {
		if p.runtime == nil || r.LangBot == nil {
			continue
		}
		a, okA := secretRef(r.LangBot, langbotName, p.env)
		b, okB := secretRef(p.runtime, p.container, p.env)
		switch {
		case !okA:
			out = append(out, find(name, objName(r.LangBot), "%s is not read from a Secret", p.env))
		case !okB:
			out = append(out, find(name, objName(p.runtime), "%s is not read from a Secret", p.env))
		case a != b:
			out = append(out, find(name, objName(p.runtime), "%s reads %s/%s but langbot reads %s/%s: both ends must share one secret", p.env, b.secret, b.key, a.secret, a.key))
		default:
			if s, ok := secrets[a.secret]; ok {
				if _, has := s.Data[a.key]; !has {
					out = append(out, find(name, "Secret/"+a.secret, "has no key %q that %s reads", a.key, p.env))
				}
			}
		}
	}
	return out
}

func checkImages(r *Release) []Finding {
	var out []Finding
	for obj, pt := range r.Set.PodSpecs() {
		for _, c := range append(append([]corev1.Container{}, pt.Spec.InitContainers...), pt.Spec.Containers...) {
			if msg := imageProblem(c.Image); msg != "" {
				out = append(out, find("image-tags", obj, "container %q image %q %s", c.Name, c.Image, msg))
			}
		}
	}
	return sortFindings(out)
}

func imageProblem(image string) string {
	ref, _, hasDigest := strings.Cut(image, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, hasTag := strings.Cut(last, ":")
	switch {
	case hasTag && tag == "latest":
		return "uses the `latest` tag: pin a version (or a digest) so upgrades are deliberate"
	case !hasTag && !hasDigest:
		return "has no tag (implicitly `latest`): pin a version"
	}
	return ""
}
