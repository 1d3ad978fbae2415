package standins_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/langbot-k8s/langbot-k8s/pkg/render"
)

// imageCMD is the CMD of rockchin/langbot (LangBot's Dockerfile), which the stand-in images
// copy: what runs when the chart sets no command.
var imageCMD = []string{"uv", "run", "--no-sync", "main.py"}

// chartDir is the chart under test: LANGBOT_CHART_DIR, else this repository's chart (point it
// at an older checkout's charts/langbot to see a test fail on that chart).
func chartDir(t *testing.T) string {
	if d := os.Getenv("LANGBOT_CHART_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	require.NoError(t, err)
	return filepath.Join(wd, "..", "..", "charts", "langbot")
}

// rendered is one release as the API server would hold it.
type rendered struct {
	deployments []appsv1.Deployment
	services    []corev1.Service
	secrets     map[string]corev1.Secret
	configMaps  map[string]corev1.ConfigMap
}

func renderChart(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	res, err := render.Render(context.Background(), render.Options{ChartPath: chartDir(t)}, vals)
	require.NoError(t, err)
	r := rendered{secrets: map[string]corev1.Secret{}, configMaps: map[string]corev1.ConfigMap{}}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(res.Manifest, -1) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil || meta.Kind == "" {
			continue
		}
		switch meta.Kind {
		case "Deployment":
			var d appsv1.Deployment
			require.NoError(t, yaml.Unmarshal([]byte(doc), &d))
			r.deployments = append(r.deployments, d)
		case "Service":
			var s corev1.Service
			require.NoError(t, yaml.Unmarshal([]byte(doc), &s))
			r.services = append(r.services, s)
		case "Secret":
			var s corev1.Secret
			require.NoError(t, yaml.Unmarshal([]byte(doc), &s))
			r.secrets[s.Name] = s
		case "ConfigMap":
			var c corev1.ConfigMap
			require.NoError(t, yaml.Unmarshal([]byte(doc), &c))
			r.configMaps[c.Name] = c
		}
	}
	return r
}

// pod is one rendered Deployment's container run as a stand-in on its own address.
type pod struct {
	labels    map[string]string
	container corev1.Container
	env       map[string]string
	proc      *proc
}

// containerPort resolves a probe's or Service's target port (a name or a number) in the pod.
func (p *pod) containerPort(t *testing.T, port intstr.IntOrString) int {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range p.container.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	require.FailNowf(t, "unknown port", "container %s has no port named %q", p.container.Name, port.StrVal)
	return 0
}

// envOf resolves the container's env as the kubelet does: values with $(VAR) expansion, keys
// of the rendered Secrets and ConfigMaps, envFrom.
func envOf(t *testing.T, r rendered, c corev1.Container, ip string) map[string]string {
	t.Helper()
	env := map[string]string{}
	secret := func(name, key string) (string, bool) {
		s, ok := r.secrets[name]
		if !ok {
			return "", false
		}
		if v, ok := s.StringData[key]; ok {
			return v, true
		}
		v, ok := s.Data[key]
		return string(v), ok
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			for k, v := range r.configMaps[from.ConfigMapRef.Name].Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			s := r.secrets[from.SecretRef.Name]
			for k, v := range s.Data {
				env[from.Prefix+k] = string(v)
			}
			for k, v := range s.StringData {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			v, ok := secret(ref.Name, ref.Key)
			require.Truef(t, ok, "%s: env %s reads key %q of Secret %q, which the release does not render", c.Name, e.Name, ref.Key, ref.Name)
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := r.configMaps[ref.Name].Data[ref.Key]
			require.Truef(t, ok, "%s: env %s reads key %q of ConfigMap %q, which the release does not render", c.Name, e.Name, ref.Key, ref.Name)
			env[e.Name] = v
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = map[string]string{"metadata.namespace": "default", "status.podIP": ip}[e.ValueFrom.FieldRef.FieldPath]
		default:
			require.FailNowf(t, "env source", "%s: env %s has a source this test cannot resolve", c.Name, e.Name)
		}
	}
	return env
}

// expand is the kubelet's $(VAR) expansion ($$ escapes, unknown references stay as they are).
func expand(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// startPods runs every rendered Deployment whose component has a stand-in, with the
// container's rendered command, args and env.
func startPods(t *testing.T, r rendered) map[string]*pod {
	t.Helper()
	lb, rt := standinBinaries(t)
	pods := map[string]*pod{}
	for _, d := range r.deployments {
		component := d.Spec.Template.Labels["app.kubernetes.io/component"]
		bin := map[string]string{"langbot": lb, "plugin-runtime": rt}[component]
		if bin == "" {
			continue
		}
		require.Len(t, d.Spec.Template.Spec.Containers, 1, "Deployment %s", d.Name)
		c := d.Spec.Template.Spec.Containers[0]
		ip := podIP()
		env := envOf(t, r, c, ip)
		argv := append(append([]string{}, c.Command...), c.Args...)
		if len(c.Command) == 0 {
			argv = append(append([]string{}, imageCMD...), c.Args...)
		}
		for i := range argv {
			argv[i] = expand(argv[i], env)
		}
		require.Equal(t, "uv", argv[0], "%s: the image has uv on PATH and nothing else the chart could call", d.Name)
		runEnv := envList(env)
		if component == "langbot" {
			// The image's working directory is /app, where the chart mounts the data volume.
			runEnv = append(runEnv, "LANGBOT_DATA_ROOT="+t.TempDir())
		}
		pods[component] = &pod{labels: d.Spec.Template.Labels, container: c, env: env, proc: start(t, bin, ip, argv[1:], runEnv)}
	}
	require.Contains(t, pods, "langbot")
	return pods
}

// Every probe, Service port and URL the chart renders, with the chart's own values, run
// against the stand-ins started with the rendered command, args and env. This is the test
// that would have caught defect 1 of #11 (the runtime's readiness probe on /readyz, which the
// real runtime answers as a failed WebSocket handshake).
func TestChartAgainstStandins(t *testing.T) {
	cases := []struct {
		name string
		vals map[string]any
	}{
		{"chart defaults", nil},
		{"plugin runtime on other ports, debug port on the Service", map[string]any{"pluginRuntime": map[string]any{"port": 5500,
			"debug": map[string]any{"port": 5600, "service": true}}}},
		{"plugin runtime disabled", map[string]any{"pluginRuntime": map[string]any{"enabled": false}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := renderChart(t, tc.vals)
			pods := startPods(t, r)
			for _, p := range pods {
				for _, cp := range p.container.Ports {
					if !strings.HasPrefix(cp.Name, "wh-") {
						p.proc.waitListening(t, int(cp.ContainerPort))
					}
				}
			}
			checkProbes(t, pods)
			checkServices(t, r, pods)
			checkURLs(t, r, pods)
		})
	}
}

func checkProbes(t *testing.T, pods map[string]*pod) {
	for component, p := range pods {
		for kind, probe := range map[string]*corev1.Probe{"liveness": p.container.LivenessProbe, "readiness": p.container.ReadinessProbe, "startup": p.container.StartupProbe} {
			if probe == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s %s probe", component, kind), func(t *testing.T) {
				switch {
				case probe.HTTPGet != nil:
					port := p.containerPort(t, probe.HTTPGet.Port)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					status, err := probeGet(ctx, p.proc.addr(port), probe.HTTPGet.Path)
					require.NoError(t, err, "GET %s on port %d", probe.HTTPGet.Path, port)
					// The kubelet's HTTP probe succeeds on 200-399.
					assert.True(t, status >= 200 && status < 400, "GET %s on port %d answered %d: the probe fails on the real program, the pod never becomes %s",
						probe.HTTPGet.Path, port, status, map[string]string{"liveness": "live", "readiness": "Ready", "startup": "started"}[kind])
				case probe.TCPSocket != nil:
					port := p.containerPort(t, probe.TCPSocket.Port)
					c, err := net.DialTimeout("tcp", p.proc.addr(port), 5*time.Second)
					require.NoError(t, err, "tcpSocket probe on port %d", port)
					_ = c.Close()
				default:
					require.FailNow(t, "this test runs httpGet and tcpSocket probes; add the handler the chart renders")
				}
			})
		}
	}
}

// selected returns the pod a Service selects.
func selected(s corev1.Service, pods map[string]*pod) *pod {
	for _, p := range pods {
		match := len(s.Spec.Selector) > 0
		for k, v := range s.Spec.Selector {
			if p.labels[k] != v {
				match = false
			}
		}
		if match {
			return p
		}
	}
	return nil
}

func checkServices(t *testing.T, r rendered, pods map[string]*pod) {
	for _, s := range r.services {
		p := selected(s, pods)
		if p == nil {
			continue // the box: boxd is a real program, not a stand-in (test/e2e runs it)
		}
		for _, sp := range s.Spec.Ports {
			t.Run(fmt.Sprintf("Service %s port %d", s.Name, sp.Port), func(t *testing.T) {
				port := p.containerPort(t, sp.TargetPort)
				c, err := net.DialTimeout("tcp", p.proc.addr(port), 2*time.Second)
				if strings.HasPrefix(sp.Name, "wh-") {
					// Platform webhook ports: LangBot listens there only once a bot's adapter
					// is configured on that port; a fresh LangBot refuses the connection.
					assert.Error(t, err, "nothing listens on webhook port %d before a bot uses it", port)
					return
				}
				require.NoError(t, err, "Service %s port %d -> container port %d: nothing listens there", s.Name, sp.Port, port)
				_ = c.Close()
			})
		}
	}
}

// checkURLs follows every URL the chart gives LangBot to a Service, its target port and the
// selected pod, and connects there as LangBot does.
func checkURLs(t *testing.T, r rendered, pods map[string]*pod) {
	lb := pods["langbot"]
	urls := 0
	for _, name := range []string{"PLUGIN__RUNTIME_WS_URL", "BOX__RUNTIME__ENDPOINT"} {
		raw := lb.env[name]
		// LangBot dials a URL only when its feature is on (the chart also sets the URL empty
		// when it is off, so that data/config.yaml forgets an old one).
		off := map[string]string{"PLUGIN__RUNTIME_WS_URL": "PLUGIN__ENABLE", "BOX__RUNTIME__ENDPOINT": "BOX__ENABLED"}[name]
		if raw == "" || lb.env[off] == "false" {
			continue
		}
		urls++
		t.Run(name, func(t *testing.T) {
			u, err := url.Parse(raw)
			require.NoError(t, err)
			host := strings.SplitN(u.Hostname(), ".", 2)[0]
			var svc *corev1.Service
			for i := range r.services {
				if r.services[i].Name == host {
					svc = &r.services[i]
				}
			}
			require.NotNil(t, svc, "%s=%s names no Service of the release", name, raw)
			port, err := strconv.Atoi(u.Port())
			require.NoError(t, err, "%s=%s has no port", name, raw)
			var sp *corev1.ServicePort
			for i := range svc.Spec.Ports {
				if int(svc.Spec.Ports[i].Port) == port {
					sp = &svc.Spec.Ports[i]
				}
			}
			require.NotNil(t, sp, "%s=%s: Service %s has no port %d", name, raw, svc.Name, port)
			p := selected(*svc, pods)
			require.NotNil(t, p, "%s: Service %s selects no pod this test runs (boxd runs in test/e2e)", name, svc.Name)
			target := "ws://" + p.proc.addr(p.containerPort(t, sp.TargetPort)) + u.RequestURI()
			require.Equal(t, "PLUGIN__RUNTIME_WS_URL", name)
			h := http.Header{}
			if tok := lb.env["LANGBOT_PLUGIN_RUNTIME_CONTROL_TOKEN"]; tok != "" {
				h.Set("X-LangBot-Plugin-Runtime-Token", tok)
			}
			ws, resp, err := websocket.DefaultDialer.Dial(target, h)
			if resp != nil {
				defer resp.Body.Close()
			}
			require.NoError(t, err, "LangBot's control connection to %s (%s)", raw, target)
			defer ws.Close()
			require.NoError(t, ws.WriteJSON(map[string]any{"seq_id": 1, "action": "__ping", "data": map[string]any{}}))
			var pong map[string]any
			require.NoError(t, ws.ReadJSON(&pong))
			assert.Equal(t, float64(0), pong["code"], "__ping: %v", pong)
		})
	}
	if _, runtime := pods["plugin-runtime"]; runtime {
		assert.Positive(t, urls, "the plugin runtime runs, so LangBot must be given its URL")
	} else {
		assert.Equal(t, "false", lb.env["PLUGIN__ENABLE"], "without a plugin runtime LangBot's plugin system must be off (PLUGIN__ENABLE=false)")
	}
}
