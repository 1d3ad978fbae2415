package check

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/pkg/render"
	"github.com/langbot-k8s/langbot-k8s/pkg/schema"
	"github.com/langbot-k8s/langbot-k8s/pkg/values"
)

const chartPath = "../../charts/langbot"

type badCase struct {
	name  string
	set   []string // --set
	str   []string // --set-string
	field string   // dotted field gojsonschema must name
	helm  []string // substrings Helm's own error must contain (default: "/"+field with dots as slashes)
}

// Every case must be rejected by BOTH gojsonschema and Helm's own schema validation
// (Helm 3.18+ uses a different JSON Schema library), each naming the field.
var schemaCases = []badCase{
	{name: "relative box root", set: []string{"box.hostRoot=relative/box"}, field: "box.hostRoot"},
	{name: "box root is /", set: []string{"box.hostRoot=/"}, field: "box.hostRoot"},
	{name: "box root with ..", set: []string{"box.hostRoot=/app/../etc"}, field: "box.hostRoot"},
	{name: "box root trailing slash", set: []string{"box.hostRoot=/app/data/box/"}, field: "box.hostRoot"},
	{name: "unknown backend", set: []string{"box.backend=podman"}, field: "box.backend"},
	{name: "enabled as string", str: []string{"box.enabled=yes"}, field: "box.enabled"},
	{name: "langbot latest tag", set: []string{"langbot.image.tag=latest"}, field: "langbot.image.tag"},
	{name: "box latest tag", set: []string{"box.image.tag=latest"}, field: "box.image.tag"},
	{name: "plugin runtime latest tag", set: []string{"pluginRuntime.image.tag=latest"}, field: "pluginRuntime.image.tag"},
	{name: "bad pull policy", set: []string{"pluginRuntime.image.pullPolicy=Sometimes"}, field: "pluginRuntime.image.pullPolicy"},
	{name: "bad digest", set: []string{"langbot.image.digest=md5:abc"}, field: "langbot.image.digest"},
	{name: "upper-case repository", set: []string{"langbot.image.repository=Rockchin/LangBot"}, field: "langbot.image.repository"},
	{name: "empty repository", str: []string{"box.image.repository="}, field: "box.image.repository"},
	{name: "registry with spaces", str: []string{"global.imageRegistry=my registry"}, field: "global.imageRegistry"},
	{name: "registry path with upper case", str: []string{"global.imageRegistry=harbor.example.com/DockerHub"}, field: "global.imageRegistry"},
	{name: "registry with a trailing slash", str: []string{"langbot.image.registry=harbor.example.com/"}, field: "langbot.image.registry"},
	{name: "probe not a map", str: []string{"langbot.livenessProbe=off"}, field: "langbot.livenessProbe"},
	{name: "debug display URL scheme", set: []string{"pluginRuntime.debug.displayUrl=http://x"}, field: "pluginRuntime.debug.displayUrl"},
	{name: "service type ExternalName", set: []string{"langbot.service.type=ExternalName"}, field: "langbot.service.type"},
	{name: "nodePort out of range", set: []string{"langbot.service.type=NodePort", "langbot.service.nodePort=80"}, field: "langbot.service.nodePort"},
	{name: "web port too large", set: []string{"langbot.service.port=70000"}, field: "langbot.service.port"},
	{name: "traffic policy", set: []string{"langbot.service.externalTrafficPolicy=Sometimes"}, field: "langbot.service.externalTrafficPolicy"},
	{name: "volume size not a quantity", set: []string{"langbot.persistence.data.size=ten-gigs"}, field: "langbot.persistence.data.size"},
	{name: "unknown access mode", set: []string{"langbot.persistence.plugins.accessModes={ReadWriteSometimes}"}, field: "langbot.persistence.plugins.accessModes.0"},
	{name: "access modes not a list", str: []string{"langbot.persistence.data.accessModes=ReadWriteOnce"}, field: "langbot.persistence.data.accessModes"},
	{name: "claim name not DNS-1123", set: []string{"pluginRuntime.persistence.data.existingClaim=Bad_Claim"}, field: "pluginRuntime.persistence.data.existingClaim"},
	{name: "persistence enabled as number", set: []string{"langbot.persistence.data.enabled=1"}, field: "langbot.persistence.data.enabled"},
	{name: "relative socket path", set: []string{"box.docker.socketPath=var/run/docker.sock"}, field: "box.docker.socketPath"},
	{name: "relative allowed mount root", set: []string{"box.allowedMountRoots={data/box}"}, field: "box.allowedMountRoots.0"},
	{name: "short box token", set: []string{"controlTokens.box.value=short"}, field: "controlTokens.box.value"},
	{name: "plugin token with spaces", str: []string{"controlTokens.pluginRuntime.value=this token has spaces in it and is long"}, field: "controlTokens.pluginRuntime.value"},
	{name: "existing secret not DNS-1123", set: []string{"controlTokens.box.existingSecret=Not_Valid"}, field: "controlTokens.box.existingSecret"},
	{name: "empty timezone", str: []string{"config.timezone="}, field: "config.timezone"},
	{name: "zero workers", set: []string{"config.blockingExecutor.maxWorkers=0"}, field: "config.blockingExecutor.maxWorkers"},
	{name: "too many workers", set: []string{"config.blockingExecutor.maxWorkers=100"}, field: "config.blockingExecutor.maxWorkers"},
	{name: "negative pending", set: []string{"config.blockingExecutor.maxPending=-1"}, field: "config.blockingExecutor.maxPending"},
	{name: "privileged webhook port", set: []string{"langbot.webhookPortRange.start=80"}, field: "langbot.webhookPortRange.start"},
	{name: "webhook port list", set: []string{"langbot.webhookPorts={22}"}, field: "langbot.webhookPorts.0"},
	{name: "ingress host invalid", set: []string{"ingress.enabled=true", "ingress.hosts[0].host=Bad_Host"}, field: "ingress.hosts.0.host"},
	{name: "ingress TLS without hosts", set: []string{"ingress.tls[0].secretName=tls"}, field: "ingress.tls.0.hosts", helm: []string{"/ingress/tls/0", "hosts"}},
	{name: "ingress path relative", set: []string{"ingress.hosts[0].host=a.example.com", "ingress.hosts[0].paths[0].path=app"}, field: "ingress.hosts.0.paths.0.path"},
	{name: "strategy BlueGreen", set: []string{"langbot.strategy.type=BlueGreen"}, field: "langbot.strategy.type"},
	{name: "box service NodePort", set: []string{"box.service.type=NodePort"}, field: "box.service.type"},
	{name: "plugin runtime port 0", set: []string{"pluginRuntime.port=0"}, field: "pluginRuntime.port"},
	{name: "box port too large", set: []string{"box.port=99999"}, field: "box.port"},
	{name: "nameOverride invalid", set: []string{"nameOverride=Bad_Name"}, field: "nameOverride"},
	{name: "namespaceOverride invalid", set: []string{"namespaceOverride=Bad_NS"}, field: "namespaceOverride"},
	{name: "scrape interval", set: []string{"box.metrics.serviceMonitor.interval=soon"}, field: "box.metrics.serviceMonitor.interval"},
	{name: "unknown langbot key", set: []string{"langbot.replicaCount=3"}, field: "langbot.replicaCount", helm: []string{"/langbot", "replicaCount"}},
	{name: "unknown box docker key", set: []string{"box.docker.privileged=true"}, field: "box.docker.privileged", helm: []string{"/box/docker", "privileged"}},
	{name: "unknown top-level key", set: []string{"replicaCount=2"}, field: "replicaCount", helm: []string{"replicaCount"}},
	{name: "httpRoute path relative", set: []string{"httpRoute.path=app"}, field: "httpRoute.path"},
	{name: "e2b api url scheme", set: []string{"box.e2b.apiUrl=ftp://e2b"}, field: "box.e2b.apiUrl"},
	{name: "memory request not a quantity", set: []string{"langbot.resources.requests.memory=lots"}, field: "langbot.resources.requests.memory"},
	{name: "automount as string", str: []string{"langbot.serviceAccount.automountServiceAccountToken=maybe"}, field: "langbot.serviceAccount.automountServiceAccountToken"},
	{name: "test image pull policy", set: []string{"tests.image.pullPolicy=Nope"}, field: "tests.image.pullPolicy"},
}

func TestBadValuesRejectedByBothValidators(t *testing.T) {
	require.GreaterOrEqual(t, len(schemaCases), 40)
	schemaJSON, err := os.ReadFile(chartPath + "/values.schema.json")
	require.NoError(t, err)
	v, err := schema.NewValidator(schemaJSON)
	require.NoError(t, err)
	for _, tc := range append(schemaCases, settingsSchemaCases...) {
		t.Run(tc.name, func(t *testing.T) {
			user, err := values.Stack{Set: tc.set, SetString: tc.str}.Merge()
			require.NoError(t, err)
			full, err := withChartDefaults(chartPath, user)
			require.NoError(t, err)

			probs, err := v.Validate(full)
			require.NoError(t, err)
			var fields []string
			for _, p := range probs {
				fields = append(fields, p.Field)
			}
			assert.Contains(t, fields, tc.field, "gojsonschema must name the field; got %v", probs)

			_, err = render.Render(context.Background(), render.Options{ChartPath: chartPath}, user)
			require.Error(t, err, "Helm must reject it too")
			want := tc.helm
			if want == nil {
				want = []string{"/" + strings.ReplaceAll(tc.field, ".", "/")}
			}
			for _, w := range want {
				assert.Contains(t, err.Error(), w, "Helm's error must name the field")
			}
		})
	}
}

// Rules JSON Schema cannot express are `fail` calls in the templates: the schema accepts these
// values, the render refuses them with a message naming the values to change.
var crossFieldCases = []struct {
	name string
	set  []string
	want []string
}{
	{"host root outside allowed roots", []string{"box.enabled=true", "box.allowedMountRoots={/srv}"}, []string{"box.hostRoot", "box.allowedMountRoots"}},
	{"host root under /etc", []string{"box.enabled=true", "box.hostRoot=/etc/box"}, []string{"box.hostRoot", "/etc"}},
	{"host root under /var/run", []string{"box.enabled=true", "box.hostRoot=/var/run/box"}, []string{"box.hostRoot", "/var/run"}},
	{"host root is /proc", []string{"box.enabled=true", "box.hostRoot=/proc"}, []string{"box.hostRoot", "/proc"}},
	{"default workspace outside root", []string{"box.enabled=true", "box.defaultWorkspace=/other"}, []string{"box.defaultWorkspace", "box.hostRoot"}},
	{"skills root escapes", []string{"box.enabled=true", "box.skillsRoot=../skills"}, []string{"box.skillsRoot"}},
	{"e2b without key", []string{"box.enabled=true", "box.backend=e2b"}, []string{"box.e2b.existingSecret", "box.e2b.apiKey"}},
	{"service monitor without box", []string{"box.metrics.serviceMonitor.enabled=true"}, []string{"box.metrics.serviceMonitor.enabled", "box.enabled"}},
	{"ingress without hosts", []string{"ingress.enabled=true"}, []string{"ingress.hosts"}},
	{"httpRoute without parents", []string{"httpRoute.enabled=true"}, []string{"httpRoute.parentRefs"}},
	{"nodePort on ClusterIP", []string{"langbot.service.nodePort=30300"}, []string{"langbot.service.nodePort", "langbot.service.type"}},
	{"webhook range reversed", []string{"langbot.webhookPortRange.start=2290", "langbot.webhookPortRange.end=2280"}, []string{"langbot.webhookPortRange.end", "langbot.webhookPortRange.start"}},
	// Issue #11 defect 6: a port twice on the langbot Service or container.
	{"webhook range holds the web Service port", []string{"langbot.service.port=2285"}, []string{"langbot.webhookPortRange contains port 2285", "langbot.service.port", "twice"}},
	{"webhook list holds the web Service port", []string{"langbot.webhookPorts={2280,8080}", "langbot.service.port=8080"}, []string{"langbot.webhookPorts contains port 8080", "change langbot.service.port"}},
	{"webhook list holds the container's web port", []string{"langbot.webhookPorts={5300}", "langbot.service.port=80"}, []string{"langbot.webhookPorts contains port 5300", "take 5300 out of langbot.webhookPorts"}},
	{"debug port equals the control port", []string{"pluginRuntime.debug.port=5400"}, []string{"pluginRuntime.debug.port=5400", "change pluginRuntime.debug.port"}},
	// Issue #11 defect 5: two handlers in one probe.
	{"probe with two handlers", []string{"pluginRuntime.readinessProbe.httpGet.port=runtime", "pluginRuntime.readinessProbe.tcpSocket.port=runtime"}, []string{"pluginRuntime.readinessProbe sets httpGet and tcpSocket", "exactly one handler"}},
	// Issue #11 defect 7: a NetworkPolicy that would block the scrape.
	{"metrics peers empty", []string{"box.enabled=true", "box.metrics.serviceMonitor.enabled=true", "networkPolicy.enabled=true", "networkPolicy.metricsFrom=null"}, []string{"networkPolicy.metricsFrom"}},
}

// Values the schema and the chart must accept (issue #11 defect 13: a registry may be a
// proxy-cache path).
func TestGoodValuesAccepted(t *testing.T) {
	for _, set := range [][]string{
		{"global.imageRegistry=harbor.example.com/dockerhub"},
		{"global.imageRegistry=mirror.local:5000/library/cache"},
		{"langbot.image.registry=registry.example.com:5000/team"},
	} {
		rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Set: set}})
		require.NoError(t, err)
		assert.True(t, rep.OK(), "%v: %v", set, rep.Problems())
	}
}

func TestCrossFieldRulesFailTheRender(t *testing.T) {
	for _, tc := range append(crossFieldCases, settingsCrossFieldCases...) {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(context.Background(), Options{Render: render.Options{ChartPath: chartPath}, Values: values.Stack{Set: tc.set}})
			require.NoError(t, err)
			assert.Empty(t, rep.Schema, "the schema alone accepts these values")
			require.NotEmpty(t, rep.RenderError, "the chart must refuse them")
			for _, w := range tc.want {
				assert.Contains(t, rep.RenderError, w)
			}
			assert.False(t, rep.OK())
		})
	}
}
