package docker

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
)

func TestContainerName(t *testing.T) {
	cases := []struct{ physical, want string }{
		{"ws-695136eeae1cb9b6af4a8226-g1-p", "langbot-box-ws-695136eeae1cb9b6af4a8226-g1-p-ceeb6b62"},
		{"ws-695136eeae1cb9b6af4a8226-g1-mcp-shared-long-name", "langbot-box-ws-695136eeae1cb9b6af4a8226-g1-m-ceeb6b62"},
		{"My Session/ü!", "langbot-box-my-session-ceeb6b62"},
		{"--__--", "langbot-box-__-ceeb6b62"},
		{"!!!", "langbot-box-session-ceeb6b62"},
		{"", "langbot-box-session-ceeb6b62"},
	}
	for _, tc := range cases {
		t.Run(tc.physical, func(t *testing.T) {
			assert.Equal(t, tc.want, containerName(tc.physical, "ceeb6b62"))
		})
	}
	a, b := ContainerName("p"), ContainerName("p")
	assert.Regexp(t, regexp.MustCompile(`^langbot-box-p-[0-9a-f]{8}$`), a)
	assert.NotEqual(t, a, b, "the suffix is random")
}

func TestCollapse(t *testing.T) {
	long := strings.Repeat("é", 301)
	cases := []struct{ name, in, want string }{
		{"whitespace runs", "  Error response\n\tfrom daemon:  no such image  ", "Error response from daemon: no such image"},
		{"empty", " \n ", "unknown backend error"},
		{"exactly 300", strings.Repeat("a", 300), strings.Repeat("a", 300)},
		{"301 characters, not bytes", long, strings.Repeat("é", 297) + "..."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, Collapse(tc.in)) })
	}
	err := backendErr(assert.AnError)
	var be *backend.Error
	require.ErrorAs(t, err, &be)
	assert.Equal(t, "docker backend error: "+assert.AnError.Error(), be.Message)
	assert.ErrorIs(t, err, assert.AnError)
}

func baseSpec() backend.SessionSpec {
	return backend.SessionSpec{PhysicalID: "ws-1-g1-p", Image: "img", MountPath: "/workspace", CPUs: 0.5, MemoryMB: 256, PidsLimit: 64,
		HostPath: "/data/ws", HostPathMode: backend.MountRW,
		ExtraMounts: []backend.Mount{{HostPath: "/data/skills/a", MountPath: "/workspace/.skills/a", Mode: backend.MountRO}}}
}

func TestContainerConfig(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*backend.SessionSpec)
		set   settings
		scope string
		check func(t *testing.T, labels map[string]string, hc hostConfigView)
	}{
		{"defaults of boxd", func(*backend.SessionSpec) {}, settings{cpuLimit: true, hardening: true}, "",
			func(t *testing.T, l map[string]string, hc hostConfigView) {
				assert.Equal(t, "none", hc.Network)
				assert.Equal(t, int64(5e8), hc.NanoCPUs)
				assert.Equal(t, int64(256<<20), hc.Memory)
				assert.Equal(t, int64(64), hc.Pids)
				assert.True(t, hc.AutoRemove)
				assert.Equal(t, []string{"ALL"}, hc.CapDrop)
				assert.Equal(t, []string{"no-new-privileges"}, hc.SecurityOpt, "seccomp stays the engine default")
				assert.Equal(t, []string{"/data/ws:/workspace:rw", "/data/skills/a:/workspace/.skills/a:ro"}, hc.Binds)
				assert.NotContains(t, l, LabelScope)
			}},
		{"cpu limit off, hardening off", func(*backend.SessionSpec) {}, settings{}, "",
			func(t *testing.T, _ map[string]string, hc hostConfigView) {
				assert.Zero(t, hc.NanoCPUs)
				assert.Empty(t, hc.CapDrop)
				assert.Empty(t, hc.SecurityOpt)
			}},
		{"network on, persistent, read-only root", func(s *backend.SessionSpec) { s.NetworkOn, s.Persistent, s.ReadOnlyRootfs = true, true, true },
			settings{cpuLimit: true, hardening: true}, "team-a",
			func(t *testing.T, l map[string]string, hc hostConfigView) {
				assert.Empty(t, hc.Network, "engine default network")
				assert.False(t, hc.AutoRemove)
				assert.True(t, hc.ReadOnly)
				assert.Equal(t, map[string]string{"/tmp": "size=64m"}, hc.Tmpfs)
				assert.Equal(t, "true", l[LabelPersistent])
				assert.Equal(t, "team-a", l[LabelScope])
			}},
		{"workspace mode none is not mounted", func(s *backend.SessionSpec) { s.HostPathMode = backend.MountNone; s.ExtraMounts = nil },
			settings{}, "",
			func(t *testing.T, _ map[string]string, hc hostConfigView) { assert.Empty(t, hc.Binds) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := baseSpec()
			tc.edit(&spec)
			cfg, hc, err := containerConfig(spec, allMounts(spec), tc.set, "abcdef012345", tc.scope)
			require.NoError(t, err)
			assert.Equal(t, []string{"sh", "-lc", "while true; do sleep 3600; done"}, []string(cfg.Cmd))
			assert.Equal(t, "img", cfg.Image)
			assert.Equal(t, "true", cfg.Labels[LabelBox])
			assert.Equal(t, spec.PhysicalID, cfg.Labels[LabelSession])
			assert.Equal(t, "abcdef012345", cfg.Labels[LabelInstance])
			var back backend.SessionSpec
			require.NoError(t, json.Unmarshal([]byte(cfg.Labels[LabelSpec]), &back))
			assert.Equal(t, spec, back, "the spec label rebuilds the session")
			view := hostConfigView{Network: string(hc.NetworkMode), NanoCPUs: hc.NanoCPUs, Memory: hc.Memory, Pids: *hc.PidsLimit,
				AutoRemove: hc.AutoRemove, ReadOnly: hc.ReadonlyRootfs, Tmpfs: hc.Tmpfs, CapDrop: hc.CapDrop, SecurityOpt: hc.SecurityOpt}
			for _, m := range hc.Mounts {
				mode := "rw"
				if m.ReadOnly {
					mode = "ro"
				}
				view.Binds = append(view.Binds, m.Source+":"+m.Target+":"+mode)
			}
			tc.check(t, cfg.Labels, view)
		})
	}
}

type hostConfigView struct {
	Network          string
	NanoCPUs, Memory int64
	Pids             int64
	AutoRemove       bool
	ReadOnly         bool
	Tmpfs            map[string]string
	CapDrop          []string
	SecurityOpt      []string
	Binds            []string
}

func TestClassify(t *testing.T) {
	spec := baseSpec()
	spec.Persistent = true
	js, err := json.Marshal(spec)
	require.NoError(t, err)
	persistent := func(extra map[string]string) map[string]string {
		l := map[string]string{LabelBox: "true", LabelSession: spec.PhysicalID, LabelInstance: "old", LabelPersistent: "true", LabelSpec: string(js)}
		for k, v := range extra {
			l[k] = v
		}
		return l
	}
	cases := []struct {
		name    string
		labels  map[string]string
		running bool
		scope   string
		want    verdict
	}{
		{"python runtime container", map[string]string{LabelBox: "true", LabelSession: "x", LabelInstance: "py"}, true, "", remove},
		{"this instance's own", persistent(map[string]string{LabelInstance: "me"}), true, "", keep},
		{"running persistent of a previous boxd", persistent(nil), true, "", adopt},
		{"stopped persistent", persistent(nil), false, "", remove},
		{"non-persistent", persistent(map[string]string{LabelPersistent: "false"}), true, "", remove},
		{"corrupt spec label", persistent(map[string]string{LabelSpec: "{"}), true, "", remove},
		{"spec label of another session", persistent(map[string]string{LabelSession: "other"}), true, "", remove},
		{"another scope", persistent(map[string]string{LabelScope: "team-b"}), false, "team-a", keep},
		{"scoped runtime ignores unscoped", map[string]string{LabelBox: "true", LabelInstance: "py"}, true, "team-a", keep},
		{"same scope orphan", map[string]string{LabelBox: "true", LabelInstance: "x", LabelScope: "team-a"}, true, "team-a", remove},
		{"unscoped runtime ignores scoped", map[string]string{LabelBox: "true", LabelInstance: "x", LabelScope: "team-a"}, true, "", keep},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, got := classify(tc.labels, tc.running, "me", tc.scope)
			assert.Equal(t, tc.want, v)
			if v == adopt {
				assert.Equal(t, spec, got)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	cases := []struct{ status, signaled, want int }{
		{0, 0, 0},
		{3, 0, 3},
		{137, 0, 137}, // a process may exit 137 on its own: only signals boxd sent are mapped
		{143, 15, -15},
		{137, 15, -9}, // SIGKILL after the SIGTERM grace period
		{137, 9, -9},
		{0, 15, 0}, // exited cleanly on SIGTERM
		{255, 9, 255},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, exitCode(tc.status, tc.signaled), "status %d signaled %d", tc.status, tc.signaled)
	}
}

func TestWrap(t *testing.T) {
	argv, pidFile := wrap(execWrapper, []string{"sh", "-lc", "echo hi"})
	assert.Regexp(t, `^/tmp/\.boxd-[0-9a-f]{16}\.pid$`, pidFile)
	assert.Equal(t, []string{"sh", "-c", execWrapper, pidFile, "sh", "-lc", "echo hi"}, argv)
	_, other := wrap(procWrapper, nil)
	assert.NotEqual(t, pidFile, other)
}
