package invariants

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chartutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/langbot-k8s/langbot-k8s/pkg/manifest"
	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

const chartPath = "../../charts/langbot"

// renderRelease renders the chart with --set values and returns the objects and the complete
// values (chart defaults coalesced), as langbotctl validate does.
func renderRelease(t *testing.T, set ...string) (*manifest.Set, map[string]any) {
	t.Helper()
	user, err := values.Stack{Set: set}.Merge()
	require.NoError(t, err)
	ch, err := render.LoadChart(chartPath)
	require.NoError(t, err)
	full, err := chartutil.CoalesceValues(ch, user)
	require.NoError(t, err)
	res, err := render.Render(context.Background(), render.Options{ChartPath: chartPath}, user)
	require.NoError(t, err)
	s, err := manifest.Decode(res.All())
	require.NoError(t, err)
	return s, full.AsMap()
}

func testPod(set *manifest.Set) *corev1.Pod {
	for _, o := range set.Objects {
		if p, ok := o.Typed.(*corev1.Pod); ok {
			return p
		}
	}
	return nil
}

func containerEnv(c *corev1.Container, name string) string {
	if e := manifest.Env(c, name); e != nil {
		return e.Value
	}
	return ""
}

// Each case renders a release the checks accept, then breaks it the way the chart broke it
// before the fix of issue #11 (the defect number is in the name); the named check must fire.
func TestWiringChecksCatchIssue11Defects(t *testing.T) {
	assertBreakagesCaught(t, []breakage{
		{"1 plugin runtime readiness on /readyz", nil, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").ReadinessProbe.HTTPGet.Path = "/readyz"
		}, "probe-endpoints", "answers plain HTTP only on /healthz"},
		{"1 probe on a port the container lacks", nil, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").LivenessProbe.HTTPGet.Port = intstr.FromString("control")
		}, "probe-endpoints", "not a port of the container"},
		{"2 runtime keeps listening on 5400", []string{"pluginRuntime.port=6400"}, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").Args = nil
		}, "runtime-ports", "listens on 5400 (--ws-control-port not given: its default) but its port \"runtime\" is 6400"},
		{"2 debug port not passed", []string{"pluginRuntime.debug.port=6401"}, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").Args = []string{"--ws-control-port", "5400"}
		}, "runtime-ports", "pass --ws-debug-port 6401 (pluginRuntime.debug.port)"},
		{"2 URL port not on the Service", nil, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), "PLUGIN__RUNTIME_WS_URL", "ws://langbot-plugin-runtime:5401/control/ws")
		}, "runtime-ports", "which the Service does not carry"},
		{"3 ServiceMonitor labels under annotations", []string{"commonAnnotations.team=chat", "box.enabled=true", "box.metrics.serviceMonitor.enabled=true", "box.metrics.serviceMonitor.labels.release=prom"}, func(r *Release) {
			for _, sm := range r.Set.Unstructured("ServiceMonitor") {
				l := sm.GetLabels()
				delete(l, "release")
				sm.SetLabels(l)
				sm.SetAnnotations(map[string]string{"team": "chat", "release": "prom"})
			}
		}, "common-metadata", "label release=\"prom\" is missing from metadata.labels (it is under metadata.annotations): Prometheus selects ServiceMonitors by label"},
		{"3 commonLabels missing", []string{"commonLabels.team=chat"}, func(r *Release) {
			delete(r.LangBot.Labels, "team")
		}, "common-metadata", "label team=\"chat\""},
		{"5 two probe handlers", nil, func(r *Release) {
			container(r.LangBot, "langbot").LivenessProbe.TCPSocket = &corev1.TCPSocketAction{Port: intstr.FromString("web")}
		}, "probe-handlers", "2 handlers (httpGet, tcpSocket)"},
		{"5 probe without handler", nil, func(r *Release) {
			container(r.LangBot, "langbot").ReadinessProbe.HTTPGet = nil
		}, "probe-handlers", "has no handler"},
		{"6 webhook port equals the web Service port", nil, func(r *Release) {
			svc := r.Set.Services()["langbot"]
			svc.Spec.Ports[1].Port = svc.Spec.Ports[0].Port
		}, "service-ports-unique", "change langbot.service.port or langbot.webhookPorts / langbot.webhookPortRange"},
		{"6 webhook containerPort equals 5300", nil, func(r *Release) {
			container(r.LangBot, "langbot").Ports[1].ContainerPort = 5300
		}, "service-ports-unique", "container \"langbot\" port 5300/TCP appears 2 times"},
		{"7 NetworkPolicy blocks the scrape", []string{"box.enabled=true", "box.metrics.serviceMonitor.enabled=true", "networkPolicy.enabled=true"}, func(r *Release) {
			for _, np := range r.Set.NetworkPolicies() {
				if np.Name == "langbot-box" {
					np.Spec.Ingress = np.Spec.Ingress[:1]
				}
			}
		}, "metrics-reachable", "Prometheus cannot scrape; set networkPolicy.metricsFrom"},
		{"8 test pod without pull secrets", []string{"global.imagePullSecrets={regcred}"}, func(r *Release) {
			testPod(r.Set).Spec.ImagePullSecrets = nil
		}, "pull-secrets", "has no imagePullSecret \"regcred\""},
		{"9 plugin system left on without a runtime", []string{"pluginRuntime.enabled=false"}, func(r *Release) {
			removeEnv(container(r.LangBot, "langbot"), "PLUGIN__ENABLE")
		}, "plugin-enabled-consistent", "retries the connection forever"},
		{"9 plugin system on without a runtime", []string{"pluginRuntime.enabled=false"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), "PLUGIN__ENABLE", "true")
		}, "plugin-enabled-consistent", "must be \"false\""},
		{"10 e2b template not passed", []string{"box.enabled=true", "box.backend=e2b", "box.e2b.existingSecret=e2b", "box.e2b.template=python-3.11"}, func(r *Release) {
			removeEnv(container(r.LangBot, "langbot"), "BOX__E2B__TEMPLATE")
		}, "box-e2b-template", "box.e2b.template=\"python-3.11\""},
		{"11 BOXD_SCOPE with the release namespace", []string{"box.enabled=true", "namespaceOverride=chat"}, func(r *Release) {
			setEnv(container(r.Box, "box"), "BOXD_SCOPE", "default.langbot")
		}, "box-scope", "does not start with the box's namespace \"chat\""},
		{"12 uv without a writable cache", []string{"box.enabled=true", "box.backend=e2b", "box.e2b.existingSecret=e2b"}, func(r *Release) {
			removeEnv(container(r.Box, "box"), "UV_CACHE_DIR")
			removeEnv(container(r.Box, "box"), "HOME")
		}, "uv-cache-writable", "uv's cache /root/.cache/uv is on no writable volume"},
		{"13 an image bypasses global.imageRegistry", []string{"global.imageRegistry=harbor.example.com/dockerhub"}, func(r *Release) {
			container(r.PluginRuntime, "plugin-runtime").Image = "docker.io/rockchin/langbot:v4.10.8"
		}, "image-registry", "not pulled from global.imageRegistry=\"harbor.example.com/dockerhub\""},
		{"14 a box key left out when the box is off", nil, func(r *Release) {
			removeEnv(container(r.LangBot, "langbot"), "BOX__LOCAL__HOST_ROOT")
		}, "managed-env", "BOX__LOCAL__HOST_ROOT is not set on langbot"},
		{"15 blocking executor not passed to LangBot", []string{"config.blockingExecutor.maxWorkers=6"}, func(r *Release) {
			removeEnv(container(r.LangBot, "langbot"), "SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS")
		}, "blocking-executor", "SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS is not set: config.blockingExecutor.maxWorkers=6"},
		{"15 blocking executor value differs", []string{"config.blockingExecutor.maxWorkers=6"}, func(r *Release) {
			setEnv(container(r.LangBot, "langbot"), "SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS", "8")
		}, "blocking-executor", "SYSTEM__BLOCKING_EXECUTOR__MAX_WORKERS=\"8\" but config.blockingExecutor.maxWorkers=6"},
	})
}

// Defect 14: every LangBot config key the chart manages is set, once, whether the feature it
// belongs to is on or off (LangBot persists env overrides into data/config.yaml).
func TestManagedEnvSetInBothStates(t *testing.T) {
	states := map[string][]string{
		"box off, plugin runtime on":     nil,
		"box docker, plugin runtime off": {"box.enabled=true", "pluginRuntime.enabled=false"},
		"box e2b":                        {"box.enabled=true", "box.backend=e2b", "box.e2b.existingSecret=e2b"},
	}
	for name, set := range states {
		t.Run(name, func(t *testing.T) {
			s, _ := renderRelease(t, set...)
			c := container(s.Component("langbot"), "langbot")
			count := map[string]int{}
			for _, e := range c.Env {
				count[e.Name]++
			}
			for _, k := range ManagedLangBotEnv {
				assert.Equal(t, 1, count[k], "%s must be set exactly once", k)
			}
		})
	}
	off, _ := renderRelease(t, "pluginRuntime.enabled=false")
	c := container(off.Component("langbot"), "langbot")
	assert.Equal(t, "false", containerEnv(c, "PLUGIN__ENABLE"))
	assert.Equal(t, "false", containerEnv(c, "BOX__ENABLED"))
	// Off: LangBot's own template values (v4.10.8 src/langbot/templates/config.yaml).
	assert.Equal(t, "", containerEnv(c, "BOX__RUNTIME__ENDPOINT"))
	assert.Equal(t, "./data/box", containerEnv(c, "BOX__LOCAL__HOST_ROOT"))
	assert.Equal(t, "./data/box,/tmp", containerEnv(c, "BOX__LOCAL__ALLOWED_MOUNT_ROOTS"))

	on, _ := renderRelease(t, "box.enabled=true")
	c = container(on.Component("langbot"), "langbot")
	assert.Equal(t, "true", containerEnv(c, "PLUGIN__ENABLE"))
	assert.Equal(t, "/app/data/box", containerEnv(c, "BOX__LOCAL__HOST_ROOT"))
	assert.Equal(t, "ws://langbot-box:5410", containerEnv(c, "BOX__RUNTIME__ENDPOINT"))
}

// Defect 4: validate says which path each control token is on.
func TestTokenSources(t *testing.T) {
	gen, _ := renderRelease(t, "box.enabled=true")
	got := TokenSources(gen)
	require.Len(t, got, 2)
	for _, ts := range got {
		assert.Equal(t, TokenGenerated, ts.Source, ts.Token)
		assert.False(t, ts.StableAcrossRenders)
		assert.Contains(t, ts.Note, "Argo CD")
	}

	ext, _ := renderRelease(t, "box.enabled=true", "controlTokens.box.existingSecret=box-ctl", "controlTokens.pluginRuntime.existingSecret=rt-ctl", "controlTokens.pluginRuntime.existingSecretKey=t")
	got = TokenSources(ext)
	require.Len(t, got, 2)
	assert.Equal(t, TokenSource{Token: "box", ValuesKey: "box", Secret: "box-ctl", Key: "token", Source: TokenExistingSecret, StableAcrossRenders: true, Note: got[0].Note}, got[0])
	assert.Equal(t, "rt-ctl", got[1].Secret)
	assert.Equal(t, "t", got[1].Key)
	assert.True(t, got[1].StableAcrossRenders)

	val, _ := renderRelease(t, "controlTokens.pluginRuntime.value=0123456789abcdef0123456789abcdef")
	got = TokenSources(val)
	require.Len(t, got, 1)
	assert.Equal(t, TokenFromValues, got[0].Source)
	assert.True(t, got[0].StableAcrossRenders)
}
