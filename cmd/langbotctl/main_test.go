package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append(args[:1:1], append([]string{"--chart", "../../charts/langbot"}, args[1:]...)...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"render defaults", []string{"render"}, 0, []string{"kind: Deployment", "name: BOX__ENABLED"}, nil},
		{"validate box docker", []string{"validate", "-f", "../../charts/langbot/ci/box-docker-values.yaml"}, 0, []string{"valid:", "Deployment/langbot-box", "privileged"}, nil},
		{"validate lists every problem", []string{"validate", "--set", "box.hostRoot=rel", "--set", "langbot.image.tag=latest"}, 1,
			[]string{"box.hostRoot", "langbot.image.tag", "invalid:"}, nil},
		{"validate cross-field rule", []string{"validate", "--set", "box.enabled=true", "--set", "box.allowedMountRoots={/srv}"}, 1,
			[]string{"box.allowedMountRoots"}, nil},
		{"validate lists schema and template problems together", []string{"validate", "--set", "box.enabled=true", "--set", "box.allowedMountRoots={/srv}", "--set", "box.image.tag=latest"}, 1,
			[]string{"invalid: 2 problem(s)", "box.image.tag: `latest` is refused", "is not inside box.allowedMountRoots"}, nil},
		{"render refuses bad values", []string{"render", "--set", "box.backend=podman"}, 1, nil, []string{"box.backend"}},
		{"explain pools", []string{"explain", "-f", "../../charts/langbot/ci/node-pools-values.yaml", "--nodes", "testdata/nodes-two-pools.yaml"}, 0,
			[]string{"schedulable on: box-1", "schedulable on: general-1", "Pod Security"}, nil},
		{"explain predicts Pending", []string{"explain", "-f", "../../charts/langbot/ci/node-pools-values.yaml", "--nodes", "testdata/nodes-no-box-pool.yaml"}, 3,
			[]string{"PENDING: 0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"}, nil},
		{"validate box kubernetes: boxd restricted, langbot baseline", []string{"validate", "-f", "../../charts/langbot/ci/box-kubernetes-values.yaml"}, 0,
			[]string{"valid:", "Deployment/langbot-box                        needs Pod Security level restricted", "Deployment/langbot                            needs Pod Security level baseline"}, nil},
		{"validate box kubernetes warns about docker settings", []string{"validate", "-f", "../../charts/langbot/ci/box-kubernetes-values.yaml", "--set", "box.docker.execAgent=true"}, 0,
			[]string{"warning: box.docker.execAgent set, but box.backend=kubernetes does not use box.docker.*"}, nil},
		{"explain box kubernetes RWO: sandboxes on boxd's node", []string{"explain", "-f", "../../charts/langbot/ci/box-kubernetes-values.yaml", "--nodes", "testdata/nodes-two-pools.yaml"}, 0,
			[]string{"sandboxes       only the node boxd runs on (the box root claim langbot-box-root is not ReadWriteMany", "box             restricted"}, nil},
		{"explain box kubernetes RWO on a tainted pool the sandboxes do not tolerate", []string{"explain", "-f", "../../charts/langbot/ci/box-kubernetes-values.yaml",
			"--set", "global.nodeSelector.pool=box", "--set-json", `global.tolerations=[{"key":"dedicated","value":"box","effect":"NoSchedule"}]`, "--nodes", "testdata/nodes-two-pools.yaml"}, 3,
			[]string{"PENDING: 0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: box}, 1 node(s) were not boxd's node"}, nil},
		{"explain box kubernetes RWX: sandboxes on their own pool", []string{"explain", "-f", "../../charts/langbot/ci/box-kubernetes-values.yaml",
			"--set", "box.kubernetes.boxRoot.accessModes={ReadWriteMany}", "--set", "box.kubernetes.nodeSelector.pool=box",
			"--set-json", `box.kubernetes.tolerations=[{"key":"dedicated","value":"box","effect":"NoSchedule"}]`, "--nodes", "testdata/nodes-two-pools.yaml"}, 0,
			[]string{"sandboxes       nodes with pool=box; tolerating dedicated=box:NoSchedule (the box root claim langbot-box-root is ReadWriteMany", "-> schedulable on: box-1"}, nil},
		{"bad flag", []string{"validate", "--output", "yaml"}, 2, nil, []string{"--output must be text or json"}},
		{"unknown command", []string{"deploy"}, 2, nil, []string{"unknown command"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(tc.args...)
			assert.Equal(t, tc.code, code, "stdout: %s\nstderr: %s", out, errOut)
			for _, s := range tc.stdout {
				assert.Contains(t, out, s)
			}
			for _, s := range tc.stderr {
				assert.Contains(t, errOut, s)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	code, out, _ := runCLI("validate", "--output", "json", "--set", "box.enabled=true", "--set", "box.docker.socketPath=relative")
	assert.Equal(t, 1, code)
	var doc struct {
		OK       bool     `json:"ok"`
		Problems []string `json:"problems"`
		Schema   []struct {
			Field string `json:"field"`
		} `json:"schema"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	assert.False(t, doc.OK)
	require.NotEmpty(t, doc.Schema)
	assert.Equal(t, "box.docker.socketPath", doc.Schema[0].Field)

	code, out, _ = runCLI("explain", "--output", "json", "-f", "../../charts/langbot/ci/box-docker-values.yaml")
	assert.Equal(t, 0, code)
	var ex struct {
		Components []struct {
			Component     string `json:"component"`
			CoLocatedWith string `json:"coLocatedWith"`
			PodSecurity   string `json:"podSecurity"`
		} `json:"components"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &ex), out)
	found := false
	for _, c := range ex.Components {
		if c.Component == "box" {
			found = true
			assert.Equal(t, "langbot", c.CoLocatedWith)
			assert.Equal(t, "privileged", c.PodSecurity)
		}
	}
	assert.True(t, found)
}

// Issue #11 defect 4: validate says which path each control token is on and warns when the
// tokens change on every render (GitOps), but not when they come from existing Secrets.
func TestValidateTokenPaths(t *testing.T) {
	code, out, _ := runCLI("validate", "--set", "box.enabled=true")
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "control tokens:")
	assert.Regexp(t, `box +generated +Secret langbot-box-token key token`, out)
	assert.Regexp(t, `plugin-runtime +generated +Secret langbot-plugin-runtime-token key token`, out)
	assert.Contains(t, out, "warning: control tokens generated by the chart")
	assert.Contains(t, out, "Argo CD")

	code, out, _ = runCLI("validate", "-f", "../../charts/langbot/ci/existing-secrets-values.yaml")
	require.Equal(t, 0, code, out)
	assert.Regexp(t, `box +existing-secret +Secret langbot-box-control key control-token`, out)
	assert.NotContains(t, out, "warning:")

	code, out, _ = runCLI("validate", "--output", "json")
	require.Equal(t, 0, code, out)
	var doc struct {
		Tokens []struct {
			Token               string `json:"token"`
			Source              string `json:"source"`
			StableAcrossRenders bool   `json:"stableAcrossRenders"`
		} `json:"tokens"`
		Warnings []string `json:"warnings"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
	require.Len(t, doc.Tokens, 1)
	assert.Equal(t, "generated", doc.Tokens[0].Source)
	assert.False(t, doc.Tokens[0].StableAcrossRenders)
	assert.Len(t, doc.Warnings, 1)
}
