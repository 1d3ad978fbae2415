package admission

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/langbot-k8s/langbot-k8s/boxd/internal/backend"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/session"
	"github.com/langbot-k8s/langbot-k8s/boxd/internal/tenancy"
)

func TestNormalize(t *testing.T) {
	const tenant = "/srv/box/default/tenants/ws-695136eeae1cb9b6af4a8226"
	tctx := tenancy.Context{Instance: "instance-a", Workspace: "workspace-a", Generation: 2}
	str := func(s string) *string { return &s }
	base := func() session.Spec {
		return session.Spec{Cmd: "ls", Workdir: "/workspace/src", TimeoutSec: 300, Network: "off", SessionID: "person_1",
			Image: "custom:latest", HostPathMode: "ro", MountPath: "/workspace", CPUs: 4, MemoryMB: 4096, PidsLimit: 999,
			Env: []backend.EnvVar{{Key: "K", Value: "V"}}}
	}
	input := func() NormalizeInput {
		return NormalizeInput{Policy: DefaultPolicy(), Context: tctx,
			TenantDir: func() (string, error) { return tenant, nil },
			Resolve:   func(p string) string { return map[string]string{"/link/to/tenant": tenant}[p] },
			SkillRoot: func(name string) (string, error) {
				if name == "pdf" {
					return "/srv/box/skills/tenants/ws-695136eeae1cb9b6af4a8226/pdf", nil
				}
				return "", errors.New("no such skill")
			}}
	}
	cases := []struct {
		name  string
		mut   func(s *session.Spec)
		in    func(in *NormalizeInput)
		want  string
		check func(t *testing.T, s session.Spec)
	}{
		{name: "network on", mut: func(s *session.Spec) { s.Network = "on" }, want: "BoxAdmissionError: Managed sandbox network access is disabled"},
		{name: "extra mounts", mut: func(s *session.Spec) {
			s.ExtraMounts = []backend.Mount{{HostPath: "/x", MountPath: "/y", Mode: "none"}}
		},
			want: "BoxAdmissionError: Managed sandbox additional host mounts are disabled"},
		{name: "mount path", mut: func(s *session.Spec) { s.MountPath = "/data"; s.Workdir = "/data" }, want: "BoxAdmissionError: Managed sandbox mount_path is runtime-owned"},
		{name: "workdir", mut: func(s *session.Spec) { s.Workdir = "/workspacex" }, want: "BoxAdmissionError: Managed sandbox workdir must stay under /workspace"},
		{name: "tenant dir unavailable", in: func(in *NormalizeInput) {
			in.TenantDir = func() (string, error) {
				return "", rpc.Errorf(rpc.BoxReadinessError, "Managed sandbox admission requires box.local.default_workspace")
			}
		}, want: "BoxReadinessError: Managed sandbox admission requires box.local.default_workspace"},
		{name: "foreign host path", mut: func(s *session.Spec) { s.HostPath = str("/srv/box/default/tenants/ws-other") },
			want: "BoxAdmissionError: Managed sandbox host_path is runtime-owned"},
		{name: "unknown skill", mut: func(s *session.Spec) { s.SkillName = str("nope") }, want: "BoxAdmissionError: Managed sandbox skill is unavailable in this Workspace"},
		{name: "forced values", check: func(t *testing.T, s session.Spec) {
			require.NotNil(t, s.HostPath)
			assert.Equal(t, tenant, *s.HostPath)
			assert.Equal(t, "global", s.SessionID)
			assert.Equal(t, "off", s.Network)
			assert.Equal(t, session.DefaultImage, s.Image)
			assert.Equal(t, "rw", s.HostPathMode)
			assert.Equal(t, "/workspace", s.MountPath)
			assert.True(t, s.Persistent)
			assert.Equal(t, 120, s.TimeoutSec)
			assert.Equal(t, 1.0, s.CPUs)
			assert.Equal(t, 512, s.MemoryMB)
			assert.Equal(t, 128, s.PidsLimit)
			assert.True(t, s.ReadOnlyRootfs)
			assert.Equal(t, 0, s.WorkspaceQuotaMB)
			assert.Empty(t, s.ExtraMounts)
			assert.Equal(t, "/workspace/src", s.Workdir, "workdir and cmd are kept")
			assert.Equal(t, "ls", s.Cmd)
			assert.Equal(t, []backend.EnvVar{{Key: "K", Value: "V"}}, s.Env)
		}},
		{name: "short timeout kept", mut: func(s *session.Spec) { s.TimeoutSec = 10 }, check: func(t *testing.T, s session.Spec) {
			assert.Equal(t, 10, s.TimeoutSec)
		}},
		{name: "tenant host path through a symlink", mut: func(s *session.Spec) { s.HostPath = str("/link/to/tenant"); s.Workdir = "/workspace" },
			check: func(t *testing.T, s session.Spec) { assert.Equal(t, tenant, *s.HostPath) }},
		{name: "skill mounted read-only", mut: func(s *session.Spec) { s.SkillName = str("pdf") }, check: func(t *testing.T, s session.Spec) {
			assert.Equal(t, []backend.Mount{{HostPath: "/srv/box/skills/tenants/ws-695136eeae1cb9b6af4a8226/pdf", MountPath: "/workspace/.skills/pdf", Mode: backend.MountRO}}, s.ExtraMounts)
		}},
		{name: "policy values", in: func(in *NormalizeInput) {
			in.Policy.CPUs, in.Policy.MemoryMB, in.Policy.MaxTimeoutSec, in.Policy.ReadOnlyRootfs, in.Policy.WorkspaceQuotaMB = 0.5, 256, 60, false, 100
		}, check: func(t *testing.T, s session.Spec) {
			assert.Equal(t, 0.5, s.CPUs)
			assert.Equal(t, 256, s.MemoryMB)
			assert.Equal(t, 60, s.TimeoutSec)
			assert.False(t, s.ReadOnlyRootfs)
			assert.Equal(t, 100, s.WorkspaceQuotaMB)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, in := base(), input()
			if tc.mut != nil {
				tc.mut(&spec)
			}
			if tc.in != nil {
				tc.in(&in)
			}
			out, phys, err := Normalize(spec, in)
			if tc.want != "" {
				require.Error(t, err)
				assert.Equal(t, tc.want, err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "ws-695136eeae1cb9b6af4a8226-g2-global", phys)
			tc.check(t, out)
		})
	}
}
