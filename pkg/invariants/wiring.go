package invariants

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
)

// Checks of the wiring between the components and the real programs' behaviour
// (LangBot v4.10.8, langbot-plugin 0.5.5), and between the values and the render.

const componentLabel = "app.kubernetes.io/component"

// valueAt returns the value at a dotted path of the release values.
func (r *Release) valueAt(dotted string) (any, bool) {
	var cur any = r.Values
	for _, k := range strings.Split(dotted, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func (r *Release) valueString(dotted string) string {
	v, ok := r.valueAt(dotted)
	if !ok || v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func (r *Release) valueStringMap(dotted string) map[string]string {
	v, _ := r.valueAt(dotted)
	m, _ := v.(map[string]any)
	out := map[string]string{}
	for k, val := range m {
		out[k] = fmt.Sprint(val)
	}
	return out
}

func (r *Release) valueStrings(dotted string) []string {
	v, _ := r.valueAt(dotted)
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// valuesKey is the values block of a component.
func valuesKey(component string) string {
	switch component {
	case pluginName:
		return "pluginRuntime"
	case "test":
		return "tests"
	}
	return component
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type probeRef struct {
	kind  string
	probe *corev1.Probe
}

func probes(c *corev1.Container) []probeRef {
	return []probeRef{{"startupProbe", c.StartupProbe}, {"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}}
}

func handlers(p *corev1.Probe) []string {
	var out []string
	if p.HTTPGet != nil {
		out = append(out, "httpGet")
	}
	if p.TCPSocket != nil {
		out = append(out, "tcpSocket")
	}
	if p.Exec != nil {
		out = append(out, "exec")
	}
	if p.GRPC != nil {
		out = append(out, "grpc")
	}
	return out
}

func sortedPodSpecs(set *manifest.Set) ([]string, map[string]*corev1.PodTemplateSpec) {
	specs := set.PodSpecs()
	return sortedKeys(specs), specs
}

func checkProbeHandlers(r *Release) []Finding {
	var out []Finding
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		pt := specs[obj]
		for i := range pt.Spec.Containers {
			c := &pt.Spec.Containers[i]
			for _, p := range probes(c) {
				if p.probe == nil {
					continue
				}
				field := valuesKey(pt.Labels[componentLabel]) + "." + p.kind
				switch h := handlers(p.probe); {
				case len(h) == 0:
					out = append(out, find("probe-handlers", obj, "container %q %s has no handler (httpGet, tcpSocket, exec or grpc): the API server rejects it; give %s one handler, or {} to disable it", c.Name, p.kind, field))
				case len(h) > 1:
					out = append(out, find("probe-handlers", obj, "container %q %s has %d handlers (%s): the API server rejects a probe with more than one; keep one in %s", c.Name, p.kind, len(h), strings.Join(h, ", "), field))
				}
			}
		}
	}
	return out
}

// httpAnswers lists, per component and container port name, the paths the real program
// answers over plain HTTP. A port or component not listed is not checked.
var httpAnswers = map[string]map[string][]string{
	// langbot-plugin 0.5.5 src/langbot_plugin/runtime/io/controllers/ws/server.py
	// (process_http_request): /healthz on both WebSocket servers; any other path is a
	// WebSocket handshake, which a probe's plain GET fails.
	pluginName: {"runtime": {"/healthz"}, "debug": {"/healthz"}},
	// boxd (boxd/README.md) and `lbp box` (langbot-plugin 0.5.5 src/langbot_plugin/box/server.py).
	boxName: {"rpc": {"/healthz", "/readyz", "/metrics"}},
	// LangBot v4.10.8 src/langbot/pkg/api/http/controller/main.py registers /healthz; the web
	// UI's routes are not listed here, so only the port is checked.
}

// containerPort resolves a probe or Service target port against a container.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func checkProbeEndpoints(r *Release) []Finding {
	var out []Finding
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		pt := specs[obj]
		comp := pt.Labels[componentLabel]
		for i := range pt.Spec.Containers {
			c := &pt.Spec.Containers[i]
			for _, p := range probes(c) {
				if p.probe == nil || p.probe.HTTPGet == nil {
					continue
				}
				field := valuesKey(comp) + "." + p.kind
				g := p.probe.HTTPGet
				cp, ok := containerPort(c, g.Port)
				if !ok {
					out = append(out, find("probe-endpoints", obj, "container %q %s probes port %s, which is not a port of the container: fix %s", c.Name, p.kind, g.Port.String(), field))
					continue
				}
				paths, known := httpAnswers[comp][cp.Name]
				if known && !slices.Contains(paths, g.Path) {
					out = append(out, find("probe-endpoints", obj, "container %q %s asks for %s on port %s, but the %s answers plain HTTP only on %s there: the probe would fail and the pod never become Ready; use one of those in %s", c.Name, p.kind, g.Path, cp.Name, comp, strings.Join(paths, ", "), field))
				}
			}
		}
	}
	return out
}

// flagValue returns the value of --name in args (either "--name v" or "--name=v").
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func namedPort(c *corev1.Container, name string) (int32, bool) {
	cp, ok := containerPort(c, intstr.FromString(name))
	return cp.ContainerPort, ok
}

// listenPort compares what a runtime binds (a CLI flag with its default) with a container port.
func listenPort(obj string, c *corev1.Container, flag, dflt, portName, field string) []Finding {
	listens, given := flagValue(append(append([]string{}, c.Command...), c.Args...), flag)
	if !given {
		listens = dflt
	}
	declared, ok := namedPort(c, portName)
	if !ok {
		return []Finding{find("runtime-ports", obj, "container %q has no port named %q", c.Name, portName)}
	}
	if listens != strconv.Itoa(int(declared)) {
		return []Finding{find("runtime-ports", obj, "container %q listens on %s (%s) but its port %q is %d: the Service and probes reach a port nothing binds; pass %s %d (%s)", c.Name, listens, flagSource(given, flag), portName, declared, flag, declared, field)}
	}
	return nil
}

func flagSource(given bool, flag string) string {
	if given {
		return flag
	}
	return flag + " not given: its default"
}

func checkRuntimePorts(r *Release) []Finding {
	var out []Finding
	if r.PluginRuntime != nil {
		obj := objName(r.PluginRuntime)
		if c := manifest.Container(&r.PluginRuntime.Spec.Template.Spec, pluginName); c != nil {
			// `lbp rt` defaults: --ws-control-port 5400, --ws-debug-port 5401
			// (langbot-plugin 0.5.5 src/langbot_plugin/cli/__init__.py).
			out = append(out, listenPort(obj, c, "--ws-control-port", "5400", "runtime", "pluginRuntime.port")...)
			if _, ok := namedPort(c, "debug"); ok {
				out = append(out, listenPort(obj, c, "--ws-debug-port", "5401", "debug", "pluginRuntime.debug.port")...)
			}
			out = append(out, checkRuntimeURL(r, c)...)
		}
	}
	if r.Box != nil {
		if c := manifest.Container(&r.Box.Spec.Template.Spec, boxName); c != nil {
			// `lbp box` and boxd both default to --ws-control-port 5410.
			out = append(out, listenPort(objName(r.Box), c, "--ws-control-port", "5410", "rpc", "box.port")...)
		}
	}
	return out
}

// checkRuntimeURL follows PLUGIN__RUNTIME_WS_URL to a Service port and its target.
func checkRuntimeURL(r *Release, c *corev1.Container) []Finding {
	const name = "runtime-ports"
	if r.LangBot == nil {
		return nil
	}
	raw, ok := envValue(r.LangBot, langbotName, "PLUGIN__RUNTIME_WS_URL")
	if !ok {
		return []Finding{find(name, objName(r.LangBot), "PLUGIN__RUNTIME_WS_URL is not set: LangBot would dial its default ws://langbot_plugin_runtime:5400, not a Kubernetes DNS name")}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "ws" || u.Port() == "" {
		return []Finding{find(name, objName(r.LangBot), "PLUGIN__RUNTIME_WS_URL=%q is not a ws://host:port/path URL", raw)}
	}
	svc := r.Set.Services()[strings.SplitN(u.Hostname(), ".", 2)[0]]
	if svc == nil || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(r.PluginRuntime.Spec.Template.Labels)) {
		return []Finding{find(name, objName(r.LangBot), "PLUGIN__RUNTIME_WS_URL=%q does not name a Service of the plugin runtime pods", raw)}
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) != u.Port() {
			continue
		}
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		if cp, ok := containerPort(c, target); !ok || cp.Name != "runtime" {
			return []Finding{find(name, "Service/"+svc.Name, "port %d of the URL PLUGIN__RUNTIME_WS_URL=%q targets %s, not the runtime's control port", p.Port, raw, target.String())}
		}
		return nil
	}
	return []Finding{find(name, "Service/"+svc.Name, "PLUGIN__RUNTIME_WS_URL=%q names port %s, which the Service does not carry (pluginRuntime.port)", raw, u.Port())}
}

// portField names the value that sets a port, by the chart's port names.
func portField(name string) string {
	switch {
	case name == "web":
		return "langbot.service.port"
	case strings.HasPrefix(name, "wh-"):
		return "langbot.webhookPorts / langbot.webhookPortRange"
	case name == "runtime":
		return "pluginRuntime.port"
	case name == "debug":
		return "pluginRuntime.debug.port"
	case name == "rpc":
		return "box.port"
	}
	return "the port named " + strconv.Quote(name)
}

func duplicatePorts(obj, what string, ports map[string][]string) []Finding {
	var out []Finding
	for _, key := range sortedKeys(ports) {
		names := ports[key]
		if len(names) < 2 {
			continue
		}
		fields := map[string]string{}
		for _, n := range names {
			fields[portField(n)] = ""
		}
		out = append(out, find("service-ports-unique", obj, "%s %s appears %d times (ports %s): the API server rejects duplicate ports; change %s so they differ", what, key, len(names), strings.Join(names, ", "), strings.Join(sortedKeys(fields), " or ")))
	}
	return out
}

func checkUniquePorts(r *Release) []Finding {
	var out []Finding
	svcs := r.Set.Services()
	for _, n := range sortedKeys(svcs) {
		ports := map[string][]string{}
		for _, p := range svcs[n].Spec.Ports {
			key := fmt.Sprintf("%d/%s", p.Port, protocol(p.Protocol))
			ports[key] = append(ports[key], p.Name)
		}
		out = append(out, duplicatePorts("Service/"+n, "Service port", ports)...)
	}
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		for _, c := range specs[obj].Spec.Containers {
			ports := map[string][]string{}
			for _, p := range c.Ports {
				key := fmt.Sprintf("%d/%s", p.ContainerPort, protocol(p.Protocol))
				ports[key] = append(ports[key], p.Name)
			}
			out = append(out, duplicatePorts(obj, fmt.Sprintf("container %q port", c.Name), ports)...)
		}
	}
	return out
}

func protocol(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func checkPluginEnabled(r *Release) []Finding {
	if r.LangBot == nil {
		return nil
	}
	const name, env = "plugin-enabled-consistent", "PLUGIN__ENABLE"
	v, ok := envValue(r.LangBot, langbotName, env)
	switch {
	case !ok:
		return []Finding{find(name, objName(r.LangBot), "%s is not set on langbot: LangBot's default is true, so without a plugin runtime it retries the connection forever; set it to %q", env, fmt.Sprint(r.PluginRuntime != nil))}
	case r.PluginRuntime == nil && v != "false":
		return []Finding{find(name, objName(r.LangBot), "no plugin runtime is deployed but %s=%q: it must be \"false\"", env, v)}
	case r.PluginRuntime != nil && v != "true":
		return []Finding{find(name, objName(r.LangBot), "the plugin runtime is deployed but %s=%q: set it to \"true\"", env, v)}
	}
	return nil
}

// ManagedLangBotEnv are the LangBot config keys (SECTION__KEY env overrides) the chart sets.
// LangBot writes its env overrides into data/config.yaml on the data volume at every start
// (LangBot v4.10.8 src/langbot/pkg/core/stages/load_config.py), so each must be set in every
// state: a key left out keeps the last value LangBot was given.
var ManagedLangBotEnv = []string{
	"SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS",
	"SYSTEM__BLOCKING_EXECUTOR__MAX_PENDING",
	"SYSTEM__BLOCKING_EXECUTOR__MAX_INFLIGHT_PER_SCOPE",
	"PLUGIN__ENABLE",
	"PLUGIN__RUNTIME_WS_URL",
	"PLUGIN__DISPLAY_PLUGIN_DEBUG_URL",
	"BOX__ENABLED",
	"BOX__BACKEND",
	"BOX__RUNTIME__ENDPOINT",
	"BOX__LOCAL__HOST_ROOT",
	"BOX__LOCAL__DEFAULT_WORKSPACE",
	"BOX__LOCAL__SKILLS_ROOT",
	"BOX__LOCAL__ALLOWED_MOUNT_ROOTS",
	"BOX__DOCKER__CPU_LIMIT_ENABLED",
	"BOX__DOCKER__HARDENING",
	"BOX__DOCKER__EXEC_AGENT",
	"BOX__E2B__TEMPLATE",
	"BOX__E2B__API_URL",
}

func checkManagedEnv(r *Release) []Finding {
	if r.LangBot == nil {
		return nil
	}
	c := manifest.Container(&r.LangBot.Spec.Template.Spec, langbotName)
	var out []Finding
	for _, k := range ManagedLangBotEnv {
		if manifest.Env(c, k) == nil {
			out = append(out, find("managed-env", objName(r.LangBot), "%s is not set on langbot: LangBot writes its env overrides into data/config.yaml at every start, so the last value it was given would stay there; the chart must set it in every state", k))
		}
	}
	return out
}

// resolveEnv returns an env value, following configMapKeyRef into the rendered ConfigMaps.
func resolveEnv(set *manifest.Set, d *appsv1.Deployment, container, name string) (string, bool) {
	if d == nil {
		return "", false
	}
	e := manifest.Env(manifest.Container(&d.Spec.Template.Spec, container), name)
	if e == nil {
		return "", false
	}
	if e.ValueFrom == nil {
		return e.Value, true
	}
	if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
		if cm := set.ConfigMaps()[ref.Name]; cm != nil {
			v, ok := cm.Data[ref.Key]
			return v, ok
		}
	}
	return "", false
}

func checkBlockingExecutor(r *Release) []Finding {
	if r.Values == nil {
		return nil
	}
	const name = "blocking-executor"
	var out []Finding
	fields := []struct{ value, suffix string }{
		{"config.blockingExecutor.maxWorkers", "MAX_WORKERS"},
		{"config.blockingExecutor.maxPending", "MAX_PENDING"},
		{"config.blockingExecutor.maxInflightPerScope", "MAX_INFLIGHT_PER_SCOPE"},
	}
	targets := []struct {
		d         *appsv1.Deployment
		container string
		prefix    string
	}{
		// LangBot's key system.blocking_executor.* (templates/config.yaml); the runtimes read
		// LANGBOT_BLOCKING_EXECUTOR_* (docker/docker-compose.yaml, LangBot v4.10.8).
		{r.LangBot, langbotName, "SYSTEM__BLOCKING_EXECUTOR__"},
		{r.PluginRuntime, pluginName, "LANGBOT_BLOCKING_EXECUTOR_"},
		{r.Box, boxName, "LANGBOT_BLOCKING_EXECUTOR_"},
	}
	for _, t := range targets {
		if t.d == nil {
			continue
		}
		for _, f := range fields {
			want := r.valueString(f.value)
			env := t.prefix + f.suffix
			got, ok := resolveEnv(r.Set, t.d, t.container, env)
			switch {
			case !ok:
				out = append(out, find(name, objName(t.d), "%s is not set: %s=%s does not reach the %s", env, f.value, want, t.container))
			case got != want:
				out = append(out, find(name, objName(t.d), "%s=%q but %s=%s", env, got, f.value, want))
			}
		}
	}
	return out
}

func checkE2BTemplate(r *Release) []Finding {
	if r.Values == nil || r.Box == nil || r.LangBot == nil {
		return nil
	}
	want := r.valueString("box.e2b.template")
	got, _ := envValue(r.LangBot, langbotName, "BOX__E2B__TEMPLATE")
	if got != want {
		return []Finding{find("box-e2b-template", objName(r.LangBot), "BOX__E2B__TEMPLATE=%q but box.e2b.template=%q: LangBot passes e2b.template to the runtime in box_init, so the sandbox template would not be used", got, want)}
	}
	return nil
}

func checkBoxScope(r *Release) []Finding {
	if boxKube(r) {
		return checkKubeScope(r)
	}
	if !boxDocker(r) || r.Values == nil || r.valueString("box.docker.scope") != "" {
		return nil
	}
	scope, ok := envValue(r.Box, boxName, "BOXD_SCOPE")
	if !ok || !strings.HasPrefix(scope, r.Box.Namespace+".") {
		return []Finding{find("box-scope", objName(r.Box), "BOXD_SCOPE=%q does not start with the box's namespace %q: two releases of one name in different namespaces sharing a node daemon would remove each other's sandboxes", scope, r.Box.Namespace)}
	}
	return nil
}

// uvCacheDir is where uv opens its cache: UV_CACHE_DIR, else $XDG_CACHE_HOME/uv, else
// $HOME/.cache/uv (the upstream image runs as root: HOME=/root).
func uvCacheDir(c *corev1.Container) string {
	env := func(n string) string {
		if e := manifest.Env(c, n); e != nil {
			return e.Value
		}
		return ""
	}
	if v := env("UV_CACHE_DIR"); v != "" {
		return v
	}
	if v := env("XDG_CACHE_HOME"); v != "" {
		return path.Join(v, "uv")
	}
	home := env("HOME")
	if home == "" {
		home = "/root"
	}
	return path.Join(home, ".cache", "uv")
}

func writableMount(spec *corev1.PodSpec, c *corev1.Container, p string) bool {
	for _, m := range c.VolumeMounts {
		if m.ReadOnly || !within(p, m.MountPath) {
			continue
		}
		if v := manifest.Volume(spec, m.Name); v != nil && v.ConfigMap == nil && v.Secret == nil && v.Projected == nil && v.DownwardAPI == nil {
			return true
		}
	}
	return false
}

func checkUVCache(r *Release) []Finding {
	var out []Finding
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		spec := &specs[obj].Spec
		for i := range spec.Containers {
			c := &spec.Containers[i]
			sc := c.SecurityContext
			if len(c.Command) == 0 || path.Base(c.Command[0]) != "uv" || sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				continue
			}
			if dir := uvCacheDir(c); !writableMount(spec, c, dir) {
				out = append(out, find("uv-cache-writable", obj, "container %q starts with uv on a read-only root file system, but uv's cache %s is on no writable volume: uv fails before the program starts; set UV_CACHE_DIR (and HOME) under a writable mount such as /tmp", c.Name, dir))
			}
		}
	}
	return out
}

func checkCommonMetadata(r *Release) []Finding {
	if r.Values == nil {
		return nil
	}
	const name = "common-metadata"
	common := r.valueStringMap("commonLabels")
	commonAnn := r.valueStringMap("commonAnnotations")
	smLabels := r.valueStringMap("box.metrics.serviceMonitor.labels")
	var out []Finding
	for _, o := range r.Set.Objects {
		m, ok := o.Typed.(metav1.Object)
		if !ok {
			continue
		}
		obj := o.Kind + "/" + o.Name
		want := map[string]string{}
		for k, v := range common {
			want[k] = v
		}
		if o.Kind == "ServiceMonitor" {
			for k, v := range smLabels {
				want[k] = v
			}
		}
		lbls, anns := m.GetLabels(), m.GetAnnotations()
		for _, k := range sortedKeys(want) {
			if lbls[k] == want[k] {
				continue
			}
			where := ""
			if _, misplaced := anns[k]; misplaced {
				where = " (it is under metadata.annotations)"
			}
			why := ""
			if o.Kind == "ServiceMonitor" {
				why = ": Prometheus selects ServiceMonitors by label and would never scrape it"
			}
			out = append(out, find(name, obj, "label %s=%q is missing from metadata.labels%s%s", k, want[k], where, why))
		}
		for _, k := range sortedKeys(commonAnn) {
			if anns[k] != commonAnn[k] {
				out = append(out, find(name, obj, "annotation %s=%q of commonAnnotations is missing from metadata.annotations", k, commonAnn[k]))
			}
		}
	}
	return out
}

func checkPullSecrets(r *Release) []Finding {
	if r.Values == nil {
		return nil
	}
	want := r.valueStrings("global.imagePullSecrets")
	var out []Finding
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		have := map[string]bool{}
		for _, s := range specs[obj].Spec.ImagePullSecrets {
			have[s.Name] = true
		}
		for _, s := range want {
			if !have[s] {
				out = append(out, find("pull-secrets", obj, "has no imagePullSecret %q of global.imagePullSecrets: its image pull would fail on a private registry", s))
			}
		}
	}
	return out
}

func checkImageRegistry(r *Release) []Finding {
	reg := r.valueString("global.imageRegistry")
	if r.Values == nil || reg == "" {
		return nil
	}
	var out []Finding
	names, specs := sortedPodSpecs(r.Set)
	for _, obj := range names {
		spec := specs[obj].Spec
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			if !strings.HasPrefix(c.Image, reg+"/") {
				out = append(out, find("image-registry", obj, "container %q image %q is not pulled from global.imageRegistry=%q", c.Name, c.Image, reg))
			}
		}
	}
	return out
}

// peerAdmitsOutsiders reports whether a NetworkPolicy peer admits pods other than this
// release's own components (a scraper such as Prometheus).
func peerAdmitsOutsiders(p metav1.LabelSelector, hasNS, hasIP bool, instance string) bool {
	return hasNS || hasIP || p.MatchLabels["app.kubernetes.io/instance"] != instance || len(p.MatchExpressions) > 0
}

func checkMetricsReachable(r *Release) []Finding {
	var out []Finding
	svcs := r.Set.Services()
	deps := r.Set.Deployments()
	for _, sm := range r.Set.Unstructured("ServiceMonitor") {
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		for _, sn := range sortedKeys(svcs) {
			svc := svcs[sn]
			if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, ep := range eps {
				portName, _ := ep.(map[string]any)["port"].(string)
				for _, sp := range svc.Spec.Ports {
					if sp.Name != portName {
						continue
					}
					for _, dn := range sortedKeys(deps) {
						d := deps[dn]
						if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
							continue
						}
						out = append(out, scrapeAdmitted(r, sm.GetName(), d, sp)...)
					}
				}
			}
		}
	}
	return out
}

func scrapeAdmitted(r *Release, sm string, d *appsv1.Deployment, sp corev1.ServicePort) []Finding {
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	var cp corev1.ContainerPort
	for i := range d.Spec.Template.Spec.Containers {
		if p, ok := containerPort(&d.Spec.Template.Spec.Containers[i], target); ok {
			cp = p
		}
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	instance := podLabels["app.kubernetes.io/instance"]
	selected := false
	for _, np := range r.Set.NetworkPolicies() {
		s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !s.Matches(podLabels) {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			portOK := len(rule.Ports) == 0
			for _, p := range rule.Ports {
				if p.Port == nil || (p.Port.Type == intstr.Int && p.Port.IntVal == cp.ContainerPort) || (p.Port.Type == intstr.String && p.Port.StrVal == cp.Name) {
					portOK = true
				}
			}
			peerOK := len(rule.From) == 0
			for _, f := range rule.From {
				ps := metav1.LabelSelector{}
				if f.PodSelector != nil {
					ps = *f.PodSelector
				}
				if peerAdmitsOutsiders(ps, f.NamespaceSelector != nil, f.IPBlock != nil, instance) {
					peerOK = true
				}
			}
			if portOK && peerOK {
				return nil
			}
		}
	}
	if !selected {
		return nil
	}
	return []Finding{find("metrics-reachable", objName(d), "ServiceMonitor/%s scrapes port %d of these pods, but their NetworkPolicies admit only this release's own pods there: Prometheus cannot scrape; set networkPolicy.metricsFrom to your Prometheus pods", sm, cp.ContainerPort)}
}
